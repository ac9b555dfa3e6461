"""Second-order optimizers (grade 2): Sophia (H, G, the SOUL setting) and AdaHessian.

Gradients come from the closure's contract (``closure()`` under grad fills ``.grad``; so GRU
can hand a rectified gradient to these optimizers); curvature comes from the closure's extra
hooks: ``loss_with_graph()`` (HVPs by double backward) or ``sampled_label_loss(generator)``.
The HVP rebuilds the graph: an HVP step costs one more forward and a double backward.

``rho`` here (Sophia) is a **clipping scale** in the denominator ρ·h, not a radius (SAM's and
the sharpness functions' ``rho`` is a radius).
"""

from __future__ import annotations

import math

from typing import List, Optional

import torch
from torch.optim import Optimizer

from .. import _validate as V
from .._directions import direction_tensor, mix_seed
from ._common import (advanced, decoupled_decay, grad_or_zeros, grads_or_zeros, param_pairs,
                      require_closure)
from .closure import Closure, capability
from .registry import Capabilities, register

__all__ = ["hutchinson_diagonal", "sophia_update_", "Sophia", "SophiaH", "SophiaG", "SOUL",
           "AdaHessian"]

ESTIMATORS = ("hutchinson", "gnb", "true-label")


def hutchinson_diagonal(loss: torch.Tensor, params: List[torch.Tensor],
                        probes: List[torch.Tensor]) -> List[torch.Tensor]:
    """u ⊙ (H u) for one probe u (per parameter), H the Hessian of ``loss`` (with graph).

    E[u ⊙ Hu] = diag(H) for Rademacher or Gaussian u; one Rademacher probe is exact when H is
    diagonal (u ⊙ Du = D·u² = diag D):

    >>> v = torch.ones(3, dtype=torch.float64, requires_grad=True)
    >>> D = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> u = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    >>> hutchinson_diagonal(0.5 * (D * v ** 2).sum(), [v], [u])[0].tolist()
    [1.0, 2.0, 3.0]
    """
    gs = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [(i, g) for i, g in enumerate(gs) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if not live:
        return out
    hv = torch.autograd.grad([g for _, g in live], [params[i] for i, _ in live],
                             grad_outputs=[probes[i] for i, _ in live], allow_unused=True)
    for (i, _), h in zip(live, hv):
        if h is not None:
            out[i] = probes[i] * h.detach()
    return out


def sophia_update_(p, g, m, h, *, lr, beta1, rho, eps, weight_decay) -> None:
    """m ← β1 m + (1−β1) g;  θ ← θ(1 − ηλ) − η·sign(m)·min(|m| / (ρ·max(h, 0) + ε), 1).

    (h is clamped at 0: a negative curvature estimate means "no information", so the step
    falls back to η·sign(m), the clipped end of Sophia's update.)  ρ is the clipping scale.

    >>> p, m = torch.tensor([1.0]), torch.zeros(1)
    >>> sophia_update_(p, torch.tensor([2.0]), m, torch.tensor([100.0]), lr=0.1, beta1=0.5,
    ...                rho=1.0, eps=0.0, weight_decay=0.0)
    >>> m.tolist(), [round(x, 6) for x in p.tolist()]  # m = 1; θ − 0.1·1·(1/100)
    ([1.0], [0.999])
    """
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    p.mul_(1 - lr * weight_decay)
    ratio = (m.abs() / (h.clamp(min=0) * rho + eps)).clamp_(max=1)
    p.addcmul_(m.sign(), ratio, value=-lr)


class _SecondOrder(Capabilities, Optimizer):
    """One step: gradient from the closure; every ``getattr(self, _every)`` steps a
    diagonal-curvature estimate (``_curvature``); then ``_update`` per parameter.
    ``_counter`` names the ``{"seed", "step"}`` entry of ``self.state``."""

    grade = 2.0
    family = "second-order"
    requires_closure = True
    accepts_rectified_grad = True
    seeded = True
    _counter = ""
    _every = ""

    def __init__(self, params, defaults: dict, seed: int):
        super().__init__(params, defaults)
        self.state[self._counter] = {"seed": V.seed(seed), "step": 0}

    def _curvature(self, closure, params, t: int, seed: int) -> List[torch.Tensor]:
        raise NotImplementedError

    def _update(self, p, group, state: dict, curvature: Optional[torch.Tensor]) -> None:
        raise NotImplementedError

    @staticmethod
    def _hutchinson(closure, params, t: int, seed: int, who: str) -> List[torch.Tensor]:
        """u ⊙ Hu with Rademacher u drawn from ``mix_seed(seed, t, j)`` per parameter j."""
        loss = capability(closure, "loss_with_graph", who)()
        probes = [direction_tensor(p, mix_seed(seed, t, j), "rademacher") for j, p in enumerate(params)]
        return hutchinson_diagonal(loss, params, probes)

    @torch.no_grad()
    def step(self, closure=None):
        require_closure(closure, self, " (curvature needs the loss); use "
                        "optimizers.Closure(loss_fn, params)")
        with torch.enable_grad():
            loss = closure()
        pairs = param_pairs(self)
        st = self.state[self._counter]
        curv = None
        if st["step"] % getattr(self, self._every) == 0:
            with torch.enable_grad():
                curv = self._curvature(closure, [p for p, _ in pairs], st["step"], st["seed"])
        for j, (p, group) in enumerate(pairs):
            self._update(p, group, self.state[p], None if curv is None else curv[j])
        self.state[self._counter] = advanced(st)
        return loss


def _quadratic(w, a):
    """Closure of ½Σ a_i θ_i² (for the doctests), also as its own sampled-label loss."""
    f = lambda: 0.5 * (a * w ** 2).sum()
    return Closure(f, [w], sampled_label_fn=lambda gen: f())


class Sophia(_SecondOrder):
    """Sophia (Liu et al. 2023) with a pluggable diagonal-curvature estimator ĥ:

        every k steps: h ← β2 h + (1−β2) ĥ;   then :func:`sophia_update_`.

    estimator:
      "hutchinson" (Sophia-H): ĥ = u ⊙ (H u), u Rademacher, HVP from closure.loss_with_graph().
      "gnb" (Sophia-G): ĥ = B·ĝ ⊙ ĝ, ĝ = ∇ CE(model, labels sampled from its own softmax)
          (closure.sampled_label_loss(generator)), the Gauss-Newton-Bartlett estimator.
      "true-label" (SOUL): ĥ = B·g ⊙ g with g the gradient of the closure's own loss.
    B = ``bartlett_scale``: the GNB identity holds for the *sum* over examples; with a loss
    averaged over B examples/tokens, B·ĝ⊙ĝ is the per-example estimate.  The default B = 1
    leaves that factor to ρ (the official code multiplies by its batch size instead); set B
    to the number of examples (or tokens) your loss averages for the paper's scale.
    ``rho`` = ρ is the clipping scale of :func:`sophia_update_` (not a radius).

    On ½Σ a_i θ_i² the Hutchinson ĥ is exactly a; with a large ratio |m|/(ρh) the step is
    clipped to θ(1 − ηλ) − η·sign(g):

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    >>> a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    >>> opt = Sophia([w], lr=0.1)
    >>> _ = opt.step(_quadratic(w, a))
    >>> [round(x, 12) for x in opt.state[w]["hessian"].tolist()]  # h = (1−β2)·a
    [0.01, 0.04]
    >>> [round(x, 12) for x in w.tolist()]
    [0.89, -1.88]
    """

    _counter, _every = "sophia", "k"
    default_estimator = "hutchinson"

    def __init__(self, params, lr: float = 1e-4, betas=(0.965, 0.99), rho: float = 0.04,
                 eps: float = 1e-12, weight_decay: float = 0.1, k: int = 10,
                 estimator: Optional[str] = None, bartlett_scale: float = 1.0, seed: int = 0):
        estimator = self.default_estimator if estimator is None else estimator
        V.choice("estimator", estimator, ESTIMATORS, "the Hessian-diagonal estimator")
        defaults = dict(lr=V.lr(lr, "1e-4"), betas=V.betas(betas, (0.965, 0.99)),
                        rho=V.positive("rho", rho, "Sophia's clipping scale ρ", "0.04"),
                        eps=V.positive("eps", eps, "the denominator guard ε", "1e-12"),
                        weight_decay=decoupled_decay(weight_decay, "0.1"))
        self.k = V.int_at_least("k", k, 1, "steps between Hessian refreshes", 10)
        self.estimator = estimator
        self.bartlett_scale = V.positive("bartlett_scale", bartlett_scale,
                                         "B, the batch size of the GNB estimate", "1.0")
        self.needs_hvp = estimator == "hutchinson"
        super().__init__(params, defaults, seed)

    def _curvature(self, closure, params, t, seed):
        if self.estimator == "hutchinson":
            return self._hutchinson(closure, params, t, seed, "Sophia-H")
        if self.estimator == "gnb":
            gen = torch.Generator(device=params[0].device)
            gen.manual_seed(mix_seed(seed, t, 1 << 20))
            loss = capability(closure, "sampled_label_loss", "Sophia-G")(gen)
            return [g.detach() ** 2 * self.bartlett_scale for g in grads_or_zeros(loss, params)]
        return [grad_or_zeros(p) ** 2 * self.bartlett_scale for p in params]

    def _update(self, p, group, s, hhat):
        if not s:
            s["exp_avg"] = torch.zeros_like(p)
            s["hessian"] = torch.zeros_like(p)
        b1, b2 = group["betas"]
        if hhat is not None:
            s["hessian"].mul_(b2).add_(hhat, alpha=1 - b2)
        if p.grad is None:
            return
        sophia_update_(p, p.grad, s["exp_avg"], s["hessian"], lr=group["lr"], beta1=b1,
                       rho=group["rho"], eps=group["eps"], weight_decay=group["weight_decay"])


@register("sophia-h")
class SophiaH(Sophia):
    """Sophia-H: Hutchinson ĥ = u ⊙ Hu (defaults β = (0.965, 0.99), ρ = 0.04, λ = 0.1, k = 10).

    >>> SophiaH([torch.nn.Parameter(torch.ones(2))]).needs_hvp
    True
    """

    needs_hvp = True


@register("sophia-g")
class SophiaG(Sophia):
    """Sophia-G: Gauss-Newton-Bartlett ĥ = B·ĝ⊙ĝ from model-sampled labels
    (``closure.sampled_label_loss(generator)``; here the doctest's closure returns the loss
    itself, so ĝ = ∇L = a⊙θ):

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    >>> opt = SophiaG([w], lr=0.1)
    >>> _ = opt.step(_quadratic(w, torch.tensor([1.0, 4.0], dtype=torch.float64)))
    >>> [round(x, 12) for x in opt.state[w]["hessian"].tolist()]  # (1−β2)·ĝ² = 0.01·[1, 64]
    [0.01, 0.64]
    """

    default_estimator = "gnb"


@register("soul")
class SOUL(Sophia):
    """The SOUL setting (Sophia for unlearning): k = 1, true labels (ĥ = B·g⊙g from the
    closure's own gradient, no extra pass), β = (0.9, 0.95), ρ = 0.03, lr 5e-6.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.01], dtype=torch.float64))
    >>> opt = SOUL([w], lr=0.1)
    >>> _ = opt.step(_quadratic(w, torch.ones(2, dtype=torch.float64)))
    >>> [round(x, 9) for x in w.tolist()]  # θ(1 − ηλ) − η·sign(m)·min(|m|/(ρh + ε), 1) = 0.99θ − 0.1
    [0.89, -0.0901]
    """

    def __init__(self, params, lr: float = 5e-6, **kw):
        for key, v in dict(estimator="true-label", k=1, betas=(0.9, 0.95), rho=0.03).items():
            kw.setdefault(key, v)
        super().__init__(params, lr, **kw)


@register("adahessian")
class AdaHessian(_SecondOrder):
    """AdaHessian (Yao et al. 2021): D = z ⊙ (H z), z Rademacher (every ``hessian_every`` steps);

        m ← β1 m + (1−β1) g;   v ← β2 v + (1−β2) D²;
        θ ← θ − η·[ (m/(1−β1ᵗ)) / ((v/(1−β2ᵗ))^{k/2} + ε) + λθ ],   k = hessian_power

    No spatial averaging (it only applies to convolution kernels).  Defaults lr 0.15,
    β = (0.9, 0.999), ε = 1e-4, k = 1.  On ½Σ a_i θ_i² the first step is a damped Newton
    step θ − η·g/(|a| + ε) ≈ (1 − η)θ:

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    >>> opt = AdaHessian([w], lr=0.5)
    >>> _ = opt.step(_quadratic(w, torch.tensor([1.0, 4.0], dtype=torch.float64)))
    >>> [round(x, 3) for x in w.tolist()]
    [0.5, -1.0]
    """

    needs_hvp = True
    _counter, _every = "adahessian", "hessian_every"

    def __init__(self, params, lr: float = 0.15, betas=(0.9, 0.999), eps: float = 1e-4,
                 weight_decay: float = 0.0, hessian_power: float = 1.0, hessian_every: int = 1,
                 seed: int = 0):
        ok = isinstance(hessian_power, (int, float)) and not isinstance(hessian_power, bool)
        hp = float(hessian_power) if ok else math.nan
        if not 0 < hp <= 1:
            raise ValueError(f"hessian_power must be in (0, 1], got {hessian_power!r}; the exponent "
                             "of the curvature denominator, try 1.0")
        defaults = dict(lr=V.lr(lr, "0.15"), betas=V.betas(betas),
                        eps=V.positive("eps", eps, "the denominator guard ε", "1e-4"),
                        weight_decay=decoupled_decay(weight_decay), hessian_power=hp)
        self.hessian_every = V.int_at_least("hessian_every", hessian_every, 1,
                                            "steps between Hessian refreshes", 1)
        super().__init__(params, defaults, seed)

    def _curvature(self, closure, params, t, seed):
        return self._hutchinson(closure, params, t, seed, "AdaHessian")

    def _update(self, p, group, s, d):
        if not s:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(p)
            s["exp_hessian_diag_sq"] = torch.zeros_like(p)
        b1, b2 = group["betas"]
        if d is not None:
            s["exp_hessian_diag_sq"].mul_(b2).addcmul_(d, d, value=1 - b2)
        if p.grad is None:
            return
        s["step"] += 1
        n = s["step"]
        s["exp_avg"].mul_(b1).add_(p.grad, alpha=1 - b1)
        denom = (s["exp_hessian_diag_sq"] / (1 - b2 ** n)).pow_(group["hessian_power"] / 2)
        denom.add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(s["exp_avg"], denom, value=-group["lr"] / (1 - b1 ** n))
