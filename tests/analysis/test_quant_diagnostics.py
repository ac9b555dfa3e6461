"""Honest quantization diagnostics (SCIENCE.md §2): closed forms on tiny tensors, block sums,
the unsaturated GGUF level change next to the saturating bin crossing, and the study's rows."""

import copy
import math

import pandas as pd
import pytest
import torch

from optigrade._select import block_of, linear_weights
from optigrade._tables import validate_frame
from optigrade.analysis.attacks import quant_step
from optigrade.analysis.attacks.rtn import rtn_quantize
from optigrade.analysis.diagnostics import diagnose
from optigrade.analysis.quant_diagnostics import gguf_quant_diagnostics, quant_diagnose, rtn_quant_diagnostics


def _row(w):
    net = torch.nn.Sequential(torch.nn.Linear(len(w), 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([w]))
    return net


def _moved(net, fn):
    m = copy.deepcopy(net)
    with torch.no_grad():
        fn(m)
    return m


def test_rtn_closed_forms_on_lattice():
    """Codes 7, −4, 1, 0 at s = 1/8: erased moves survive 0, a whole step survives whole, the
    half-step ties go to the even code, opposite moves give cosine −1 only through E."""
    net = _row([0.875, -0.5, 0.125, 0.0])
    same = rtn_quant_diagnostics(net, copy.deepcopy(net), 4)
    assert same["level_change"] == 0.0 and same["base_export_error"] == 0.0
    assert math.isnan(same["surviving_update"]) and math.isnan(same["surviving_cos"])
    assert math.isnan(same["half_steps_mean"]) and math.isnan(same["half_steps_max"])
    r = rtn_quant_diagnostics(net, _moved(net, lambda m: m[0].weight[0, 1:3].add_(0.03)), 4)
    assert r["level_change"] == 0.0 and r["surviving_update"] == 0.0
    assert r["half_steps_max"] == pytest.approx(0.03 / (1 / 16), rel=1e-6)
    two = _moved(net, lambda m: (m[0].weight[0, 3].add_(0.25), m[0].weight[0, 2].add_(0.01)))
    r = rtn_quant_diagnostics(net, two, 4)
    assert r["level_change"] == 0.25  # code 0 → 2; the small move stays in its bin
    d2 = 0.25 ** 2 + 0.01 ** 2
    assert r["surviving_update"] == pytest.approx(0.25 / math.sqrt(d2), rel=1e-6)
    assert r["surviving_cos"] == pytest.approx(0.25 / math.sqrt(d2), rel=1e-6)  # E keeps the 0.25 part only
    assert r["half_steps_max"] == pytest.approx(4.0) and r["half_steps_mean"] == pytest.approx((4.0 + 0.16) / 2, rel=1e-5)
    assert r["level_change[other]"] == r["level_change"]


def test_rtn_off_lattice_base_reports_its_own_error():
    """A base off its lattice: E(θ_u) − θ_0 = E(θ_0) − θ_0 for an erased update, which the base
    error row shows; a full-step shift of every weight changes every code (as bin_crossing)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 4, bias=False))
    w0 = net[0].weight.detach().double()
    e0 = rtn_quantize(net[0].weight, 4).double()
    r = rtn_quant_diagnostics(net, _moved(net, lambda m: m[0].weight.mul_(1 + 1e-7)), 4)
    assert r["base_export_error"] == pytest.approx(float((e0 - w0).norm()), rel=1e-12)
    for bits, group, sym in [(4, None, True), (4, 8, True), (3, None, False), (8, 4, True)]:
        s, _ = quant_step(net[0].weight, bits, group, sym)
        shifted = _moved(net, lambda m: m[0].weight.view(s.shape[0], -1).add_(s.float()))
        r = rtn_quant_diagnostics(net, shifted, bits, group, sym)
        assert r["level_change"] == 1.0 and r["half_steps_mean"] == pytest.approx(2.0, rel=1e-5)


def test_blocks_sum_to_total(small_model):
    m = copy.deepcopy(small_model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.model.layers[0].mlp.down_proj.weight.add_(0.05 * torch.randn(m.model.layers[0].mlp.down_proj.weight.shape, generator=g))
        m.model.layers[0].self_attn.q_proj.weight.add_(0.002 * torch.randn(m.model.layers[0].self_attn.q_proj.weight.shape, generator=g))
    r = rtn_quant_diagnostics(small_model, m, 4, 16)
    n, d2 = {}, {}
    base = dict(linear_weights(small_model))
    for name, w in linear_weights(m):
        b = block_of(name)
        n[b] = n.get(b, 0) + w.numel()
        d2[b] = d2.get(b, 0.0) + float((w.detach().double() - base[name].detach().double()).pow(2).sum())
    assert set(n) == {k[len("level_change["):-1] for k in r if k.startswith("level_change[")}
    assert r["level_change"] == pytest.approx(sum(r[f"level_change[{b}]"] * n[b] for b in n) / sum(n.values()))
    moved = [b for b in n if d2[b] > 0]
    assert sorted(moved) == ["attention", "mlp"]
    # numerators add too; an unmoved block adds its own rounding error ‖E(θ_0) − θ_0‖² (θ_0 is off its lattice)
    num2 = sum((r[f"surviving_update[{b}]"] ** 2) * d2[b] for b in moved)
    num2 += sum(r[f"base_export_error[{b}]"] ** 2 for b in n if b not in moved)
    assert r["surviving_update"] ** 2 == pytest.approx(num2 / sum(d2.values()))
    assert r["base_export_error"] ** 2 == pytest.approx(sum(r[f"base_export_error[{b}]"] ** 2 for b in n))
    assert r["half_steps_max"] == max(r[f"half_steps_max[{b}]"] for b in moved)
    assert r["level_change[attention]"] < r["level_change[mlp]"]
    assert all(math.isnan(r[f"surviving_update[{b}]"]) for b in n if b not in moved)
    for b in set(n) - set(moved):  # unmoved blocks: no level change, only the base's own rounding error
        err2 = sum(float((rtn_quantize(w, 4, 16).double() - w.detach().double()).pow(2).sum())
                   for name, w in base.items() if block_of(name) == b)
        assert r[f"level_change[{b}]"] == 0.0 and r[f"base_export_error[{b}]"] == pytest.approx(math.sqrt(err2), rel=1e-12)


def test_existing_diagnostics_unchanged_and_models_untouched(small_model, snapshot):
    m = _moved(small_model, lambda x: x.model.layers[0].mlp.up_proj.weight.add_(0.01))
    before_b, before_m = snapshot(small_model), snapshot(m)
    d1 = diagnose(small_model, m, bits=(4, 8), run_id="r")
    q = validate_frame(quant_diagnose(small_model, m, bits=(4, 8), run_id="r"))
    pd.testing.assert_frame_equal(d1, diagnose(small_model, m, bits=(4, 8), run_id="r"))
    assert not set(q["quantity"]) & set(d1["quantity"])
    for snap, model in ((before_b, small_model), (before_m, m)):
        after = snapshot(model)
        assert all(torch.equal(snap[k], after[k]) for k in snap)
    assert set(q["setting_bits"]) == {4.0, 8.0} and set(q["setting_quantizer"]) == {"rtn"}
    assert (q["subject"] == "unlearned").all() and (q["data"] == "weights").all()
    units = dict(zip(q["quantity"], q["unit"]))
    assert units["diag_level_change"] == "fraction" and units["diag_surviving_update[mlp]"] == "ratio"
    assert units["diag_surviving_cos"] == "cosine" and units["diag_half_steps_max"] == "half-steps"
    v = q[(q["quantity"] == "diag_level_change") & (q["setting_bits"] == 4)]["value"].iloc[0]
    assert v == rtn_quant_diagnostics(small_model, m, 4)["level_change"]


def test_gguf_level_change_does_not_saturate():
    """Q4_1: nudging each block's max refits d and m, so the old bin crossing counts ~every value
    of the block; on θ_0's grid only the nudged weights could change level, and do not."""
    pytest.importorskip("gguf")
    from optigrade.analysis.attacks.gguf import bin_crossing_gguf, requantize_gguf

    torch.manual_seed(0)
    net = requantize_gguf(torch.nn.Sequential(torch.nn.Linear(64, 4, bias=False)), "Q4_1")  # on its lattice
    w = net[0].weight.detach()
    idx = w.view(-1, 32).argmax(1)

    def nudge(m):
        v = m[0].weight.view(-1, 32)
        v[torch.arange(v.shape[0]), idx] += 0.002  # ≪ d/2 (d ≈ range/15)
    m = _moved(net, nudge)
    old = bin_crossing_gguf(net, m, "Q4_1")
    r = gguf_quant_diagnostics(net, m, "Q4_1")
    assert old.fraction > 0.5
    assert r["level_change"] == 0.0 and r["base_export_error"] == 0.0
    assert r["half_steps_max"] < 1.0 and r["level_change[type Q4_1]"] == 0.0
    e = requantize_gguf(m, "Q4_1")[0].weight.detach().double()
    d = (m[0].weight.detach().double() - w.double())
    assert r["surviving_update"] == pytest.approx(float((e - w.double()).norm() / d.norm()), rel=1e-9)
    assert r["surviving_cos"] == pytest.approx(float(((e - w.double()) * d).sum() / ((e - w.double()).norm() * d.norm())), rel=1e-9)


def test_gguf_f32_tensors_survive_whole():
    pytest.importorskip("gguf")
    from optigrade.analysis.attacks.gguf import requantize_gguf

    torch.manual_seed(0)
    net = requantize_gguf(torch.nn.Sequential(torch.nn.Linear(32, 2, bias=False), torch.nn.LayerNorm(2)), "Q8_0")
    m = _moved(net, lambda x: x[1].weight.add_(0.3))
    r = gguf_quant_diagnostics(net, m, "Q8_0")
    assert r["surviving_update[type F32]"] == 1.0 and r["surviving_cos[type F32]"] == pytest.approx(1.0)
    assert math.isnan(r["level_change[type F32]"]) and math.isnan(r["half_steps_mean[type F32]"])
    assert r["base_export_error"] == 0.0  # the matrix sits on its lattice
    assert r["level_change"] == 0.0 and r["surviving_update"] == 1.0  # only the norm moved, kept exactly


def test_study_rows_hold_the_new_quantities(tmp_path, small_bench, small_model, study_dict):
    from optigrade.analysis.attacks.gguf import resolve_types
    from optigrade.analysis.config import StudyConfig
    from optigrade.analysis.deltas import load_delta
    from optigrade.analysis.study import run_study

    pytest.importorskip("gguf")
    base = copy.deepcopy(small_model)
    types = resolve_types(base, "Q4_1")
    types["model.embed_tokens.weight"] = "Q8_0"
    base.gguf_types = {"param_types": types}  # as a model loaded from a GGUF file
    d = study_dict(reference=False, attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}])
    r = run_study(StudyConfig.from_dict(d), tmp_path, progress=False, base=base, benchmark=small_bench)
    res = r.results
    q = res[res["quantity"].str.startswith(("diag_level_change", "diag_surviving", "diag_half_steps", "diag_base_export"))]
    assert set(q["setting_quantizer"]) == {"rtn", "gguf"} and (q["subject"] == "unlearned").all()
    assert (q["data"] == "weights").all() and "diag_gguf_bin_crossing" in set(res["quantity"])
    rid = q["run_id"].iloc[0]
    model = load_delta(tmp_path / "runs" / f"{rid}.delta.safetensors").apply(base)
    direct = quant_diagnose(base, model, bits=(4,), gguf_types="source")
    for quantizer in ("rtn", "gguf"):
        got = q[q["setting_quantizer"] == quantizer].set_index("quantity")["value"]
        want = direct[direct["setting_quantizer"] == quantizer].set_index("quantity")["value"]
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    assert "diag_level_change[type Q8_0]" in set(q["quantity"])
    off = study_dict(reference=False, attacks=[], diagnostics={"bits": [4], "quantization": False})
    r2 = run_study(StudyConfig.from_dict(off), tmp_path / "off", progress=False, base=small_model, benchmark=small_bench)
    assert not r2.results["quantity"].str.startswith("diag_level_change").any()
    assert "diag_bin_crossing" in set(r2.results["quantity"])
