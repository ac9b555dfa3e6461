"""Move weights and put them back (private floor module): the one home for perturb/restore.

Every place that moves parameters and must restore them (the ZO estimators, FO-RS, SAM, the
landscape Probe, attacks) uses these helpers:

* :func:`perturbed` — context manager: θ ← θ + scale·d inside the block, restored on exit,
  **also on exceptions**.  ``d`` is a list of tensors (one per parameter) or a seeded
  direction :class:`~optigrade._directions.Seeded` (regenerated chunk by chunk, never stored).
  ``exact=True`` keeps a copy of the weights (+1 model of memory) and restores by ``copy_``,
  bit for bit; ``exact=False`` subtracts the move again (no memory; not bit-exact in low
  precision, see :func:`measure_drift`).
* :func:`moving` — context manager yielding ``move(*c)`` that sets θ = θ0 + Σ c_i·d_i, each
  point computed fresh from θ0; restored by copy on exit (slices, interpolations).
* :func:`snapshot` / :func:`restore` — copy the weights aside and write them back (for
  algorithms that keep one of several candidate points, e.g. conservative ZO).
* :func:`perturb_` — the in-place move itself (θ ← θ + scale·d, no autograd).
* :func:`eval_mode` — context manager: ``model.eval()`` inside, every module's own
  ``training`` flag restored after (also on exceptions).
* :func:`measure_drift` — how far repeated arithmetic round trips drift (fp32 vs bf16).

``params`` is a sequence of tensors or an ``nn.Module`` (then ``list(module.parameters())``,
all of them, in order; for a seeded direction parameter j of that list uses
``mix_seed(seed, j)``).

    >>> w = torch.tensor([1.0, 2.0])
    >>> with perturbed([w], [torch.tensor([1.0, -1.0])], scale=0.5, exact=True):
    ...     w.tolist()
    [1.5, 1.5]
    >>> w.tolist()
    [1.0, 2.0]
    >>> lin = torch.nn.Linear(2, 1)
    >>> with eval_mode(lin):
    ...     lin.training
    False
    >>> lin.training
    True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import torch

from . import _validate as V
from ._directions import CHUNK, DISTRIBUTIONS, Seeded, direction_chunks, flat_view, mix_seed, unit_factor

__all__ = ["Seeded", "as_params", "snapshot", "restore", "perturb_", "perturbed", "moving",
           "eval_mode", "DriftReport", "measure_drift"]

Params = Union[Sequence[torch.Tensor], torch.nn.Module]
Direction = Union[Seeded, Sequence[torch.Tensor]]


def as_params(params: Params) -> List[torch.Tensor]:
    """``params`` as a list of tensors (an ``nn.Module`` gives all its parameters, in order).

    >>> len(as_params(torch.nn.Linear(3, 2))), as_params([torch.zeros(1)])[0].shape
    (2, torch.Size([1]))
    """
    if isinstance(params, torch.nn.Module):
        return list(params.parameters())
    if isinstance(params, torch.Tensor):
        raise TypeError(f"params must be a list of tensors or an nn.Module, got one tensor of shape "
                        f"{tuple(params.shape)}; wrap it in a list: [w]")
    out = list(params)
    bad = [type(p).__name__ for p in out if not isinstance(p, torch.Tensor)]
    if bad:
        raise TypeError(f"params must be tensors, got {bad[:3]}; pass a list of tensors or an "
                        "nn.Module (for param groups, pass [p for g in opt.param_groups for p in "
                        "g['params']])")
    return out


def snapshot(params: Params) -> List[torch.Tensor]:
    """Detached copies of the weights (one model of memory), for :func:`restore`.

    >>> w = torch.ones(2); s = snapshot([w]); _ = w.add_(1); restore([w], s); w.tolist()
    [1.0, 1.0]
    """
    return [p.detach().clone() for p in as_params(params)]


def restore(params: Params, saved: Sequence[torch.Tensor]) -> None:
    """Write ``saved`` (from :func:`snapshot`) back into ``params`` by copy: bit for bit."""
    with torch.no_grad():
        for p, s in zip(as_params(params), saved):
            p.copy_(s)


def _check_direction(params: List[torch.Tensor], direction) -> None:
    if isinstance(direction, Seeded):
        V.choice("dist", direction.dist, DISTRIBUTIONS, "the direction distribution")
        for p in params:
            flat_view(p)  # refuse non-contiguous parameters before moving anything
        return
    if isinstance(direction, (int, float)) or direction is None:
        raise TypeError(f"direction must be a list of tensors (one per parameter) or "
                        f"Seeded(seed, dist), got {direction!r}; for the seeded form write "
                        "perturbed(params, Seeded(seed, 'gaussian'), scale) or perturbed(params, "
                        "seed=seed, mu=mu)")
    if len(direction) != len(params):
        raise ValueError(f"direction has {len(direction)} tensors but there are {len(params)} "
                         "parameters; pass one tensor per parameter, in the same order")
    for i, (p, d) in enumerate(zip(params, direction)):
        if tuple(d.shape) != tuple(p.shape):
            raise ValueError(f"direction[{i}] has shape {tuple(d.shape)}, parameter {i} has "
                             f"{tuple(p.shape)}; pass one tensor per parameter, shaped like it")


def perturb_(params: Params, direction: Direction, scale: float) -> None:
    """θ ← θ + scale·d in place (no autograd).  A :class:`Seeded` ``d`` is regenerated chunk by
    chunk from its seed (nothing model-sized is stored).

    >>> w = torch.zeros(3); perturb_([w], [torch.ones(3)], -2.0); w.tolist()
    [-2.0, -2.0, -2.0]
    """
    params = as_params(params)
    with torch.no_grad():
        if isinstance(direction, Seeded):
            for j, p in enumerate(params):
                flat = flat_view(p)
                for s, e, z in direction_chunks(p, mix_seed(direction.seed, j), direction.dist,
                                                direction.chunk):
                    flat[s:e].add_(z, alpha=scale)
        else:
            for p, d in zip(params, direction):
                p.add_(d, alpha=scale)


@contextlib.contextmanager
def perturbed(params: Params, direction: Optional[Direction] = None, scale: float = 1.0, *,
              exact: bool = False, seed: Optional[int] = None, mu: Optional[float] = None,
              dist: str = "gaussian", chunk: int = CHUNK) -> Iterator[float]:
    """Context manager: θ ← θ + scale·d inside the block; θ restored on exit and on exceptions.

    Args:
        params: the tensors to move (in place), or an ``nn.Module`` (all its parameters).
        direction: a list of tensors shaped like ``params``, or ``Seeded(seed, dist)``.
        scale: the multiple of ``direction`` to add (a float; 0 moves nothing; a NaN
            scale is applied as is, so a diverged optimizer shows NaN losses, not an error).
        exact: restore by copy (bit-exact; one extra copy of the weights) instead of by
            subtracting ``scale·d`` again (no memory; rounding drift in low precision).
        seed, mu, dist: the MeZO form without ``direction``: move by μ·u along the *unit*
            direction u = a·z of ``Seeded(seed, dist)`` (a = 1/‖z‖ for ``"sphere"``).
        chunk: elements generated at once in the seeded form.

    Yields:
        the multiple of ``direction`` (or of z) actually applied: ``scale``, or μ·a.

    >>> w = torch.zeros(3)
    >>> with perturbed([w], seed=1, mu=0.1, exact=True) as s:
    ...     s, bool(w.abs().sum() > 0)
    (0.1, True)
    >>> w.tolist()
    [0.0, 0.0, 0.0]
    >>> with perturbed([w], [torch.ones(3)], 2.0):  # restored on exceptions too
    ...     raise KeyError("boom")
    Traceback (most recent call last):
    ...
    KeyError: 'boom'
    >>> w.tolist()
    [0.0, 0.0, 0.0]
    """
    params = as_params(params)
    if direction is None:
        if seed is None or mu is None:
            raise TypeError("perturbed needs a direction (tensors or Seeded(seed, dist)) or the "
                            "seeded form seed=..., mu=...; e.g. perturbed(params, seed=0, mu=1e-3)")
        mu = V.positive("mu", mu, "the perturbation radius", "1e-3")
        V.choice("dist", dist, DISTRIBUTIONS, "the direction distribution")
        direction = Seeded(V.seed(seed), dist, chunk)
        _check_direction(params, direction)
        saved = snapshot(params) if exact else None
        scale = mu * unit_factor(params, direction.seed, dist, chunk)
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number, got {scale!r}; the multiple of the "
                            "direction to add, try 1.0")
        _check_direction(params, direction)
        saved = snapshot(params) if exact else None
    try:
        if scale != 0:
            perturb_(params, direction, scale)
        yield scale
    finally:
        if exact:
            restore(params, saved)
        elif scale != 0:
            perturb_(params, direction, -scale)


@contextlib.contextmanager
def moving(params: Params, directions: Sequence[Sequence[torch.Tensor]],
           origin: Optional[Sequence[torch.Tensor]] = None):
    """Context manager yielding ``move(*coeffs)`` that sets θ = θ0 + Σ_i coeffs[i]·d_i.

    θ0 is ``origin`` (one tensor per parameter) or a saved copy of the current weights.  Every
    point is computed fresh from θ0 (no accumulated steps); on exit, including on exceptions,
    every parameter is restored bit for bit by copying the saved weights back.  Extra memory:
    one weight copy (+ the origin if given).

    >>> w = torch.zeros(2)
    >>> with moving([w], [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]]) as move:
    ...     move(2.0, -1.0); w.tolist()
    [2.0, -1.0]
    >>> w.tolist()
    [0.0, 0.0]
    """
    params = as_params(params)
    dirs = [list(d) for d in directions]
    for d in dirs:
        _check_direction(params, d)
    saved = snapshot(params)
    base = saved if origin is None else list(origin)

    @torch.no_grad()
    def move(*coeffs):
        if len(coeffs) != len(dirs):
            raise ValueError(f"move needs {len(dirs)} coefficients, got {len(coeffs)}")
        for i, (p, p0) in enumerate(zip(params, base)):
            p.copy_(p0)
            for c, d in zip(coeffs, dirs):
                if c != 0:
                    p.add_(d[i], alpha=float(c))
    try:
        yield move
    finally:
        restore(params, saved)


@contextlib.contextmanager
def eval_mode(model: Optional[torch.nn.Module]):
    """``model.eval()`` inside the block (dropout off); afterwards every module's own
    ``training`` flag is put back as it was, also on exceptions.  ``None`` does nothing.

    >>> net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(1, 1))
    >>> net[1].eval()  # mixed modes survive the round trip
    Linear(in_features=1, out_features=1, bias=True)
    >>> with eval_mode(net):
    ...     [m.training for m in net.modules()]
    [False, False, False]
    >>> [m.training for m in net.modules()]
    [True, True, False]
    """
    if model is None:
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t


@dataclass(frozen=True)
class DriftReport:
    """Weight drift after ``cycles`` in-place +μ/−2μ/+μ round trips.

    max_abs: max_i |θ_i − θ_i⁰|; rel_l2: ‖θ − θ⁰‖/‖θ⁰‖; frac_changed: share of entries that are
    not bit-identical to the start.

    >>> r = measure_drift([torch.ones(8, dtype=torch.float64)], cycles=2, exact=True)
    >>> r.cycles, r.dtype, r.max_abs, r.frac_changed
    (2, 'float64', 0.0, 0.0)
    """

    cycles: int
    mu: float
    dist: str
    exact: bool
    dtype: str
    max_abs: float
    rel_l2: float
    frac_changed: float


def measure_drift(params: Params, cycles: int = 10, mu: float = 1e-3, dist: str = "gaussian",
                  exact: bool = False, seed: int = 0, chunk: int = CHUNK) -> DriftReport:
    """Run ``cycles`` ZO round trips (+μz, −2μz, +μz; a fresh seed per cycle) and measure drift.

    ``exact=True`` restores by copy as the optimizers do with ``exact=True`` (expect zeros).
    The parameters are put back to their starting values afterwards (by copy).

    >>> w = torch.linspace(-1, 1, 1000, dtype=torch.bfloat16)
    >>> measure_drift([w], cycles=3, exact=True).frac_changed
    0.0
    >>> measure_drift([w], cycles=3).frac_changed > 0  # bf16 does not come back by arithmetic
    True
    """
    params = as_params(params)
    cycles = V.int_at_least("cycles", cycles, 1, "the number of round trips", 10)
    mu = V.positive("mu", mu, "the smoothing radius of the ZO estimator", "1e-3")
    V.choice("dist", dist, DISTRIBUTIONS, "the direction distribution")
    start = snapshot(params)
    with torch.no_grad():
        for c in range(cycles):
            z = Seeded(mix_seed(seed, c), dist, chunk)
            a = mu * unit_factor(params, z.seed, dist, chunk)
            if exact:
                for h in (a, -a):
                    with perturbed(params, z, h, exact=True):
                        pass
            else:  # the MeZO sequence whose rounding this measures: +μz, −2μz, +μz
                perturb_(params, z, a)
                perturb_(params, z, -2 * a)
                perturb_(params, z, a)
        diff = [(p.detach().double() - s0.double()) for p, s0 in zip(params, start)]
        max_abs = max(float(d.abs().max()) for d in diff)
        num = sum(float((d * d).sum()) for d in diff) ** 0.5
        den = sum(float(s0.double().pow(2).sum()) for s0 in start) ** 0.5
        changed = sum(int((p.detach() != s0).sum()) for p, s0 in zip(params, start))
        total = sum(p.numel() for p in params)
    restore(params, start)
    return DriftReport(cycles, mu, dist, exact, str(params[0].dtype).replace("torch.", ""),
                       max_abs, num / den if den > 0 else num, changed / total)
