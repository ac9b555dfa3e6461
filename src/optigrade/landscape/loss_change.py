"""How much a given weight change moves the loss, read against the local geometry.

An attack (a GGUF export, round-to-nearest, noise, one relearning step) moves θ by some δ.
:func:`loss_change` measures the change this causes and puts it next to the first- and
second-order Taylor predictions at θ, so a table can say whether the gradient, the curvature,
or neither accounts for what the attack did (SPEC §3.2 for quantization, §3.4 for relearning).
"""

from __future__ import annotations

import numpy as np
import torch

from .probe import Probe, flatten
from .results import LossChange

__all__ = ["loss_change"]


def _requested(probe: Probe, delta) -> torch.Tensor:
    """δ as the caller gave it, flat float64 on the probe's device (checked by the Probe)."""
    probe._as_tensors(delta)  # shapes and finiteness, with the Probe's own error messages
    if isinstance(delta, np.ndarray):
        delta = torch.from_numpy(np.ascontiguousarray(delta))
    if isinstance(delta, torch.Tensor):
        return delta.detach().to(device=probe.device, dtype=torch.float64)
    return flatten([d.detach().to(probe.device) for d in delta], torch.float64)


def loss_change(probe: Probe, delta, *, grad=None) -> LossChange:
    """ΔL = L(θ+δ) − L(θ) next to its Taylor predictions at θ.

        measured:      ΔL = L(θ + δ) − L(θ)
        first order:   gᵀδ,             g = ∇L(θ)
        second order:  gᵀδ + ½ δᵀHδ,    H = ∇²L(θ)  (one Hessian-vector product)

    with relative errors |prediction − ΔL| / |ΔL| (0 when both are 0, inf when only ΔL is).
    For a quadratic loss the second-order prediction is exact; where it misses, the higher
    derivatives along δ matter (or ΔL is below ``loss_change_resolution``, the rounding scale
    eps(dtype)·|L|).

    δ is the displacement *actually applied*: θ + δ is rounded to the weights' dtype, so the
    predictions use δ̃ = fl(θ + δ) − θ (computed in float64), and ‖δ̃ − δ‖ is reported as
    ``delta_rounding_norm`` (in bf16 a δ smaller than half a unit in the last place is lost
    entirely, and then ΔL = 0 is the right answer).  Both losses go through ``probe.loss()``
    (the same forward path, so ΔL carries no kernel difference between grad and no-grad mode).

    Args:
        probe: the model, data and loss at θ.
        delta: the weight change: a list of tensors shaped like ``probe.params``, or a flat
            vector (torch or numpy) in the Probe's layout (what ``probe.perturbed`` accepts).
        grad: ∇L(θ) already computed (a flat vector in the Probe's layout), shared when many
            δ are read at the same θ; None (default) computes it here (one gradient).

    Returns:
        :class:`LossChange`; ``.to_frame()`` has one row per quantity (loss_change,
        loss_change_first_order, loss_change_second_order, first_order_rel_error,
        second_order_rel_error, curvature_along_delta (δᵀHδ), delta_norm, delta_rounding_norm,
        loss_change_resolution, loss_at_checkpoint).  Cost: 2 losses, 1 gradient, 1 HVP.
        The weights are restored bit for bit (``probe.perturbed`` restores by copy).

    Raises:
        ValueError: δ of the wrong shape or with non-finite entries (from the Probe).

    On least squares L = ½‖Aθ − y‖², g = Aᵀr and H = AᵀA, so
    ΔL = gᵀδ + ½δᵀHδ exactly:

    >>> import numpy as np
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> X, y = probe.batches[0]
    >>> A = np.c_[X.numpy(), np.ones(8)]
    >>> g = A.T @ (A @ probe.flat_params().numpy() - y.numpy())
    >>> delta = np.array([0.3, -0.1, 0.2, 0.05])
    >>> r = loss_change(probe, delta)
    >>> bool(np.isclose(r.measured, g @ delta + 0.5 * delta @ H @ delta, rtol=1e-12, atol=0))
    True
    >>> bool(np.isclose(r.first_order, g @ delta, rtol=1e-12)), r.second_order_rel_error < 1e-12
    (True, True)
    >>> r.cost
    Cost(loss=2, grad=1, hvp=1)
    >>> r.to_frame(subject="attacked:rtn-4bit", data="forget").quantity.tolist()[:3]
    ['loss_change', 'loss_change_first_order', 'loss_change_second_order']
    >>> loss_change(probe, delta, grad=probe.grad()).cost      # a gradient shared over many δ
    Cost(loss=2, grad=0, hvp=1)
    """
    requested = _requested(probe, delta)
    given = None if grad is None else _requested(probe, grad)
    start = probe.cost()
    theta = probe.flat_params()
    l0 = probe.loss()
    with probe.perturbed(delta):
        l1 = probe.loss()
        applied = probe.flat_params().double() - theta.double()  # δ̃ = fl(θ + δ) − θ
    del theta
    g = probe.grad().double() if given is None else given
    hd = probe.hvp(applied).double()
    first = float(g @ applied)
    curvature = float(applied @ hd)
    eps = float(torch.finfo(probe.dtype).eps) if probe.dtype.is_floating_point else 0.0
    settings = dict(dtype=str(probe.dtype).replace("torch.", ""), hvp_mode=probe.hvp_mode,
                    n_params=probe.numel, requested_delta_norm=float(requested.norm()))
    return LossChange(loss=l0, loss_perturbed=l1, first_order=first, curvature=curvature,
                      delta_norm=float(applied.norm()),
                      rounding_norm=float((applied - requested).norm()),
                      resolution=eps * max(abs(l0), abs(l1)), settings=settings,
                      cost=probe.cost() - start)
