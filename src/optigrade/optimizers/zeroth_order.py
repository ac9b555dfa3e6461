"""Zeroth-order optimizers (grade 0): directions from loss values only.

Two-point estimator with ``q`` random directions ``u_i = a_i·z_i`` (see
:mod:`optigrade._directions` for the distributions):

    central:  ĝ = (γ/q) Σ_i [L(θ+μu_i) − L(θ−μu_i)] / (2μ) · u_i
    forward:  ĝ = (γ/q) Σ_i [L(θ+μu_i) − L(θ)] / μ · u_i

with γ = d (the parameter count) for the unit sphere when ``sphere_scale=True`` (then E ĝ is the
gradient of the ball-smoothed loss) and γ = 1 otherwise.  For Gaussian ``u``,
E ĝ = ∇L_μ(θ), L_μ(θ) = E_u L(θ + μu) (SPEC §3.1).

Memory (MeZO): ``z`` is regenerated from a per-step seed, never stored; the closure runs
under ``torch.no_grad()``.  With q = 1 and central differences a step regenerates z three
times: +μz, −2μz, then one fused pass that restores (+μz) and applies the update chunk by
chunk (four for the sphere, which needs ‖z‖ first).  ``exact=True`` instead keeps a copy of
the weights (one model of extra memory) and restores by copy, bit for bit
(:func:`optigrade._weights.perturbed`): use it in bf16/fp16, where the arithmetic round trip
drifts (see :func:`optigrade._weights.measure_drift`).

Randomness: the per-step seed is ``mix_seed(seed, step, i)``; ``seed`` and ``step`` live in
``optimizer.state["zo"]``, so ``state_dict`` round-trips continue identically.  The global RNG
is never touched.  Pass ``model=`` to have the optimizer put the model in eval mode for the
loss evaluations (dropout off; the previous per-module modes are restored); otherwise the
closure must be deterministic itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch.optim import Optimizer

from .. import _validate as V
from .._directions import CHUNK, DISTRIBUTIONS, Seeded, direction_chunks, mix_seed, unit_factor
from .._weights import eval_mode, perturb_, perturbed, restore, snapshot
from ._common import advanced, decoupled_decay, param_pairs, require_closure
from .registry import Capabilities, register

__all__ = ["ZOEstimate", "zo_estimate", "zo_apply", "ZOOptimizer", "ZOSGD", "ZOAdam", "AdaZO",
           "ZOSign", "ZOConservative"]

DIFFERENCES = ("central", "forward")


@dataclass
class ZOEstimate:
    """Result of :func:`zo_estimate`: ĝ = Σ_i coefs()[i]·z_i, z_i regenerated from seeds[i].

    proj[i] is the finite-difference directional derivative along u_i = unit[i]·z_i.
    pending: a restore of ``pending·z_last`` not yet applied (the fused path); 0 if none.

    >>> est = ZOEstimate(seeds=[1, 2], unit=[0.5, 0.25], proj=[2.0, -4.0], d=3, dist="sphere",
    ...                  sphere_scale=True, loss=0.0, n_evals=4)
    >>> est.coefs()  # proj·unit·d/q
    [1.5, -1.5]
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


def _mezo_evals(params, closure, z: Seeded, h: float, central: bool):
    """MeZO's in-place sequence along z: +h, L₊, (−2h, L₋); returns (L₊, L₋, offset) with θ
    left at θ + offset·z for the caller to undo (or to fuse with the update).  On an
    exception the offset is undone here."""
    moved, lm = 0.0, None
    try:
        perturb_(params, z, h); moved = h
        lp = float(closure())
        if central:
            perturb_(params, z, -2 * h); moved = -h
            lm = float(closure())
    except BaseException:
        if moved:
            perturb_(params, z, -moved)
        raise
    return lp, lm, moved


def zo_estimate(params: Sequence[torch.Tensor], closure: Callable[[], torch.Tensor],
                seeds: Sequence[int], mu: float, dist: str = "gaussian",
                difference: str = "central", exact: bool = False, sphere_scale: bool = True,
                chunk: int = CHUNK, defer_restore: bool = False) -> ZOEstimate:
    """Evaluate the two-point estimator at θ = ``params`` (see module docstring).

    Returns an :class:`ZOEstimate`; θ is restored on return except, with ``defer_restore``
    (arithmetic mode only), the last ``+μu`` restore which :func:`zo_apply` fuses with the update.
    Restores on exceptions too.

    Central differences are exact on a linear loss L = c·θ (proj = c·z), and the mean of ĝ
    over many directions approaches ∇L = c:

    >>> c = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    >>> w = torch.zeros(3, dtype=torch.float64)
    >>> est = zo_estimate([w], lambda: c @ w, seeds=range(4000), mu=1e-3)
    >>> z0 = Seeded(est.seeds[0]).tensors([w])[0]
    >>> abs(est.proj[0] - float(c @ z0)) < 1e-9, bool(w.abs().max() < 1e-15)  # θ restored
    (True, True)
    >>> g = torch.zeros(3, dtype=torch.float64)
    >>> zo_apply([w], est, est.coefs(), lambda j, flat, sl, gc: g[sl].add_(gc))
    >>> bool((g - c).abs().max() < 0.3)
    True
    """
    params = list(params)
    d = sum(p.numel() for p in params)
    unit, proj, losses, n = [], [], [], 0
    pending = 0.0
    central = difference == "central"
    with torch.no_grad():
        base = None
        if not central:
            base = float(closure()); n += 1
        for i, s in enumerate(seeds):
            a = unit_factor(params, s, dist, chunk)
            z, h = Seeded(s, dist, chunk), mu * a
            if exact:  # both points from θ, restored by copy (bit for bit)
                with perturbed(params, z, h, exact=True):
                    lp = float(closure())
                lm = None
                if central:
                    with perturbed(params, z, -h, exact=True):
                        lm = float(closure())
                offset = 0.0
            else:
                # MeZO's published sequence +μz, −2μz, +μz: two perturbed() blocks would go
                # +μz, −μz, −μz, +μz instead (one more regeneration pass, different rounding)
                lp, lm, offset = _mezo_evals(params, closure, z, h, central)
            n += 2 if central else 1
            if central:
                proj.append((lp - lm) / (2 * mu)); losses.append(0.5 * (lp + lm))
            else:
                proj.append((lp - base) / mu); losses.append(base)
            unit.append(a)
            if defer_restore and i == len(seeds) - 1:
                pending = -offset
            elif offset:
                perturb_(params, z, -offset)
    return ZOEstimate(list(seeds), unit, proj, d, dist, sphere_scale,
                      sum(losses) / len(losses), n, pending)


def zo_apply(params: Sequence[torch.Tensor], est: ZOEstimate, coefs: Sequence[float],
             fn: Callable[[int, torch.Tensor, slice, torch.Tensor], None], chunk: int = CHUNK) -> None:
    """One regeneration pass: for every chunk, finish a pending restore, build
    ĝ_chunk = Σ_i coefs[i]·z_i[chunk] and call ``fn(j, flat_param_j, slice, ĝ_chunk)``
    (example: :func:`zo_estimate`)."""
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


class ZOOptimizer(Capabilities, Optimizer):
    """Base class: estimate ĝ with :func:`zo_estimate`, then apply ``_update_chunk`` per chunk.

    Args:
        params: parameters or param groups.
        lr: η. mu: μ, the smoothing radius (> 0). q: directions per step (>= 1).
        dist: "gaussian" | "sphere" | "rademacher". difference: "central" | "forward".
        exact: restore by copy (bit-exact, +1 model of memory). seed: base seed.
        weight_decay: λ, decoupled: θ ← θ − ηλθ. sphere_scale: multiply by d for the sphere.
        chunk: elements per generated chunk. model: optional module put in eval mode.

    A subclass supplies ``_update_chunk`` (and optionally ``_coefs``):

    >>> class Plain(ZOOptimizer):  # θ ← θ − ηĝ
    ...     def _update_chunk(self, p, group, state, flat, sl, g):
    ...         flat[sl].add_(g, alpha=-group["lr"])
    >>> w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    >>> from optigrade.optimizers import Closure
    >>> opt = Plain([w], lr=0.1, seed=1)
    >>> loss = opt.step(Closure(lambda: w.sum() + 1, [w]))  # the mean of L(θ ± μz)
    >>> round(float(loss), 12), opt.step_count
    (1.0, 1)
    """

    grade = 0.0
    family = "zeroth-order"
    requires_closure = True
    zeroth_order = True
    seeded = True
    default_dist = "gaussian"
    default_difference = "central"

    def __init__(self, params, lr: float = 1e-6, *, mu: float = 1e-3, q: int = 1,
                 dist: Optional[str] = None, difference: Optional[str] = None,
                 exact: bool = False, seed: int = 0, weight_decay: float = 0.0,
                 sphere_scale: bool = True, chunk: int = CHUNK,
                 model: Optional[torch.nn.Module] = None, _group: Optional[dict] = None):
        dist = self.default_dist if dist is None else dist
        difference = self.default_difference if difference is None else difference
        defaults = dict(lr=V.lr(lr, "1e-6"), weight_decay=decoupled_decay(weight_decay),
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

    def _seeds(self) -> List[int]:
        st = self.state["zo"]
        return [mix_seed(st["seed"], st["step"], i) for i in range(self.q)]

    def _estimate(self, params, closure) -> ZOEstimate:
        """ĝ at θ; in arithmetic mode the last restore is left pending for :func:`zo_apply`."""
        return zo_estimate(params, closure, self._seeds(), self.mu, self.dist, self.difference,
                           self.exact, self.sphere_scale, self.chunk, defer_restore=not self.exact)

    def _coefs(self, est: ZOEstimate) -> List[float]:
        return est.coefs()

    def _update_chunk(self, p, group, state, flat, sl, g) -> None:
        raise NotImplementedError

    def _finish(self, est: ZOEstimate) -> None:
        self.state["zo"] = advanced(self.state["zo"])
        self.last_estimate = est

    def step(self, closure=None):
        require_closure(closure, self, " returning the loss; call optimizer.step(closure) (see "
                        "optimizers.Closure)")
        pairs = param_pairs(self)
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate([p for p, _ in pairs], closure)

            def fn(j, flat, sl, g):
                p, group = pairs[j]
                self._update_chunk(p, group, self.state[p], flat, sl, g)
            zo_apply([p for p, _ in pairs], est, self._coefs(est), fn, self.chunk)
        self._finish(est)
        return torch.tensor(est.loss)

    def estimate_gradient(self, closure) -> List[torch.Tensor]:
        """ĝ materialized per parameter (model-sized; for tests and the hybrid's mixture).

        Uses and advances the same seed stream as :meth:`step`; the weights are restored.
        """
        params = [p for p, _ in param_pairs(self)]
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate(params, closure)
            out = [torch.zeros(p.numel(), dtype=torch.float32, device=p.device) for p in params]

            def fn(j, flat, sl, g):
                out[j][sl].copy_(g)
            zo_apply(params, est, self._coefs(est), fn, self.chunk)  # also finishes the restore
        self._finish(est)
        return [o.view_as(p).to(p.dtype) for o, p in zip(out, params)]

    @property
    def step_count(self) -> int:
        return self.state["zo"]["step"]


def _decay(flat, sl, group):
    if group["weight_decay"]:
        flat[sl].mul_(1 - group["lr"] * group["weight_decay"])


def _moments(p, group, state, sl):
    """(β1, β2, m, v) for chunk ``sl`` of ``p``: views into the lazily created moment buffers."""
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    b1, b2 = group["betas"]
    return b1, b2, state["exp_avg"].view(-1)[sl], state["exp_avg_sq"].view(-1)[sl]


def _linear_problem():
    """(w, closure, c) for the doctests: L = c·θ in float64 (central differences are exact)."""
    from .closure import Closure
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    return w, Closure(lambda: c @ w, [w]), c


@register("zo-sgd-momentum", momentum=0.9)
@register("zo-sgd")
class ZOSGD(ZOOptimizer):
    """ZO-SGD (MeZO): θ ← θ − η(ĝ + λθ); with momentum β: b ← βb + ĝ, θ ← θ − η(b + λθ).

    Momentum stores a buffer b (one model of memory): it is no longer inference-memory.
    On a linear loss L = c·θ one step is exactly θ − η·(c·z)·z:

    >>> w, closure, c = _linear_problem()
    >>> opt = ZOSGD([w], lr=0.1, seed=7)
    >>> _ = opt.step(closure)
    >>> z = Seeded(opt.last_estimate.seeds[0]).tensors([w])[0]
    >>> torch.allclose(w.detach(), -0.1 * float(c @ z) * z, atol=1e-12)
    True
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


@register("zo-adam")
class ZOAdam(ZOOptimizer):
    """ZO-Adam (ZO-AdaMM-style, decoupled decay): Adam on ĝ.

    m ← β1 m + (1−β1)ĝ; v ← β2 v + (1−β2)ĝ²; θ ← θ(1−ηλ) − η·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε).
    Keeps m and v: two models of memory.  The first step moves every weight by ≈ η
    (m̂/√v̂ = sign ĝ):

    >>> w, closure, _ = _linear_problem()
    >>> _ = ZOAdam([w], lr=0.01, seed=1).step(closure)
    >>> [round(abs(x), 6) for x in w.tolist()]
    [0.01, 0.01, 0.01]
    """

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.999), eps: float = 1e-8, **kw):
        super().__init__(params, lr, _group=dict(
            betas=V.betas(betas), eps=V.positive("eps", eps, "Adam's denominator guard ε", "1e-8")), **kw)

    def _update_chunk(self, p, group, state, flat, sl, g):
        b1, b2, m, v = _moments(p, group, state, sl)
        t = self.state["zo"]["step"] + 1
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
        _decay(flat, sl, group)
        flat[sl].addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))


@register("adazo")
class AdaZO(ZOOptimizer):
    """R-AdaZO (Shu et al., "Refining Adaptive Zeroth-Order Optimization at Ease", ICML 2025).

    ĝ from unit-sphere directions with the d factor and forward differences (the paper's
    estimator; both are defaults here), then the *refined* second moment driven by the
    variance-reduced first moment:

        m ← β1 m + (1−β1) ĝ;   v ← β2 v + (1−β2) m²;   θ ← θ(1−ηλ) − η m / √(v + ζ)

    No bias correction (as in the paper).  Chosen over ZO-AdaMM (ĝ² in v, which is
    :class:`ZOAdam`) because it is the variant named "AdaZO" that the grade paper cites and
    its m² second moment is far less noisy than ĝ².  Keeps m and v (two models of memory).
    The first step moves every weight by ≈ η/√(1−β2) (= 10η for β2 = 0.99):

    >>> w, closure, _ = _linear_problem()
    >>> opt = AdaZO([w], lr=0.01, seed=1)
    >>> loss = opt.step(closure)
    >>> torch.allclose(w.abs(), torch.full((3,), 0.1, dtype=w.dtype), rtol=1e-3)
    True
    """

    default_dist = "sphere"
    default_difference = "forward"

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.99), eps: float = 1e-8, **kw):
        super().__init__(params, lr, _group=dict(
            betas=V.betas(betas, (0.9, 0.99)),
            eps=V.positive("eps", eps, "the stability constant ζ under the root", "1e-8")), **kw)

    def _update_chunk(self, p, group, state, flat, sl, g):
        b1, b2, m, v = _moments(p, group, state, sl)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(m, m, value=1 - b2)
        _decay(flat, sl, group)
        flat[sl].addcdiv_(m, (v + group["eps"]).sqrt_(), value=-group["lr"])


@register("zo-sign")
class ZOSign(ZOOptimizer):
    """ZO-sign (ZO-Bench's "ZO-SGD-Sign"): the sign of each projected-gradient scalar.

        θ ← θ(1−ηλ) − (η/q) Σ_i sign(c_i)·ũ_i,   c_i the finite difference along u_i,

    with ũ_i = z_i for Gaussian/Rademacher and ũ_i = √d·u_i for the sphere (unit
    per-coordinate scale), so a step's size does not depend on the loss scale:

    >>> w, closure, _ = _linear_problem()
    >>> opt = ZOSign([w], lr=0.05, seed=2, dist="rademacher")
    >>> _ = opt.step(closure); [abs(x) for x in w.tolist()]  # η·|z| = η
    [0.05, 0.05, 0.05]
    """

    def _coefs(self, est):
        q = len(est.seeds)
        root_d = math.sqrt(est.d) if est.dist == "sphere" else 1.0
        return [math.copysign(1.0, c) * (a * root_d) / q if c != 0 else 0.0
                for c, a in zip(est.proj, est.unit)]

    def _update_chunk(self, p, group, state, flat, sl, g):
        _decay(flat, sl, group)
        flat[sl].add_(g, alpha=-group["lr"])


@register("zo-conservative")
class ZOConservative(ZOOptimizer):
    """Conservative ZO (ZO-Bench "ZO-SGD-Cons"): try θ, θ − ηĝ and θ + ηĝ; keep the lowest loss.

    Costs two or three more forwards per step (L(θ) is evaluated unless forward differences
    already did).  Moves are applied by regeneration; with ``exact=True`` the starting weights
    are kept (:func:`optigrade._weights.snapshot`) and candidate points are built from that copy.
    The loss never goes up, whatever the step size:

    >>> from optigrade.optimizers import Closure
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    >>> loss = lambda: (w ** 2).sum()
    >>> opt = ZOConservative([w], lr=100.0, seed=0, exact=True)
    >>> all(float(opt.step(Closure(loss, [w]))) <= 2.0 for _ in range(3)), float(loss().detach()) <= 2.0
    (True, True)
    """

    def step(self, closure=None):
        if closure is None:
            return super().step(closure)
        pairs = param_pairs(self)
        params = [p for p, _ in pairs]
        with torch.no_grad(), eval_mode(self.model):
            est = self._estimate(params, closure)
            coefs = self._coefs(est)
            saved = snapshot(params) if self.exact else None
            if est.pending:  # finish the restore before measuring L(θ)
                zo_apply(params, est, [0.0] * len(coefs), lambda *a: None, self.chunk)
            l0 = float(closure())

            def move(scale):
                def fn(j, flat, sl, g):
                    flat[sl].add_(g, alpha=scale * pairs[j][1]["lr"])
                zo_apply(params, est, coefs, fn, self.chunk)

            # Arithmetic mode walks θ → θ−ηĝ → θ+ηĝ → best by regenerating ĝ (no copy of the
            # weights, as ZO-Bench does); exact mode rebuilds each candidate from the snapshot.
            move(-1.0)
            l_minus = float(closure())
            if self.exact:
                restore(params, saved); move(1.0)
            else:
                move(2.0)
            l_plus = float(closure())
            best = min((l0, 0), (l_minus, -1), (l_plus, 1))[1]
            if best != 1:
                if self.exact:
                    restore(params, saved)
                    if best == -1:
                        move(-1.0)
                else:
                    move(-1.0 if best == 0 else -2.0)
            for p, group in pairs:
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
        self._finish(est)
        self.last_choice = best
        return torch.tensor(min(l0, l_minus, l_plus))
