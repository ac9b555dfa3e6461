"""Gaussian weight noise: θ ← θ + σ·ε (or θ + σ·|θ|·ε with ``relative=True``), ε ~ N(0, I),
on the ``nn.Linear`` weights :func:`optigrade._select.linear_weights` selects."""

from __future__ import annotations

import copy
from typing import Literal, Optional

import torch

from optigrade import _validate
from optigrade._select import linear_weights

from ._spec import AttackSpec, Number, register
from .rtn import _check_modules, _check_selects

__all__ = ["weight_noise", "NoiseSpec"]


def _check_sigma(sigma):
    _validate.non_negative("sigma", sigma, "the noise scale (absolute, or relative to |θ|)", "0.01")
    return sigma


@torch.no_grad()
def weight_noise(model, sigma: float, relative: bool = False, seed: int = 0,
                 modules: Optional[str] = None, include_embeddings: bool = False,
                 include_norms: bool = False):
    """A copy of ``model`` with θ ← θ + σ·ε (``relative``: θ + σ·|θ|·ε), ε ~ N(0, I) drawn
    from ``torch.Generator().manual_seed(seed)`` in module order; the global RNG is never
    touched and ``model`` is not modified.

    σ = 0 is the identity, and a fixed seed draws the same ε:

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> torch.equal(weight_noise(net, 0.0)[0].weight, net[0].weight)
    True
    >>> before = net[0].weight.detach().clone()
    >>> a, b = weight_noise(net, 0.1, seed=3), weight_noise(net, 0.1, seed=3)
    >>> torch.equal(a[0].weight, b[0].weight), torch.equal(a[0].weight, before), torch.equal(net[0].weight, before)
    (True, False, True)
    >>> weight_noise(net, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: sigma must be >= 0, got -1.0; the noise scale (absolute, or relative to |θ|), try 0.01
    """
    _check_sigma(sigma)
    _check_selects(model, modules, include_embeddings, include_norms)  # a selector matching nothing: no attack
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(int(seed))
    for _, w in linear_weights(out, modules, include_embeddings, include_norms):
        eps = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.dtype)
        w.add_(eps * (sigma * w.abs() if relative else sigma))
    return out


class NoiseSpec(AttackSpec):
    """Settings of ``kind: noise`` (:func:`weight_noise`; the run seed is passed by the study).

    >>> NoiseSpec(sigma=0.01).settings
    {'sigma': 0.01}
    """

    kind: Literal["noise"] = "noise"
    sigma: Number
    relative: bool = False
    modules: Optional[str] = None
    include_embeddings: bool = False
    include_norms: bool = False

    examples = {"sigma": 0.01}
    checks = {"sigma": _check_sigma, "modules": _check_modules}

    def _check_model(self, model, model_name: str) -> None:
        """``modules`` must select some weight of ``model``."""
        _check_selects(model, self.modules, self.include_embeddings, self.include_norms)


register("noise", weight_noise, NoiseSpec, seed=True)
