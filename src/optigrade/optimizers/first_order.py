"""First-order optimizers (grade 1): torch's SGD/Adam/AdamW with grade attributes and
validation, plus the smoothing references FO-RS and SAM-for-unlearning."""

from __future__ import annotations

import torch

from .. import _validate as V
from ._wrap import WrappedOptimizer, build, grad_params, param_list
from .closure import capability
from .perturbation import mix_seed, perturb_

__all__ = ["SGD", "Adam", "AdamW", "FORS", "SAM"]


class _FO:
    grade = 1.0
    family = "first-order"
    requires_closure = False
    needs_hvp = False
    accepts_rectified_grad = True


def _adam_checks(lr, betas, eps, weight_decay):
    V.lr(lr, "1e-5")
    V.betas(betas)
    V.positive("eps", eps, "Adam's denominator guard ε", "1e-8")
    V.non_negative("weight_decay", weight_decay, "the weight decay λ", "0.0")


class SGD(_FO, torch.optim.SGD):
    """torch.optim.SGD: b ← μb + g (+λθ);  θ ← θ − η·b."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0, **kw):
        V.lr(lr, "1e-3")
        V.unit_open("momentum", momentum, "the heavy-ball coefficient", "0.9")
        V.non_negative("weight_decay", weight_decay, "the L2 weight decay λ", "0.0")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)


class Adam(_FO, torch.optim.Adam):
    """torch.optim.Adam: θ ← θ − η·m̂/(√v̂ + ε) (L2 weight decay folded into g)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, **kw):
        _adam_checks(lr, betas, eps, weight_decay)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kw)


class AdamW(_FO, torch.optim.AdamW):
    """torch.optim.AdamW: θ ← θ(1 − ηλ) − η·m̂/(√v̂ + ε)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kw):
        _adam_checks(lr, betas, eps, weight_decay)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kw)


def _zeros_if_none(gs, params):
    return [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(gs, params)]


class FORS(WrappedOptimizer):
    """First-order randomized smoothing: the inner optimizer steps on

        ḡ = (1/n) Σ_i ∇L(θ + σ ε_i),   ε_i ~ N(0, I)   (n = ``n_samples``, default 3)

    an unbiased gradient of the Gaussian-smoothed loss L_σ.  The weights are restored by copy
    after each sample (bit-exact; costs one model copy plus the gradient accumulator).
    ``base`` (default "adam") is any registered first-order/compressed optimizer; extra
    keyword arguments go to it.  ε_i is drawn from ``mix_seed(seed, step, i)``.
    """

    grade = 1.0
    family = "fo-smoothing"
    requires_closure = True
    needs_hvp = False
    accepts_rectified_grad = False

    def __init__(self, params, lr: float = 1e-5, sigma: float = 1e-3, n_samples: int = 3,
                 seed: int = 0, base="adam", **base_hparams):
        params = param_list(params)
        V.lr(lr)
        sigma = V.positive("sigma", sigma, "the std of the Gaussian weight noise", "1e-3")
        n = V.int_at_least("n_samples", n_samples, 1, "the gradient samples per step", 3)
        inner = build(base, params, dict(base_hparams, lr=lr), "FORS")
        super().__init__(params, dict(lr=lr, sigma=sigma, n_samples=n), {"base": inner})
        self.state["rs"] = {"seed": V.seed(seed), "step": 0}

    def step(self, closure=None):
        if closure is None:
            raise TypeError("FORS.step needs a closure that backpropagates the loss; call step(closure)")
        self._sync("base")
        params = grad_params(self)
        st = self.state["rs"]
        g0 = self.param_groups[0]
        saved = [p.detach().clone() for p in params]
        acc = [torch.zeros_like(p) for p in params]
        losses = []
        try:
            for i in range(g0["n_samples"]):
                perturb_(params, mix_seed(st["seed"], st["step"], i), g0["sigma"], "gaussian")
                with torch.enable_grad():
                    losses.append(float(closure()))
                for a, p in zip(acc, params):
                    if p.grad is not None:
                        a.add_(p.grad)
                with torch.no_grad():
                    for p, s in zip(params, saved):
                        p.copy_(s)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for a, p in zip(acc, params):
            p.grad = a.div_(g0["n_samples"])
        self.inner["base"].step()
        self.state["rs"] = {"seed": st["seed"], "step": st["step"] + 1}
        return torch.tensor(sum(losses) / len(losses))


class SAM(WrappedOptimizer):
    """SAM for unlearning (forget-term sharpness only):

        ε = ρ·g_f/‖g_f‖,  g_f = ∇L_f(θ)   (one global norm over all parameters)
        g = ∇L_f(θ + ε) + ∇L_r(θ)

    then the inner optimizer (``base``, default "adam") steps on g.  L_f, L_r come from
    ``closure.parts()``; the weights are restored by copy.  Cost: three backward passes.
    """

    grade = 1.0
    family = "fo-smoothing"
    requires_closure = True
    needs_hvp = False
    accepts_rectified_grad = False

    def __init__(self, params, lr: float = 1e-5, rho: float = 0.01, base="adam", **base_hparams):
        params = param_list(params)
        V.lr(lr)
        rho = V.positive("rho", rho, "the radius of the SAM ascent step", "0.01")
        inner = build(base, params, dict(base_hparams, lr=lr), "SAM")
        super().__init__(params, dict(lr=lr, rho=rho), {"base": inner})

    @staticmethod
    def _grads(loss, params, retain=False):
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            return [torch.zeros_like(p) for p in params]
        gs = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
        return _zeros_if_none(gs, params)

    def step(self, closure=None):
        if closure is None:
            raise TypeError("SAM.step needs a closure with .parts(); build it with "
                            "optimizers.Closure(loss_fn, params, forget_fn=..., retain_fn=...)")
        parts = capability(closure, "parts", "SAM")
        self._sync("base")
        params = grad_params(self)
        with torch.enable_grad():
            pr = parts(True)
            g_f = self._grads(pr["forget"], params, retain=True)
            g_r = self._grads(pr["retain"], params)
        loss = float(pr["forget"].detach()) + float(torch.as_tensor(pr["retain"]).detach())
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g_f))
        scale = self.param_groups[0]["rho"] / (float(norm) + 1e-12)
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, g in zip(params, g_f):
                    p.add_(g, alpha=scale)
            with torch.enable_grad():
                g_adv = self._grads(parts(True)["forget"], params)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for p, a, r in zip(params, g_adv, g_r):
            p.grad = a.add_(r)
        self.inner["base"].step()
        return torch.tensor(loss)
