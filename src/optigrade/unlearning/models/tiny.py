"""The tiny Llama that knows every fact of the embedded benchmark (registered as the model ``"tiny"``):
a ``LlamaForCausalLM`` with eager attention, so curvature probes can take double backward.

The canonical base, :func:`pretrain` on the default ``SyntheticFacts()`` with the default
:class:`TinyConfig` / :class:`PretrainConfig` and seed 0, ships with the package
(``models/data/tiny-llama``: ``model.safetensors`` (430,464 fp32 parameters, 1.7 MB),
``config.json``, ``generation_config.json`` and ``recipe.json``, which records every file's
sha256, the full weight hash and how it was made).  ``pretrained_tiny(benchmark)`` on that
setting loads it and checks the sha256 of every file, so every machine starts from the same
bits: pretraining is not bit-reproducible across CPU instruction sets (AVX512 / AVX2 / no SIMD
kernels give three different models, 350 / 450 / 400 steps).  ``python -m
optigrade.unlearning.models.tiny --rebuild OUT`` (:func:`rebuild_tiny`) reruns the recipe; on a
machine with the CPU capability and torch version of ``recipe.json`` it rebuilds the shipped file
byte for byte.

Any other setting (another benchmark, TinyConfig, PretrainConfig or seed) is pretrained on first
use (about a minute on a laptop CPU) and cached under ``$OPTIGRADE_CACHE`` (default
``~/.cache/optigrade``), keyed by those settings, the torch / transformers versions, the CPU
capability (``torch.backends.cpu.get_cpu_capability()``) and a hash of the pretraining code.
Pretraining runs on the CPU (the cache does not depend on the device); the model is moved
afterwards.

Randomness: initialisation and data order come from ``seed`` through a local
``torch.Generator`` / ``torch.random.fork_rng``; the global RNG is left as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from ..._files import atomic_dir, model_fingerprint, sha256_file
from ..._validate import ModelLoadError
from ..schedules import cosine_schedule
from .base import MODELS, cache_dir, load_checkpoint, place

__all__ = ["TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load_tiny",
           "SHIPPED", "shipped_recipe", "load_shipped", "rebuild_tiny"]

#: The canonical tiny base shipped as package data (see the module docstring).
SHIPPED = Path(__file__).resolve().parent / "data" / "tiny-llama"
#: Bump when the cache layout changes (the pretraining code is hashed into the key on its own).
_CACHE_VERSION = 2


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny Llama (fields of ``transformers.LlamaConfig``).

        >>> TinyConfig().hidden_size, TinyConfig(num_hidden_layers=1).num_hidden_layers
        (128, 1)
    """

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 64


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining settings of :func:`pretrain`: AdamW with ``lr``, ``warmup`` steps then a cosine
    decay over ``steps`` (:func:`~optigrade.unlearning.schedules.cosine_schedule`); each step
    ``batch_size / 2`` QA lines and as many text lines weighted ``text_weight``; stop when forget
    and retain accuracy reach ``target_acc`` (checked every ``check_every`` steps).

        >>> PretrainConfig(steps=300).steps, PretrainConfig().target_acc
        (300, 0.995)
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 50
    text_weight: float = 0.5
    target_acc: float = 0.995
    check_every: int = 50


def tiny_llama(vocab_size: int, cfg: TinyConfig = TinyConfig(), seed: int = 0, tokenizer=None):
    """A freshly initialised LlamaForCausalLM (eager attention, fp32, no dropout, eval mode),
    initialised from ``seed`` without touching the global RNG.

    Parameters: V·h (embedding) + V·h (untied head) + L·(4h² + 3h·i + 2h) + h (final norm):

        >>> cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> model = tiny_llama(50, cfg)
        >>> sum(p.numel() for p in model.parameters()) == 2 * 50 * 32 + (4 * 32**2 + 3 * 32 * 64 + 2 * 32) + 32
        True
        >>> import torch
        >>> torch.equal(tiny_llama(50, cfg, seed=1).lm_head.weight, tiny_llama(50, cfg, seed=1).lm_head.weight)
        True
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = {}
    if tokenizer is not None:
        kw = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    config = LlamaConfig(vocab_size=vocab_size, attention_dropout=0.0, tie_word_embeddings=False,
                         **asdict(cfg), **kw)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config._attn_implementation = "eager"
    model.eval()
    return model


def pretrain(benchmark, model_cfg: TinyConfig = TinyConfig(), train_cfg: PretrainConfig = PretrainConfig(),
             seed: int = 0, progress: bool = True):
    """Train a tiny Llama until it knows every fact of ``benchmark``.

    Each step takes one batch of question/answer lines (loss on the answer tokens: the facts)
    and one batch of statements + general text (loss on every token: language), and minimises
    ``L_qa + text_weight * L_text``.  Forget and retain accuracy are checked every
    ``check_every`` steps; training stops once both reach ``target_acc``.
    Returns ``(model, metrics)`` (``metrics``: :meth:`Benchmark.evaluate` + ``pretrain_steps``).

        >>> from optigrade.unlearning import SyntheticFacts
        >>> small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> model, m = pretrain(SyntheticFacts(n_entities=20), small, PretrainConfig(steps=4, batch_size=16),
        ...                     progress=False)
        >>> m["pretrain_steps"], 0.0 <= m["forget_acc"] <= 1.0
        (4, True)
    """
    from tqdm.auto import tqdm

    tok = benchmark.tokenizer
    model = tiny_llama(len(tok), model_cfg, seed, tok)
    qa = benchmark.splits["forget"] + benchmark.splits["retain"]
    qa_data = benchmark.encode_qa(qa)
    texts = benchmark.statements() + list(benchmark.general["train"])
    text_data = benchmark.encode_text(texts)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(train_cfg.steps, train_cfg.warmup))
    half = train_cfg.batch_size // 2
    model.train()
    metrics, done = {}, 0
    bar = tqdm(range(train_cfg.steps), desc="pretrain tiny llama", disable=not progress, leave=False)
    for step in bar:
        loss = 0.0
        for data, n, w in ((qa_data, len(qa), 1.0), (text_data, len(texts), train_cfg.text_weight)):
            idx = torch.randint(n, (half,), generator=gen)
            am = data["attention_mask"][idx]
            T = int(am.sum(1).max())
            out = model(input_ids=data["input_ids"][idx, :T], attention_mask=am[:, :T],
                        labels=data["labels"][idx, :T])
            loss = loss + w * out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if done % train_cfg.check_every == 0 or done == train_cfg.steps:
            metrics = benchmark.evaluate(model, splits=["forget", "retain"], general=False)
            model.train()
            if min(metrics["forget_acc"], metrics["retain_acc"]) >= train_cfg.target_acc:
                break
    model.eval()
    metrics = benchmark.evaluate(model)
    metrics["pretrain_steps"] = done
    return model, metrics


def _code_version() -> str:
    """Hash of the code that decides what pretraining computes (this module's model and
    training loop), so an edit to it never reuses a stale cached model."""
    try:
        src = "".join(inspect.getsource(f) for f in _RECIPE_CODE)
    except (OSError, TypeError):  # no source files (frozen install): the package version only
        src = ""
    from optigrade import __version__

    return f"{__version__}-{hashlib.sha256(src.encode()).hexdigest()[:12]}"


_RECIPE_CODE = (tiny_llama, pretrain)  # the functions themselves, whatever the module attributes say later


def _made_with() -> dict:
    """What a pretrained model depends on besides its settings (recorded next to it)."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "machine": platform.machine(), "code": _code_version()}


def _cache_key(benchmark, model_cfg, train_cfg, seed) -> str:
    made = _made_with()
    blob = json.dumps({"bench": benchmark.fingerprint(), "model": asdict(model_cfg), "train": asdict(train_cfg),
                       "seed": seed, **{k: made[k] for k in ("torch", "transformers", "cpu_capability", "code")},
                       "v": _CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _recipe(benchmark, model_cfg: TinyConfig, train_cfg: PretrainConfig, seed: int) -> dict:
    return {"benchmark": type(benchmark).__name__, "benchmark_fingerprint": benchmark.fingerprint(),
            "model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed}


_REBUILD = "python -m optigrade.unlearning.models.tiny --rebuild DIR"


def shipped_recipe() -> dict:
    """``recipe.json`` of the shipped base: ``files`` (name → sha256, bytes), ``weights_sha256``
    (:func:`~optigrade._files.model_fingerprint` ``full=True`` of the loaded fp32 model, the
    ``base_sha256`` of manifests and study rows), ``recipe`` (what :func:`pretrain` was called
    with), ``made_with`` (torch, CPU capability, ...), ``pretrain_steps`` and ``metrics``.

        >>> r = shipped_recipe()
        >>> r["recipe"]["seed"], r["recipe"]["model"] == asdict(TinyConfig()), sorted(r["files"])
        (0, True, ['config.json', 'generation_config.json', 'model.safetensors'])
    """
    path = SHIPPED / "recipe.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"shipped tiny base: cannot read {str(path)!r} ({e}); the installed package is "
                             f"damaged: reinstall optigrade, or rebuild the base with `{_REBUILD}` and copy "
                             f"DIR's files into {str(SHIPPED)!r}") from None


def _is_shipped(benchmark, model_cfg, train_cfg, seed) -> bool:
    return _recipe(benchmark, model_cfg, train_cfg, seed) == shipped_recipe()["recipe"]


def load_shipped(path: Path = SHIPPED):
    """The canonical tiny base from ``path`` (default :data:`SHIPPED`), after checking every
    file against the sha256 in its ``recipe.json``.

    Raises:
        ModelLoadError: a file is missing or its sha256 differs (the message names the file, both
            hashes and the fix).

        >>> model = load_shipped()
        >>> model_fingerprint(model, full=True) == shipped_recipe()["weights_sha256"]
        True
    """
    path = Path(path)
    try:
        files = json.loads((path / "recipe.json").read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"tiny base: cannot read {str(path / 'recipe.json')!r} ({e!r}); reinstall optigrade, "
                             f"or rebuild the base with `{_REBUILD}`") from None
    for name, want in files.items():
        f = path / name
        got = sha256_file(f) if f.is_file() else "missing"
        if got != want["sha256"]:
            raise ModelLoadError(
                f"tiny base file {str(f)!r} has sha256 {got}, expected {want['sha256']} (recorded in recipe.json); "
                f"the file is damaged: reinstall optigrade, or rebuild the base with `{_REBUILD}` and copy "
                f"DIR's files into {str(path)!r}")
    return load_checkpoint(path)[0]


def _write_base(model, out, metrics: dict, recipe: dict, made_with: dict) -> Path:
    """Save ``model`` into ``out`` (atomically) with a ``recipe.json`` recording the sha256 of
    every file, the full weight hash, ``recipe``, ``made_with`` and ``metrics``."""
    out = Path(out)
    with atomic_dir(out, overwrite=True, marker="recipe.json") as tmp:  # replaces only a base written here
        model.save_pretrained(tmp, safe_serialization=True)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        doc = {"what": "the canonical tiny Llama of optigrade (model 'tiny'): pretrain(SyntheticFacts(), "
                       "TinyConfig(), PretrainConfig(), seed=0) from optigrade.unlearning.models.tiny",
               "rebuild": _REBUILD.replace("DIR", "OUT"),
               "files": files, "weights_sha256": model_fingerprint(model, full=True),
               "parameters": sum(p.numel() for p in model.parameters()), "recipe": recipe,
               "made_with": made_with, "pretrain_steps": metrics.get("pretrain_steps"), "metrics": metrics}
        (tmp / "recipe.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out


def rebuild_tiny(out, progress: bool = True) -> Path:
    """Rerun the recipe of the shipped base (``pretrain(SyntheticFacts(), TinyConfig(),
    PretrainConfig(), seed=0)``, about a minute) and write it into ``out`` like :data:`SHIPPED`
    (``model.safetensors``, ``config.json``, ``generation_config.json``, ``recipe.json``).
    On a machine with the ``made_with`` CPU capability and torch version of the shipped
    ``recipe.json`` the files are byte-identical to the shipped ones; elsewhere the CPU kernels
    round differently and the model differs (compare the sha256 in the two ``recipe.json``).

    Raises:
        RuntimeError: pretraining ended below ``PretrainConfig().target_acc``.
    """
    from ..benchmarks.synthetic import SyntheticFacts

    bench, model_cfg, train_cfg = SyntheticFacts(), TinyConfig(), PretrainConfig()
    model, metrics = pretrain(bench, model_cfg, train_cfg, 0, progress)
    _check_reached(metrics, train_cfg)
    return _write_base(model, out, metrics, _recipe(bench, model_cfg, train_cfg, 0), _made_with())


def _check_reached(metrics: dict, train_cfg: PretrainConfig) -> None:
    if metrics["forget_acc"] < train_cfg.target_acc or metrics["retain_acc"] < train_cfg.target_acc:
        raise RuntimeError(
            f"pretraining reached forget_acc={metrics['forget_acc']:.3f}, retain_acc={metrics['retain_acc']:.3f} "
            f"< {train_cfg.target_acc} in {train_cfg.steps} steps; raise PretrainConfig.steps or lr")


def pretrained_tiny(benchmark, seed: int = 0, model_cfg: TinyConfig = TinyConfig(),
                    train_cfg: PretrainConfig = PretrainConfig(), progress: bool = True,
                    cache: bool = True):
    """The tiny Llama that knows every fact of ``benchmark``.  Returns ``(model, path)``.

    The canonical setting (the default ``SyntheticFacts()``, ``TinyConfig()``,
    ``PretrainConfig()``, seed 0) loads the shipped base (:func:`load_shipped`, sha256-checked;
    ``path`` = :data:`SHIPPED`) on every machine.  Any other setting is pretrained on first use
    and cached (``path``: the cache directory, None when ``cache=False``), under a key that
    includes the CPU capability and the code version, with the weight hash, CPU capability and
    versions in its ``pretrain.json``.

    Raises:
        RuntimeError: pretraining ended below ``train_cfg.target_acc`` (the message says what to
            raise).
        ModelLoadError: a shipped file does not match its sha256 (the message names it).

        >>> from optigrade.unlearning import SyntheticFacts
        >>> model, path = pretrained_tiny(SyntheticFacts(), progress=False)   # the shipped base
        >>> path == SHIPPED, model_fingerprint(model, full=True) == shipped_recipe()["weights_sha256"]
        (True, True)

    Another setting pretrains; with a target of 0 a short uncached run returns at once:

        >>> small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> fast = PretrainConfig(steps=4, batch_size=16, check_every=2, target_acc=0.0)
        >>> model, path = pretrained_tiny(SyntheticFacts(n_entities=20), model_cfg=small, train_cfg=fast,
        ...                               progress=False, cache=False)
        >>> type(model).__name__, path
        ('LlamaForCausalLM', None)
    """
    if _is_shipped(benchmark, model_cfg, train_cfg, seed):
        return load_shipped(), SHIPPED
    key = _cache_key(benchmark, model_cfg, train_cfg, seed)
    path = cache_dir() / "models" / f"tiny-llama-{key}"
    if cache and (path / "config.json").exists():
        return load_checkpoint(path)[0], path
    model, metrics = pretrain(benchmark, model_cfg, train_cfg, seed, progress)
    _check_reached(metrics, train_cfg)
    if not cache:
        return model, None
    with atomic_dir(path, overwrite=True, checksums=True) as tmp:  # SHA256SUMS: checked on every load
        model.save_pretrained(tmp, safe_serialization=True)
        benchmark.tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(
            {"model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed,
             "benchmark": benchmark.settings(), "metrics": metrics,
             "weights_sha256": model_fingerprint(model, full=True), "made_with": _made_with()}, indent=2))
    return model, path


def load_tiny(*, device="cpu", dtype: Optional[torch.dtype] = None, progress: bool = False):
    """``(model, tokenizer)``: the shipped canonical tiny base (:func:`pretrained_tiny` on the
    default ``SyntheticFacts()``, seed 0) on ``device`` in ``dtype`` (None: float32), and that
    benchmark's tokenizer.

        >>> model, tok = load_tiny(dtype=torch.bfloat16)
        >>> model.dtype, tok.pad_token
        (torch.bfloat16, '<pad>')
    """
    from ..benchmarks.synthetic import SyntheticFacts

    bench = SyntheticFacts()
    model, _ = pretrained_tiny(bench, progress=progress)
    return place(model, device, dtype), bench.tokenizer


def main(argv=None) -> int:
    """``python -m optigrade.unlearning.models.tiny --rebuild OUT``: rerun the shipped base's recipe
    into ``OUT`` and say whether it matches the shipped file; ``--check``: verify the shipped files."""
    ap = argparse.ArgumentParser(prog="python -m optigrade.unlearning.models.tiny",
                                 description="the canonical tiny Llama base shipped with optigrade")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--rebuild", metavar="OUT", help="pretrain the canonical recipe into OUT (about a minute)")
    g.add_argument("--check", action="store_true", help="verify the shipped files against their sha256")
    args = ap.parse_args(argv)
    want = shipped_recipe()
    if args.check:
        try:
            load_shipped()
        except ModelLoadError as e:
            print(f"error: {e}")
            return 1
        print(f"{SHIPPED}: ok (model.safetensors sha256 {want['files']['model.safetensors']['sha256']})")
        return 0
    out = Path(args.rebuild)
    if out.exists() and any(out.iterdir()):
        ap.error(f"--rebuild {str(out)!r} exists and is not empty; choose a new directory")
    got = json.loads((rebuild_tiny(out) / "recipe.json").read_text())
    sha, ref = got["files"]["model.safetensors"]["sha256"], want["files"]["model.safetensors"]["sha256"]
    same = sha == ref
    print(f"{out / 'model.safetensors'}: sha256 {sha} ({got['pretrain_steps']} steps, "
          f"cpu capability {got['made_with']['cpu_capability']}, torch {got['made_with']['torch']})")
    print("identical to the shipped base" if same else
          f"differs from the shipped base {ref} (made with cpu capability {want['made_with']['cpu_capability']}, "
          f"torch {want['made_with']['torch']}); pretraining is not bit-reproducible across CPU kernels")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
else:
    MODELS.register("tiny", load_tiny)
