"""Seeded random directions and in-place weight perturbations (the MeZO trick).

A direction ``z`` over all parameters is never stored: it is a pure function of a seed.
Parameter ``j`` draws its slice of ``z`` from its own ``torch.Generator`` seeded with
``mix_seed(seed, j)``, in chunks of ``chunk`` elements (one reusable float32 buffer per
parameter walk), so regenerating ``z`` costs time but no memory beyond one chunk.

Distributions of ``z`` (the unit direction ``u`` used by the estimators is ``a·z``):

* ``"gaussian"``:   z ~ N(0, I),                         a = 1.
* ``"rademacher"``: z_i ∈ {−1, +1} from random bits,      a = 1. (The top bit of each byte of a
  random int64 word; ≈ 4× faster than ``normal_`` on CPU, SPEC §4b.)
* ``"sphere"``:     z ~ N(0, I),  u = z/‖z‖ uniform on the unit sphere, a = 1/‖z‖ (one extra
  generation pass computes ‖z‖).

Library code never touches torch's global RNG.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence, Tuple

import torch

from .. import _validate as V

__all__ = [
    "DISTRIBUTIONS",
    "mix_seed",
    "direction_chunks",
    "direction_norm",
    "perturb_",
    "perturbed",
    "DriftReport",
    "measure_drift",
    "direction_tensor",
]

DISTRIBUTIONS = ("gaussian", "sphere", "rademacher")
CHUNK = 1 << 20
_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 finalizer applied per value)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK)) & _MASK
        h = (h + 0x9E3779B97F4A7C15) & _MASK
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def _flat(p: torch.Tensor) -> torch.Tensor:
    if not p.is_contiguous():
        raise ValueError(
            f"in-place perturbation needs contiguous parameters, got one of shape {tuple(p.shape)} "
            f"with strides {p.stride()}; call p.data = p.data.contiguous() before building the optimizer"
        )
    return p.detach().view(-1)


def _fill(z: torch.Tensor, dist: str, gen: torch.Generator) -> None:
    if dist == "rademacher":
        words = torch.randint(-(2**63), 2**63 - 1, ((z.numel() + 7) // 8,), dtype=torch.int64,
                              generator=gen, device=z.device)
        bits = words.view(torch.int8)[: z.numel()]
        z.copy_(bits >> 7).mul_(2).add_(1)  # top bit of each byte: 0 -> +1, -1 -> -1
    else:
        z.normal_(generator=gen)


def direction_chunks(p: torch.Tensor, seed: int, dist: str,
                     chunk: int = CHUNK) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Yield ``(start, end, z[start:end])`` for parameter ``p``'s slice of the direction.

    The yielded float32 buffer is reused for the next chunk: use it before advancing.
    """
    n = p.numel()
    gen = torch.Generator(device=p.device)
    gen.manual_seed(seed)
    buf = torch.empty(min(chunk, n), dtype=torch.float32, device=p.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        z = buf[: e - s]
        _fill(z, dist, gen)
        yield s, e, z


def direction_norm(params: Sequence[torch.Tensor], seed: int, dist: str, chunk: int = CHUNK) -> float:
    """‖z‖₂ over all ``params`` for the direction drawn from ``seed`` (one generation pass)."""
    total = 0.0
    for j, p in enumerate(params):
        for _, _, z in direction_chunks(p, mix_seed(seed, j), dist, chunk):
            total += float(torch.dot(z, z))
    return total ** 0.5


def perturb_(params: Sequence[torch.Tensor], seed: int, scale: float, dist: str,
             chunk: int = CHUNK) -> None:
    """θ ← θ + scale·z in place (z regenerated from ``seed``); no autograd, no stored z."""
    with torch.no_grad():
        for j, p in enumerate(params):
            flat = _flat(p)
            for s, e, z in direction_chunks(p, mix_seed(seed, j), dist, chunk):
                flat[s:e].add_(z, alpha=scale)


def unit_factor(params: Sequence[torch.Tensor], seed: int, dist: str, chunk: int = CHUNK) -> float:
    """The factor ``a`` with ``u = a·z`` (1/‖z‖ for the sphere, else 1)."""
    return 1.0 / direction_norm(params, seed, dist, chunk) if dist == "sphere" else 1.0


@contextlib.contextmanager
def perturbed(params: Sequence[torch.Tensor], seed: int, mu: float, dist: str = "gaussian",
              exact: bool = False, chunk: int = CHUNK):
    """Context manager: θ ← θ + μ·u inside, restored on exit (also on exceptions).

    ``exact=False`` restores arithmetically (θ + μu − μu), which is not bit-exact in low
    precision; ``exact=True`` keeps a copy of every parameter (one extra model of memory) and
    restores by ``copy_`` so the weights come back bit for bit.

    Example:
        >>> w = torch.zeros(3)
        >>> with perturbed([w], seed=1, mu=0.1, exact=True):
        ...     bool(w.abs().sum() > 0)
        True
        >>> w.tolist()
        [0.0, 0.0, 0.0]
    """
    params = list(params)
    mu = V.positive("mu", mu, "the perturbation radius", "1e-3")
    V.choice("dist", dist, DISTRIBUTIONS, "the direction distribution")
    saved = [p.detach().clone() for p in params] if exact else None
    scale = mu * unit_factor(params, seed, dist, chunk)
    perturb_(params, seed, scale, dist, chunk)
    try:
        yield scale
    finally:
        with torch.no_grad():
            if exact:
                for p, s in zip(params, saved):
                    p.copy_(s)
            else:
                perturb_(params, seed, -scale, dist, chunk)


@dataclass(frozen=True)
class DriftReport:
    """Weight drift after ``cycles`` in-place +μ/−2μ/+μ round trips.

    max_abs: max_i |θ_i − θ_i⁰|; rel_l2: ‖θ − θ⁰‖/‖θ⁰‖; frac_changed: share of entries that are
    not bit-identical to the start.
    """

    cycles: int
    mu: float
    dist: str
    exact: bool
    dtype: str
    max_abs: float
    rel_l2: float
    frac_changed: float


def measure_drift(params: Sequence[torch.Tensor], cycles: int = 10, mu: float = 1e-3,
                  dist: str = "gaussian", exact: bool = False, seed: int = 0,
                  chunk: int = CHUNK) -> DriftReport:
    """Run ``cycles`` ZO round trips (+μz, −2μz, +μz; a fresh seed per cycle) and measure drift.

    ``exact=True`` restores by copy as the optimizers do with ``exact=True`` (expect zeros).
    The parameters are put back to their starting values afterwards (by copy).
    """
    params = list(params)
    cycles = V.int_at_least("cycles", cycles, 1, "the number of round trips", 10)
    mu = V.positive("mu", mu, "the smoothing radius of the ZO estimator", "1e-3")
    V.choice("dist", dist, DISTRIBUTIONS, "the direction distribution")
    start = [p.detach().clone() for p in params]
    with torch.no_grad():
        for c in range(cycles):
            s = mix_seed(seed, c)
            a = mu * unit_factor(params, s, dist, chunk)
            saved = [p.detach().clone() for p in params] if exact else None
            perturb_(params, s, a, dist, chunk)
            if exact:
                for p, v in zip(params, saved):
                    p.copy_(v)
                perturb_(params, s, -a, dist, chunk)
                for p, v in zip(params, saved):
                    p.copy_(v)
            else:
                perturb_(params, s, -2 * a, dist, chunk)
                perturb_(params, s, a, dist, chunk)
        diff = [(p.detach().double() - s0.double()) for p, s0 in zip(params, start)]
        max_abs = max(float(d.abs().max()) for d in diff)
        num = sum(float((d * d).sum()) for d in diff) ** 0.5
        den = sum(float(s0.double().pow(2).sum()) for s0 in start) ** 0.5
        changed = sum(int((p.detach() != s0).sum()) for p, s0 in zip(params, start))
        total = sum(p.numel() for p in params)
        for p, s0 in zip(params, start):
            p.copy_(s0)
    return DriftReport(cycles, mu, dist, exact, str(params[0].dtype).replace("torch.", ""),
                       max_abs, num / den if den > 0 else num, changed / total)


def direction_tensor(p: torch.Tensor, seed: int, dist: str, dtype=None) -> torch.Tensor:
    """Materialize parameter ``p``'s slice of z (same stream as :func:`direction_chunks`)."""
    t = torch.empty(p.numel(), dtype=dtype or p.dtype, device=p.device)
    for s, e, z in direction_chunks(p, seed, dist):
        t[s:e].copy_(z)
    return t.view_as(p)
