"""Small direction transforms composed into optimizers (Optax-style, per tensor, in torch).

A transform has ``init(p) -> dict`` (its state tensors) and ``update(u, p, state, t) -> u'``
(``t`` the 1-based step).  Transforms never modify their input ``u`` in place; the optimizer
applies the final direction as θ ← θ − η·u.  :func:`chain` composes them left to right, so

    signSGD  = chain(sign())                                     θ ← θ − η·sign(g)
    Signum   = chain(ema(β), sign(), decayed_weights(λ))          θ ← θ − η(sign(m) + λθ)
    signAdam = chain(adam(β1, β2, ε), quantize(N), decayed_weights(λ))
    Lion     = chain(lion(β1, β2), decayed_weights(λ))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import torch

__all__ = ["Transform", "chain", "ema", "sign", "quantize", "quantize_direction", "adam", "lion",
           "decayed_weights"]


class Transform:
    """Base: stateless identity."""

    def init(self, p: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {}

    def update(self, u, p, state, t):
        return u


@dataclass(frozen=True)
class chain(Transform):
    """Apply ``transforms`` in order; their state keys must not collide."""

    transforms: Sequence[Transform]

    def __init__(self, *transforms: Transform):
        object.__setattr__(self, "transforms", tuple(transforms))

    def init(self, p):
        out = {}
        for tr in self.transforms:
            out.update(tr.init(p))
        return out

    def update(self, u, p, state, t):
        for tr in self.transforms:
            u = tr.update(u, p, state, t)
        return u


@dataclass(frozen=True)
class ema(Transform):
    """m ← β·m + (1−β)·u; returns m (β = 0 passes u through)."""

    beta: float
    key: str = "exp_avg"

    def init(self, p):
        return {self.key: torch.zeros_like(p)}

    def update(self, u, p, state, t):
        return state[self.key].mul_(self.beta).add_(u, alpha=1 - self.beta)


def quantize_direction(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Q(x; N) = sign(x)·⌈N·|x|/‖x‖∞⌉/N: the N-level quantizer of an update *direction*
    (signAdam's Q), N magnitude levels {1/N, …, 1} per tensor.  (Not the RTN weight quantizer
    of the attacks in :mod:`optigrade.analysis`.)

    N = 1 is sign(x); as N → ∞, Q(x; N) → x/‖x‖∞ (the direction of x, rescaled so that the
    largest coordinate moves by η as under sign).  Returns a new tensor.

    >>> quantize_direction(torch.tensor([0.1, -0.5, 1.0, 0.0]), 2).tolist()
    [0.5, -0.5, 1.0, 0.0]
    """
    if levels == 1:
        return torch.sign(x)
    scale = x.abs().max()
    if scale == 0:
        return torch.zeros_like(x)
    return torch.sign(x) * torch.ceil(x.abs() * (levels / scale)).clamp_(max=levels) / levels


@dataclass(frozen=True)
class quantize(Transform):
    """u ← Q(u; levels), see :func:`quantize_direction`."""

    levels: int = 1

    def update(self, u, p, state, t):
        return quantize_direction(u, self.levels)


def sign() -> quantize:
    """u ← sign(u) (Q with one level)."""
    return quantize(1)


@dataclass(frozen=True)
class adam(Transform):
    """Adam's preconditioned direction m̂/(√v̂ + ε) with bias correction."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def init(self, p):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def update(self, u, p, state, t):
        m = state["exp_avg"].mul_(self.b1).add_(u, alpha=1 - self.b1)
        v = state["exp_avg_sq"].mul_(self.b2).addcmul_(u, u, value=1 - self.b2)
        denom = (v / (1 - self.b2 ** t)).sqrt_().add_(self.eps)
        return (m / (1 - self.b1 ** t)) / denom


@dataclass(frozen=True)
class lion(Transform):
    """c = β1·m + (1−β1)·u; m ← β2·m + (1−β2)·u; returns sign(c)."""

    b1: float = 0.9
    b2: float = 0.99

    def init(self, p):
        return {"exp_avg": torch.zeros_like(p)}

    def update(self, u, p, state, t):
        m = state["exp_avg"]
        c = torch.sign(m * self.b1 + u * (1 - self.b1))
        m.mul_(self.b2).add_(u, alpha=1 - self.b2)
        return c


@dataclass(frozen=True)
class decayed_weights(Transform):
    """u ← u + λ·θ (decoupled weight decay once scaled by η)."""

    weight_decay: float = 0.0

    def update(self, u, p, state, t):
        return u.add(p.detach(), alpha=self.weight_decay) if self.weight_decay else u
