"""The ZO estimator against the gradient of the smoothed loss, forward gradients against the
exact directional derivative, and the fused/exact code paths against each other."""


import pytest
import torch

from optigrade import optimizers
from optigrade.optimizers import ZOSGD, ForwardGrad, directional_derivative
from optigrade._directions import direction_tensor, mix_seed
from .conftest import Quadratic, TinyLM


def _cos(a, b):
    return float(torch.dot(a.double(), b.double()) / (a.double().norm() * b.double().norm()))


def _mean_estimate(draws, **kw):
    q = Quadratic(dtype=torch.float64)
    opt = ZOSGD([q.w], lr=1e-3, seed=3, **kw)
    c = q.closure()
    acc = torch.zeros_like(q.w, dtype=torch.float64)
    w0 = q.w.detach().clone()
    for _ in range(draws):
        acc += opt.estimate_gradient(c)[0]
    assert torch.allclose(q.w.detach(), w0, atol=1e-12, rtol=0)  # θ restored (arithmetically)
    return acc / draws, q.grad()


@pytest.mark.parametrize("dist", ["gaussian", "rademacher", "sphere"])
@pytest.mark.parametrize("difference", ["central", "forward"])
def test_estimator_mean_matches_smoothed_gradient(dist, difference):
    # on a quadratic ∇L_μ = ∇L, so the mean of ĝ must point along (and match) ∇L
    mean, grad = _mean_estimate(2000, dist=dist, difference=difference, mu=1e-3)
    assert _cos(mean, grad) >= 0.99
    assert mean.norm() / grad.norm() == pytest.approx(1.0, abs=0.1)


def test_sphere_needs_the_d_factor():
    with_d, grad = _mean_estimate(2000, dist="sphere", sphere_scale=True)
    without, _ = _mean_estimate(2000, dist="sphere", sphere_scale=False)
    d = grad.numel()
    assert _cos(without, grad) >= 0.99  # the direction is right either way …
    assert without.norm() / grad.norm() == pytest.approx(1.0 / d, rel=0.15)  # … the scale is 1/d
    assert with_d.norm() / grad.norm() == pytest.approx(1.0, abs=0.1)


def test_q_directions_average():
    q = Quadratic(dtype=torch.float64)
    opt = ZOSGD([q.w], lr=1e-3, q=8, seed=1)
    g = opt.estimate_gradient(q.closure())[0]
    est = opt.last_estimate
    assert len(est.seeds) == 8 and est.n_evals == 16
    # reconstruct by hand: (1/q) Σ proj_i z_i
    manual = sum(p * direction_tensor(q.w, mix_seed(s, 0), "gaussian").double()
                 for p, s in zip(est.proj, est.seeds)) / 8
    assert torch.allclose(g, manual, atol=1e-12)


def test_many_averaged_zo_steps_approach_sgd():
    qa, qb = Quadratic(dtype=torch.float64), Quadratic(dtype=torch.float64)
    w0 = qa.w.detach().clone()
    ZOSGD([qa.w], lr=0.01, q=3000, seed=0).step(qa.closure())
    sgd = torch.optim.SGD([qb.w], lr=0.01)
    qb.closure()()
    sgd.step()
    da, db = qa.w.detach() - w0, qb.w.detach() - w0
    assert _cos(da, db) >= 0.99
    assert da.norm() / db.norm() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "adazo", "zo-sgd-momentum"])
@pytest.mark.parametrize("q", [1, 3])
def test_fused_restore_equals_exact_restore(name, q):
    # float64: the arithmetic round trip is exact to ~1e-16, so both paths must agree
    qa, qb = Quadratic(dtype=torch.float64), Quadratic(dtype=torch.float64)
    oa = optimizers.make(name, [qa.w], lr=0.01, q=q, exact=False)
    ob = optimizers.make(name, [qb.w], lr=0.01, q=q, exact=True)
    for _ in range(5):
        oa.step(qa.closure()); ob.step(qb.closure())
    assert torch.allclose(qa.w, qb.w, atol=1e-12, rtol=0)


def test_zo_sgd_update_is_minus_lr_times_estimate():
    q = Quadratic(dtype=torch.float64)
    opt = ZOSGD([q.w], lr=0.05, seed=7)
    w0 = q.w.detach().clone()
    g0 = q.grad()
    opt.step(q.closure())
    est = opt.last_estimate
    z = direction_tensor(q.w, mix_seed(est.seeds[0], 0), "gaussian").double()
    assert torch.allclose(q.w.detach(), w0 - 0.05 * est.coefs()[0] * z, atol=1e-12)
    # central differences are exact on a quadratic: proj = ∇L·z
    assert est.proj[0] == pytest.approx(float(g0 @ z), rel=1e-6)


def test_zo_sign_moves_by_lr_times_direction():
    q = Quadratic(dtype=torch.float64)
    opt = optimizers.make("zo-sign", [q.w], lr=0.05, seed=2)
    w0 = q.w.detach().clone()
    opt.step(q.closure())
    z = direction_tensor(q.w, mix_seed(opt.last_estimate.seeds[0], 0), "gaussian").double()
    assert torch.allclose((q.w.detach() - w0).abs(), 0.05 * z.abs(), atol=1e-12)


def test_conservative_never_increases_the_loss():
    m = TinyLM()
    opt = optimizers.make("zo-conservative", m.params(), lr=0.5, exact=True)  # huge lr on purpose
    c = m.closure()
    losses = [m.eval_loss()]
    for _ in range(4):
        opt.step(c)
        losses.append(m.eval_loss())
    assert all(b <= a for a, b in zip(losses, losses[1:]))


def test_rademacher_and_sphere_directions():
    w = torch.zeros(5000)
    z = direction_tensor(w, 11, "rademacher")
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < 0.05
    g = direction_tensor(w, 11, "gaussian")
    assert abs(float(g.std()) - 1) < 0.05


def test_forward_gradient_equals_exact_directional_derivative():
    m = TinyLM()
    c = m.closure()
    params = m.params()
    tangents = [direction_tensor(p, mix_seed(5, j), "gaussian") for j, p in enumerate(params)]
    loss = m.loss()
    grads = torch.autograd.grad(loss, params)
    exact = sum(float((g.double() * t.double()).sum()) for g, t in zip(grads, tangents))
    l_fwd, dd_fwd = directional_derivative(c, params, tangents, model=m.model)  # forward mode
    l_rev, dd_rev = directional_derivative(c, params, tangents, model=None)     # reverse mode
    assert dd_fwd == pytest.approx(exact, rel=1e-4)
    assert dd_rev == pytest.approx(exact, rel=1e-6)
    assert l_fwd == pytest.approx(float(loss.detach()), rel=1e-6)


def test_forward_grad_step_uses_the_directional_derivative():
    q = Quadratic(dtype=torch.float64)
    opt = ForwardGrad([q.w], lr=0.1, seed=4)
    w0 = q.w.detach().clone()
    g = q.grad()
    opt.step(q.closure())
    z = direction_tensor(q.w, mix_seed(opt.last_estimate.seeds[0], 0), "gaussian").double()
    assert torch.allclose(q.w.detach(), w0 - 0.1 * float(g @ z) * z, atol=1e-10)


def test_zo_closure_runs_without_grad():
    q = Quadratic()
    modes = []

    def loss():
        modes.append(torch.is_grad_enabled())
        return q.loss()

    optimizers.make("zo-adam", [q.w], lr=1e-3).step(optimizers.Closure(loss, [q.w]))
    assert modes and not any(modes) and q.w.grad is None


def test_step_requires_closure():
    with pytest.raises(TypeError, match="needs a closure"):
        optimizers.make("zo-sgd", [torch.nn.Parameter(torch.ones(2))]).step()
