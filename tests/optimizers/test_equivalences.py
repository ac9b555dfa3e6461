"""Closed forms and equivalences: compressed transforms, second-order updates, SAM, FO-RS,
the hybrid's schedule."""

import torch

from optigrade import optimizers
from optigrade.optimizers import (HybridFOZO, SignAdam, SignSGD, Signum, hutchinson_diagonal, hybrid_steps,
                        quantize_direction)
from optigrade.optimizers import transforms as T
from .conftest import Quadratic, TinyLM


def _cos(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_signum_beta0_equals_signsgd():
    a, b = TinyLM(), TinyLM()
    oa, ob = Signum(a.params(), lr=1e-3, beta=0.0), SignSGD(b.params(), lr=1e-3)
    for _ in range(3):
        oa.step(a.closure()); ob.step(b.closure())
    assert all(torch.equal(x, y) for x, y in zip(a.params(), b.params()))


def test_quantizer():
    x = torch.tensor([0.1, -0.5, 1.0, 0.0, -0.26])
    assert torch.equal(quantize_direction(x, 1), torch.sign(x))
    assert quantize_direction(x, 2).tolist() == [0.5, -0.5, 1.0, 0.0, -0.5]
    q4 = quantize_direction(torch.randn(1000), 4)
    assert set(q4.abs().unique().tolist()) <= {0.25, 0.5, 0.75, 1.0}
    big = torch.randn(1000)
    assert _cos(quantize_direction(big, 10**6), big) > 0.999999


def test_signadam_with_many_levels_approaches_adam_direction():
    torch.manual_seed(0)
    grads = [torch.randn(500) * torch.linspace(0.1, 3, 500) for _ in range(6)]
    p = torch.zeros(500)
    adam = T.adam()
    cos_by_n = {}
    for n in (1, 4, 64, 10**5):
        tr_q = T.chain(T.adam(), T.quantize(n))
        s_a, s_q = adam.init(p), tr_q.init(p)
        for t, g in enumerate(grads, 1):
            ua = adam.update(g, p, s_a, t)
            uq = tr_q.update(g, p, s_q, t)
        cos_by_n[n] = _cos(ua, uq)
    assert cos_by_n[10**5] > 0.9999
    assert cos_by_n[1] < cos_by_n[4] < cos_by_n[64] <= cos_by_n[10**5] + 1e-9


def test_signadam_step_closed_form():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = SignAdam([w], lr=0.1, levels=1)
    (w ** 2).sum().backward()
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.9, -1.9, 2.9]))


def test_lion_one_step():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = optimizers.make("lion", [w], lr=0.1, weight_decay=0.5)
    w.grad = torch.tensor([2.0, -3.0])
    opt.step()
    # c = 0.1·g → sign = [1, −1]; θ − η(sign + λθ) = [1 − 0.1(1 + 0.5), −1 − 0.1(−1 − 0.5)]
    assert torch.allclose(w.detach(), torch.tensor([0.85, -0.85]))
    assert torch.allclose(opt.state[w]["exp_avg"], 0.01 * torch.tensor([2.0, -3.0]))


def test_hutchinson_mean_matches_dense_hessian_diagonal():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = A @ A.T
    w = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    f = lambda: 0.5 * w @ A @ w + (w ** 4).sum() / 4
    H = torch.autograd.functional.hessian(lambda x: 0.5 * x @ A @ x + (x ** 4).sum() / 4, w.detach())
    acc = torch.zeros(6, dtype=torch.float64)
    n = 3000
    for i in range(n):
        u = torch.randint(0, 2, (6,), generator=g).double() * 2 - 1
        acc += hutchinson_diagonal(f(), [w], [u])[0]
    assert torch.allclose(acc / n, torch.diagonal(H), atol=0.15 * float(H.abs().max()))
    # a single Rademacher probe is exact on a diagonal Hessian
    D = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    v = torch.ones(3, dtype=torch.float64, requires_grad=True)
    u = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    assert hutchinson_diagonal(0.5 * v @ D @ v, [v], [u])[0].tolist() == [1.0, 2.0, 3.0]


def test_soul_step_closed_form():
    # SOUL: k=1, true-label ĥ = g², β=(0.9, 0.95), ρ=0.03, λ=0.1
    w = torch.nn.Parameter(torch.tensor([1.0, 0.01], dtype=torch.float64))
    opt = optimizers.make("soul", [w], lr=0.1)
    c = optimizers.Closure(lambda: 0.5 * (w ** 2).sum(), [w])
    opt.step(c)
    g = torch.tensor([1.0, 0.01], dtype=torch.float64)
    m, h = 0.1 * g, 0.05 * g ** 2
    ratio = (m.abs() / (0.03 * h + 1e-12)).clamp(max=1)
    expected = g * (1 - 0.1 * 0.1) - 0.1 * torch.sign(m) * ratio
    assert torch.allclose(w.detach(), expected, atol=1e-12)


def test_sam_gradient_closed_form():
    q = Quadratic(dtype=torch.float64)
    w0 = q.w.detach().clone()
    opt = optimizers.make("sam", [q.w], lr=1.0, rho=0.05, base="sgd")
    opt.step(q.closure())
    gf = q.a * (w0 - q.c)
    eps = 0.05 * gf / gf.norm()
    g = q.a * (w0 + eps - q.c) + q.b * (w0 - q.c)
    assert torch.allclose(q.w.detach(), w0 - g, atol=1e-12)


def test_fors_averages_perturbed_gradients():
    q = Quadratic(dtype=torch.float64)
    w0 = q.w.detach().clone()
    opt = optimizers.make("fo-rs", [q.w], lr=1.0, sigma=1e-4, n_samples=3, base="sgd")
    opt.step(q.closure())
    g = (q.a + q.b) * (w0 - q.c)  # ∇L(θ0)
    step = w0 - q.w.detach()
    assert torch.allclose(step, g, atol=1e-3) and not torch.equal(step, g)


def test_hybrid_schedule_and_state_option():
    assert hybrid_steps(3) == 120 and hybrid_steps(2, 1, 4) == 10
    q = Quadratic()
    opt = HybridFOZO([q.w], lr=0.01, n_fo=2, n_zo=3, persist_state=False)
    c = q.closure()
    phases = []
    for _ in range(hybrid_steps(2, 2, 3)):
        phases.append(opt.phase)
        opt.step(c)
    assert phases == ["fo", "fo", "zo", "zo", "zo"] * 2 and opt.at_round_end
    assert opt.state["hybrid"]["switches"] == 3
    assert opt.inner["fo"].state[q.w]["step"] == 2  # Adam restarted when FO resumed
    assert opt.inner["zo"].step_count == 6  # ZO seeds never restart
    keep = HybridFOZO([Quadratic().w], lr=0.01, n_fo=2, n_zo=3, persist_state=True)
    c2 = optimizers.Closure(lambda: (keep.param_groups[0]["params"][0] ** 2).sum(),
                            keep.param_groups[0]["params"])
    for _ in range(10):
        keep.step(c2)
    assert keep.inner["fo"].state[keep.param_groups[0]["params"][0]]["step"] == 4
    assert keep.defaults["persist_state"] is True


def test_hybrid_separate_learning_rates_and_mix_mode():
    q = Quadratic()
    opt = HybridFOZO([q.w], lr=0.01, zo_lr=1e-4)
    assert opt.inner["fo"].param_groups[0]["lr"] == 0.01
    opt.step(q.closure())
    assert opt.inner["zo"].param_groups[0]["lr"] == 1e-4
    mix = HybridFOZO([q.w], lr=0.01, mode="mix", alpha=0.25)
    assert mix.phase == "mix" and mix.grade == 0.75
    l0 = float(q.loss().detach())
    for _ in range(30):
        mix.step(q.closure())
    assert float(q.loss().detach()) < l0 and mix.inner["zo"].step_count == 30
