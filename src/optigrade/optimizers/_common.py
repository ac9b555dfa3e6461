"""Private helpers shared by several optimizer modules (one copy each)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch.optim import Optimizer

from .. import _validate as V


def param_pairs(opt: Optimizer) -> List[Tuple[torch.Tensor, dict]]:
    """(parameter, its group) for every trainable parameter, in group order."""
    return [(p, g) for g in opt.param_groups for p in g["params"] if p.requires_grad]


def grad_params(opt: Optimizer) -> List[torch.Tensor]:
    """The trainable parameters of ``opt``, in group order."""
    return [p for p, _ in param_pairs(opt)]


def grads_or_zeros(loss: Optional[torch.Tensor], params, retain_graph: bool = False) -> List[torch.Tensor]:
    """∇loss per parameter; zeros where a parameter does not reach the loss, and for a loss
    without a graph (a constant term, e.g. an objective with no retain part)."""
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    gs = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def grad_or_zeros(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, or zeros when the closure left it unset."""
    return torch.zeros_like(p) if p.grad is None else p.grad


def advanced(counter: dict) -> dict:
    """A seed/step counter one step on (a new dict, so a saved state_dict is never mutated)."""
    return {**counter, "step": counter["step"] + 1}


def decoupled_decay(value, fix="0.0") -> float:
    """Validate a decoupled weight decay λ (θ ← θ(1 − ηλ) − …)."""
    return V.non_negative("weight_decay", value, "the decoupled weight decay λ", fix)


def require_closure(closure, opt: Optimizer, need: str) -> None:
    """Raise ``TypeError("<Class>.step needs a closure<need>")`` when ``closure`` is None."""
    if closure is None:
        raise TypeError(f"{type(opt).__name__}.step needs a closure{need}")
