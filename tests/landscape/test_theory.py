"""Theory checks (SPEC §3.1) against closed forms: quadratics (every statement exact) and
L(θ) = Σ cos θ_i, where smoothing has a closed form too: L_μ = e^{−μ²/2}·L, ∇L_μ = e^{−μ²/2}∇L,
tr H = −L, so L_μ − L = (e^{−μ²/2} − 1)·L and the (μ²/2)·tr H prediction is off by O(μ⁴)."""

import math

import numpy as np
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
        assert (abs(gap.value.values - 0.5 * gap.mu.values ** 2 * tr) < 4 * gap.std_error.values).all()
    ratio = rows(df, "smoothed_gap_ratio")
    assert (abs(ratio.value - 1) < 4 * ratio.std_error).all()
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
    assert (abs(gap.value.values - exact) < 4 * gap.std_error.values).all()
    assert value(df, "hessian_trace") == pytest.approx(-L, rel=1e-10)
    ratio = rows(df, "smoothed_gap_ratio").set_index("mu")
    assert ratio.value[0.05] == pytest.approx(1.0, abs=4 * ratio.std_error[0.05] + 1e-3)
    assert ratio.value[1.0] == pytest.approx((1 - math.exp(-0.5)) / 0.5, abs=4 * ratio.std_error[1.0])
    assert ratio.value[1.0] + 4 * ratio.std_error[1.0] < 0.95   # the O(μ⁴) term is resolved


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
    assert (abs(sq.value.values - c / sq.queries.values) < 4 * sq.std_error.values).all()
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
