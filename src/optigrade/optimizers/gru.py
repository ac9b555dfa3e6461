"""GRU: gradient-rectified unlearning (Wang et al., ICML 2025), as a wrapper of any optimizer
that steps on a gradient (first-order, compressed, second-order).

Per step:
    g_u = ∇ of the unlearning objective (``rectify="full"``: the closure's whole loss,
          L = L_f + L_r, the objective the loop minimizes; ``rectify="forget"``: ∇L_f only,
          with ∇L_r added back *after* the projection, unprojected)
    g_r = ∇ closure.retain_loss() (the plain retain NLL)
    ĝ_r ← γ·g_r + (1−γ)·ĝ_r       (γ weights the current gradient; ĝ_r starts at the first g_r)
    g̃ = gru_project(g_u, ĝ_r)     (one global dot product, float64)
and the base optimizer steps on g̃ (handed over through the closure contract, so Sophia and
AdaHessian still get their curvature from the original closure).

Default ``rectify="full"``: SPEC §1.2 defines g_u as the gradient of the objective being
minimized (GA, NPO, GradDiff, …) and the loop's objective includes its retain term; "forget"
is the paper's "add the retain gradient after projection" option.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from .. import _validate as V
from ._common import grad_params, grads_or_zeros, require_closure
from ._wrapper import WrappedOptimizer, param_list
from .closure import capability
from .registry import Capabilities, build, register_suffix

__all__ = ["gru_project", "GRU"]

RECTIFY = ("full", "forget")
_GRU_KEYS = ("gamma", "cos_clip", "rectify")  # GRU's own keywords in "<base>+gru" names


def gru_project(g_u: Sequence[torch.Tensor], g_r: Sequence[torch.Tensor],
                cos_clip: Optional[float] = None) -> Tuple[List[torch.Tensor], dict]:
    """Rectify ``g_u`` against ``g_r`` (lists of tensors = one vector over all parameters).

        if ⟨g_u, g_r⟩ < 0:  g̃ = g_u − (⟨g_u, g_r⟩ / ‖g_r‖²)·g_r   else g̃ = g_u

    computed in float64 and cast back.  g̃ is the closest vector to g_u with no negative
    component along g_r.  ``cos_clip`` = c (e.g. −0.5), an interpretation of the reference's
    option: the cosine used in the coefficient is max(cos(g_u, g_r), c), so a g_u nearly
    opposite to g_r is only partly projected (⟨g̃, g_r⟩ = (cos − c)·‖g_u‖‖g_r‖ < 0 stays)
    instead of being reduced to almost nothing.

    Returns (g̃, info) with info = {"dot", "cos", "projected"}.

    >>> g, info = gru_project([torch.tensor([1.0, -1.0])], [torch.tensor([0.0, 1.0])])
    >>> g[0].tolist(), info["projected"]
    ([1.0, 0.0], True)
    """
    u = [x.detach().double() for x in g_u]
    r = [x.detach().double() for x in g_r]
    dot = float(sum((a * b).sum() for a, b in zip(u, r)))
    nr2 = float(sum((b * b).sum() for b in r))
    nu2 = float(sum((a * a).sum() for a in u))
    cos = dot / math.sqrt(nu2 * nr2) if nu2 > 0 and nr2 > 0 else 0.0
    info = {"dot": dot, "cos": cos, "projected": False}
    if dot >= 0 or nr2 == 0:
        return [x.detach().clone() for x in g_u], info
    coef = dot / nr2
    if cos_clip is not None and cos < cos_clip:
        coef = cos_clip * math.sqrt(nu2 / nr2)
    info["projected"] = True
    return [(a - coef * b).to(x.dtype) for a, b, x in zip(u, r, g_u)], info


class _Rectified:
    """A closure that hands a precomputed gradient to the base optimizer (other hooks forward)."""

    def __init__(self, closure, params, grads, loss):
        self._closure, self._params, self._grads, self._loss = closure, params, grads, loss

    def __call__(self):
        for p, g in zip(self._params, self._grads):
            p.grad = g.clone()
        return self._loss

    def __getattr__(self, name):
        return getattr(self._closure, name)


class GRU(Capabilities, WrappedOptimizer):
    """GRU wrapper (see module docstring).  ``grade``, ``needs_hvp`` and ``seeded`` follow the
    base optimizer (per instance), ``family`` is ``"gru(<base family>)"``.

    Args:
        params: parameters or groups.  base: registered name or Optimizer class ("adam").
        gamma: γ ∈ (0, 1], the weight of the current retain gradient in the EMA (0.8).
        cos_clip: None or c ∈ [−1, 0), see :func:`gru_project`.
        rectify: "full" | "forget" (which gradient is g_u).  **base_hparams: for the base (lr, …).

    The step removes the component of ∇L that opposes the retain gradient (here ∇L = (1, −1),
    ∇L_r = (0, 1), so SGD at lr 1 steps on (1, 0)):

    >>> from optigrade.optimizers import Closure
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    >>> c = Closure(lambda: w[0] - w[1], [w], retain_loss_fn=lambda: w[1])
    >>> opt = GRU([w], base="sgd", lr=1.0)
    >>> _ = opt.step(c); w.tolist(), opt.last_info["projected"], opt.family
    ([0.0, 1.0], True, 'gru(first-order)')
    """

    grade = 1.0
    family = "gru"
    requires_closure = True

    def __init__(self, params, base="adam", gamma: float = 0.8, cos_clip: Optional[float] = None,
                 rectify: str = "full", **base_hparams):
        params = param_list(params)
        if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0 < gamma <= 1):
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}; the weight of the current "
                             "retain gradient in GRU's EMA, try 0.8")
        if cos_clip is not None and not (isinstance(cos_clip, (int, float)) and -1 <= cos_clip < 0):
            raise ValueError(f"cos_clip must be None or in [-1, 0), got {cos_clip!r}; the floor on "
                             "cos(g_u, g_r) used by the projection, try -0.5")
        V.choice("rectify", rectify, RECTIFY, "which gradient GRU rectifies")
        inner = build(base, param_list(params), "GRU", **base_hparams)
        if not getattr(inner, "accepts_rectified_grad", True):
            raise ValueError(f"GRU cannot wrap {base!r}: it does not step on a gradient handed to it "
                             "(zeroth-order, FO-RS, SAM, hybrid); use a first-order, compressed or "
                             "second-order base such as 'adam', 'signadam' or 'sophia-h'")
        super().__init__(params, dict(lr=inner.defaults.get("lr", 1e-5), gamma=float(gamma),
                                      cos_clip=cos_clip, rectify=rectify), {"base": inner})
        for own, g in zip(self.param_groups, inner.param_groups):
            own["lr"] = g["lr"]
        self.grade = getattr(inner, "grade", 1.0)
        self.family = f"gru({getattr(inner, 'family', type(inner).__name__)})"
        self.needs_hvp = getattr(inner, "needs_hvp", False)
        self.seeded = getattr(inner, "seeded", False)
        self.last_info: dict = {}

    def step(self, closure=None):
        require_closure(closure, self, " with retain_loss(); see optimizers.Closure")
        retain_loss = capability(closure, "retain_loss", "GRU")
        self._sync("base")
        params = grad_params(self)
        d = self.defaults
        with torch.enable_grad():
            extra = None
            if d["rectify"] == "full":
                loss = closure()
                g_u = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            else:
                parts = capability(closure, "parts", "GRU(rectify='forget')")(True)
                g_u = grads_or_zeros(parts["forget"], params, retain_graph=True)
                extra = grads_or_zeros(parts["retain"], params)
                loss = (parts["forget"] + parts["retain"]).detach()
            lr_ = retain_loss()
            if lr_ is None:
                raise ValueError("GRU needs closure.retain_loss() to return the retain NLL, got None; "
                                 "build the closure with retain_fn= or retain_loss_fn=")
            g_r = grads_or_zeros(lr_, params)
        ema = []
        for p, g in zip(params, g_r):
            s = self.state[p]
            if "retain_ema" not in s:
                s["retain_ema"] = g.detach().clone()
            else:
                s["retain_ema"].mul_(1 - d["gamma"]).add_(g, alpha=d["gamma"])
            ema.append(s["retain_ema"])
        g_t, info = gru_project(g_u, ema, d["cos_clip"])
        if extra is not None:
            g_t = [a + b for a, b in zip(g_t, extra)]
        self.last_info = info
        self.inner["base"].step(_Rectified(closure, params, g_t, loss))
        return loss


def _make_gru(base: str, params, **hparams) -> GRU:
    """``make("<base>+gru", ...)``: GRU's keywords are split off, the rest go to the base."""
    gru_kw = {k: hparams.pop(k) for k in _GRU_KEYS if k in hparams}
    return GRU(params, base=base, **gru_kw, **hparams)


register_suffix("+gru", GRU, _make_gru,
                accepts=lambda cls: bool(getattr(cls, "accepts_rectified_grad", False)),
                bases="first-order, compressed and second-order bases")
