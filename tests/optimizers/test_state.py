"""Seeded runs are identical; state_dict round-trips mid-run and continues identically."""

import copy

import pytest
import torch

from optigrade import optimizers

NAMES = [i.name for i in optimizers.available(gru=True)]
EXTRA = {"hybrid": dict(n_fo=2, n_zo=2), "sophia-h": dict(k=2), "sophia-g": dict(k=2)}


class Two:
    """A quadratic over two parameter tensors (exercises per-parameter seeds and state)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.a = torch.rand(7, generator=g) + 0.5
        self.w1 = torch.nn.Parameter(torch.randn(3, generator=g))
        self.w2 = torch.nn.Parameter(torch.randn(2, 2, generator=g))

    def params(self):
        return [self.w1, self.w2]

    def forget(self):
        v = torch.cat([self.w1, self.w2.view(-1)])
        return 0.5 * (self.a * (v - 0.3) ** 2).sum() + (v ** 4).sum() * 0.01

    def retain(self):
        return 0.25 * (self.w2 ** 2).sum()

    def closure(self):
        return optimizers.Closure(lambda: self.forget() + self.retain(), self.params(),
                                  forget_fn=self.forget, retain_fn=self.retain,
                                  sampled_label_fn=lambda gen: self.forget()
                                  * (1 + 0.1 * torch.rand((), generator=gen)))

    def snapshot(self):
        return [p.detach().clone() for p in self.params()]

    def load(self, snap):
        with torch.no_grad():
            for p, s in zip(self.params(), snap):
                p.copy_(s)


def _make(name, params, seed=0):
    kw = dict(lr=0.01, **EXTRA.get(name.replace("+gru", ""), {}))
    if name in {"zo-sgd", "zo-sgd-momentum", "zo-adam", "adazo", "zo-sign", "zo-conservative",
                "forward-grad", "fo-rs", "sophia-h", "sophia-g", "soul", "adahessian"}:
        kw["seed"] = seed
    if name == "hybrid":
        kw["zo_hparams"] = {"seed": seed}
    return optimizers.make(name, params, **kw)


def _run(prob, opt, n):
    c = prob.closure()
    for _ in range(n):
        opt.step(c)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_identical(name):
    a, b = Two(), Two()
    _run(a, _make(name, a.params()), 4)
    _run(b, _make(name, b.params()), 4)
    assert all(torch.equal(x, y) for x, y in zip(a.snapshot(), b.snapshot()))


@pytest.mark.parametrize("name", ["zo-sgd", "adazo", "fo-rs", "forward-grad"])
def test_seed_changes_the_run(name):
    a, b = Two(), Two()
    _run(a, _make(name, a.params(), seed=0), 2)
    _run(b, _make(name, b.params(), seed=1), 2)
    assert not all(torch.equal(x, y) for x, y in zip(a.snapshot(), b.snapshot()))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run(name):
    a = Two()
    opt = _make(name, a.params())
    _run(a, opt, 3)
    sd = copy.deepcopy(opt.state_dict())
    mid = a.snapshot()
    _run(a, opt, 4)
    expected = a.snapshot()

    b = Two()
    b.load(mid)
    opt_b = _make(name, b.params(), seed=12345)  # the seed must come back from the state dict
    opt_b.load_state_dict(sd)
    _run(b, opt_b, 4)
    for x, y in zip(expected, b.snapshot()):
        assert torch.equal(x, y), name


def test_global_rng_untouched():
    a = Two()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for name in ["zo-sgd", "adazo", "fo-rs", "sophia-h", "adahessian", "forward-grad", "sophia-g"]:
        _run(a, _make(name, a.params()), 2)
    assert torch.equal(before, torch.get_rng_state())
