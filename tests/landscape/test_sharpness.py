"""Sharpness on quadratics, where closed forms hold exactly."""

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape import Probe


class Quadratic(torch.nn.Module):
    """L(θ) = ½(θ−θ*)ᵀA(θ−θ*) + gᵀ(θ−θ*), A = diag-dominant SPD with a clear top eigenvalue."""

    def __init__(self, n=6, at_minimum=True):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.lams = torch.tensor([5.0, 2.0, 1.5, 1.0, 0.5, 0.25], dtype=torch.float64)[:n]
        self.A = Q @ torch.diag(self.lams) @ Q.T
        self.star = torch.randn(n, generator=g, dtype=torch.float64)
        self.lin = torch.zeros(n, dtype=torch.float64) if at_minimum else \
            torch.randn(n, generator=g, dtype=torch.float64)
        self.theta = torch.nn.Parameter(self.star.clone())


def qloss(m, _batch):
    d = m.theta - m.star
    return 0.5 * d @ m.A @ d + m.lin @ d


def probe_of(**kw):
    m = Quadratic(**kw)
    return m, Probe(m, [None], qloss)


def test_average_case_is_half_sigma_squared_trace():
    m, p = probe_of()
    r = ls.average_sharpness(p, 0.1, n=400, seed=1)
    expect = 0.5 * 0.1 ** 2 * float(m.lams.sum())
    assert abs(r.value - expect) <= 4 * r.std_error
    assert "std" in r.settings["rho_meaning"] and r.cost.loss == 2 * 400 + 1
    df = r.to_frame()
    assert set(df.quantity) == {"average_sharpness", "loss_at_checkpoint"}


def test_adaptive_average_case_uses_scaled_noise():
    m, p = probe_of()
    c = m.theta.detach().abs() + 0.1
    r = ls.average_sharpness(p, 0.1, n=400, adaptive=True, eta=0.1, seed=2)
    expect = 0.5 * 0.1 ** 2 * float((c ** 2 * torch.diagonal(m.A)).sum())
    assert abs(r.value - expect) <= 4 * r.std_error


def test_worst_case_l2_is_half_rho_squared_lambda_max():
    m, p = probe_of()
    r = ls.worst_case_sharpness(p, 0.2, steps=20)
    assert r.value == pytest.approx(0.5 * 0.2 ** 2 * 5.0, rel=1e-3)
    assert "radius" in r.settings["rho_meaning"] and r.cost.grad == 20


def test_worst_case_linf_bounded_by_l2_ball_of_radius_rho_sqrt_n():
    m, p = probe_of()
    r = ls.worst_case_sharpness(p, 0.05, norm="linf", steps=30)
    n = 6
    assert 0 < r.value <= 0.5 * (0.05 ** 2 * n) * 5.0 + 1e-12


def test_sam_one_step_closed_form():
    m, p = probe_of(at_minimum=False)
    g = m.lin  # gradient at θ* is the linear term
    eps = 0.1 * g / g.norm()
    expect = float(0.5 * eps @ m.A @ eps + g @ eps)
    assert ls.sam_sharpness(p, 0.1).value == pytest.approx(expect, rel=1e-10)


def test_pac_bayes_sigma_closed_form():
    m, p = probe_of()
    r = ls.pac_bayes_flatness(p, 0.05, n=64, iters=30, seed=3)
    # with common random numbers the estimated rise is exactly σ²·S/2, S = mean zᵀAz
    gen = torch.Generator().manual_seed(3)
    S = np.mean([float(z @ m.A @ z) for z in
                 (torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(64))])
    assert r.value == pytest.approx(np.sqrt(2 * 0.05 / S), rel=1e-6)
    assert r.settings["reached"]


def test_given_scale_expectation_against_dense_hessian():
    from optigrade.landscape._examples import least_squares
    probe, H = least_squares()
    c = torch.tensor([0.3, 1.0, 2.5, 0.0], dtype=torch.float64)  # one coordinate held fixed
    r = ls.average_sharpness(probe, 0.02, n=300, scale=c, seed=4)
    expect = 0.5 * 0.02 ** 2 * float(np.sum(c.numpy() ** 2 * np.diag(H)))
    assert abs(r.value - expect) <= 3 * r.std_error
    assert r.settings["rho_meaning"] == "per-coordinate std: δ_i ~ N(0, (ρ·c_i)²), c given"
    assert r.settings["scale_rms"] == pytest.approx(float(np.sqrt(np.mean(c.numpy() ** 2))))
    assert not r.settings["adaptive"]
    assert r.to_frame().setting_scale_rms[0] == pytest.approx(r.settings["scale_rms"])
    # the same c as a list of tensors shaped like probe.params (weight (1, 3), bias (1,))
    r2 = ls.average_sharpness(probe, 0.02, n=300, scale=[c[:3].view(1, 3), c[3:]], seed=4)
    assert np.array_equal(r2.history, r.history)


def test_scale_of_ones_is_the_isotropic_measure_bit_for_bit():
    from optigrade.landscape._examples import least_squares
    probe, _ = least_squares()
    a = ls.average_sharpness(probe, 0.05, n=16, seed=7)
    b = ls.average_sharpness(probe, 0.05, n=16, seed=7, scale=torch.ones(probe.numel))
    assert a.value == b.value and a.std_error == b.std_error
    assert np.array_equal(a.history, b.history)
    assert b.settings["scale_rms"] == 1.0 and "c given" not in a.settings["rho_meaning"]


def test_given_scale_equals_adaptive_when_it_is_the_adaptive_scale():
    m, p = probe_of()
    c = m.theta.detach().abs() + 0.1
    a = ls.average_sharpness(p, 0.1, n=8, adaptive=True, eta=0.1, seed=2)
    g = ls.average_sharpness(p, 0.1, n=8, scale=c.numpy(), seed=2)
    assert np.array_equal(a.history, g.history)
