"""First-order optimizers (grade 1): torch's SGD, Adam and AdamW with declared capabilities
and validation in ``__init__``.  (The smoothing references FO-RS and SAM are in
:mod:`optigrade.optimizers.smoothing`.)"""

from __future__ import annotations

import torch

from .. import _validate as V
from .registry import Capabilities, register

__all__ = ["SGD", "Adam", "AdamW"]


class _FO(Capabilities):
    grade = 1.0
    family = "first-order"
    accepts_rectified_grad = True


def _adam_checks(lr, betas, eps, weight_decay):
    V.lr(lr, "1e-5")
    V.betas(betas)
    V.positive("eps", eps, "Adam's denominator guard ε", "1e-8")
    V.non_negative("weight_decay", weight_decay, "the weight decay λ", "0.0")


@register("sgd")
class SGD(_FO, torch.optim.SGD):
    """torch.optim.SGD: b ← μb + g (+λθ);  θ ← θ − η·b.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = SGD([w], lr=0.1)
    >>> (w ** 2).sum().backward(); opt.step(); w.tolist()  # θ − η·2θ = 0.8θ
    [0.800000011920929, -1.600000023841858]
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0, **kw):
        V.lr(lr, "1e-3")
        V.unit_open("momentum", momentum, "the heavy-ball coefficient", "0.9")
        V.non_negative("weight_decay", weight_decay, "the L2 weight decay λ", "0.0")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)


@register("adam")
class Adam(_FO, torch.optim.Adam):
    """torch.optim.Adam: θ ← θ − η·m̂/(√v̂ + ε) (L2 weight decay folded into g).

    The first step moves every coordinate by ≈ η (m̂/√v̂ = sign(g)):

    >>> w = torch.nn.Parameter(torch.tensor([3.0, -0.5]))
    >>> opt = Adam([w], lr=0.1)
    >>> (w ** 2).sum().backward(); opt.step(); [round(x, 4) for x in w.tolist()]
    [2.9, -0.4]
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, **kw):
        _adam_checks(lr, betas, eps, weight_decay)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kw)


@register("adamw")
class AdamW(_FO, torch.optim.AdamW):
    """torch.optim.AdamW: θ ← θ(1 − ηλ) − η·m̂/(√v̂ + ε).

    >>> w = torch.nn.Parameter(torch.tensor([2.0]))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = torch.tensor([0.0]); opt.step(); w.tolist()  # g = 0: decay only, 2·(1 − 0.05)
    [1.899999976158142]
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kw):
        _adam_checks(lr, betas, eps, weight_decay)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kw)
