"""The unlearn loop: reaching a target, determinism, checkpoints and manifests."""

import copy
import json

import pandas as pd
import pytest
import torch

from optigrade import optimizers
from optigrade.unlearning import GradDiff, UnlearnConfig, load_model, run_unlearn, unlearn


def test_adam_graddiff_reaches_target_keeping_retain(bench, tiny_model):
    opt = optimizers.make("adam", tiny_model.parameters(), lr=1e-3)
    res = unlearn(tiny_model, GradDiff(), opt, bench, steps=200, target=0.1, progress=False)
    assert res.stop_reason == "target"
    assert res.metrics["forget_acc"] <= 0.1
    assert res.metrics["retain_acc"] >= 0.85
    assert list(res.log["step"]) == list(range(1, res.steps + 1))
    assert res.log["forget_acc"].dropna().iloc[-1] <= 0.1


def test_budget_stop_is_reported(bench, tiny_model):
    opt = optimizers.make("adam", tiny_model.parameters(), lr=1e-5)
    res = unlearn(tiny_model, GradDiff(), opt, bench, steps=3, target=0.0, eval_every=1,
                  final_eval=False, progress=False)
    assert res.stop_reason == "budget" and res.steps == 3 and not res.reached_target


def test_zeroth_order_runs_through_the_same_loop(bench, tiny_model):
    before = [p.detach().clone() for p in tiny_model.parameters()]
    opt = optimizers.make("zo-sgd", tiny_model.parameters(), lr=1e-4)
    res = unlearn(tiny_model, GradDiff(), opt, bench, steps=2, eval_every=2, final_eval=False, progress=False)
    assert all(p.grad is None for p in tiny_model.parameters())  # never asked for gradients
    assert res.log["n_grad"].sum() == 0 and res.log["n_loss"].min() >= 2
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))


def test_same_seed_same_checkpoint_and_log(bench, pretrained, tmp_path):
    cfg = UnlearnConfig(objective="npo", optimizer="adam", lr=1e-3, steps=12, target=None, eval_every=4)
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        run_unlearn(cfg, out=out, benchmark=bench, model=copy.deepcopy(pretrained[0]), progress=False)
        outs.append(out)
    (a, _), (b, _) = load_model(outs[0]), load_model(outs[1])
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    la, lb = pd.read_csv(outs[0] / "log.csv"), pd.read_csv(outs[1] / "log.csv")
    pd.testing.assert_frame_equal(la, lb)
    # a different seed takes other batches
    c = tmp_path / "run_seed1"
    cfg.seed = 1
    run_unlearn(cfg, out=c, benchmark=bench, model=copy.deepcopy(pretrained[0]), progress=False)
    assert not pd.read_csv(c / "log.csv")["loss"].equals(la["loss"])


def test_checkpoint_layout_and_manifest(bench, pretrained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = UnlearnConfig(objective="graddiff", optimizer="adam", lr=1e-3, steps=3, target=None, eval_every=3)
    out = tmp_path / "ckpt"
    run_unlearn(cfg, out=out, benchmark=bench, model=copy.deepcopy(pretrained[0]), progress=False)
    assert (out / "model.safetensors").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["optimizer"] == "adam" and man["stop_reason"] == "budget"
    assert man["optimizer"]["grade"] == 1 and "metrics_after" in man
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    assert not list(tmp_path.glob(".ckpt.tmp-*"))


def test_nothing_half_written_on_failure(bench, pretrained, tmp_path, monkeypatch):
    import optigrade.unlearning.loop as loop_mod
    import optigrade.unlearning.run as run_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    for mod in (run_mod, loop_mod):  # UnlearnResult.save_pretrained (loop) writes the manifest
        monkeypatch.setattr(mod, "atomic_write_json", boom, raising=False)
    cfg = UnlearnConfig(steps=2, target=None, eval_every=2)
    with pytest.raises(RuntimeError, match="disk full"):
        run_unlearn(cfg, out=tmp_path / "x", benchmark=bench, model=copy.deepcopy(pretrained[0]), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_retain_guard_stops_a_destructive_run(bench, tiny_model):
    """A zeroth-order run that lowers retain with forget is stopped and reported as such."""
    opt = optimizers.make("adazo", tiny_model.parameters(), lr=3e-3)
    res = unlearn(tiny_model, GradDiff(), opt, bench, steps=60, target=0.1, eval_every=5,
                  retain_floor=0.9, final_eval=False, progress=False)
    assert res.stop_reason == "retain-guard"
    assert res.log["retain_acc"].dropna().iloc[-1] < 0.9
    assert res.log["forget_acc"].dropna().iloc[-1] > 0.1


def test_bad_retain_floor_is_refused():
    from optigrade.unlearning import ConfigError

    with pytest.raises(ConfigError, match="retain_floor must be in"):
        UnlearnConfig(retain_floor=1.5).validate()


def test_save_pretrained_reopens_with_transformers(bench, tiny_model, tmp_path):
    """UnlearnResult keeps its model and tokenizer; save_pretrained writes a directory that
    AutoModelForCausalLM / AutoTokenizer and load_model open, with the same logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    opt = optimizers.make("adam", tiny_model.parameters(), lr=1e-3)
    res = unlearn(tiny_model, GradDiff(), opt, bench, steps=2, eval_every=2, final_eval=False, progress=False)
    assert res.model is tiny_model and res.tokenizer is bench.tokenizer
    out = res.save_pretrained(tmp_path / "ckpt", manifest={"note": "x"})
    man = json.loads((out / "manifest.json").read_text())
    assert man["note"] == "x" and set(man) == {"note", "files"}  # files: sha256 + size of every other file
    assert {"model.safetensors", "config.json", "log.csv"} <= set(man["files"])
    assert len(pd.read_csv(out / "log.csv")) == 2
    batch = bench.encode_qa(bench.forget[:4])
    want = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    hf = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(bench.forget[0].prompt)["input_ids"] == bench.tokenizer(bench.forget[0].prompt)["input_ids"]
    model, tok2 = load_model(out)
    for m in (hf, model):
        got = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert torch.equal(got, want)
    assert len(tok2) == len(bench.tokenizer)
    # refuses to overwrite unless asked; the default manifest is the run's summary
    with pytest.raises(FileExistsError, match="overwrite"):
        res.save_pretrained(out)
    res.save_pretrained(out, overwrite=True)
    man = json.loads((out / "manifest.json").read_text())
    assert man["steps"] == 2 and man["stop_reason"] == "budget"
    assert not list(tmp_path.glob(".ckpt.*"))


def test_load_model_by_name_returns_model_and_tokenizer(bench, pretrained):
    from optigrade.unlearning import MODELS

    assert {"tiny", "smollm2"} <= set(MODELS.names())
    model, tok = load_model("tiny")  # the cached pretrained tiny model on the default benchmark
    assert tok.get_vocab() == bench.tokenizer.get_vocab()
    for (n, p), (_, q) in zip(model.named_parameters(), pretrained[0].named_parameters()):
        assert torch.equal(p, q), n
    assert not model.training
