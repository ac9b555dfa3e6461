"""The FO/ZO hybrid (the grade paper's method, "Downgrade to Upgrade" §1.1 of SPEC).

mode="alternate" (default): n_fo first-order steps, then n_zo zeroth-order steps, repeated;
every parameter gets both kinds of step (a split in time, not by layer)::

    step t is FO if (t mod (n_fo + n_zo)) < n_fo, else ZO

so a run of ``hybrid_steps(k, n_fo, n_zo)`` steps is exactly k rounds and ends on a ZO step.
A loop with a stopping rule should stop only when :attr:`HybridFOZO.at_round_end` is True
(keep stepping until the current round's ZO block is done).

mode="mix" (Addax-style convex mixture): each step the FO optimizer steps on
g = (1−α)·∇L + α·ĝ_ZO (one ZO estimate from the ZO optimizer's settings and seed stream).

``persist_state``: whether each inner optimizer keeps its state (Adam moments, ZO-Adam
moments) across phase switches (True) or restarts it when its phase begins (False); the
paper does not say, so it is an option and is stored in ``defaults``.  Counters and seeds
always persist.  ``lr`` is the FO learning rate, ``zo_lr`` the ZO one (default: lr).
grade = 0.5: half the steps use gradients, half loss values only (for "mix": 1 − α, stored
per instance as ``self.grade``).

``alpha`` here is the **ZO weight of the mixture** (mode="mix"), not the retain weight of the
unlearning objectives nor a significance level.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import _validate as V
from ._common import grad_or_zeros, grad_params, require_closure
from ._wrapper import WrappedOptimizer, param_list
from .registry import Capabilities, build, register

__all__ = ["HybridFOZO", "hybrid_steps"]

MODES = ("alternate", "mix")


def hybrid_steps(total_rounds: int, n_fo: int = 20, n_zo: int = 20) -> int:
    """Number of steps for ``total_rounds`` full FO→ZO rounds (ends on a ZO step).

    >>> hybrid_steps(3), hybrid_steps(2, n_fo=1, n_zo=4)  # k·(n_fo + n_zo)
    (120, 10)
    """
    V.int_at_least("total_rounds", total_rounds, 1, "the number of FO→ZO rounds", 5)
    return total_rounds * (n_fo + n_zo)


def _reset(opt):
    for k in [k for k in opt.state if isinstance(k, torch.Tensor)]:
        del opt.state[k]


@register("hybrid")
class HybridFOZO(Capabilities, WrappedOptimizer):
    """Alternating (or mixed) first-order / zeroth-order optimizer; see the module docstring.

    Args:
        params: parameters or groups.  lr: the FO learning rate.  zo_lr: the ZO learning rate.
        n_fo, n_zo: steps per phase (20 each).  fo: FO optimizer ("adam"; a registered name or
        an Optimizer class).  zo: ZO optimizer ("zo-sgd"; its class must declare
        ``zeroth_order = True``).  persist_state: keep inner states across switches.
        mode: "alternate" | "mix".  alpha: the ZO weight of the mixture (mode="mix").
        fo_hparams, zo_hparams: extra keyword arguments for the inner optimizers (the study's
        seed goes into ``zo_hparams``: ``seed_in = "zo_hparams"``).

    >>> from optigrade.optimizers import Closure
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = HybridFOZO([w], lr=0.01, n_fo=2, n_zo=1)
    >>> phases = []
    >>> for _ in range(hybrid_steps(2, 2, 1)):
    ...     phases.append(opt.phase); _ = opt.step(Closure(lambda: (w ** 2).sum(), [w]))
    >>> phases, opt.at_round_end
    (['fo', 'fo', 'zo', 'fo', 'fo', 'zo'], True)
    """

    grade = 0.5
    family = "hybrid"
    requires_closure = True
    seeded = True
    seed_in = "zo_hparams"

    def __init__(self, params, lr: float = 1e-5, *, zo_lr: Optional[float] = None,
                 n_fo: int = 20, n_zo: int = 20, fo="adam", zo="zo-sgd",
                 persist_state: bool = True, mode: str = "alternate", alpha: float = 0.5,
                 fo_hparams: Optional[dict] = None, zo_hparams: Optional[dict] = None):
        params = param_list(params)
        lr = V.lr(lr)
        zo_lr = lr if zo_lr is None else V.positive("zo_lr", zo_lr, "the ZO learning rate", "1e-6")
        n_fo = V.int_at_least("n_fo", n_fo, 1, "first-order steps per round", 20)
        n_zo = V.int_at_least("n_zo", n_zo, 1, "zeroth-order steps per round", 20)
        V.choice("mode", mode, MODES, "how FO and ZO steps combine")
        if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}; the ZO weight of the "
                             "mixture g = (1-alpha)*g_FO + alpha*g_ZO, try 0.5")
        fo_opt = build(fo, param_list(params), "HybridFOZO(fo)", **dict(fo_hparams or {}, lr=lr))
        zo_opt = build(zo, param_list(params), "HybridFOZO(zo)", **dict(zo_hparams or {}, lr=zo_lr))
        if getattr(fo_opt, "zeroth_order", False) or not getattr(zo_opt, "zeroth_order", False):
            raise ValueError(f"HybridFOZO needs a gradient-based fo and a zeroth-order zo, got "
                             f"fo={fo!r} (grade {getattr(fo_opt, 'grade', '?')}), zo={zo!r} (grade "
                             f"{getattr(zo_opt, 'grade', '?')}); try fo='adam', zo='zo-sgd'")
        super().__init__(params, dict(lr=lr, zo_lr=zo_lr, n_fo=n_fo, n_zo=n_zo, fo=str(fo),
                                      zo=str(zo), persist_state=bool(persist_state), mode=mode,
                                      alpha=float(alpha)), {"fo": fo_opt, "zo": zo_opt})
        self.state["hybrid"] = {"step": 0, "last_phase": None, "switches": 0}
        if mode == "mix":
            self.grade = 1.0 - float(alpha)

    @property
    def phase(self) -> str:
        """The phase of the *next* step: "fo", "zo" or "mix"."""
        d = self.defaults
        if d["mode"] == "mix":
            return "mix"
        t = self.state["hybrid"]["step"]
        return "fo" if t % (d["n_fo"] + d["n_zo"]) < d["n_fo"] else "zo"

    @property
    def at_round_end(self) -> bool:
        """True when the steps taken so far form whole FO→ZO rounds (the last step was ZO)."""
        t = self.state["hybrid"]["step"]
        return t > 0 and (self.defaults["mode"] == "mix" or t % (self.defaults["n_fo"] + self.defaults["n_zo"]) == 0)

    def step(self, closure=None):
        require_closure(closure, self, " (see optimizers.Closure)")
        self._sync("fo")
        self._sync("zo", "lr", "zo_lr")
        phase = self.phase
        st = self.state["hybrid"]
        switched = st["last_phase"] is not None and st["last_phase"] != phase
        if switched and not self.defaults["persist_state"]:
            _reset(self.inner[phase])
        if phase == "fo":
            loss = self.inner["fo"].step(closure)
        elif phase == "zo":
            loss = self.inner["zo"].step(closure)
        else:
            g_zo = self.inner["zo"].estimate_gradient(closure)
            with torch.enable_grad():
                loss = closure()
            a = self.defaults["alpha"]
            for p, gz in zip(grad_params(self), g_zo):
                p.grad = grad_or_zeros(p).mul(1 - a).add_(gz, alpha=a)
            self.inner["fo"].step()
        self.state["hybrid"] = {"step": st["step"] + 1, "last_phase": phase,
                                "switches": st["switches"] + int(switched)}
        return loss
