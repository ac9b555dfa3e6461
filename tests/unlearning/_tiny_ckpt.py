"""A small tiny-Llama checkpoint pretrained briefly on a benchmark and saved with its tokenizer
(the layout benchmarks' end-to-end tests: TOFU, MUSE, WMDP, their CLI)."""

from pathlib import Path


def tiny_checkpoint(bench, path, steps: int = 20, **model_kw):
    """``path`` holding a 1-layer tiny Llama pretrained ``steps`` steps on ``bench`` (no accuracy
    target) and ``bench.tokenizer``; returns ``(model, path)``.  ``model_kw`` override the
    TinyConfig (e.g. ``max_position_embeddings``)."""
    from optigrade.unlearning.models.tiny import PretrainConfig, TinyConfig, pretrained_tiny

    small = TinyConfig(**{**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                          **model_kw})
    fast = PretrainConfig(steps=steps, batch_size=16, check_every=steps, target_acc=0.0)
    model, _ = pretrained_tiny(bench, model_cfg=small, train_cfg=fast, progress=False, cache=False)
    path = Path(path)
    model.save_pretrained(path)
    bench.tokenizer.save_pretrained(path)
    return model, path


def break_layout(d, breakage) -> None:
    """Damage a JSON-array layout file as ``breakage`` says: ``"rm REL"`` (delete it), ``"empty REL"``
    (no records) or ``"rename REL old→new"`` (a column renamed in every record)."""
    import json

    if not breakage:
        return
    op, rel, *rest = breakage.split(" ")
    p = Path(d) / rel
    if op == "rm":
        p.unlink()
    elif op == "empty":
        p.write_text("")
    elif op == "rename":
        old, new = rest[0].split("→")
        p.write_text(json.dumps([{(new if k == old else k): v for k, v in r.items()} for r in json.loads(p.read_text())]))
    else:
        raise ValueError(f"unknown breakage {breakage!r}")
