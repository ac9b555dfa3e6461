"""Compressed first-order optimizers (grade 0.5): a sign or N-level quantized direction.

Each class only wires :mod:`optimizers.transforms`; :class:`TransformOptimizer` is the
``torch.optim.Optimizer`` adapter (param groups, lazily created state, closure, θ ← θ − η·u).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from .. import _validate as V
from . import transforms as T
from ._common import decoupled_decay as _wd
from .registry import Capabilities, register

__all__ = ["TransformOptimizer", "SignSGD", "Signum", "SignAdam", "Lion"]


class TransformOptimizer(Capabilities, Optimizer):
    """θ ← θ − η·u, u = ``self.transform(group)``(g) for each parameter with a ``.grad``.

    Subclasses build the transform chain from their group's hyperparameters:

    >>> class Plain(TransformOptimizer):  # u = g: plain SGD
    ...     def transform(self, group):
    ...         return T.chain()
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> opt = Plain([w], dict(lr=0.5)); w.grad = torch.tensor([2.0, 2.0]); opt.step(); w.tolist()
    [0.0, 1.0]
    """

    grade = 0.5
    family = "compressed-first-order"
    accepts_rectified_grad = True

    def transform(self, group) -> T.Transform:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tr = self.transform(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(tr.init(p))
                    state["step"] = 0
                state["step"] += 1
                u = tr.update(p.grad, p, state, state["step"])
                p.add_(u, alpha=-group["lr"])
        return loss


@register("signsgd")
class SignSGD(TransformOptimizer):
    """signSGD: θ ← θ − η(sign(g) + λθ).

    One step on L = ½Σ a_i θ_i² moves every weight by exactly η·sign(g):

    >>> w = torch.nn.Parameter(torch.tensor([0.5, -2.0, 5.0]))
    >>> opt = SignSGD([w], lr=0.25)
    >>> (0.5 * torch.tensor([1.0, 10.0, 0.1]) * w ** 2).sum().backward(); opt.step()
    >>> w.tolist()  # θ − 0.25·sign(θ)
    [0.25, -1.75, 4.75]
    """

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=V.lr(lr), weight_decay=_wd(weight_decay)))

    def transform(self, g):
        return T.chain(T.sign(), T.decayed_weights(g["weight_decay"]))


@register("signum")
class Signum(TransformOptimizer):
    """Signum: m ← βm + (1−β)g;  θ ← (1−ηλ)θ − η·sign(m).  β = 0 is signSGD:

    >>> a, b = torch.nn.Parameter(torch.tensor([1.0, -3.0])), torch.nn.Parameter(torch.tensor([1.0, -3.0]))
    >>> oa, ob = Signum([a], lr=0.1, beta=0.0), SignSGD([b], lr=0.1)
    >>> for _ in range(3):
    ...     for w, o in ((a, oa), (b, ob)):
    ...         w.grad = w.detach() ** 3; o.step()
    >>> torch.equal(a, b)
    True
    """

    def __init__(self, params, lr: float = 1e-5, beta: float = 0.9, weight_decay: float = 0.0):
        beta = V.unit_open("beta", beta, "the momentum EMA coefficient", "0.9")
        super().__init__(params, dict(lr=V.lr(lr), beta=beta, weight_decay=_wd(weight_decay)))

    def transform(self, g):
        return T.chain(T.ema(g["beta"]), T.sign(), T.decayed_weights(g["weight_decay"]))


@register("signadam")
class SignAdam(TransformOptimizer):
    """signAdam / quantized Adam: θ ← (1−ηλ)θ − η·Q(m̂/(√v̂+ε); N).

    Q is the N-level quantizer of :func:`transforms.quantize_direction`; N = ``levels`` = 1 is
    sign, large N approaches Adam's direction (rescaled per tensor by its ‖·‖∞).

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    >>> opt = SignAdam([w], lr=0.1, levels=1)
    >>> (w ** 2).sum().backward(); opt.step(); [round(x, 6) for x in w.tolist()]
    [0.9, -1.9, 2.9]
    """

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.999), eps: float = 1e-8,
                 levels: int = 1, weight_decay: float = 0.0):
        super().__init__(params, dict(
            lr=V.lr(lr), betas=V.betas(betas),
            eps=V.positive("eps", eps, "Adam's denominator guard ε", "1e-8"),
            levels=V.int_at_least("levels", levels, 1, "N, the number of quantization levels "
                                  "(1 = sign)", 1),
            weight_decay=_wd(weight_decay)))

    def transform(self, g):
        return T.chain(T.adam(*g["betas"], g["eps"]), T.quantize(g["levels"]),
                       T.decayed_weights(g["weight_decay"]))


@register("lion")
class Lion(TransformOptimizer):
    """Lion (Chen et al. 2023): c = β1 m + (1−β1)g;  θ ← θ − η(sign(c) + λθ);
    m ← β2 m + (1−β2)g.  Use an lr 3–10× smaller than AdamW's.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    >>> opt = Lion([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = torch.tensor([2.0, -3.0]); opt.step()
    >>> w.tolist()  # θ − 0.1·(sign(g) + 0.5·θ)
    [0.8500000238418579, -0.8500000238418579]
    """

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=V.lr(lr), betas=V.betas(betas, (0.9, 0.99)),
                                      weight_decay=_wd(weight_decay)))

    def transform(self, g):
        return T.chain(T.lion(*g["betas"]), T.decayed_weights(g["weight_decay"]))
