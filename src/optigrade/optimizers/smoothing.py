"""First-order smoothing references (grade 1): FO-RS and SAM-for-unlearning.

Both move the weights, take gradients there and step an inner optimizer (``base``) at the
original point; the moves go through :func:`optigrade._weights.perturbed` with ``exact=True``
(restored by copy, bit for bit, also on exceptions).

``rho`` here (SAM) is a **radius**: the length of the ascent step ε, as in every
``landscape.sharpness`` function.  (Sophia's ``rho`` is a clipping scale; see
:mod:`optigrade.optimizers.second_order`.)
"""

from __future__ import annotations

import torch

from .. import _validate as V
from .._directions import Seeded, mix_seed
from .._weights import perturbed
from ._common import advanced, grad_params, grads_or_zeros, require_closure
from ._wrapper import WrappedOptimizer, param_list
from .closure import capability
from .registry import Capabilities, build, register

__all__ = ["FORS", "SAM"]


class _Smoothing(Capabilities, WrappedOptimizer):
    grade = 1.0
    family = "fo-smoothing"
    requires_closure = True


@register("fo-rs")
class FORS(_Smoothing):
    """First-order randomized smoothing: the inner optimizer steps on

        ḡ = (1/n) Σ_i ∇L(θ + σ ε_i),   ε_i ~ N(0, I)   (n = ``n_samples``, default 3)

    an unbiased gradient of the Gaussian-smoothed loss L_σ.  The weights are restored by copy
    after each sample (bit-exact; costs one model copy plus the gradient accumulator).
    ``base`` (default "adam") is a registered first-order/compressed optimizer name or an
    Optimizer class; extra keyword arguments go to it.  ε_i is drawn from
    ``mix_seed(seed, step, i)``.

    With σ → 0 the step is the inner optimizer's step on ∇L (here plain SGD, lr 1):

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    >>> from optigrade.optimizers import Closure
    >>> opt = FORS([w], lr=1.0, sigma=1e-8, base="sgd")
    >>> float(opt.step(Closure(lambda: 0.5 * (w ** 2).sum(), [w])))  # ½‖θ‖² at θ
    1.0
    >>> bool(w.abs().max() < 1e-6)  # θ − ∇L = 0
    True
    """

    seeded = True

    def __init__(self, params, lr: float = 1e-5, sigma: float = 1e-3, n_samples: int = 3,
                 seed: int = 0, base="adam", **base_hparams):
        params = param_list(params)
        V.lr(lr)
        sigma = V.positive("sigma", sigma, "the std of the Gaussian weight noise", "1e-3")
        n = V.int_at_least("n_samples", n_samples, 1, "the gradient samples per step", 3)
        inner = build(base, param_list(params), "FORS", **dict(base_hparams, lr=lr))
        super().__init__(params, dict(lr=lr, sigma=sigma, n_samples=n), {"base": inner})
        self.state["rs"] = {"seed": V.seed(seed), "step": 0}

    def step(self, closure=None):
        require_closure(closure, self, " that backpropagates the loss; call step(closure)")
        self._sync("base")
        params = grad_params(self)
        st = self.state["rs"]
        g0 = self.param_groups[0]
        acc = [torch.zeros_like(p) for p in params]
        losses = []
        for i in range(g0["n_samples"]):
            eps = Seeded(mix_seed(st["seed"], st["step"], i), "gaussian")
            with perturbed(params, eps, g0["sigma"], exact=True):
                with torch.enable_grad():
                    losses.append(float(closure()))
                for a, p in zip(acc, params):
                    if p.grad is not None:
                        a.add_(p.grad)
        for a, p in zip(acc, params):
            p.grad = a.div_(g0["n_samples"])
        self.inner["base"].step()
        self.state["rs"] = advanced(st)
        return torch.tensor(sum(losses) / len(losses))


@register("sam")
class SAM(_Smoothing):
    """SAM for unlearning (forget-term sharpness only):

        ε = ρ·g_f/‖g_f‖,  g_f = ∇L_f(θ)   (one global norm over all parameters)
        g = ∇L_f(θ + ε) + ∇L_r(θ)

    then the inner optimizer (``base``, default "adam") steps on g.  ``rho`` = ρ is the
    **radius** of the ascent step (‖ε‖ = ρ).  L_f, L_r come from ``closure.parts()``; the
    weights are restored by copy.  Cost: three backward passes.

    On L_f = ½‖θ‖² (so ∇L_f(θ + ε) = θ + ε) with L_r = 0 and SGD at lr 1, θ lands on −ε:

    >>> from optigrade.optimizers import Closure
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    >>> f = lambda: 0.5 * (w ** 2).sum()
    >>> c = Closure(lambda: f(), [w], forget_fn=f, retain_fn=lambda: torch.zeros((), dtype=w.dtype))
    >>> _ = SAM([w], lr=1.0, rho=0.5, base="sgd").step(c)
    >>> [round(x, 9) for x in w.tolist()]  # −ρ·θ/‖θ‖ = −0.5·(0.6, 0.8)
    [-0.3, -0.4]
    """

    def __init__(self, params, lr: float = 1e-5, rho: float = 0.01, base="adam", **base_hparams):
        params = param_list(params)
        V.lr(lr)
        rho = V.positive("rho", rho, "the radius of the SAM ascent step", "0.01")
        inner = build(base, param_list(params), "SAM", **dict(base_hparams, lr=lr))
        super().__init__(params, dict(lr=lr, rho=rho), {"base": inner})

    def step(self, closure=None):
        require_closure(closure, self, " with .parts(); build it with optimizers.Closure(loss_fn, "
                        "params, forget_fn=..., retain_fn=...)")
        parts = capability(closure, "parts", "SAM")
        self._sync("base")
        params = grad_params(self)
        with torch.enable_grad():
            pr = parts(True)
            g_f = grads_or_zeros(pr["forget"], params, retain_graph=True)
            g_r = grads_or_zeros(pr["retain"], params)
        loss = float(pr["forget"].detach()) + float(torch.as_tensor(pr["retain"]).detach())
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g_f))
        scale = self.param_groups[0]["rho"] / (float(norm) + 1e-12)
        with perturbed(params, g_f, scale, exact=True):
            with torch.enable_grad():
                g_adv = grads_or_zeros(parts(True)["forget"], params)
        for p, a, r in zip(params, g_adv, g_r):
            p.grad = a.add_(r)
        self.inner["base"].step()
        return torch.tensor(loss)
