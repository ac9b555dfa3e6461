"""The study's geometry stage (analysis.geometry): its rows reproduce the landscape functions
called directly on the saved checkpoint, the weights stay bit-identical, known directions give
their closed forms, and bad settings are refused before any work."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from optigrade import landscape as ls
from optigrade._files import model_fingerprint
from optigrade._validate import ConfigError
from optigrade.analysis.attacks import quantize_rtn
from optigrade.analysis.config import GeometrySpec, StudyConfig
from optigrade.analysis.deltas import load_delta
from optigrade.analysis.geometry import geometry_rows, noise_scale_vector, probe_batch, quant_step_vector
from optigrade.analysis.study import run_study

from .conftest import small_study_dict

FAST = {"k": 2, "lanczos_iter": 8, "trace_queries": 6, "sharpness_samples": 3, "slice_points": 5, "interp_points": 3,
        "radius_samples": 10, "uniform_samples": 3, "examples": 8}


def _one(df, **kw):
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (kw, len(sel))
    return sel.iloc[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_bench, small_model):
    out = tmp_path_factory.mktemp("geo")
    cfg = StudyConfig(**small_study_dict(geometry=FAST))
    res = run_study(cfg, out, progress=False, base=small_model, benchmark=small_bench)
    return cfg, res, out


def test_geometry_rows_in_the_study_table(study):
    cfg, res, _ = study
    df = res.results
    geo = df[df["quantity"].str.startswith("geo_")]
    for rid, subject in (("reference", "original"), ("graddiff__adam__s0", "unlearned")):
        g = geo[geo["run_id"] == rid]
        assert set(g["subject"]) == {subject}
        for q in ("geo_loss", "geo_grad_norm", "geo_lambda_max", "geo_trace", "geo_qnoise_sharpness",
                  "geo_adaptive_sharpness"):
            assert set(g.loc[g["quantity"] == q, "data"]) == {"forget", "retain"}, (rid, q)
        for a in ("rtn4", "rl-half", "noise"):
            ga = g[g["attack"] == a]
            assert {"geo_loss_change", "geo_loss_change_first", "geo_loss_change_second", "geo_slice_attack",
                    "geo_slice_random", "geo_attack_norm"} <= set(ga["quantity"]), a
            assert (ga["attack_kind"] != "none").all()
        lam = g[g["quantity"] == "geo_top_eigenvalue"]
        assert lam.groupby("data")["index"].apply(sorted).tolist() == [[0, 1], [0, 1]]
        assert set(lam["uncertainty_kind"]) == {"residual"}  # named for what it is (F5)
        assert set(g.loc[g["quantity"] == "geo_trace", "uncertainty_kind"]) == {"sem"}
        assert sorted(g.loc[(g["quantity"] == "geo_qnoise_sharpness") & (g["data"] == "forget"), "noise_scale"]) \
            == [0.25, 0.5, 1.0]
    u = geo[geo["run_id"] == "graddiff__adam__s0"]
    assert {"geo_interp", "geo_interp_barrier", "geo_cos_attack_update", "geo_certified_radius",
            "geo_radius_ceiling", "geo_radius_over_attack_norm"} <= set(u["quantity"])
    assert json.loads(u["setting_geometry"].iloc[0])["noise_bits"] == 4  # from the rtn4 attack
    # the interpolation starts at θ₀'s loss and ends at θ_u's, on the same batch
    ref_loss = _one(geo, run_id="reference", quantity="geo_loss", data="forget")["value"]
    interp = u[(u["quantity"] == "geo_interp") & (u["data"] == "forget")].sort_values("index")
    assert interp["value"].iloc[0] == pytest.approx(ref_loss, rel=1e-6)
    assert interp["value"].iloc[-1] == pytest.approx(_one(u, quantity="geo_loss", data="forget")["value"], rel=1e-6)
    # the slice along the attack passes through θ (t = 0) and θ + δ (t = 1)
    sl = u[(u["quantity"] == "geo_slice_attack") & (u["data"] == "forget") & (u["attack"] == "rtn4")]
    assert sl.loc[sl["alpha"] == 0.0, "value"].iloc[0] == pytest.approx(
        _one(u, quantity="geo_loss", data="forget")["value"], rel=1e-6)


def test_study_rows_reproduce_the_landscape_functions(study, small_bench, small_model):
    """Rebuild θ_u from the run's saved delta, call the landscape functions directly on the same
    batch: the study's numbers come back exactly."""
    cfg, res, out = study
    df = res.results
    u = df[(df["run_id"] == "graddiff__adam__s0") & df["quantity"].str.startswith("geo_")]
    model = load_delta(out / "runs" / "graddiff__adam__s0.delta.safetensors").apply(small_model)
    spec = cfg.geometry.resolved(cfg.attacks)
    batch = probe_batch(small_bench, "forget", spec.examples)
    probe = ls.Probe(model, [batch], keep_graph=True)
    ev = ls.top_eigenvalues(probe, k=spec.k, max_iter=spec.lanczos_iter, seed=spec.seed, return_vectors=False)
    got = u[(u["quantity"] == "geo_top_eigenvalue") & (u["data"] == "forget")].sort_values("index")
    np.testing.assert_allclose(got["value"], ev.eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(got["uncertainty"], ev.residuals, rtol=1e-6)
    tr = ls.hutchpp_trace(probe, spec.trace_queries, seed=spec.seed)
    row = _one(u, quantity="geo_trace", data="forget")
    assert row["value"] == pytest.approx(tr.estimate, rel=1e-9) and row["uncertainty"] == pytest.approx(tr.std_error)
    sig = noise_scale_vector(probe, 4)
    sh = ls.average_sharpness(probe, rho=1.0, n=spec.sharpness_samples, scale=sig, seed=spec.seed)
    row = _one(u, quantity="geo_qnoise_sharpness", data="forget", noise_scale=1.0)
    assert row["value"] == pytest.approx(sh.value, rel=1e-9, abs=1e-12)
    attacked = quantize_rtn(model, bits=4)
    delta = [dict(attacked.named_parameters())[n].detach() - p.detach() for n, p in probe.named_params]
    lc = ls.loss_change(probe, delta)
    row = _one(u, quantity="geo_loss_change", data="forget", attack="rtn4")
    assert row["value"] == pytest.approx(lc.measured, rel=1e-6, abs=1e-9)
    row = _one(u, quantity="geo_loss_change_second", data="forget", attack="rtn4")
    assert row["value"] == pytest.approx(lc.second_order, rel=1e-5, abs=1e-9)


def test_geometry_leaves_the_model_bit_identical_and_known_directions(small_bench, small_model):
    spec = GeometrySpec(**FAST).resolved([])
    base = small_model
    model = copy.deepcopy(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    before, base_before = model_fingerprint(model, full=True), model_fingerprint(base, full=True)
    # an "attack" that undoes the update exactly: δ = θ₀ − θ_u = −Δ
    rows = geometry_rows(spec, model, small_bench, base=base, attacked={"undo": base},
                         base_losses={"forget": 1.0, "retain": 1.0})
    assert model_fingerprint(model, full=True) == before and model_fingerprint(base, full=True) == base_before
    df = pd.DataFrame(rows)
    assert _one(df, quantity="geo_cos_attack_update", attack="undo")["value"] == pytest.approx(1.0, abs=1e-12)
    for data in ("forget", "retain"):
        l_u = _one(df, quantity="geo_loss", data=data, attack="none")["value"]
        l_0 = ls.Probe(base, [probe_batch(small_bench, data, spec.examples)]).loss()
        assert _one(df, quantity="geo_loss_change", data=data, attack="undo")["value"] == pytest.approx(
            l_0 - l_u, rel=1e-6, abs=1e-9)
        barrier = _one(df, quantity="geo_interp_barrier", data=data)["value"]
        assert barrier >= -1e-9  # α = 0 and α = 1 are on the line itself


def test_quant_step_vector_matches_rtn(small_model):
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[1, 2, 3]])}
    probe = ls.Probe(small_model, [batch])
    s = quant_step_vector(probe, bits=4)
    attacked = quantize_rtn(small_model, bits=4)
    flat = torch.cat([p.detach().double().reshape(-1) for p in probe.params])
    moved = torch.cat([dict(attacked.named_parameters())[n].detach().double().reshape(-1) for n in probe.names])
    err = (moved - flat).abs()
    assert bool((err <= s / 2 + 1e-7).all())  # RTN moves each weight at most half its step
    assert bool((err[s == 0] == 0).all())     # and leaves the unquantized ones alone
    assert int((s > 0).sum()) == sum(p.numel() for n, p in probe.named_params if n.endswith("proj.weight")
                                     or n == "lm_head.weight")


@pytest.mark.parametrize("geometry, match", [
    ({"quantities": ["hessian"]}, "geometry.quantities: unknown 'hessian'"),
    ({"data": ["general"]}, "geometry.data: unknown split 'general'"),
    ({"trace_queries": 10}, "multiple of 3"),
    ({"noise_scales": [0.5, -1]}, "noise_scales must be numbers > 0"),
    ({"k": 0}, "geometry: k"),
    ({"frobnicate": 1}, "frobnicate"),
])
def test_bad_geometry_settings_are_refused(geometry, match):
    with pytest.raises(ConfigError, match=match):
        StudyConfig(**small_study_dict(geometry=geometry))


def test_geometry_params_matching_nothing_refused_before_work(tmp_path, small_bench, small_model):
    cfg = StudyConfig(**small_study_dict(geometry={**FAST, "params": r"no\.such\.layer"}))
    with pytest.raises(ConfigError, match=r"geometry.params 'no\\\\.such\\\\.layer' matches no parameter"):
        run_study(cfg, tmp_path / "o", progress=False, base=small_model, benchmark=small_bench)
    assert not (tmp_path / "o" / "runs").exists()
