"""Run deltas (analysis.deltas): bit-exact round trip, only moved tensors, base refused by hash,
and the study's one delta per run, recomputed on --resume when missing or damaged."""

import copy
import re

import pandas as pd
import pytest
import torch

from optigrade._files import file_mode, model_fingerprint
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.deltas import DeltaError, load_delta, moved_parameters, save_delta
from optigrade.analysis.study import EvalBudget, run_study
from optigrade.analysis.study import VOLATILE_COLUMNS

VOLATILE = VOLATILE_COLUMNS


def _sha(model):
    return model_fingerprint(model, full=True)


def _bits_equal(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return list(pa) == list(pb) and all(
        pa[n].dtype == pb[n].dtype and pa[n].shape == pb[n].shape
        and torch.equal(pa[n].detach().reshape(-1).view(torch.uint8), pb[n].detach().reshape(-1).view(torch.uint8))
        for n in pa)


def _adam_steps(model, names, steps=3, lr=1e-2):
    """A few Adam steps on a quadratic of the named parameters only (others frozen)."""
    params = [p for n, p in model.named_parameters() if n in names]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params)
        loss.backward()
        opt.step()
    return model


@pytest.fixture
def moved(small_model):
    names = [n for n, _ in small_model.named_parameters() if re.search(r"mlp\.(up|down)_proj", n)]
    assert names
    return names, _adam_steps(copy.deepcopy(small_model), names)


def test_round_trip_is_bit_exact_and_stores_only_moved(tmp_path, small_model, moved):
    names, model = moved
    base_before = _sha(small_model)
    path = tmp_path / "r.delta.safetensors"
    info = save_delta(small_model, model, path, base_before, run_id="r", config_hash="abc")
    assert info["names"] == sorted(names) and info["n_tensors_moved"] == len(names)
    assert info["n_tensors_total"] == len(list(small_model.named_parameters()))
    assert info["n_elements_moved"] == sum(p.numel() for n, p in model.named_parameters() if n in names)
    assert 0 < info["n_elements_changed"] <= info["n_elements_moved"]
    assert path.stat().st_mode & 0o777 == file_mode()  # not mkstemp's / safetensors' 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.delta.safetensors"]  # no temporary left

    d = load_delta(path)
    assert sorted(d.tensors) == sorted(names) == d.meta["names"]
    assert d.base_sha256 == base_before and d.run_id == "r" and d.meta["config_hash"] == "abc"
    rebuilt = d.apply(small_model)
    assert _bits_equal(rebuilt, model) and _sha(rebuilt) == _sha(model)
    assert _sha(small_model) == base_before  # apply copies; the base is untouched
    # Δ in the parameters' dtype is the once-rounded difference; float64 gives the exact one
    w0, wu = dict(small_model.named_parameters()), dict(model.named_parameters())
    delta = d.delta(small_model)
    exact = d.delta(small_model, dtype=torch.float64)
    assert sorted(delta) == sorted(names)
    for n in names:
        assert delta[n].dtype == wu[n].dtype
        assert torch.equal(delta[n], (wu[n] - w0[n]).detach())
        assert torch.equal(exact[n], wu[n].detach().double() - w0[n].detach().double())


def test_values_not_differences_restore_every_bit(tmp_path):
    """θ₀ + (θ_u − θ₀) in fp32 is not always θ_u; the stored values are."""
    base = torch.nn.Linear(1, 3, bias=False)
    model = copy.deepcopy(base)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0], [1e-8], [3.0]]))
        model.weight.copy_(torch.tensor([[1.0 + 2 ** -23], [1.0], [-7e-9]]))
    w0, wu = base.weight.detach(), model.weight.detach()
    assert not torch.equal(w0 + (wu - w0), wu)  # the naive Δ would lose bits
    save_delta(base, model, tmp_path / "x.delta.safetensors", _sha(base))
    assert _bits_equal(load_delta(tmp_path / "x.delta.safetensors").apply(base), model)


def test_nothing_moved_and_bitwise_comparison(tmp_path, small_model):
    info = save_delta(small_model, copy.deepcopy(small_model), tmp_path / "n.delta.safetensors", _sha(small_model))
    assert info["names"] == [] and info["n_tensors_moved"] == 0
    d = load_delta(tmp_path / "n.delta.safetensors")
    assert d.tensors == {} and _bits_equal(d.apply(small_model), small_model)
    a = torch.nn.Linear(2, 1)
    b = copy.deepcopy(a)
    with torch.no_grad():
        a.bias.fill_(0.0)
        b.bias.fill_(-0.0)  # equal as numbers, different bits: moved
    assert moved_parameters(a, b) == {"bias": 1}
    with pytest.raises(DeltaError, match="different parameters"):
        moved_parameters(a, torch.nn.Linear(2, 1, bias=False))


def test_wrong_base_is_refused_naming_both_hashes(tmp_path, small_model, moved):
    _, model = moved
    path = tmp_path / "r.delta.safetensors"
    save_delta(small_model, model, path, _sha(small_model), run_id="r")
    d = load_delta(path)
    other = copy.deepcopy(small_model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    for call in (d.apply, d.delta):
        with pytest.raises(DeltaError) as e:
            call(other)
        assert _sha(small_model) in str(e.value) and _sha(other) in str(e.value)


def test_damaged_file_is_refused(tmp_path, small_model, moved):
    _, model = moved
    path = tmp_path / "r.delta.safetensors"
    save_delta(small_model, model, path, _sha(small_model))
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # a flipped bit in the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(DeltaError, match="damaged"):
        load_delta(path)
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    with pytest.raises(DeltaError, match="not a readable delta file"):
        load_delta(path)
    with pytest.raises(FileNotFoundError):
        load_delta(tmp_path / "missing.delta.safetensors")


# ----------------------------------------------------------------------------- in the study
def _study(out, bench, model, study_dict, **over):
    cfg = StudyConfig.from_dict(study_dict(**over))
    return run_study(cfg, out, progress=False, base=model, benchmark=bench, resume=True)


def test_study_writes_one_delta_per_run_and_resume_recomputes_missing(tmp_path, small_bench, small_model,
                                                                      study_dict):
    out = tmp_path / "s"
    attacks = [{"kind": "quantize", "label": "rtn4", "bits": 4}]
    r = _study(out, small_bench, small_model, study_dict, seeds=[0, 1], attacks=attacks)
    runs = ["graddiff__adam__s0", "graddiff__adam__s1"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["reference.parquet"] + [f"{x}.parquet" for x in runs] + [f"{x}.delta.safetensors" for x in runs])
    res = r.results
    assert set(res.loc[res["run_id"] == "reference", "delta_file"]) == {""}
    for rid in runs:
        rows = res[res["run_id"] == rid]
        assert set(rows["delta_file"]) == {f"runs/{rid}.delta.safetensors"}
        d = load_delta(out / rows["delta_file"].iloc[0])
        assert d.run_id == rid and d.base_sha256 == rows["base_sha256"].iloc[0]
        assert d.meta["config_hash"] == rows["config_hash"].iloc[0]
        assert d.tensors and d.meta["n_tensors_moved"] == len(d.tensors)
        # θ_u restored from the delta scores exactly what the study measured before any attack
        cfg = StudyConfig.from_dict(study_dict())
        m = EvalBudget(small_bench, cfg.eval_retain, cfg.eval_general, cfg.eval_splits).evaluate(
            d.apply(small_model))
        none = rows[(rows["subject"] == "unlearned") & (rows["attack"] == "none") & (rows["data"] == "all")]
        assert dict(zip(none["quantity"], none["value"])) == {k: float(v) for k, v in m.items()}

    # a deleted delta: that run is recomputed, the other reused; the numbers are the same
    (out / "runs" / "graddiff__adam__s1.delta.safetensors").unlink()
    r2 = _study(out, small_bench, small_model, study_dict, seeds=[0, 1], attacks=attacks)
    assert r2.computed == ["graddiff__adam__s1"] and sorted(r2.skipped) == ["graddiff__adam__s0", "reference"]
    pd.testing.assert_frame_equal(r.results.drop(columns=VOLATILE, errors="ignore"), r2.results.drop(columns=VOLATILE, errors="ignore"))
    again = load_delta(out / "runs" / "graddiff__adam__s1.delta.safetensors")
    first = {n: t.clone() for n, t in again.tensors.items()}

    # a damaged delta: recomputed too, to the same bits
    p = out / "runs" / "graddiff__adam__s0.delta.safetensors"
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0x01
    p.write_bytes(bytes(raw))
    r3 = _study(out, small_bench, small_model, study_dict, seeds=[0, 1], attacks=attacks)
    assert r3.computed == ["graddiff__adam__s0"]
    load_delta(p)
    assert all(torch.equal(first[n], t) for n, t in
               load_delta(out / "runs" / "graddiff__adam__s1.delta.safetensors").tensors.items())

    # --overwrite removes the study's delta files with its parquet files
    cfg = StudyConfig.from_dict(study_dict(seeds=[1], attacks=attacks, reference=False))
    run_study(cfg, out, progress=False, base=small_model, benchmark=small_bench, overwrite=True)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["graddiff__adam__s1.delta.safetensors",
                                                                "graddiff__adam__s1.parquet"]


def test_study_rows_unchanged_but_for_delta_file(tmp_path, small_bench, small_model, study_dict, monkeypatch):
    """Saving the delta changes no number: the rows equal a run without it, plus the column."""
    from optigrade.analysis import study as st

    attacks = [{"kind": "quantize", "label": "rtn4", "bits": 4}]
    with_delta = _study(tmp_path / "a", small_bench, small_model, study_dict, attacks=attacks, reference=False)
    real = st._one_run
    monkeypatch.setattr(st, "_one_run", lambda *a, **k: real(*a, **{**k, "delta_path": None}))
    without = _study(tmp_path / "b", small_bench, small_model, study_dict, attacks=attacks, reference=False)
    assert not list((tmp_path / "b" / "runs").glob("*.safetensors"))
    a, b = (r.results.drop(columns=VOLATILE + ["delta_file"], errors="ignore") for r in (with_delta, without))
    pd.testing.assert_frame_equal(a, b)


def test_params_restricted_run_stores_only_its_subset(tmp_path, small_bench, small_model, study_dict):
    out = tmp_path / "p"
    opt = {"name": "adam", "lr": 1.0e-3, "steps": 2, "params": r"mlp\.down_proj"}
    _study(out, small_bench, small_model, study_dict, optimizers=[opt], reference=False,
           attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}])
    (f,) = (out / "runs").glob("*.delta.safetensors")
    d = load_delta(f)
    subset = [n for n, _ in small_model.named_parameters() if re.search(r"mlp\.down_proj", n)]
    assert d.names and set(d.names) <= set(subset)
    assert d.meta["n_tensors_total"] == len(list(small_model.named_parameters()))
