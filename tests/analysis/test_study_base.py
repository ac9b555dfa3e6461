"""A study's rows, run hash and study.json carry the base model's identity (weights sha256, torch
version, CPU capability), and ``--resume`` refuses to mix runs computed on different bases."""

import copy
import json

import pytest
import torch

from optigrade._files import model_fingerprint
from optigrade._validate import ConfigError
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.study import run_study


def _cfg(study_dict):
    return StudyConfig.from_dict(study_dict(attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}],
                                            diagnostics={"enabled": False}))


def test_rows_carry_the_base(tmp_path, study_dict, small_bench, small_model):
    r = run_study(_cfg(study_dict), tmp_path, progress=False, base=small_model, benchmark=small_bench)
    sha = model_fingerprint(small_model, full=True)
    for run, rows in r.results.groupby("run_id"):  # every run's row set, the reference included
        assert set(rows["base_sha256"]) == {sha}, run
        assert set(rows["torch_version"]) == {torch.__version__}, run
        assert set(rows["cpu_capability"]) == {torch.backends.cpu.get_cpu_capability()}, run
    meta = json.loads((tmp_path / "study.json").read_text())
    assert meta["base_sha256"] == sha
    assert meta["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_run_hash_covers_the_environment(study_dict):
    from optigrade.analysis.study import _ORIGINAL, _run_hash

    cfg = _cfg(study_dict)
    env = {"base_sha256": "a" * 64, "torch_version": "2.13.0+cpu", "cpu_capability": "AVX512"}
    h = _run_hash(cfg, "none", _ORIGINAL, 0, env)
    assert _run_hash(cfg, "none", _ORIGINAL, 0, dict(env)) == h
    for k, v in (("base_sha256", "b" * 64), ("torch_version", "2.14.0+cpu"), ("cpu_capability", "AVX2")):
        assert _run_hash(cfg, "none", _ORIGINAL, 0, {**env, k: v}) != h, k


def test_resume_refuses_another_base(tmp_path, study_dict, small_bench, small_model):
    cfg = _cfg(study_dict)
    run_study(cfg, tmp_path, progress=False, base=small_model, benchmark=small_bench)
    before = {p.name: p.read_bytes() for p in (tmp_path / "runs").iterdir()}
    other = copy.deepcopy(small_model)
    with torch.no_grad():
        other.lm_head.weight[0, 0] += 1e-3
    old, new = model_fingerprint(small_model, full=True), model_fingerprint(other, full=True)
    with pytest.raises(ConfigError) as e:
        run_study(cfg, tmp_path, resume=True, progress=False, base=other, benchmark=small_bench)
    assert old in str(e.value) and new in str(e.value) and "--overwrite" in str(e.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs").iterdir()} == before  # nothing touched
    # the same base resumes, reusing every run
    r = run_study(cfg, tmp_path, resume=True, progress=False, base=small_model, benchmark=small_bench)
    assert r.computed == [] and sorted(r.skipped) == ["graddiff__adam__s0", "reference"]
