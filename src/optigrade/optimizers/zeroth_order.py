"""Zeroth-order optimizers (grade 0): directions from loss values only.

Two-point estimator with ``q`` random directions ``u_i = a_i·z_i`` (see
:mod:`optimizers.perturbation` for the distributions):

    central:  ĝ = (γ/q) Σ_i [L(θ+μu_i) − L(θ−μu_i)] / (2μ) · u_i
    forward:  ĝ = (γ/q) Σ_i [L(θ+μu_i) − L(θ)] / μ · u_i

with γ = d (the parameter count) for the unit sphere when ``sphere_scale=True`` (then E ĝ is the
gradient of the ball-smoothed loss) and γ = 1 otherwise.  For Gaussian ``u``,
E ĝ = ∇L_μ(θ), L_μ(θ) = E_u L(θ + μu) (SPEC §3.1).

Memory (MeZO): ``z`` is regenerated from a per-step seed, never stored; the closure runs
under ``torch.no_grad()``.  With q = 1 and central differences a step regenerates z three
times: +μz, −2μz, then one fused pass that restores (+μz) and applies the update chunk by
chunk (four for the sphere, which needs ‖z‖ first).  ``exact=True`` instead keeps a copy of
the weights (one model of extra memory) and restores by copy, bit for bit: use it in
bf16/fp16, where the arithmetic round trip drifts (see :func:`perturbation.measure_drift`).

Randomness: the per-step seed is ``mix_seed(seed, step, i)``; ``seed`` and ``step`` live in
``optimizer.state["zo"]``, so ``state_dict`` round-trips continue identically.  The global RNG
is never touched.  Pass ``model=`` to have the optimizer put the model in eval mode for the
loss evaluations (dropout off; the previous per-module modes are restored); otherwise the
closure must be deterministic itself.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch.optim import Optimizer

from .. import _validate as V
from .perturbation import CHUNK, DISTRIBUTIONS, direction_chunks, mix_seed, perturb_, unit_factor

__all__ = ["ZOEstimate", "zo_estimate", "zo_apply", "ZOOptimizer", "ZOSGD", "ZOAdam", "AdaZO",
           "ZOSign", "ZOConservative", "eval_mode"]

DIFFERENCES = ("central", "forward")


@dataclass
class ZOEstimate:
    """Result of :func:`zo_estimate`: ĝ = Σ_i coefs()[i]·z_i, z_i regenerated from seeds[i].

    proj[i] is the finite-difference directional derivative along u_i = unit[i]·z_i.
    pending: a restore of ``pending·z_last`` not yet applied (the fused path); 0 if none.
    """

    seeds: List[int]
    unit: List[float]
    proj: List[float]
    d: int
    dist: str
    sphere_scale: bool
    loss: float
    n_evals: int
    pending: float = 0.0

    def coefs(self) -> List[float]:
        gain = self.d if (self.dist == "sphere" and self.sphere_scale) else 1.0
        q = len(self.seeds)
        return [c * a * gain / q for c, a in zip(self.proj, self.unit)]


def zo_estimate(params: Sequence[torch.Tensor], closure: Callable[[], torch.Tensor],
                seeds: Sequence[int], mu: float, dist: str = "gaussian",
                difference: str = "central", exact: bool = False, sphere_scale: bool = True,
                chunk: int = CHUNK, defer_restore: bool = False) -> ZOEstimate:
    """Evaluate the two-point estimator at θ = ``params`` (see module docstring).

    Returns an :class:`ZOEstimate`; θ is restored on return except, with ``defer_restore``
    (arithmetic mode only), the last ``+μu`` restore which :func:`zo_apply` fuses with the update.
    Restores on exceptions too.
    """
    params = list(params)
    d = sum(p.numel() for p in params)
    saved = [p.detach().clone() for p in params] if exact else None
    unit, proj, losses, n = [], [], [], 0
    pending = 0.0

    def restore_copy():
        for p, s in zip(params, saved):
            p.copy_(s)

    with torch.no_grad():
        base = None
        if difference == "forward":
            base = float(closure()); n += 1
        for i, s in enumerate(seeds):
            a = unit_factor(params, s, dist, chunk)
            h = mu * a
            moved = 0.0  # how far along z we are from θ, for restoring on exceptions
            try:
                perturb_(params, s, h, dist, chunk); moved = h
                lp = float(closure()); n += 1
                if difference == "central":
                    if exact:
                        restore_copy(); moved = 0.0
                        perturb_(params, s, -h, dist, chunk)
                    else:
                        perturb_(params, s, -2 * h, dist, chunk)
                    moved = -h
                    lm = float(closure()); n += 1
                    proj.append((lp - lm) / (2 * mu)); losses.append(0.5 * (lp + lm))
                else:
                    proj.append((lp - base) / mu); losses.append(base)
            except BaseException:
                if exact:
                    restore_copy()
                elif moved:
                    perturb_(params, s, -moved, dist, chunk)
                raise
            unit.append(a)
            if exact:
                restore_copy()
            elif defer_restore and i == len(seeds) - 1:
                pending = -moved
            else:
                perturb_(params, s, -moved, dist, chunk)
    return ZOEstimate(list(seeds), unit, proj, d, dist, sphere_scale,
                      sum(losses) / len(losses), n, pending)


def zo_apply(params: Sequence[torch.Tensor], est: ZOEstimate, coefs: Sequence[float],
             fn: Callable[[int, torch.Tensor, slice, torch.Tensor], None], chunk: int = CHUNK) -> None:
    """One regeneration pass: for every chunk, finish a pending restore, build
    ĝ_chunk = Σ_i coefs[i]·z_i[chunk] and call ``fn(j, flat_param_j, slice, ĝ_chunk)``."""
    with torch.no_grad():
        for j, p in enumerate(params):
            flat = p.detach().view(-1)
            walks = [direction_chunks(p, mix_seed(s, j), est.dist, chunk) for s in est.seeds]
            for parts in zip(*walks):
                s, e = parts[0][0], parts[0][1]
                if est.pending:
                    flat[s:e].add_(parts[-1][2], alpha=est.pending)
                g = parts[0][2] * coefs[0]
                for (_, _, z), c in zip(parts[1:], coefs[1:]):
                    g.add_(z, alpha=c)
                fn(j, flat, slice(s, e), g)
        est.pending = 0.0


@contextlib.contextmanager
def eval_mode(model: Optional[torch.nn.Module]):
    """Put ``model`` in eval mode inside; restore every module's previous mode after."""
    if model is None:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.train(t)


class ZOOptimizer(Optimizer):
    """Base class: estimate ĝ with :func:`zo_estimate`, then apply ``_update_chunk`` per chunk.

    Args:
        params: parameters or param groups.
        lr: η. mu: μ, the smoothing radius (> 0). q: directions per step (>= 1).
        dist: "gaussian" | "sphere" | "rademacher". difference: "central" | "forward".
        exact: restore by copy (bit-exact, +1 model of memory). seed: base seed.
        weight_decay: λ, decoupled: θ ← θ − ηλθ. sphere_scale: multiply by d for the sphere.
        chunk: elements per generated chunk. model: optional module put in eval mode.
    """

    grade = 0.0
    family = "zeroth-order"
    requires_closure = True
    needs_hvp = False
    accepts_rectified_grad = False
    default_dist = "gaussian"
    default_difference = "central"

    def __init__(self, params, lr: float = 1e-6, *, mu: float = 1e-3, q: int = 1,
                 dist: Optional[str] = None, difference: Optional[str] = None,
                 exact: bool = False, seed: int = 0, weight_decay: float = 0.0,
                 sphere_scale: bool = True, chunk: int = CHUNK,
                 model: Optional[torch.nn.Module] = None, _group: Optional[dict] = None):
        dist = self.default_dist if dist is None else dist
        difference = self.default_difference if difference is None else difference
        defaults = dict(lr=V.lr(lr, "1e-6"),
                        weight_decay=V.non_negative("weight_decay", weight_decay,
                                                    "the decoupled weight decay λ", "0.0"),
                        **(_group or {}))
        self.mu = V.positive("mu", mu, "the smoothing radius of the ZO estimator", "1e-3")
        self.q = V.int_at_least("q", q, 1, "the number of random directions per step", 1)
        self.dist = V.choice("dist", dist, DISTRIBUTIONS, "the ZO direction distribution")
        self.difference = V.choice("difference", difference, DIFFERENCES, "the finite difference")
        self.chunk = V.int_at_least("chunk", chunk, 1, "elements generated at once", CHUNK)
        self.exact = bool(exact)
        self.sphere_scale = bool(sphere_scale)
        self.model = model
        super().__init__(params, defaults)
        self.state["zo"] = {"seed": V.seed(seed), "step": 0}

    def _pairs(self):
        return [(p, g) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _seeds(self) -> List[int]:
        st = self.state["zo"]
        return [mix_seed(st["seed"], st["step"], i) for i in range(self.q)]

    def _estimate(self, params, closure, defer: bool = True) -> ZOEstimate:
        return zo_estimate(params, closure, self._seeds(), self.mu, self.dist, self.difference,
                           self.exact, self.sphere_scale, self.chunk,
                           defer_restore=defer and not self.exact)

    def _coefs(self, est: ZOEstimate) -> List[float]:
        return est.coefs()

    def _update_chunk(self, p, group, state, flat, sl, g) -> None:
        raise NotImplementedError

    def _apply(self, pairs, est: ZOEstimate) -> None:
        def fn(j, flat, sl, g):
            p, group = pairs[j]
            self._update_chunk(p, group, self.state[p], flat, sl, g)
        zo_apply([p for p, _ in pairs], est, self._coefs(est), fn, self.chunk)

    def step(self, closure=None):
        if closure is None:
            raise TypeError(f"{type(self).__name__}.step needs a closure returning the loss; "
                            "call optimizer.step(closure) (see optimizers.Closure)")
        pairs = self._pairs()
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate([p for p, _ in pairs], closure)
            self._apply(pairs, est)
        st = self.state["zo"]
        self.state["zo"] = {"seed": st["seed"], "step": st["step"] + 1}
        self.last_estimate = est
        return torch.tensor(est.loss)

    def estimate_gradient(self, closure) -> List[torch.Tensor]:
        """ĝ materialized per parameter (model-sized; for tests and the hybrid's mixture).

        Uses and advances the same seed stream as :meth:`step`; the weights are restored.
        """
        pairs = self._pairs()
        params = [p for p, _ in pairs]
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate(params, closure, defer=False)
            out = [torch.zeros(p.numel(), dtype=torch.float32, device=p.device) for p in params]

            def fn(j, flat, sl, g):
                out[j][sl].copy_(g)
            zo_apply(params, est, self._coefs(est), fn, self.chunk)
        st = self.state["zo"]
        self.state["zo"] = {"seed": st["seed"], "step": st["step"] + 1}
        self.last_estimate = est
        return [o.view_as(p).to(p.dtype) for o, p in zip(out, params)]

    @property
    def step_count(self) -> int:
        return self.state["zo"]["step"]


def _decay(flat, sl, group):
    if group["weight_decay"]:
        flat[sl].mul_(1 - group["lr"] * group["weight_decay"])


class ZOSGD(ZOOptimizer):
    """ZO-SGD (MeZO): θ ← θ − η(ĝ + λθ); with momentum β: b ← βb + ĝ, θ ← θ − η(b + λθ).

    Momentum stores a buffer b (one model of memory): it is no longer inference-memory.
    """

    def __init__(self, params, lr: float = 1e-6, momentum: float = 0.0, **kw):
        momentum = V.unit_open("momentum", momentum, "the heavy-ball coefficient β", "0.9")
        super().__init__(params, lr, _group=dict(momentum=momentum), **kw)

    def _update_chunk(self, p, group, state, flat, sl, g):
        _decay(flat, sl, group)
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            b = state["momentum_buffer"].view(-1)[sl]
            b.mul_(group["momentum"]).add_(g)
            g = b
        flat[sl].add_(g, alpha=-group["lr"])


class ZOAdam(ZOOptimizer):
    """ZO-Adam (ZO-AdaMM-style, decoupled decay): Adam on ĝ.

    m ← β1 m + (1−β1)ĝ; v ← β2 v + (1−β2)ĝ²; θ ← θ(1−ηλ) − η·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε).
    Keeps m and v: two models of memory.
    """

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.999), eps: float = 1e-8, **kw):
        super().__init__(params, lr, _group=dict(
            betas=V.betas(betas), eps=V.positive("eps", eps, "Adam's denominator guard ε", "1e-8")), **kw)

    def _update_chunk(self, p, group, state, flat, sl, g):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        b1, b2 = group["betas"]
        t = self.state["zo"]["step"] + 1
        m = state["exp_avg"].view(-1)[sl]
        v = state["exp_avg_sq"].view(-1)[sl]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
        _decay(flat, sl, group)
        flat[sl].addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))


class AdaZO(ZOOptimizer):
    """R-AdaZO (Shu et al., "Refining Adaptive Zeroth-Order Optimization at Ease", ICML 2025).

    ĝ from unit-sphere directions with the d factor and forward differences (the paper's
    estimator; both are defaults here), then the *refined* second moment driven by the
    variance-reduced first moment:

        m ← β1 m + (1−β1) ĝ;   v ← β2 v + (1−β2) m²;   θ ← θ(1−ηλ) − η m / √(v + ζ)

    No bias correction (as in the paper).  Chosen over ZO-AdaMM (ĝ² in v, which is
    :class:`ZOAdam`) because it is the variant named "AdaZO" that the grade paper cites and
    its m² second moment is far less noisy than ĝ².  Keeps m and v (two models of memory).
    """

    default_dist = "sphere"
    default_difference = "forward"

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.99), eps: float = 1e-8, **kw):
        super().__init__(params, lr, _group=dict(
            betas=V.betas(betas, (0.9, 0.99)),
            eps=V.positive("eps", eps, "the stability constant ζ under the root", "1e-8")), **kw)

    def _update_chunk(self, p, group, state, flat, sl, g):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        b1, b2 = group["betas"]
        m = state["exp_avg"].view(-1)[sl]
        v = state["exp_avg_sq"].view(-1)[sl]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(m, m, value=1 - b2)
        _decay(flat, sl, group)
        flat[sl].addcdiv_(m, (v + group["eps"]).sqrt_(), value=-group["lr"])


class ZOSign(ZOOptimizer):
    """ZO-sign (ZO-Bench's "ZO-SGD-Sign"): the sign of each projected-gradient scalar.

        θ ← θ(1−ηλ) − (η/q) Σ_i sign(c_i)·ũ_i,   c_i the finite difference along u_i,

    with ũ_i = z_i for Gaussian/Rademacher and ũ_i = √d·u_i for the sphere (unit
    per-coordinate scale), so a step's size does not depend on the loss scale.
    """

    def _coefs(self, est):
        q = len(est.seeds)
        root_d = math.sqrt(est.d) if est.dist == "sphere" else 1.0
        return [math.copysign(1.0, c) * (a * root_d) / q if c != 0 else 0.0
                for c, a in zip(est.proj, est.unit)]

    def _update_chunk(self, p, group, state, flat, sl, g):
        _decay(flat, sl, group)
        flat[sl].add_(g, alpha=-group["lr"])


class ZOConservative(ZOOptimizer):
    """Conservative ZO (ZO-Bench "ZO-SGD-Cons"): try θ, θ − ηĝ and θ + ηĝ; keep the lowest loss.

    Costs two or three more forwards per step (L(θ) is evaluated unless forward differences
    already did).  Moves are applied by regeneration; with ``exact=True`` the starting weights
    are kept and candidate points are built from that copy.
    """

    def step(self, closure=None):
        if closure is None:
            return super().step(closure)
        pairs = self._pairs()
        params = [p for p, _ in pairs]
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate(params, closure)
            coefs = self._coefs(est)
            saved = [p.detach().clone() for p in params] if self.exact else None
            if est.pending:  # finish the restore before measuring L(θ)
                zo_apply(params, est, [0.0] * len(coefs), lambda *a: None, self.chunk)
            l0 = float(closure())

            def move(scale):
                def fn(j, flat, sl, g):
                    flat[sl].add_(g, alpha=scale * pairs[j][1]["lr"])
                zo_apply(params, est, coefs, fn, self.chunk)

            def back_to_start():
                for p, s in zip(params, saved):
                    p.copy_(s)

            move(-1.0)
            l_minus = float(closure())
            if self.exact:
                back_to_start(); move(1.0)
            else:
                move(2.0)
            l_plus = float(closure())
            best = min((l0, 0), (l_minus, -1), (l_plus, 1))[1]
            if best != 1:
                if self.exact:
                    back_to_start()
                    if best == -1:
                        move(-1.0)
                else:
                    move(-1.0 if best == 0 else -2.0)
            for p, group in pairs:
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
        st = self.state["zo"]
        self.state["zo"] = {"seed": st["seed"], "step": st["step"] + 1}
        self.last_estimate = est
        self.last_choice = best
        return torch.tensor(min(l0, l_minus, l_plus))
