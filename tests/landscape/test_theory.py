"""Theory checks (SPEC §3.1) against closed forms: quadratics (every statement exact) and
L(θ) = Σ cos θ_i, where smoothing has a closed form too: L_μ = e^{−μ²/2}·L, ∇L_μ = e^{−μ²/2}∇L,
tr H = −L, so L_μ − L = (e^{−μ²/2} − 1)·L and the (μ²/2)·tr H prediction is off by O(μ⁴)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from optigrade import landscape as ls
from optigrade._tables import validate_frame
from optigrade.landscape import Probe, theory

from .conftest import lm_batches, tiny_llama


class Quadratic(torch.nn.Module):
    """L(θ) = ½(θ−θ*)ᵀA(θ−θ*), A = Q diag(λ) Qᵀ; θ ≠ θ* so that ∇L ≠ 0."""

    def __init__(self, n=6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.lams = torch.tensor([5.0, 2.0, 1.5, 1.0, 0.5, 0.25], dtype=torch.float64)[:n]
        self.A = Q @ torch.diag(self.lams) @ Q.T
        self.star = torch.randn(n, generator=g, dtype=torch.float64)
        self.theta = torch.nn.Parameter(self.star + torch.randn(n, generator=g, dtype=torch.float64))


def qloss(m, _batch):
    d = m.theta - m.star
    return 0.5 * d @ m.A @ d


class Cosines(torch.nn.Module):
    def __init__(self, n=6):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.linspace(0.1, 1.0, n, dtype=torch.float64))


def cos_loss(m, _batch):
    return torch.cos(m.theta).sum()


def quadratic():
    m = Quadratic()
    return m, Probe(m, [None], qloss)


def cosines():
    m = Cosines()
    return m, Probe(m, [None], cos_loss)


def rows(df, quantity):
    return df[df.quantity == quantity]


def value(df, quantity):
    return float(rows(df, quantity).value.iloc[0])


# ------------------------------------------------------------------- (b) smoothing gap
@pytest.mark.parametrize("trace", ["given", "exact", "hutchinson"])
def test_smoothing_gap_on_a_quadratic_is_half_mu_squared_trace(trace):
    m, p = quadratic()
    tr = float(m.lams.sum())
    arg = tr if trace == "given" else trace
    df = ls.smoothing_gap_check(p, mus=(1e-3, 1e-1, 1.0), n=300, trace=arg, trace_n=200, seed=2)
    validate_frame(df)
    assert value(df, "hessian_trace") == pytest.approx(tr, rel=1e-10 if trace != "hutchinson" else 0.2)
    gap, pred = rows(df, "smoothed_gap"), rows(df, "smoothed_gap_predicted")
    assert gap.mu.tolist() == [1e-3, 1e-1, 1.0] == pred.mu.tolist()
    assert (rows(df, "smoothed_gap_z").value.abs() < 4).all()
    if trace != "hutchinson":  # exact tr H: the closed form itself, within a few sem
        assert (abs(gap.value.values - 0.5 * gap.mu.values ** 2 * tr) < 4 * gap.uncertainty.values).all()
    ratio = rows(df, "smoothed_gap_ratio")
    assert (abs(ratio.value - 1) < 4 * ratio.uncertainty).all()
    assert set(df.setting_trace) == {trace}
    assert df.cost_loss.iloc[0] == 3 * (2 * 300 + 1)
    assert df.cost_hvp.iloc[0] == {"given": 0, "exact": 6, "hutchinson": 200}[trace]


def test_smoothing_gap_shows_the_fourth_order_term_on_cosines():
    """L_μ − L = (e^{−μ²/2} − 1)·L exactly; the prediction −(μ²/2)·L agrees at small μ and
    misses by the ratio (1 − e^{−μ²/2})/(μ²/2) (0.79 at μ = 1) at large μ."""
    m, p = cosines()
    L = p.loss()
    df = ls.smoothing_gap_check(p, mus=(0.05, 1.0), n=400, trace="exact", seed=1)
    gap = rows(df, "smoothed_gap")
    exact = (np.exp(-gap.mu.values ** 2 / 2) - 1) * L
    assert (abs(gap.value.values - exact) < 4 * gap.uncertainty.values).all()
    assert value(df, "hessian_trace") == pytest.approx(-L, rel=1e-10)
    ratio = rows(df, "smoothed_gap_ratio").set_index("mu")
    assert ratio.value[0.05] == pytest.approx(1.0, abs=4 * ratio.uncertainty[0.05] + 1e-3)
    assert ratio.value[1.0] == pytest.approx((1 - math.exp(-0.5)) / 0.5, abs=4 * ratio.uncertainty[1.0])
    assert ratio.value[1.0] + 4 * ratio.uncertainty[1.0] < 0.95   # the O(μ⁴) term is resolved


# ---------------------------------------------------------------- (a) ZO vs ∇L_μ
@pytest.mark.parametrize("dist", ["gaussian", "sphere", "rademacher"])
def test_zo_spread_matches_theory_on_a_quadratic(dist):
    """Central differences are exact on a quadratic, so E‖ĝ_q − ∇L‖²/‖∇L‖² = c/q exactly
    (c = d+1 Gaussian, d−1 sphere / Rademacher) and the mean of all estimates → ∇L."""
    m, p = quadratic()
    d = p.numel
    df = ls.zo_gradient_check(p, mu=1e-2, queries=(1, 4, 16), dist=dist, repeats=60,
                              reference_n=2, seed=3)
    validate_frame(df)
    c = d + 1 if dist == "gaussian" else d - 1
    sq = rows(df, "zo_sq_rel_error")
    assert (abs(sq.value.values - c / sq.queries.values) < 4 * sq.uncertainty.values).all()
    assert rows(df, "zo_sq_rel_error_predicted").value.tolist() == pytest.approx([c, c / 4, c / 16])
    rel = rows(df, "zo_rel_error").value.values
    cos = rows(df, "zo_cosine").value.values
    assert rel[0] > rel[1] > rel[2] and cos[0] < cos[1] < cos[2]
    # the pooled mean over N = 60·21 queries: its squared error has mean c/N
    N = 60 * 21
    assert value(df, "zo_pooled_sq_rel_error_predicted") == pytest.approx(c / N)
    assert value(df, "zo_pooled_sq_rel_error") < 6 * c / N
    assert value(df, "zo_pooled_cosine") > 0.98
    # antithetic gradient pairs are exact on a quadratic: the reference is ∇L itself
    assert value(df, "reference_vs_gradient_rel_diff") < 1e-10
    assert value(df, "reference_rel_std_error") < 1e-10
    assert df.cost_loss.iloc[0] == 2 * 60 * 21 and df.cost_grad.iloc[0] == 2 * 2 + 1


def test_zo_mean_tracks_the_smoothed_gradient_not_the_gradient():
    """On Σ cos θ_i with μ = 1, ∇L_μ = e^{−1/2}∇L: 39% away from ∇L.  The MC reference finds
    that gap, and the mean of the ZO estimates sits on ∇L_μ (Stein: E ĝ = ∇L_μ exactly)."""
    m, p = cosines()
    df = ls.zo_gradient_check(p, mu=1.0, queries=(64,), repeats=40, reference_n=400, seed=4)
    bias = 1 - math.exp(-0.5)
    ref_se = value(df, "reference_rel_std_error")
    assert ref_se < 0.05
    assert value(df, "reference_vs_gradient_rel_diff") == pytest.approx(bias, abs=4 * ref_se)
    assert value(df, "zo_pooled_rel_error") < 0.3 * bias      # ZO noise + reference noise
    with_grad = ls.zo_gradient_check(p, mu=1.0, queries=(64,), repeats=40, reference_n=0, seed=4)
    assert value(with_grad, "reference_vs_gradient_rel_diff") == 0
    assert value(with_grad, "zo_pooled_rel_error") > 0.75 * bias  # against ∇L it misses
    assert set(with_grad.setting_reference) == {"gradient"}


def test_seeds_reproduce_and_differ():
    m, p = quadratic()
    a = ls.zo_gradient_check(p, 1e-2, queries=(2,), repeats=3, reference_n=1, seed=5)
    b = ls.zo_gradient_check(p, 1e-2, queries=(2,), repeats=3, reference_n=1, seed=5)
    c = ls.zo_gradient_check(p, 1e-2, queries=(2,), repeats=3, reference_n=1, seed=6)
    np.testing.assert_array_equal(a.value.values, b.value.values)   # NaN == NaN here
    assert not np.allclose(a.value.values[:4], c.value.values[:4])
    assert np.isnan(value(a, "reference_rel_std_error"))          # one draw: no error known


def test_checks_restore_every_parameter_bit_for_bit():
    model = tiny_llama(seed=5).float()
    model.train()
    probe = Probe(model, lm_batches())
    before = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    ls.zo_gradient_check(probe, 1e-2, queries=(1, 2), repeats=2, reference_n=1)
    ls.smoothing_gap_check(probe, mus=(1e-2,), n=2, trace_n=2)
    for n, t in model.state_dict(keep_vars=True).items():
        assert torch.equal(before[n], t.detach()), n
    assert all(q.grad is None for q in model.parameters()) and model.training


# ------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("kw, match", [
    (dict(mu=0.0), "mu must be > 0"),
    (dict(mu=float("nan")), "mu must be > 0"),
    (dict(queries=()), "queries is empty"),
    (dict(queries=(4, 0)), r"queries\[i\] must be an integer >= 1"),
    (dict(dist="cauchy"), "dist must be one of"),
    (dict(repeats=1), "repeats must be an integer >= 2"),
    (dict(reference_n=-1), "reference_n must be an integer >= 0"),
    (dict(seed=-3), "seed must be an integer"),
])
def test_zo_check_bad_inputs(kw, match):
    m, p = quadratic()
    with pytest.raises(ValueError, match=match):
        ls.zo_gradient_check(p, **{"mu": 1e-3, **kw})
    assert p.cost() == ls.Cost()


def test_zo_check_at_a_stationary_point_says_so():
    m, p = quadratic()
    with torch.no_grad():
        m.theta.copy_(m.star)
    with pytest.raises(ValueError, match="stationary point"):
        ls.zo_gradient_check(p, 1e-3, queries=(1,), repeats=2, reference_n=0)


@pytest.mark.parametrize("kw, match", [
    (dict(mus=()), "mus is empty"),
    (dict(mus=(1e-2, -1.0)), r"mus\[i\] must be > 0"),
    (dict(n=1), "n must be an integer >= 2"),
    (dict(trace="lanczos"), "trace must be one of"),
    (dict(trace=float("inf")), "trace must be finite"),
    (dict(trace_n=1), "trace_n must be an integer >= 2"),
])
def test_smoothing_check_bad_inputs(kw, match):
    m, p = quadratic()
    with pytest.raises(ValueError, match=match):
        ls.smoothing_gap_check(p, **kw)
    assert p.cost() == ls.Cost()


def test_exact_trace_refuses_large_probes(monkeypatch):
    m, p = quadratic()
    monkeypatch.setattr(theory, "EXACT_TRACE_MAX", 5)
    with pytest.raises(ValueError, match="one HVP per parameter"):
        ls.smoothing_gap_check(p, trace="exact")


# ------------------------------------------------- §3.2 quantization loss change
def diagonal_quadratic():
    """The quadratic with A = diag(λ): every s_i s_j H_ij (i ≠ j) is zero."""
    m = Quadratic()
    m.A = torch.diag(m.lams)
    return m, Probe(m, [None], qloss)


def rtn(theta, s):
    return s * torch.round(theta / s) - theta


def test_quantization_check_is_exact_to_second_order_on_a_quadratic():
    """ΔL = gᵀδ + ½δᵀAδ exactly; gᵀδ with g = A(θ − θ*); one gradient over both labels; the
    second δ given as a list of tensors."""
    m, p = quadratic()
    A, theta = m.A, m.theta.detach().clone()
    g = A @ (theta - m.star)
    d1 = rtn(theta, 0.5)
    d2 = 0.3 * torch.linspace(-1, 1, 6, dtype=torch.float64)
    df = ls.quantization_loss_check(p, {"rtn s=0.5": d1, "noise": [d2]})
    validate_frame(df)
    v = df.set_index(["label", "quantity"]).value
    for label, d in (("rtn s=0.5", d1), ("noise", d2)):
        exact = float(g @ d + 0.5 * d @ A @ d)
        assert v[label, "loss_change"] == pytest.approx(exact, rel=1e-9)
        assert v[label, "loss_change_second_order"] == pytest.approx(exact, rel=1e-9)
        assert v[label, "second_order_rel_error"] < 1e-9
        assert v[label, "loss_change_first_order"] == pytest.approx(float(g @ d), rel=1e-12)
        assert v[label, "curvature_along_delta"] == pytest.approx(float(d @ A @ d), rel=1e-12)
        assert v[label, "delta_norm"] == pytest.approx(float(d.norm()), rel=1e-12)
    assert list(pd.unique(df.label)) == ["rtn s=0.5", "noise"]
    assert "loss_change_uniform_noise" not in set(df.quantity)       # no steps given
    assert df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist() == [4, 1, 2]
    assert torch.equal(m.theta.detach(), theta)


def test_uniform_noise_term_matches_the_dense_diagonal():
    """(1/24)·mean_k (s⊙z_k)ᵀA(s⊙z_k) against (1/24)·Σ s_i² A_ii within 4 sem; its sem against
    the closed form sd/√n, sd² = 2·Σ_{i≠j} (s_i s_j A_ij)² / 24² (Rademacher z), within 25%."""
    m, p = quadratic()
    A = m.A
    s = torch.tensor([0.5, 0.1, 0.3, 0.05, 0.2, 0.4], dtype=torch.float64)
    n = 400
    df = ls.quantization_loss_check(p, {"q": rtn(m.theta.detach(), 0.1)}, steps={"q": s}, n=n,
                                    seed=3)
    validate_frame(df)
    row = rows(df, "loss_change_uniform_noise").iloc[0]
    exact = float((s ** 2 * torch.diagonal(A)).sum()) / 24
    assert row.uncertainty_kind == "sem" and row.label == "q" and row.unit == "loss"
    assert abs(row.value - exact) < 4 * row.uncertainty
    M = torch.outer(s, s) * A
    sd = math.sqrt(2 * float((M ** 2).sum() - (torch.diagonal(M) ** 2).sum())) / 24
    assert row.uncertainty == pytest.approx(sd / math.sqrt(n), rel=0.25)
    assert value(df, "delta_norm_uniform_noise") == pytest.approx(math.sqrt(float(s @ s) / 12))
    assert df.cost_hvp.iloc[0] == 1 + n


def test_uniform_noise_term_is_exact_when_the_cross_terms_vanish():
    """Each sample is Σ s_i²H_ii + Σ_{i≠j} s_i s_j z_i z_j H_ij: exact (sem 0) when H is
    diagonal (any s), or when s is nonzero on one weight only (any H); with a constant s on
    a non-diagonal H it is s²/24 × a Hutchinson trace, not exact."""
    s = torch.tensor([0.5, 0.1, 0.3, 0.05, 0.2, 0.4], dtype=torch.float64)
    m, p = diagonal_quadratic()
    df = ls.quantization_loss_check(p, {"q": 0.01 * s}, steps={"q": s}, n=4)
    exact = float((s ** 2 * m.lams).sum()) / 24
    assert value(df, "loss_change_uniform_noise") == pytest.approx(exact, rel=1e-12)
    assert value(df, "loss_change_uniform_noise") - exact == pytest.approx(0, abs=1e-15)
    assert float(rows(df, "loss_change_uniform_noise").uncertainty.iloc[0]) < 1e-15
    m, p = quadratic()
    one = torch.zeros(6, dtype=torch.float64)
    one[2] = 0.7
    constant = 0.3
    df = ls.quantization_loss_check(p, {"one": 0.01 * one, "constant": 0.01 * one},
                                    steps={"one": one, "constant": constant}, n=8)
    u = rows(df, "loss_change_uniform_noise").set_index("label")
    assert u.value["one"] == pytest.approx(0.49 * float(m.A[2, 2]) / 24, rel=1e-12)
    assert u.uncertainty["one"] < 1e-15
    assert u.uncertainty["constant"] > 1e-3 * abs(u.value["constant"])  # off-diagonal noise
    assert abs(u.value["constant"] - 0.09 * float(m.lams.sum()) / 24) < 5 * u.uncertainty["constant"]


def test_quantization_check_taylor_remainders_on_an_mlp():
    """A fixed direction at t and t/10 (float64 MLP): |gᵀδ − ΔL| = O(t²) falls 100×, the
    first-order relative error O(t) 10×, |gᵀδ + ½δᵀHδ − ΔL| = O(t³) 1000×; and the uniform-noise
    term against the dense Hessian's diagonal."""
    from .conftest import MLP, dense_hessian, mlp_batches, mlp_loss
    p = Probe(MLP(), mlp_batches(), mlp_loss)
    d = torch.randn(p.numel, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    d = 1e-2 * d / d.norm()
    s = torch.full((p.numel,), 0.02, dtype=torch.float64)
    df = ls.quantization_loss_check(p, {"t": d, "t/10": d / 10}, steps={"t": s}, n=200)
    v = df.set_index(["label", "quantity"]).value
    e1 = {k: abs(v[k, "loss_change_first_order"] - v[k, "loss_change"]) for k in ("t", "t/10")}
    e2 = {k: abs(v[k, "loss_change_second_order"] - v[k, "loss_change"]) for k in ("t", "t/10")}
    assert 90 < e1["t"] / e1["t/10"] < 110
    assert 9 < v["t", "first_order_rel_error"] / v["t/10", "first_order_rel_error"] < 11
    assert 900 < e2["t"] / e2["t/10"] < 1100
    H = dense_hessian(p)
    exact = float((s ** 2 * torch.diagonal(H)).sum()) / 24
    row = rows(df, "loss_change_uniform_noise").iloc[0]
    assert abs(row.value - exact) < 4 * row.uncertainty
    assert df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist() == [4, 1, 2 + 200]


# ------------------------------------------------------------ §3.4 relearning step
def test_relearn_step_is_exact_to_second_order_on_a_quadratic():
    m, p = quadratic()
    A, theta = m.A, m.theta.detach().clone()
    g = A @ (theta - m.star)
    gg, gAg = float(g @ g), float(g @ A @ g)
    eta_star = 2 * gg / gAg
    lrs = [0.01, 0.1, 0.98 * eta_star, eta_star, 1.02 * eta_star, 3.0]
    df = ls.relearn_step_check(p, lrs)
    validate_frame(df)
    assert value(df, "grad_norm") == pytest.approx(math.sqrt(gg), rel=1e-12)
    assert value(df, "curvature_along_gradient") == pytest.approx(gAg / gg, rel=1e-12)
    assert value(df, "lr_overshoot") == pytest.approx(eta_star, rel=1e-12)
    actual = rows(df, "relearn_decrease").set_index("lr").value
    first = rows(df, "relearn_decrease_first_order").set_index("lr").value
    second = rows(df, "relearn_decrease_second_order").set_index("lr").value
    for eta in lrs:
        exact = eta * gg - 0.5 * eta ** 2 * gAg
        assert first[eta] == pytest.approx(eta * gg, rel=1e-12)
        assert second[eta] == pytest.approx(exact, rel=1e-12, abs=1e-12 * eta * gg)
        assert actual[eta] == pytest.approx(exact, rel=1e-9, abs=1e-9 * eta * gg)
    # the sign flips at the closed-form threshold 2‖g‖²/gᵀAg: the step overshoots beyond it
    assert actual[0.98 * eta_star] > 0 > actual[1.02 * eta_star]
    assert abs(actual[eta_star]) < 1e-9 * eta_star * gg
    assert actual[3.0] < 0 if 3.0 > eta_star else actual[3.0] > 0
    step = rows(df, "step_norm").set_index("lr").value
    assert step[0.1] == pytest.approx(0.1 * math.sqrt(gg), rel=1e-12)
    assert (rows(df, "step_rounding_norm").value < 1e-12).all()
    assert df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist() == [1 + len(lrs), 1, 1]
    assert torch.equal(m.theta.detach(), theta)


def test_relearn_step_along_a_given_direction():
    """θ + ηd: decrease −ηgᵀd − (η²/2)dᵀAd exactly; lrs=None takes the step as given."""
    m, p = quadratic()
    A = m.A
    g = A @ (m.theta.detach() - m.star)
    d = -torch.sign(g) * 0.05                        # a sign-descent (Adam-like) first step
    df = ls.relearn_step_check(p, None, direction=d)
    validate_frame(df)
    exact = float(-g @ d - 0.5 * d @ A @ d)
    assert rows(df, "relearn_decrease").lr.tolist() == [1.0]
    assert value(df, "relearn_decrease") == pytest.approx(exact, rel=1e-9)
    assert value(df, "relearn_decrease_second_order") == pytest.approx(exact, rel=1e-12)
    assert value(df, "relearn_decrease_first_order") == pytest.approx(float(-g @ d), rel=1e-12)
    assert value(df, "curvature_along_direction") == pytest.approx(float(d @ A @ d / (d @ d)))
    assert value(df, "direction_cosine") == pytest.approx(float(-g @ d / (g.norm() * d.norm())))
    assert value(df, "lr_overshoot") == pytest.approx(float(-2 * g @ d / (d @ A @ d)))
    assert value(df, "curvature_along_gradient") == pytest.approx(float(g @ A @ g / (g @ g)))
    assert df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist() == [2, 1, 2]
    scaled = ls.relearn_step_check(p, [0.5, 2.0], direction=[d.clone()])
    for eta, got in rows(scaled, "relearn_decrease").set_index("lr").value.items():
        assert got == pytest.approx(float(-eta * g @ d - 0.5 * eta ** 2 * d @ A @ d), rel=1e-9)


def test_relearn_step_on_an_mlp_second_order_beats_first():
    from .conftest import MLP, mlp_batches, mlp_loss
    p = Probe(MLP(), mlp_batches(), mlp_loss)
    df = ls.relearn_step_check(p, [0.01, 0.1])
    r1 = rows(df, "first_order_rel_error").set_index("lr").value
    r2 = rows(df, "second_order_rel_error").set_index("lr").value
    assert (r2 < r1).all()
    assert 5 < r1[0.1] / r1[0.01] < 15            # first-order relative error O(η)
    assert 50 < r2[0.1] / r2[0.01] < 150          # second-order relative error O(η²)


# -------------------------------------------------- restore, bad inputs (§3.2, §3.4)
def test_quantization_and_relearn_checks_restore_every_parameter_bit_for_bit():
    model = tiny_llama(seed=5).float()
    model.train()
    probe = Probe(model, lm_batches())
    before = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    theta = probe.flat_params()
    ls.quantization_loss_check(probe, {"rtn": rtn(theta, 0.05), "rtn8": rtn(theta, 0.005)},
                               steps={"rtn": 0.05}, n=2)
    ls.relearn_step_check(probe, [1e-2, 1e-1])
    ls.relearn_step_check(probe, None, direction=-1e-3 * torch.sign(probe.grad()))
    for n, t in model.state_dict(keep_vars=True).items():
        assert torch.equal(before[n], t.detach()), n
    assert all(q.grad is None for q in model.parameters()) and model.training


BAD_DELTA = torch.zeros(6, dtype=torch.float64)


@pytest.mark.parametrize("kw, match", [
    (dict(deltas={}), "deltas must be a non-empty mapping"),
    (dict(deltas=[BAD_DELTA]), "deltas must be a non-empty mapping"),
    (dict(deltas={3: BAD_DELTA}), "labels must be non-empty strings"),
    (dict(deltas={"a": torch.zeros(5, dtype=torch.float64)}), r"deltas\['a'\]: direction has shape"),
    (dict(deltas={"a": [torch.zeros(2, 3)]}), r"deltas\['a'\]: direction list does not match"),
    (dict(deltas={"a": torch.tensor([0, 0, float("nan"), 0, 0, 0])}), r"deltas\['a'\]: .*non-finite"),
    (dict(deltas={"a": BAD_DELTA}, steps={"b": 0.1}), "steps has labels"),
    (dict(deltas={"a": BAD_DELTA}, steps=[0.1]), "steps must be a mapping"),
    (dict(deltas={"a": BAD_DELTA}, steps={"a": -0.1}), r"steps\['a'\] must be >= 0"),
    (dict(deltas={"a": BAD_DELTA}, steps={"a": torch.full((6,), -1.0)}), "negative entries"),
    (dict(deltas={"a": BAD_DELTA}, steps={"a": torch.full((6,), float("inf"))}), "non-finite"),
    (dict(deltas={"a": BAD_DELTA}, steps={"a": torch.ones(4)}), r"steps\['a'\]: direction has shape"),
    (dict(deltas={"a": BAD_DELTA}, n=1), "n must be an integer >= 2"),
    (dict(deltas={"a": BAD_DELTA}, seed=-1), "seed must be an integer"),
])
def test_quantization_check_bad_inputs(kw, match):
    m, p = quadratic()
    with pytest.raises(ValueError, match=match):
        ls.quantization_loss_check(p, **kw)
    assert p.cost() == ls.Cost()


@pytest.mark.parametrize("kw, match", [
    (dict(lrs=()), "lrs is empty"),
    (dict(lrs=None), "lrs is None"),
    (dict(lrs=(0.1, 0.0)), r"lrs\[i\] must be > 0"),
    (dict(lrs=(float("nan"),)), r"lrs\[i\] must be > 0"),
    (dict(lrs=(0.1,), direction=torch.zeros(5, dtype=torch.float64)), "direction: direction has shape"),
    (dict(lrs=None, direction=torch.full((6,), float("inf"))), "direction: .*non-finite"),
])
def test_relearn_check_bad_inputs(kw, match):
    m, p = quadratic()
    with pytest.raises(ValueError, match=match):
        ls.relearn_step_check(p, **kw)
    assert p.cost() == ls.Cost()
