"""Every registered optimizer (and every '+gru' name) lowers a convex quadratic and a tiny LM."""

import pytest
import torch

from optigrade import optimizers
from .conftest import Quadratic, TinyLM

NAMES = [i.name for i in optimizers.available(gru=True)]


def _make(name, params, lr, model=None):
    kw = {"lr": lr}
    if name == "forward-grad" and model is not None:
        kw["model"] = model  # the true forward-mode path
    return optimizers.make(name, params, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_lowers_quadratic(name):
    q = Quadratic()
    opt = _make(name, [q.w], 0.01)
    c = q.closure()
    with torch.no_grad():
        l0 = float(q.loss())
    for _ in range(100):
        opt.step(c)
    with torch.no_grad():
        l1 = float(q.loss())
    assert l1 < 0.75 * l0, f"{name}: {l0} -> {l1}"


@pytest.mark.parametrize("name", NAMES)
def test_lowers_tiny_llama(name):
    m = TinyLM()
    opt = _make(name, m.params(), 1e-3, m.model)
    c = m.closure()
    l0 = m.eval_loss()
    for _ in range(8):
        opt.step(c)
    l1 = m.eval_loss()
    assert l1 < l0, f"{name}: {l0} -> {l1}"
    assert m.model.training is False  # the mode is left as it was


def test_zo_restores_train_mode():
    m = TinyLM()
    m.model.train()
    opt = optimizers.make("zo-sgd", m.params(), lr=1e-3, model=m.model)
    seen = []

    def loss():
        seen.append(m.model.training)
        return m.loss()

    opt.step(optimizers.Closure(loss, m.params()))
    assert seen and not any(seen)  # evaluated in eval mode (dropout off)
    assert m.model.training and all(mod.training for mod in m.model.modules())
