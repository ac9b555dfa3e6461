"""The field's benchmarks from the command line and YAML (issue 16): --benchmark / --data-dir /
--bench-arg on unlearn, evaluate and study; a `benchmark:` section in a study YAML (its data_dir
relative to the file); bad layouts refused before any model is loaded; a study's rows carry the
benchmark's published metrics."""

import json
import math

import pandas as pd
import pytest
import yaml

from optigrade.analysis.config import load_config
from optigrade.cli import main
from optigrade.unlearning.benchmarks.tofu import TOFU, write_layout_from_facts

from .test_tofu import per_topic_sample
from ._tiny_ckpt import tiny_checkpoint


@pytest.fixture(scope="module")
def tofu_ckpt(tmp_path_factory):
    """A TOFU layout and a tiny model checkpoint with the layout's word-level tokenizer."""

    root = tmp_path_factory.mktemp("tofu-cli")
    d = write_layout_from_facts(root / "tofu", per_topic_sample(4), seed=0)
    bench = TOFU(d)
    tiny_checkpoint(bench, root / "base")
    return root, d


def _no_model(monkeypatch):
    import optigrade.unlearning.models as models
    import optigrade.unlearning.run as run

    def fail(*a, **k):
        raise AssertionError("a model was loaded before the layout was checked")

    monkeypatch.setattr(models, "load", fail)
    monkeypatch.setattr(run, "load", fail)


def test_bad_layout_refused_by_the_cli_before_any_model(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    (tmp_path / "empty").mkdir()
    assert main(["unlearn", "--benchmark", "tofu", "--data-dir", str(tmp_path / "empty"), "--model", "smollm2",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "forget10" in err and "expected" in err and not (tmp_path / "o").exists()
    assert main(["unlearn", "--benchmark", "tofu", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["unlearn", "--benchmark", "tofu", "--data-dir", str(tmp_path / "empty"), "--bench-arg", "split=forget20",
                 "--out", str(tmp_path / "o")]) == 2
    assert "forget20" in capsys.readouterr().err


def test_unlearn_then_evaluate_with_data_dir(tofu_ckpt, tmp_path, capsys):
    root, d = tofu_ckpt
    out = tmp_path / "ck"
    assert main(["unlearn", "--benchmark", "tofu", "--data-dir", str(d), "--model", str(root / "base"),
                 "--objective", "npo", "--steps", "2", "--eval-every", "2", "--target", "-1", "--out", str(out)]) == 0
    capsys.readouterr()
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["benchmark_kwargs"]["data_dir"] == str(d.resolve())
    assert main(["evaluate", str(out)]) == 0  # the manifest's benchmark and data directory
    m = json.loads(capsys.readouterr().out)
    assert {"forget_acc", "forget_prob", "forget_rouge", "model_utility"} <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    # the layout moved: --data-dir points evaluate at the new place
    moved = tmp_path / "moved"
    d.rename(moved)
    try:
        assert main(["evaluate", str(out)]) == 2
        assert "not a directory" in capsys.readouterr().err
        assert main(["evaluate", str(out), "--data-dir", str(moved)]) == 0
        assert json.loads(capsys.readouterr().out)["forget_prob"] == pytest.approx(m["forget_prob"], rel=1e-6)
    finally:
        moved.rename(d)


def test_yaml_benchmark_section_and_flags(tofu_ckpt, tmp_path):
    root, d = tofu_ckpt
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    (cfgdir / "data").symlink_to(d)
    body = {"name": "t", "model": str(root / "base"), "seeds": [0], "objectives": ["npo"], "target": 0.0,
            "optimizers": [{"name": "adam", "lr": 1e-3, "steps": 2}], "eval_every": 2,
            "benchmark": {"name": "tofu", "data_dir": "data", "split": "forget05"}}
    (cfgdir / "s.yaml").write_text(yaml.safe_dump(body))
    c = load_config(cfgdir / "s.yaml")  # data_dir relative to the YAML file
    assert c.benchmark == "tofu" and c.benchmark_kwargs == {"data_dir": str((cfgdir / "data").resolve()),
                                                            "split": "forget05"}
    (cfgdir / "nodir.yaml").write_text(yaml.safe_dump({**body, "benchmark": {"name": "tofu"}}))
    from optigrade._validate import ConfigError

    with pytest.raises(ConfigError, match="no data_dir"):
        load_config(cfgdir / "nodir.yaml")
    c = load_config(cfgdir / "nodir.yaml", benchmark_kwargs={"data_dir": str(d), "split": "forget01"})
    assert c.benchmark_kwargs == {"data_dir": str(d), "split": "forget01"}
    with pytest.raises(ConfigError, match="both"):
        load_config_from({**body, "benchmark_kwargs": {"split": "forget10"}}, cfgdir)


def load_config_from(body, cfgdir):
    (cfgdir / "x.yaml").write_text(yaml.safe_dump(body))
    return load_config(cfgdir / "x.yaml")


def test_study_rows_carry_the_published_metrics(tofu_ckpt, tmp_path):
    root, d = tofu_ckpt
    body = {"name": "t", "model": str(root / "base"), "seeds": [0], "objectives": ["npo"], "target": 0.0,
            "optimizers": [{"name": "adam", "lr": 1e-3, "steps": 2}], "eval_every": 2,
            "benchmark": {"name": "tofu", "max_new_tokens": 4}, "benchmark_metrics": {"limit": 3},
            "attacks": [{"kind": "quantize", "label": "rtn4", "bits": 4}], "eval_splits": ["forget", "retain"]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(body))
    assert main(["study", str(tmp_path / "s.yaml"), "--data-dir", str(d), "--out", str(tmp_path / "st")]) == 0
    r = pd.read_parquet(tmp_path / "st" / "results.parquet")
    fp = r[(r["quantity"] == "model_utility") & (r["data"] == "all")]
    # the original and the unlearned model, each before and after the attack
    assert set(fp["subject"]) == {"original", "unlearned", "attacked:rtn4"} and len(fp) == 4
    assert fp["value"].between(0, 1).all()
