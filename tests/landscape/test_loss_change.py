"""loss_change: closed forms on quadratics (float64), the Taylor orders on a smooth
non-quadratic, rounding of the applied δ, bit-exact restore, the tidy table, bad inputs."""

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade._tables import validate_frame
from optigrade.landscape import Probe
from optigrade.landscape._examples import least_squares

from .conftest import MLP, lm_batches, mlp_batches, mlp_loss, tiny_llama

QUANTITIES = ["loss_change", "loss_change_first_order", "loss_change_second_order",
              "first_order_rel_error", "second_order_rel_error", "curvature_along_delta",
              "delta_norm", "delta_rounding_norm", "loss_change_resolution", "loss_at_checkpoint"]


def _closed_form(probe, H, delta):
    X, y = probe.batches[0]
    A = np.c_[X.numpy(), np.ones(len(y))]
    theta = probe.flat_params().numpy()
    r = A @ theta - y.numpy()
    g = A.T @ r
    L = lambda t: 0.5 * np.sum((A @ t - y.numpy()) ** 2)
    return L(theta + delta) - L(theta), g @ delta, delta @ H @ delta


@pytest.mark.parametrize("scale", [1e-4, 1e-1, 10.0])
@pytest.mark.parametrize("at_minimum", [False, True])
def test_float64_quadratic_is_exact(scale, at_minimum):
    probe, H = least_squares(at_minimum=at_minimum, seed=3)
    delta = scale * np.random.default_rng(0).standard_normal(probe.numel)
    dL, gd, dHd = _closed_form(probe, H, delta)
    r = ls.loss_change(probe, delta)
    tol = 1e-9 * max(1.0, abs(r.loss), abs(r.loss_perturbed))  # float64 loss arithmetic
    assert r.measured == pytest.approx(dL, rel=1e-9, abs=tol)
    assert r.first_order == pytest.approx(gd, rel=1e-9, abs=1e-12)
    assert r.curvature == pytest.approx(dHd, rel=1e-9)
    assert r.second_order == pytest.approx(r.measured, rel=1e-9, abs=tol)
    assert r.delta_norm == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert r.rounding_norm <= 1e-15 * max(1.0, 10 * scale)
    if at_minimum:  # g = 0: the change is all curvature, the first order misses all of it
        assert abs(r.first_order) < 1e-9 * max(1.0, abs(r.measured))
        assert r.first_order_rel_error == pytest.approx(1.0, abs=1e-6)
    if scale <= 1e-1:
        assert r.second_order_rel_error < 1e-6
    assert r.cost == ls.Cost(loss=2, grad=1, hvp=1)


def test_list_and_flat_inputs_agree():
    probe, _ = least_squares()
    flat = torch.tensor([0.3, -0.1, 0.2, 0.05], dtype=torch.float64)
    as_list = [flat[:3].view(1, 3), flat[3:]]
    a, b, c = (ls.loss_change(probe, x) for x in (flat, as_list, flat.numpy()))
    assert a.to_frame().value.tolist() == b.to_frame().value.tolist() == c.to_frame().value.tolist()


def test_orders_on_a_smooth_non_quadratic(mlp_case):
    """δ = t·v: the first-order error is O(t²), the second-order O(t³), and δᵀHδ is the dense
    float64 Hessian's vᵀHv·t²."""
    model, probe, H = mlp_case
    v = torch.randn(probe.numel, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e1, e2 = [], []
    for t in (1e-2, 1e-3):
        r = ls.loss_change(probe, t * v)
        assert r.curvature == pytest.approx(float(t * v @ H @ (t * v)), rel=1e-8)
        e1.append(abs(r.first_order - r.measured))
        e2.append(abs(r.second_order - r.measured))
    assert 50 < e1[0] / e1[1] < 200            # ≈ 10² (a t² remainder)
    assert 500 < e2[0] / e2[1] < 2000          # ≈ 10³ (a t³ remainder)
    assert e2[1] < e1[1] * 1e-2


def test_rounding_of_the_applied_delta_is_reported():
    """In float32 a δ far below the weights' ulp is lost: nothing moves, ΔL = 0, and the
    predictions use the applied δ (0), so they agree; the requested ‖δ‖ is kept."""
    model = MLP().float()
    probe = Probe(model, [(x.float(), y) for x, y in mlp_batches()], mlp_loss)
    delta = torch.full((probe.numel,), 1e-12)
    r = ls.loss_change(probe, delta)
    assert r.measured == 0 and r.delta_norm == 0 and r.first_order == 0
    assert r.second_order_rel_error == 0 and r.first_order_rel_error == 0
    assert r.rounding_norm == pytest.approx(float(delta.double().norm()), rel=1e-6)
    assert r.settings["requested_delta_norm"] == pytest.approx(r.rounding_norm, rel=1e-6)
    assert r.settings["dtype"] == "float32"
    assert r.resolution == pytest.approx(np.finfo(np.float32).eps * abs(r.loss))


def test_restores_every_parameter_bit_for_bit():
    model = tiny_llama(seed=3).float()      # fp32: an arithmetic restore would drift
    model.train()
    probe = Probe(model, lm_batches())
    before = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    delta = [0.37 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
             for i, p in enumerate(probe.params)]
    r = ls.loss_change(probe, delta)
    assert np.isfinite(r.measured) and r.delta_norm > 0
    for n, t in model.state_dict(keep_vars=True).items():
        assert torch.equal(before[n], t.detach()), n
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_restores_on_exceptions():
    probe, _ = least_squares()
    before = probe.flat_params()
    probe.hvp = lambda v: (_ for _ in ()).throw(RuntimeError("boom"))  # fails after the move
    with pytest.raises(RuntimeError, match="boom"):
        ls.loss_change(probe, np.ones(probe.numel))
    assert torch.equal(probe.flat_params(), before)


def test_to_frame_one_row_per_quantity():
    probe, _ = least_squares()
    r = ls.loss_change(probe, 0.1 * np.ones(probe.numel))
    df = validate_frame(r.to_frame(run_id="r1", subject="attacked:rtn-4bit", data="forget"))
    assert df.quantity.tolist() == QUANTITIES
    assert df.quantity.is_unique and (df["index"] == 0).all()
    assert set(df.subject) == {"attacked:rtn-4bit"} and set(df.data) == {"forget"}
    assert df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist() == [2, 1, 1]
    v = df.set_index("quantity").value
    assert v["loss_change"] == pytest.approx(r.measured)
    assert v["loss_change_second_order"] == pytest.approx(v["loss_change_first_order"]
                                                          + 0.5 * v["curvature_along_delta"])
    assert df.setting_dtype.iloc[0] == "float64" and repr(r).startswith("LossChange(loss=")


def test_zero_delta():
    probe, _ = least_squares()
    r = ls.loss_change(probe, np.zeros(probe.numel))
    assert (r.measured, r.first_order, r.curvature, r.delta_norm) == (0.0, 0.0, 0.0, 0.0)
    assert r.first_order_rel_error == 0.0 == r.second_order_rel_error


@pytest.mark.parametrize("delta, match", [
    (np.ones(3), "expected a flat vector of 4"),
    (np.array([1.0, np.nan, 0.0, 0.0]), "non-finite"),
    ([torch.ones(3)], "does not match"),
])
def test_bad_deltas_are_named(delta, match):
    probe, _ = least_squares()
    before = probe.flat_params()
    with pytest.raises(ValueError, match=match):
        ls.loss_change(probe, delta)
    assert torch.equal(probe.flat_params(), before) and probe.cost() == ls.Cost()
