"""One config vocabulary: UnlearnConfig (CLI, library) and the study YAML share every field."""

import json

import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis.config import StudyConfig
from optigrade.unlearning.config import ObjectiveSpec, OptimizerSpec, Setup, UnlearnConfig

#: a valid non-default value for every UnlearnConfig field (a new field must be added here, and
#: must be reachable from the study YAML, or the test below fails)
NON_DEFAULT = {
    "model": "tiny", "benchmark": "synthetic", "benchmark_kwargs": {"n_entities": 40},
    "forget_fraction": 0.2, "target": 0.3, "metric": "forget_acc", "eval_every": 3, "batch_size": 8,
    "retain_floor": 0.5, "utility_floor_retain": 0.8, "utility_max_ppl_ratio": None, "device": "cpu", "dtype": "bfloat16",
    "objective": "npo", "objective_kwargs": {"beta": 0.2},
    "optimizer": "zo-sgd", "lr": 3e-4, "steps": 17, "params": "mlp", "optimizer_kwargs": {"q": 2},
    "seed": 5, "prefix_cache": True,
}


def test_every_unlearning_field_is_settable_from_the_study_yaml():
    missing = sorted(set(UnlearnConfig.model_fields) - set(NON_DEFAULT))
    assert not missing, f"add a non-default value for {missing} to NON_DEFAULT"
    v = NON_DEFAULT
    study = {k: v[k] for k in Setup.model_fields}
    study.update(seeds=[v["seed"]],
                 objectives=[{"name": v["objective"], **v["objective_kwargs"]}],
                 optimizers=[{"name": v["optimizer"], "lr": v["lr"], "steps": v["steps"], "params": v["params"],
                              "optimizer_kwargs": v["optimizer_kwargs"], "prefix_cache": v["prefix_cache"]}])
    cfg = StudyConfig(**study)
    run = cfg.unlearn_config(cfg.objectives[0], cfg.optimizers[0], cfg.seeds[0])
    for k, want in v.items():
        assert getattr(run, k) == want, k
    assert run == UnlearnConfig(**v)


def test_per_optimizer_overrides_replace_the_study_value():
    cfg = StudyConfig(eval_every=5, retain_floor=0.5, optimizers=[
        {"name": "adam", "lr": 1e-3, "steps": 20, "eval_every": 2, "retain_floor": 0.9, "batch_size": 4},
        {"name": "sgd", "lr": 1e-3, "steps": 20}])
    a = cfg.unlearn_config("npo", cfg.optimizers[0], 0)
    b = cfg.unlearn_config("npo", cfg.optimizers[1], 0)
    assert (a.eval_every, a.retain_floor, a.batch_size) == (2, 0.9, 4)
    assert (b.eval_every, b.retain_floor, b.batch_size) == (5, 0.5, 16)


def test_one_default_step_cap():
    assert OptimizerSpec(name="adam", lr=1e-3).steps == UnlearnConfig().steps


def test_objective_settings_in_yaml_and_library():
    cfg = StudyConfig(objectives=["graddiff", {"name": "npo", "beta": 0.1}],
                      optimizers=[{"name": "adam", "lr": 1e-3}])
    assert [o.key for o in cfg.objectives] == ["graddiff", "npo(beta=0.1)"]
    assert cfg.to_dict()["objectives"] == ["graddiff", {"name": "npo", "beta": 0.1}]
    assert StudyConfig(**cfg.to_dict()) == cfg  # the YAML form round-trips
    with pytest.raises(ConfigError, match="betta.*beta"):
        StudyConfig(objectives=[{"name": "npo", "betta": 0.1}], optimizers=[{"name": "adam", "lr": 1e-3}])
    with pytest.raises(ConfigError, match="betta.*beta"):
        UnlearnConfig(objective="npo", objective_kwargs={"betta": 0.1})
    assert ObjectiveSpec.coerce({"name": "npo", "kwargs": {"beta": 0.3}}).kwargs == {"beta": 0.3}


BAD = [
    ({"lr": 0}, "lr must be > 0, got 0"),
    ({"lr": float("nan")}, "lr must be"),
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"steps": 0}, "steps must be a positive integer, got 0"),
    ({"steps": 2.5}, "steps must be a positive integer, got 2.5"),
    ({"eval_every": 0}, "eval_every must be a positive integer, got 0"),
    ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
    ({"forget_fraction": 0}, "forget_fraction must be in (0, 1), got 0"),
    ({"target": 2.0}, "target=2.0 is unreachable"),
    ({"retain_floor": 1.5}, "retain_floor must be in [0, 1], got 1.5"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"device": "tpu"}, "device must be one of"),
    ({"dtype": "int8"}, "dtype must be 'float32', 'bfloat16' or 'float16', got 'int8'"),
    ({"params": "mlp[("}, "not a valid regular expression"),
    ({"optimizer": "adamz"}, "unknown optimizer 'adamz'"),
    ({"objective": "forget-everything"}, "unknown objective 'forget-everything'"),
    ({"optimizer": "zo-sgd", "optimizer_kwargs": {"mu": -1}}, "mu must be > 0"),
    ({"benchmark": "mmlu"}, "unknown benchmark 'mmlu'"),
    ({"benchmark_kwargs": {"n_forgett": 8}}, "['n_forgett'] not accepted by benchmark 'synthetic'"),
    ({"benchmark_kwargs": [8]}, "benchmark_kwargs must be a mapping"),
    ({"model": "/no/such/ckpt"}, "no such path"),
    ({"colour": "red"}, "unknown setting 'colour'; allowed: ["),
]


@pytest.mark.parametrize("over,msg", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_unlearn_config_names_field_value_and_fix(over, msg):
    with pytest.raises(ConfigError) as e:
        UnlearnConfig(**over)
    assert msg in str(e.value)


def test_assignment_is_validated_too():
    cfg = UnlearnConfig()
    with pytest.raises(ConfigError, match="lr must be > 0"):
        cfg.lr = -1.0
    assert cfg.lr == 1e-3


def test_legacy_n_entities_key_is_translated_with_a_warning():
    with pytest.warns(DeprecationWarning, match="benchmark_kwargs"):
        cfg = StudyConfig(n_entities=40, optimizers=[{"name": "adam", "lr": 1e-3}])
    assert cfg.benchmark_kwargs == {"n_entities": 40}


# ----------------------------------------------------------------------------- CLI
def _cli(args, capsys):
    from optigrade.cli import main

    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_has_one_flag_per_config_field():
    from optigrade.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "cmd").choices["unlearn"]
    dests = {a.dest for a in sub._actions}
    assert set(UnlearnConfig.model_fields) <= dests


def test_cli_objective_arg_reaches_the_objective(tmp_path, pretrained, capsys):
    out = tmp_path / "ckpt"
    code, stdout, err = _cli(["unlearn", "--objective", "npo", "--objective-arg", "beta=0.25", "--steps", "2",
                              "--eval-every", "2", "--target", "-1", "--device", "cpu", "--dtype", "float32",
                              "--out", str(out)], capsys)
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["objective_kwargs"] == {"beta": 0.25}
    assert man["objective"]["beta"] == 0.25
    assert man["config"]["device"] == "cpu" and man["config"]["dtype"] == "float32"


@pytest.mark.parametrize("extra,words", [
    (["--objective", "npo", "--objective-arg", "betta=0.1"], ["betta", "beta"]),
    (["--objective-arg", "beta"], ["KEY=VALUE"]),
    (["--device", "cuda"], ["cuda", "--device cpu"]),
])
def test_cli_refuses_before_work(extra, words, tmp_path, capsys, monkeypatch):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here: --device cuda is valid")
    import optigrade.unlearning.run as run_mod

    def no_work(*a, **k):
        raise AssertionError("work started before validation")

    monkeypatch.setattr(run_mod, "build_model", no_work)
    monkeypatch.setattr(run_mod, "build_benchmark", no_work)
    code, _, err = _cli(["unlearn", "--out", str(tmp_path / "o")] + extra, capsys)
    assert code == 2, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "o").exists()
