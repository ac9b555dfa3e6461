"""First-order optimizers with Gaussian weight noise injected during training (grade 1, family
``"first-order+noise"``): control C3 of SCIENCE.md §3, "FO + noise during training".

    sgld:        θ ← θ − η(∇L + λθ) + √(2ηT)·ξ_t                (Welling & Teh 2011; T = temperature)
    noisy-adam:  θ ← Adam(θ) + s_t·ξ_t,   s_t = σ,  or with ``relative=True``  s_t = σ·rms(u_t)

ξ_t ~ N(0, I) is fresh at every step; u_t = Adam(θ) − θ is the step's own update and
rms(u_t) = ‖u_t‖/√n over every weight the step moved (one number per step).  η is the group's
``lr`` *at that step* (a scheduler changes SGLD's noise with it).  The gradient is taken at the
noisy point of the previous step; the noise is added after the base update.

Noise stream: weight tensor j (the trainable parameters in param-group order) draws its ξ at
step t with :func:`noise_like`, from a CPU ``torch.Generator`` seeded ``mix_seed(seed, t, j)``,
in float32, then moved to the tensor's device and dtype: the same numbers on every device
(the ZO optimizers instead draw on the parameter's device, so their z differ between CPU and
CUDA).  Only tensors with a gradient this step (the ones the base update moves) are noised;
the global RNG is never touched.  ``seed`` and the step counter live in ``state["noise"]``, so a
``state_dict`` round trip continues the same stream.  T = 0 / σ = 0 draws nothing: the step is
torch's SGD / Adam step, bit for bit.  ``opt.last_noise_std`` holds the std s applied per param
group at the last step, ``opt.noise_step`` the steps taken.

Defaults.  ``sigma = 5e-4`` is half of Adam's first-step move per weight at lr 1e-3 (Adam's
first step moves every weight by ≈ η): visible next to the update, not dominating it.
``temperature = 1.25e-4`` gives SGLD the same per-step noise at SGD's default lr 1e-3
(√(2·1e-3·1.25e-4) = 5e-4).  After 200 steps the noise walk alone is ≈ 7e-3 per weight (rms),
the order of Adam's own displacement on the 25k-weight tiny Llama of the tests (≈ 8e-3 rms after
20 graddiff steps at lr 1e-3, measured).
For the control proper (final ‖Δ‖ ≈ the ZO run's) set T or σ from the ZO run's ‖Δ‖ with
:func:`temperature_for_norm` / :func:`sigma_for_norm`, then read the realized ‖Δ‖ in the study.

GRU is not offered over these (``accepts_rectified_grad = False``): C3 is defined on plain
FO + noise, and "<name>+gru" names would add untested combinations to every listing.

    >>> from optigrade import optimizers
    >>> optimizers.info("sgld"), optimizers.info("noisy-adam").seeded
    (OptimizerInfo(name='sgld', grade=1.0, family='first-order+noise'), True)
    >>> optimizers.with_seed("noisy-adam", {"sigma": 1e-3}, 2)
    {'sigma': 0.001, 'seed': 2}
"""

from __future__ import annotations

import math
from typing import List

import torch

from .. import _validate as V
from .._directions import mix_seed
from ._common import advanced, param_pairs
from .first_order import _adam_checks
from .registry import Capabilities, register

__all__ = ["FAMILY", "SGLD", "NoisyAdam", "noise_like", "temperature_for_norm", "sigma_for_norm"]

FAMILY = "first-order+noise"
DEFAULT_SIGMA = 5e-4
DEFAULT_TEMPERATURE = 1.25e-4


def noise_like(p: torch.Tensor, seed: int) -> torch.Tensor:
    """ξ ~ N(0, I) shaped like ``p``, on ``p``'s device and dtype, drawn in float32 by a CPU
    ``torch.Generator().manual_seed(seed)`` (so the numbers do not depend on the device; the
    global RNG is not touched).

    >>> a = noise_like(torch.zeros(2, 3), seed=4)
    >>> b = torch.randn(6, generator=torch.Generator().manual_seed(4)).view(2, 3)
    >>> torch.equal(a, b), noise_like(torch.zeros(2, dtype=torch.float64), 4).dtype
    (True, torch.float64)
    """
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(p.numel(), generator=gen, dtype=torch.float32)
    return z.view(p.shape).to(device=p.device, dtype=p.dtype)


def _matched_square(norm, fo_norm) -> float:
    norm = V.non_negative("norm", norm, "the target ‖Δ‖ (e.g. the ZO run's)", "the ZO run's ‖Δ‖")
    fo_norm = V.non_negative("fo_norm", fo_norm, "the FO run's own ‖Δ‖ (0: ignore it)", "0.0")
    if fo_norm > norm:
        raise ValueError(f"fo_norm must be <= norm, got fo_norm={fo_norm!r} > norm={norm!r}; the FO run "
                         "already moved farther than the target, no noise can match it, try fo_norm=0.0")
    return norm * norm - fo_norm * fo_norm


def temperature_for_norm(norm: float, *, lr: float, steps: int, numel: int, fo_norm: float = 0.0) -> float:
    """The SGLD temperature whose noise walk alone has E‖Σ_t √(2ηT)ξ_t‖² = norm² − fo_norm²:

        T = (norm² − fo_norm²) / (2·η·N·d)      (N = ``steps``, d = ``numel`` noised weights)

    A starting value for "final ‖Δ‖ ≈ ZO's": it treats the FO displacement (``fo_norm``) and
    the noise as orthogonal and ignores the loss pulling the noise back (fine while η·λ·N ≪ 1);
    the study measures the realized ‖Δ‖.

    >>> temperature_for_norm(2.0, lr=1e-3, steps=100, numel=20_000)  # 4 / (2·1e-3·100·2e4)
    0.001
    >>> temperature_for_norm(5.0, lr=1e-3, steps=100, numel=20_000, fo_norm=3.0)  # (25 − 9) / 4000
    0.004
    """
    sq = _matched_square(norm, fo_norm)
    lr = V.lr(lr, "1e-3")
    steps = V.int_at_least("steps", steps, 1, "the number of noisy steps", 100)
    numel = V.int_at_least("numel", numel, 1, "the number of noised weights", "sum(p.numel() for p in params)")
    return sq / (2.0 * lr * steps * numel)


def sigma_for_norm(norm: float, *, steps: int, numel: int, fo_norm: float = 0.0) -> float:
    """The absolute noisy-Adam σ with E‖Σ_t σξ_t‖² = norm² − fo_norm²:  σ = √((norm² − fo_norm²)/(N·d))
    (the same caveats as :func:`temperature_for_norm`).

    >>> sigma_for_norm(2.0, steps=100, numel=40_000)  # 2 / √(4e6)
    0.001
    """
    sq = _matched_square(norm, fo_norm)
    steps = V.int_at_least("steps", steps, 1, "the number of noisy steps", 100)
    numel = V.int_at_least("numel", numel, 1, "the number of noised weights", "sum(p.numel() for p in params)")
    return math.sqrt(sq / (steps * numel))


def _group_values(opt, key: str, value, meaning: str, fix) -> None:
    """Put ``key`` into ``defaults`` and every param group (a group's own value kept), validated."""
    opt.defaults[key] = value
    for i, g in enumerate(opt.param_groups):
        g.setdefault(key, value)
        where = key if len(opt.param_groups) == 1 else f"param_groups[{i}] {key}"
        V.non_negative(where, g[key], meaning, fix)


def _unhooked(fn):
    """``fn`` without torch's step-hook wrapper (``Optimizer._patch_step_function`` wraps every
    class's ``step``): the wrapper around our own ``step`` already runs the hooks, once."""
    while getattr(fn, "hooked", False):
        fn = fn.__wrapped__
    return fn


class _Noisy(Capabilities):
    """The noise step shared by :class:`SGLD` and :class:`NoisyAdam`: the base optimizer's step,
    then θ_j += s_j·ξ_j for every tensor with a gradient (``_stds`` gives s per group)."""

    grade = 1.0
    family = FAMILY
    seeded = True
    accepts_rectified_grad = False  # no "+gru" names: see the module docstring

    def _init_noise(self, seed) -> None:
        self.state["noise"] = {"seed": V.seed(seed), "step": 0}
        self.last_noise_std: List[float] = [0.0] * len(self.param_groups)

    def _needs_snapshot(self) -> bool:
        return False

    def _stds(self, pairs, moved, before) -> List[float]:
        """The noise std s per param group for this step."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        pairs = param_pairs(self)
        before = [p.detach().clone() for p, _ in pairs] if self._needs_snapshot() else None
        loss = _unhooked(super().step.__func__)(self, closure)
        moved = [j for j, (p, _) in enumerate(pairs) if p.grad is not None]
        stds = self._stds(pairs, moved, before)
        st = self.state["noise"]
        index = {id(g): i for i, g in enumerate(self.param_groups)}
        for j in moved:
            p, g = pairs[j]
            s = stds[index[id(g)]]
            if s:
                p.add_(noise_like(p, mix_seed(st["seed"], st["step"], j)), alpha=s)
        self.last_noise_std = stds
        self.state["noise"] = advanced(st)
        return loss

    @property
    def noise_step(self) -> int:
        """Steps taken (the t of the next step's noise stream)."""
        return self.state["noise"]["step"]


@register("sgld")
class SGLD(_Noisy, torch.optim.SGD):
    """Stochastic gradient Langevin dynamics:  θ ← θ − η(∇L + λθ) + √(2ηT)·ξ,  ξ ~ N(0, I).

    Args:
        lr: η.  temperature: T ≥ 0 (0: torch's SGD, bit for bit; default 1.25e-4, see the
        module docstring).  weight_decay: λ, L2 folded into the gradient (SGD's).  seed: the
        noise stream's base seed.

    One step on L = ½‖θ‖² in float64 is exactly (1 − η)θ + √(2ηT)·ξ with ξ from
    :func:`noise_like`:

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    >>> opt = SGLD([w], lr=0.1, temperature=0.05, seed=3)
    >>> (0.5 * (w ** 2).sum()).backward(); opt.step()
    >>> xi = noise_like(w, mix_seed(3, 0, 0))
    >>> expected = 0.9 * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1 * xi  # √(2·0.1·0.05) = 0.1
    >>> bool(torch.allclose(w.detach(), expected, rtol=0, atol=1e-15)), opt.last_noise_std
    (True, [0.1])
    """

    def __init__(self, params, lr: float = 1e-3, temperature: float = DEFAULT_TEMPERATURE,
                 weight_decay: float = 0.0, seed: int = 0):
        V.lr(lr, "1e-3")
        V.non_negative("temperature", temperature, "the SGLD temperature T (noise std √(2ηT) per step)",
                       DEFAULT_TEMPERATURE)
        V.non_negative("weight_decay", weight_decay, "the L2 weight decay λ", "0.0")
        V.seed(seed)
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        _group_values(self, "temperature", float(temperature), "the SGLD temperature T", DEFAULT_TEMPERATURE)
        self._init_noise(seed)

    def _stds(self, pairs, moved, before):
        return [math.sqrt(2.0 * g["lr"] * g["temperature"]) for g in self.param_groups]


@register("noisy-adam")
class NoisyAdam(_Noisy, torch.optim.Adam):
    """torch's Adam step, then isotropic Gaussian weight noise:  θ ← Adam(θ) + s·ξ,  ξ ~ N(0, I),
    s = σ (``relative=False``) or σ·rms(u) with u = Adam(θ) − θ the step's update, its rms over
    every weight the step moved (``relative=True``; keeps one copy of the weights per step).

    Args:
        lr, betas, eps, weight_decay, ``**kw``: torch.optim.Adam's (validated as
        :class:`~optigrade.optimizers.Adam`).  sigma: σ ≥ 0 (0: torch's Adam, bit for bit;
        default 5e-4, see the module docstring).  relative: σ relative to the update's rms.
        seed: the noise stream's base seed.

    With a zero gradient Adam does not move, so the displacement is σ·ξ exactly:

    >>> w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    >>> opt = NoisyAdam([w], lr=1e-3, sigma=0.01, seed=5)
    >>> w.grad = torch.zeros_like(w); opt.step()
    >>> torch.equal(w.detach(), 0.01 * noise_like(w, mix_seed(5, 0, 0)))
    True
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, sigma: float = DEFAULT_SIGMA, relative: bool = False,
                 seed: int = 0, **kw):
        _adam_checks(lr, betas, eps, weight_decay)
        V.non_negative("sigma", sigma, "the std of the Gaussian weight noise per step (absolute, or × the "
                       "update's rms with relative=True)", DEFAULT_SIGMA)
        if not isinstance(relative, bool):
            raise ValueError(f"relative must be True or False, got {relative!r}; True scales σ by the step's rms "
                             "update, False adds σ·ξ as is, try relative=False")
        V.seed(seed)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kw)
        _group_values(self, "sigma", float(sigma), "the std of the Gaussian weight noise", DEFAULT_SIGMA)
        self.relative = relative
        self._init_noise(seed)

    def _needs_snapshot(self) -> bool:
        return self.relative and any(g["sigma"] > 0 for g in self.param_groups)

    def _stds(self, pairs, moved, before):
        sigmas = [g["sigma"] for g in self.param_groups]
        if not self.relative:
            return sigmas
        rms = _update_rms(pairs, moved, before) if before is not None else 0.0
        return [s * rms for s in sigmas]


def _update_rms(pairs, moved, before) -> float:
    """rms(u) = √(Σ u²/n) over the tensors in ``moved`` (float64); u = θ_now − ``before``."""
    sq, n = 0.0, 0
    for j in moved:
        u = pairs[j][0].detach().double() - before[j].double()
        sq += float((u * u).sum())
        n += u.numel()
    return math.sqrt(sq / n) if n else 0.0
