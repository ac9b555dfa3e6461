"""The study: tidy output, determinism per seed, resume, and the CLI / report round trip."""

import os

import pandas as pd
import pytest

from optigrade.analysis.config import StudyConfig
from optigrade.analysis.study import run_study
from optigrade.analysis.study import VOLATILE_COLUMNS

VOLATILE = VOLATILE_COLUMNS
_DICT = []


@pytest.fixture(autouse=True)
def _study_dict(study_dict):
    _DICT[:] = [study_dict]


def _run(tmp, bench, model, **kw):
    cfg = StudyConfig.from_dict(_DICT[0](**kw))
    return run_study(cfg, tmp, progress=False, base=model, benchmark=bench, resume=True)


def test_study_tables_and_determinism(tmp_path, small_bench, small_model):
    r1 = _run(tmp_path / "a", small_bench, small_model, seeds=[0, 1])
    r2 = _run(tmp_path / "b", small_bench, small_model, seeds=[0, 1])
    a, b = (r.results.drop(columns=VOLATILE, errors="ignore") for r in (r1, r2))
    pd.testing.assert_frame_equal(a, b)
    res = r1.results
    for col in ("objective", "optimizer", "grade", "seed", "lr", "steps", "stop_reason", "attack",
                "attack_bits", "attack_protocol", "attack_sigma", "quantity", "value", "subject", "data"):
        assert col in res.columns, col
    assert set(res["attack"]) == {"none", "rtn4", "rl-half", "noise"}
    unl = res[res["run_id"] != "reference"]
    assert (unl["stop_reason"] == "target").all() and (unl["steps"] == 2).all()  # random init: forget_acc 0
    # the seeds differ (data order, attacks)
    s0 = res[(res["seed"] == 0) & (res["run_id"] != "reference") & (res["quantity"] == "forget_nll") & (res["attack"] == "noise")]
    s1 = res[(res["seed"] == 1) & (res["quantity"] == "forget_nll") & (res["attack"] == "noise")]
    assert s0["value"].iloc[0] != s1["value"].iloc[0]
    for f in ("results.parquet", "results.csv", "summary.parquet", "summary.csv", "report.md", "report.html", "config.yaml"):
        assert (tmp_path / "a" / f).exists(), f
    summ = r1.summary
    row = summ[(summ["optimizer"] == "adam") & (summ["attack"] == "none") & (summ["quantity"] == "forget_nll")
               & (summ["data"] == "all")].iloc[0]
    assert row["n"] == 2 and row["ci95_low"] <= row["mean"] <= row["ci95_high"]
    assert "diag_bin_crossing" in set(res["quantity"])
    # relearn-half: measured on half B, and on the half A it fine-tuned on (was A itself relearned?)
    half = res[(res["attack"] == "rl-half") & (res["quantity"] == "forget_acc")]
    assert set(half["data"]) == {"forget-half-A", "forget-half-B"}
    none = res[(res["attack"] == "none") & (res["quantity"] == "forget_acc")]
    assert {"all", "forget-half-A", "forget-half-B"} <= set(none["data"])
    per = none[none["data"] == "forget-half-A"].iloc[0]["per_example"]
    n_a = len(per)
    per_b = none[none["data"] == "forget-half-B"].iloc[0]["per_example"]
    per_all = none[none["data"] == "all"].iloc[0]["per_example"]
    assert n_a + len(per_b) == len(per_all)  # the halves partition the forget facts


def test_capped_run_is_reported(tmp_path, bench, tiny_model, capsys):
    """The pretrained model cannot forget in 2 steps: stop_reason "budget", listed and warned."""
    cfg = StudyConfig.from_dict(_DICT[0](benchmark_kwargs={"n_entities": 200}, target=0.1, reference=False,
                                         attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}]))
    r = run_study(cfg, tmp_path, progress=False, base=tiny_model, benchmark=bench)
    assert r.capped == ["graddiff__adam__s0"]
    assert set(r.results["stop_reason"]) == {"budget"}
    assert "hit the step cap" in capsys.readouterr().out
    assert "capped" in (tmp_path / "report.md").read_text()


def test_resume_recomputes_only_missing(tmp_path, small_bench, small_model):
    out = tmp_path / "s"
    r = _run(out, small_bench, small_model, seeds=[0, 1])
    assert sorted(r.computed) == ["graddiff__adam__s0", "graddiff__adam__s1", "reference"]
    os.remove(out / "runs" / "graddiff__adam__s1.parquet")
    r2 = _run(out, small_bench, small_model, seeds=[0, 1])
    assert r2.computed == ["graddiff__adam__s1"]
    assert sorted(r2.skipped) == ["graddiff__adam__s0", "reference"]
    pd.testing.assert_frame_equal(r.results.drop(columns=VOLATILE, errors="ignore"), r2.results.drop(columns=VOLATILE, errors="ignore"))
    # a changed setting invalidates the stored runs (config hash)
    r3 = _run(out, small_bench, small_model, seeds=[0, 1], target=0.05)
    assert len(r3.computed) == 3
    # without --resume an existing study is refused
    from optigrade.unlearning.run import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        run_study(StudyConfig.from_dict(_DICT[0]()), out, progress=False, base=small_model,
                  benchmark=small_bench)


def test_cli_study_and_report(tmp_path, small_bench, small_model, capsys, monkeypatch):
    import yaml

    from optigrade import cli

    out = tmp_path / "c"
    _run(out, small_bench, small_model)
    assert cli.main(["report", str(out), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| optimizer | grade | steps | none |" in md and "| adam |" in md
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_DICT[0](optimizers=[])))
    assert cli.main(["study", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "optimizers is empty" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_readme_tables_replaces_only_block(tmp_path, small_bench, small_model):
    from optigrade.analysis.report import update_readme

    out = tmp_path / "r"
    _run(out, small_bench, small_model)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-table:start -->\nold\n<!-- demo-table:end -->\noutro\n")
    update_readme(out, readme)
    text = readme.read_text()
    assert text.startswith("intro\n<!-- demo-table:start -->\n") and text.endswith("<!-- demo-table:end -->\noutro\n")
    assert "old" not in text and "| adam |" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="demo-table:start"):
        update_readme(out, readme)


def test_demo_config_is_packaged_and_valid():
    from optigrade.analysis.config import load_config
    from optigrade.demo import config_path, demo_config

    cfg = demo_config()
    cfg.validate()
    assert load_config(config_path("demo.yaml")).to_dict() == cfg.to_dict()
    quick = demo_config(quick=True).validate()
    assert [o.name for o in quick.optimizers] == ["adam"] and quick.seeds == [0]
    assert {o.name for o in cfg.optimizers} == {"zo-sgd", "adazo", "signsgd", "signadam", "adam", "soul",
                                                "hybrid", "adam+gru"}
    assert len(cfg.seeds) == 3 and {o.key for o in cfg.objectives} == {"npo", "graddiff"}


def test_params_subset_guard_and_gguf_attack(tmp_path, small_bench, small_model, snapshot):
    """Real-model settings on the tiny model: an optimizer moving only `params`, the retain guard
    (floor 1.0 with an untrained model: stopped at the first check although forget_acc is at the
    target, since the guard comes first; reported as not matched), and
    the GGUF re-export attack with one chosen type.  Relearning after a subset run still trains
    the whole model (the study unfreezes it)."""
    before = snapshot(small_model)
    d = _DICT[0](target=0.0, retain_floor=1.0, reference=False,
                 optimizers=[{"name": "adam", "lr": 1.0e-3, "steps": 4, "params": r"mlp\.down_proj"},
                             {"name": "signadam", "lr": 1.0e-3, "steps": 4, "retain_floor": 0.0}],
                 attacks=[{"kind": "gguf", "label": "q8", "types": "Q8_0"},
                          {"kind": "relearn", "label": "rl", "steps": 2, "lr": 1.0e-3}])
    r = run_study(StudyConfig.from_dict(d), tmp_path, progress=False, base=small_model, benchmark=small_bench)
    res = r.results
    runs = res.drop_duplicates("run_id").set_index("optimizer")
    assert runs.loc["adam", "stop_reason"] == "retain-guard" and runs.loc["adam", "steps"] == 2
    assert runs.loc["adam", "params"] == r"mlp\.down_proj" and runs.loc["adam", "retain_floor"] == 1.0
    assert runs.loc["signadam", "stop_reason"] == "target" and runs.loc["signadam", "retain_floor"] == 0.0
    assert r.capped == ["graddiff__adam__s0"]
    import json

    checks = json.loads(runs.loc["adam", "checks"])
    assert [c[0] for c in checks] == [2] and checks[0][2] < 1.0
    assert set(res["attack"]) == {"none", "q8", "rl"} and set(res[res["attack"] == "q8"]["attack_types"]) == {"Q8_0"}
    # the subset run moved down_proj only: update norm of attention is 0
    w = res[(res["optimizer"] == "adam") & (res["quantity"] == "diag_update_norm[attention]")]
    assert float(w["value"].iloc[0]) == 0.0
    after = snapshot(small_model)
    assert all((before[k] == after[k]).all() for k in before), "the base model was modified"
    assert all(p.requires_grad for p in small_model.parameters())
    assert "| 2 (1/1 not matched: retain guard) |" in (tmp_path / "report.md").read_text()


def test_relearn_trains_every_parameter_even_if_frozen(small_bench, small_model):
    import copy

    from optigrade.analysis.attacks import relearn

    m = copy.deepcopy(small_model)
    for n, p in m.named_parameters():
        p.requires_grad_("down_proj" in n)
    out = relearn(m, small_bench, steps=2, lr=1e-2)
    moved = {n for (n, a), (_, b) in zip(m.named_parameters(), out.named_parameters()) if not torch_equal(a, b)}
    assert any("q_proj" in n for n in moved) and any("down_proj" in n for n in moved)


def torch_equal(a, b):
    import torch

    return torch.equal(a.detach(), b.detach())


def test_smollm2_config_is_valid():
    """The packaged configs/smollm2.yaml (and its quick version) parse and validate without
    loading the model."""
    from optigrade.demo import demo_config

    cfg = demo_config(model="smollm2")
    cfg.validate()
    demo_config(quick=True, model="smollm2").validate()
    assert cfg.model == "smollm2" and cfg.benchmark == "smollm2-facts"
    assert {a.kind for a in cfg.attacks} == {"gguf", "quantize", "relearn"}
    assert {o.name for o in cfg.optimizers} >= {"adam", "signadam", "hybrid", "zo-sgd"}
    assert cfg.retain_floor is not None


def test_demo_unknown_model_is_refused(capsys):
    from optigrade import cli

    with pytest.raises(SystemExit):
        cli.main(["demo", "--model", "llama-70b"])
    assert "llama-70b" in capsys.readouterr().err


def test_accuracy_rows_carry_each_facts_match(tmp_path, small_bench, small_model):
    """Every accuracy row of a study carries its per-fact exact matches (what a bootstrap over
    facts resamples), consistent with the accuracy itself."""
    from optigrade.analysis.config import StudyConfig
    from .conftest import small_study_dict

    cfg = StudyConfig(**small_study_dict())
    r = run_study(cfg, tmp_path / "o", progress=False, base=small_model, benchmark=small_bench).results
    acc = r[r["quantity"].str.endswith("_acc")]
    assert len(acc) and acc["per_example"].notna().all()
    for v, bits in zip(acc["value"], acc["per_example"]):
        assert set(bits) <= {"0", "1"} and abs(v - bits.count("1") / len(bits)) < 1e-12
    forget = acc[(acc["quantity"] == "forget_acc") & (acc["data"] == "all")]
    assert set(forget["per_example"].str.len()) == {len(small_bench.forget)}
