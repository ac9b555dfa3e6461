"""Forward gradient (grade 0 by the project's table, family "forward-gradient").

    ĝ = (1/q) Σ_i (∇L(θ)·z_i) z_i,   z_i ~ N(0, I) or Rademacher,   θ ← θ(1−ηλ) − η ĝ

E ĝ = ∇L(θ) (not the smoothed gradient): the finite difference of ZO-SGD is replaced by the
exact directional derivative ∇L·z, a Jacobian-vector product.  The direction source is the
same seeded z as ZO-SGD's (hence grade 0 and ``zeroth_order = True``), the scalar along it is
exact.

Two paths compute ∇L·z:

* ``model=`` given (preferred): true forward mode, ``torch.func.jvp`` through
  ``torch.func.functional_call`` of a wrapper whose forward is ``closure.loss_with_graph()``.
  No backward graph is built (every parameter is passed as a plain tensor); memory ≈ inference
  plus one model-sized tangent.  Needs eager attention (``attn_implementation="eager"``):
  SDPA/flash kernels have no forward-mode AD.
* no model: reverse mode, ⟨autograd.grad(closure.loss_with_graph()), z⟩.  Same number, FO memory.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .. import _validate as V
from .._directions import direction_tensor, mix_seed
from .closure import capability
from .registry import register
from .zeroth_order import ZOEstimate, ZOOptimizer

__all__ = ["ForwardGrad", "directional_derivative"]

# ZOOptimizer arguments that only concern finite differences, and why they do not apply here.
_NOT_APPLICABLE = {
    "mu": "there is no finite-difference step: ∇L·z is computed exactly",
    "difference": "there is no finite difference to choose: ∇L·z is computed exactly",
    "exact": "the weights are never moved, so there is nothing to restore",
    "defer": "the weights are never moved, so there is no restore to defer",
    "sphere_scale": "the sphere is not offered (dist is 'gaussian' or 'rademacher')",
}


class _LossModule(torch.nn.Module):
    def __init__(self, model, closure):
        super().__init__()
        self.model = model
        self._closure = closure

    def forward(self):
        return capability(self._closure, "loss_with_graph", "ForwardGrad")()


def directional_derivative(closure, params: List[torch.Tensor], tangents: List[torch.Tensor],
                           model: Optional[torch.nn.Module] = None):
    """Return (L(θ), ∇L(θ)·t) with forward mode when ``model`` is given, else reverse mode.

    >>> from optigrade.optimizers import Closure
    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> directional_derivative(Closure(lambda: (w ** 2).sum(), [w]), [w], [torch.tensor([1.0, -1.0])])
    (5.0, -2.0)
    """
    if model is None:
        loss = capability(closure, "loss_with_graph", "ForwardGrad")()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        dd = sum(float((g.double() * t.double()).sum()) for g, t in zip(grads, tangents) if g is not None)
        return float(loss.detach()), dd
    wrapper = _LossModule(model, closure)
    names = {id(p): n for n, p in wrapper.named_parameters()}
    missing = [tuple(p.shape) for p in params if id(p) not in names]
    if missing:
        raise ValueError(f"ForwardGrad: {len(missing)} parameters (shapes {missing[:3]}) are not in "
                         "model.named_parameters(); pass the model that owns the optimized parameters")
    fixed = {n: p.detach() for n, p in wrapper.named_parameters()}
    keys = [names[id(p)] for p in params]

    def f(*tensors):
        return torch.func.functional_call(wrapper, {**fixed, **dict(zip(keys, tensors))}, ())

    try:
        loss, dd = torch.func.jvp(f, tuple(p.detach() for p in params), tuple(tangents))
    except (RuntimeError, NotImplementedError) as err:
        raise RuntimeError(f"forward-mode AD failed ({err}); build the model with "
                           "attn_implementation='eager' (SDPA has no forward AD) or pass model=None "
                           "to use the reverse-mode path") from err
    return float(loss), float(dd)


@register("forward-grad")
class ForwardGrad(ZOOptimizer):
    """Forward-gradient SGD; see the module docstring.

    Args: ``lr``, ``q``, ``seed``, ``weight_decay``, ``chunk``, ``model`` as
    :class:`ZOOptimizer`; ``dist`` in {"gaussian", "rademacher"} (needs E[zzᵀ] = I).
    ``mu``, ``difference``, ``exact``, ``sphere_scale`` (finite-difference settings) are
    refused with the reason.

    On a quadratic one step is exactly θ − η·(∇L·z)·z:

    >>> from optigrade.optimizers import Closure
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    >>> opt = ForwardGrad([w], lr=0.1, seed=4)
    >>> _ = opt.step(Closure(lambda: 0.5 * (w ** 2).sum(), [w]))  # ∇L = θ
    >>> z = direction_tensor(w, mix_seed(opt.last_estimate.seeds[0], 0), "gaussian")
    >>> torch.allclose(w.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64)
    ...                - 0.1 * float(torch.tensor([1.0, -2.0], dtype=torch.float64) @ z) * z)
    True
    >>> ForwardGrad([w], mu=1e-3)
    Traceback (most recent call last):
    ...
    TypeError: ForwardGrad does not take mu: there is no finite-difference step: ∇L·z is computed exactly; remove it (or use 'zo-sgd' for a finite-difference estimate)
    """

    family = "forward-gradient"

    def __init__(self, params, lr: float = 1e-4, *, dist: Optional[str] = None,
                 model: Optional[torch.nn.Module] = None, **kw):
        for key in kw:
            if key in _NOT_APPLICABLE:
                raise TypeError(f"ForwardGrad does not take {key}: {_NOT_APPLICABLE[key]}; remove "
                                "it (or use 'zo-sgd' for a finite-difference estimate)")
        dist = "gaussian" if dist is None else dist
        V.choice("dist", dist, ("gaussian", "rademacher"),
                 "the tangent distribution of the forward gradient (needs E[zzᵀ] = I)")
        super().__init__(params, lr, dist=dist, model=model, **kw)

    def _estimate(self, params, closure) -> ZOEstimate:
        seeds = self._seeds()
        proj, losses = [], []
        for s in seeds:
            tangents = [direction_tensor(p, mix_seed(s, j), self.dist) for j, p in enumerate(params)]
            with torch.enable_grad():
                loss, dd = directional_derivative(closure, params, tangents, self.model)
            del tangents
            proj.append(dd); losses.append(loss)
        d = sum(p.numel() for p in params)
        return ZOEstimate(seeds, [1.0] * len(seeds), proj, d, self.dist, False,
                          sum(losses) / len(losses), len(seeds))

    def _update_chunk(self, p, group, state, flat, sl, g):
        if group["weight_decay"]:
            flat[sl].mul_(1 - group["lr"] * group["weight_decay"])
        flat[sl].add_(g, alpha=-group["lr"])

