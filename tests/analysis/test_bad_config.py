"""Every bad study config is refused before any run starts, naming the value and the fix."""

import pytest

from optigrade.analysis.config import StudyConfig
from optigrade.analysis.study import run_study
from optigrade.unlearning.run import ConfigError
from .conftest import small_study_dict

OPT = {"name": "adam", "lr": 1.0e-3, "steps": 10}
BAD = [
    # (overrides, words the message must contain)
    ({"optimizers": []}, ["optimizers is empty", "name: adam"]),
    ({"optimizers": [{**OPT, "name": "adamm"}]}, ["'adamm'", "choose from"]),
    ({"objectives": ["npoo"]}, ["'npoo'", "choose from"]),
    ({"attacks": [{"kind": "prune"}]}, ["'prune'", "quantize"]),
    ({"attacks": [{"kind": "quantize", "bits": 1}]}, ["bits=1", "2..8"]),
    ({"attacks": [{"kind": "quantize", "bits": 16}]}, ["bits=16", "2..8"]),
    ({"attacks": [{"kind": "quantize", "bits": 4, "group_size": 24}]}, ["group_size=24", "does not divide", "row length"]),
    ({"diagnostics": {"bits": [4], "group_size": 24}}, ["group_size=24", "divide"]),
    ({"diagnostics": {"bits": [9]}}, ["bits=9", "2..8"]),
    ({"attacks": [{"kind": "quantize", "bitz": 4}]}, ["'bitz'", "allowed"]),
    ({"attacks": [{"kind": "relearn", "protocol": "thirds"}]}, ["'thirds'", "half"]),
    ({"attacks": [{"kind": "relearn", "lr": -1.0}]}, ["lr must be > 0", "-1.0"]),
    ({"attacks": [{"kind": "noise", "sigma": -0.1}]}, ["sigma", "-0.1"]),
    ({"attacks": [{"kind": "noise", "label": "x", "sigma": 0.1}, {"kind": "noise", "label": "x", "sigma": 0.2}]},
     ["'x'", "distinct"]),
    ({"attacks": [{"kind": "noise"}]}, ["missing required", "sigma"]),
    ({"target": -0.1}, ["target=-0.1", "unreachable", "target: 0.1"]),
    ({"target": 1.5}, ["target=1.5", "unreachable"]),
    ({"optimizers": [{**OPT, "steps": 3}], "eval_every": 5}, ["steps=3 < eval_every=5", "raise steps"]),
    ({"optimizers": [{**OPT, "steps": 20, "eval_every": 50}]}, ["steps=20 < eval_every=50"]),
    ({"optimizers": [{**OPT, "lr": 0}]}, ["lr must be", "0"]),
    ({"optimizers": [{**OPT, "steps": 0}]}, ["steps", "positive integer", "0"]),
    ({"optimizers": [{**OPT, "optimizer_kwargs": {"mu": 1e-3}}]}, ["optimizers[0] (adam)", "mu"]),
    ({"optimizers": [{"name": "zo-sgd", "lr": 1e-3, "optimizer_kwargs": {"q": 0}}]}, ["q", "0"]),
    ({"optimizers": [OPT, OPT]}, ["'adam' used twice", "label"]),
    ({"optimizers": [{"name": "adam"}]}, ["needs at least name and lr"]),
    ({"optimizers": [{**OPT, "momentum": 0.9}]}, ["'momentum'", "allowed"]),
    ({"seeds": []}, ["seeds", "e.g. seeds: [0, 1, 2]"]),
    ({"seeds": [0, 0]}, ["duplicates"]),
    ({"seeds": "0"}, ["seeds must be a list"]),
    ({"colour": "red"}, ["'colour'", "allowed"]),
    # real-model settings (configs/smollm2.yaml)
    ({"optimizers": [{**OPT, "params": "no_such_block"}]}, ["'no_such_block'", "matches no parameter"]),
    ({"optimizers": [{**OPT, "params": "mlp[("}]}, ["'mlp[('", "regular expression"]),
    ({"optimizers": [{**OPT, "retain_floor": 1.5}]}, ["retain_floor", "1.5"]),
    ({"retain_floor": -0.2}, ["retain_floor", "-0.2", "0.75"]),
    ({"benchmark_kwargs": {"n_forgett": 8}}, ["'n_forgett'", "allowed"]),
    ({"benchmark_kwargs": [8]}, ["benchmark_kwargs must be a mapping"]),
    ({"threads": 0}, ["threads", "0"]),
    ({"attacks": [{"kind": "gguf", "types": "Q4_K"}]}, ["'Q4_K'", "Q4_1", "K-quants"]),
    ({"attacks": [{"kind": "gguf", "types": {"model.embed_tokens.weight": "Q3"}}]}, ["'Q3'", "Q8_0"]),
    ({"attacks": [{"kind": "gguf"}]}, ["types 'source'", "GGUF", "types: Q4_1"]),
]


@pytest.mark.parametrize("over,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config_refused_before_any_run(over, words, study_dict, tmp_path, small_bench, small_model, monkeypatch):
    import optigrade.analysis.study as st

    def boom(*a, **k):
        raise AssertionError("a run started before validation finished")

    monkeypatch.setattr(st, "_one_run", boom)
    monkeypatch.setattr(st, "_reference_rows", boom)
    with pytest.raises(ConfigError) as e:
        cfg = StudyConfig.from_dict(study_dict(**over))
        run_study(cfg, tmp_path / "o", progress=False, base=small_model, benchmark=small_bench)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "o" / "runs").exists()


def test_geometry_that_cannot_fit_is_refused_before_work(monkeypatch, small_model):
    """The geometry defaults on every weight of a large model asked for more memory than the
    machine had (killed mid-study on SmolLM2); validate() now refuses with the estimate and the fix."""
    from optigrade.analysis import config as C

    cfg = C.StudyConfig(**small_study_dict())
    n = sum(p.numel() for p in small_model.parameters())
    need = cfg.geometry.memory_bytes(n, sum(p.numel() * p.element_size() for p in small_model.parameters()))
    monkeypatch.setattr(C, "available_memory_bytes", lambda: int(need))  # need > 80% of it
    with pytest.raises(ConfigError, match=r"geometry needs ~[\d.]+ MB .*\(geometry\.params"):
        cfg.validate(model=small_model)
    monkeypatch.setattr(C, "available_memory_bytes", lambda: int(2 * need))
    cfg.validate(model=small_model)
    monkeypatch.setattr(C, "available_memory_bytes", lambda: None)  # unknown: not checked
    cfg.validate(model=small_model)
    off = C.StudyConfig(**small_study_dict(geometry={"enabled": False}))
    monkeypatch.setattr(C, "available_memory_bytes", lambda: 1)
    off.validate(model=small_model)
