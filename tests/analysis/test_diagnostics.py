"""Mechanism diagnostics: bin crossing is 0 for identical models and 1 for a full-step shift."""

import copy

import pytest
import torch

from optigrade._select import linear_weights
from optigrade._tables import validate_frame
from optigrade.analysis.attacks import quant_step
from optigrade.analysis.diagnostics import bin_crossing, diagnose, update_norms


@pytest.mark.parametrize("bits,group,sym", [(4, None, True), (8, None, True), (4, 16, True), (3, None, False)])
def test_bin_crossing_zero_and_one(small_model, bits, group, sym):
    same = copy.deepcopy(small_model)
    r = bin_crossing(small_model, same, bits, group, sym)
    assert r["bin_crossing"] == 0.0 and r["quant_update_norm"] == 0.0 and r["linear_update_norm"] == 0.0
    shifted = copy.deepcopy(small_model)
    with torch.no_grad():
        for _, w in linear_weights(shifted):
            s, _ = quant_step(w, bits, group, sym)
            rows = w.reshape(s.shape[0], -1)
            rows.add_(s.to(w.dtype))  # every weight moves by exactly one step of the original grid
    r = bin_crossing(small_model, shifted, bits, group, sym)
    assert r["bin_crossing"] == 1.0
    assert r["update_over_half_step"] == pytest.approx(2.0, rel=1e-5)


def test_update_norms_blocks(small_model):
    m = copy.deepcopy(small_model)
    with torch.no_grad():
        m.model.layers[0].mlp.down_proj.weight.add_(1.0)
    n = update_norms(small_model, m)
    w = m.model.layers[0].mlp.down_proj.weight
    assert n["update_norm"] == pytest.approx(w.numel() ** 0.5)
    assert n["update_norm[mlp]"] == pytest.approx(w.numel() ** 0.5)
    assert n["update_norm[attention]"] == 0.0 and n["update_norm[layer 0]"] == pytest.approx(w.numel() ** 0.5)
    d = validate_frame(diagnose(small_model, m, bits=(4, 8), run_id="r"))
    assert set(d["setting_bits"].dropna()) == {4.0, 8.0}
    assert set(d["data"]) == {"weights"} and set(d["subject"]) == {"unlearned"} and set(d["run_id"]) == {"r"}
    norms = d[d["setting_bits"].isna()].set_index("quantity")["value"].to_dict()
    assert norms == {f"diag_{k}": v for k, v in n.items()}
    bc = d[d["setting_bits"] == 4.0].set_index("quantity")["value"].to_dict()
    assert bc == {f"diag_{k}": v for k, v in bin_crossing(small_model, m, 4).items()}
