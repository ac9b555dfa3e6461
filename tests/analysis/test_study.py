"""The study: tidy output, determinism per seed, resume, and the CLI / report round trip."""

import os

import pandas as pd
import pytest

from analysis.config import StudyConfig
from analysis.study import run_study

VOLATILE = ["unlearn_seconds"]
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
    a, b = (r.results.drop(columns=VOLATILE) for r in (r1, r2))
    pd.testing.assert_frame_equal(a, b)
    res = r1.results
    for col in ("objective", "optimizer", "grade", "seed", "lr", "steps", "stop_reason", "attack",
                "attack_bits", "attack_protocol", "attack_sigma", "metric", "value"):
        assert col in res.columns, col
    assert set(res["attack"]) == {"none", "rtn4", "rl-half", "noise"}
    unl = res[res["run_id"] != "reference"]
    assert (unl["stop_reason"] == "target").all() and (unl["steps"] == 2).all()  # random init: forget_acc 0
    # the seeds differ (data order, attacks)
    s0 = res[(res["seed"] == 0) & (res["run_id"] != "reference") & (res["metric"] == "forget_nll") & (res["attack"] == "noise")]
    s1 = res[(res["seed"] == 1) & (res["metric"] == "forget_nll") & (res["attack"] == "noise")]
    assert s0["value"].iloc[0] != s1["value"].iloc[0]
    for f in ("results.parquet", "results.csv", "summary.parquet", "summary.csv", "report.md", "report.html", "config.yaml"):
        assert (tmp_path / "a" / f).exists(), f
    summ = r1.summary
    row = summ[(summ["optimizer"] == "adam") & (summ["attack"] == "none") & (summ["metric"] == "forget_nll")
               & (summ["eval_split"] == "all")].iloc[0]
    assert row["n"] == 2 and row["ci95_low"] <= row["mean"] <= row["ci95_high"]
    assert "diag_bin_crossing" in set(res["metric"])


def test_capped_run_is_reported(tmp_path, bench, tiny_model, capsys):
    """The pretrained model cannot forget in 2 steps: stop_reason "budget", listed and warned."""
    cfg = StudyConfig.from_dict(_DICT[0](n_entities=200, target=0.1, reference=False,
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
    pd.testing.assert_frame_equal(r.results.drop(columns=VOLATILE), r2.results.drop(columns=VOLATILE))
    # a changed setting invalidates the stored runs (config hash)
    r3 = _run(out, small_bench, small_model, seeds=[0, 1], target=0.05)
    assert len(r3.computed) == 3
    # without --resume an existing study is refused
    from unlearning.run import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        run_study(StudyConfig.from_dict(_DICT[0]()), out, progress=False, base=small_model,
                  benchmark=small_bench)


def test_cli_study_and_report(tmp_path, small_bench, small_model, capsys, monkeypatch):
    import yaml

    from analysis import cli

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
    from analysis.readme_tables import update_readme

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


def test_demo_config_is_valid_and_yaml_matches_embedded():
    from pathlib import Path

    from analysis.config import load_config
    from analysis.demo import DEMO, demo_config

    cfg = demo_config()
    cfg.validate()
    p = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert load_config(p).to_dict() == StudyConfig.from_dict(DEMO).to_dict()
    assert {o.name for o in cfg.optimizers} == {"zo-sgd", "adazo", "signsgd", "signadam", "adam", "soul",
                                                "hybrid", "adam+gru"}
    assert len(cfg.seeds) == 3 and set(cfg.objectives) == {"npo", "graddiff"}
