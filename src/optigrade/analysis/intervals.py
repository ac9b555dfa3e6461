"""95% intervals over seeds that respect each metric's range (SCIENCE.md §2 "Intervals").

A t-interval over three seeds of an accuracy gives "0.52 ± 1.17": an interval reaching far
outside [0, 1].  Here each kind of quantity gets the interval its range allows:

* **accuracies** (``*_acc``, range [0, 1]): the point is the mean over seeds of the per-seed
  accuracy; the interval is a two-way percentile bootstrap (:func:`accuracy_facts_seeds`) that
  resamples the facts (one draw of fact indices per replicate, applied to every seed: the
  seeds score the same facts) and, independently, the seeds, both with replacement.  Every
  replicate is a mean of 0/1 values, so the interval lies in [0, 1] (clipped against rounding,
  and asserted).  Rows without per-fact matches (tables written before ``per_example``) fall
  back to a percentile bootstrap over seeds only (:func:`accuracy_seeds`), clipped alike.
* **perplexities** (``*_ppl``, range [1, ∞)): the geometric mean over seeds and
  ``exp`` of the t-interval of the log values (:func:`perplexity_geometric`), always > 0 and
  clipped below at 1 when every value is ≥ 1.
* **everything else** (NLLs, norms, geometry: unbounded): the mean and the Student-t
  interval ``mean ± t_{0.975, n−1}·sd/√n`` (:func:`t_interval`).

:func:`interval_for` picks one of them from the quantity's name.  Each returns an
:class:`Interval`; its ``kind`` is one of :data:`KINDS`.  One seed gives no seed interval
(NaN bounds), except with per-fact matches, where the facts still vary.

>>> import numpy as np
>>> m = np.array([[1, 0, 0, 1, 0, 0, 0, 0, 1, 0],     # seed 0: 3 of 10 facts
...               [1, 1, 0, 1, 0, 0, 0, 0, 1, 0]])    # seed 1: 4 of 10
>>> iv = accuracy_facts_seeds(m)
>>> iv.estimate, iv.kind, 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0
(0.35, 'bootstrap facts×seeds', True)
>>> t_interval([0.3, 0.5]).low < 0 < accuracy_seeds([0.3, 0.5]).low  # the t-interval leaves [0, 1]
True
>>> g = perplexity_geometric([10.0, 40.0])
>>> round(g.estimate, 6), g.low > 0
(20.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

__all__ = ["Interval", "KINDS", "N_BOOT", "BOOT_SEED", "accuracy_facts_seeds", "accuracy_seeds",
           "perplexity_geometric", "t_interval", "interval_for", "matches_matrix", "per_seed_text",
           "is_accuracy", "is_perplexity"]

#: the kinds of interval, as written in a summary's ``interval_kind`` column
KINDS = {
    "bootstrap facts×seeds": "95% percentile bootstrap resampling facts and seeds independently (accuracies)",
    "bootstrap seeds": "95% percentile bootstrap resampling seeds (accuracies without per-fact matches)",
    "geometric t": "geometric mean, exp of the 95% t-interval of the log values (perplexities)",
    "t": "mean ± t_{0.975, n-1}·sd/√n (unbounded quantities)",
}
#: bootstrap replicates and the generator seed (fixed: a summary is a function of its results)
N_BOOT, BOOT_SEED = 2000, 0
_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate over seeds and its 95% interval ``[low, high]`` (NaN when there is
    none, e.g. one seed), of kind ``kind`` (:data:`KINDS`), from ``n`` seeds (and ``n_facts``
    facts for the facts × seeds bootstrap, else 0)."""

    estimate: float
    low: float
    high: float
    kind: str
    n: int
    n_facts: int = 0

    @property
    def half_width(self) -> float:
        """Half the width of a symmetric (t) interval; NaN for the others, which are asymmetric."""
        return (self.high - self.low) / 2 if self.kind == "t" else float("nan")


def is_accuracy(quantity: str) -> bool:
    return str(quantity).endswith("_acc")


def is_perplexity(quantity: str) -> bool:
    return str(quantity).endswith("_ppl")


@lru_cache(maxsize=None)
def _tcrit(n: int) -> float:
    """t_{0.975, n−1} (NaN for n < 2)."""
    if n < 2:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(0.5 + _LEVEL / 2, n - 1))


def _values(values, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError(f"{what} needs at least one value, got none; drop empty groups before asking for an interval")
    if np.isnan(v).any():
        raise ValueError(f"{what} got NaN among {v.tolist()}; drop the missing values first")
    return v


def _check_unit(v: np.ndarray, what: str) -> None:
    bad = v[(v < 0) | (v > 1)]
    if bad.size:
        raise ValueError(f"{what}: accuracies must lie in [0, 1], got {bad.tolist()}; is this quantity an accuracy?")


def _percentile(stats: np.ndarray) -> tuple:
    lo, hi = np.quantile(stats, [(1 - _LEVEL) / 2, (1 + _LEVEL) / 2])
    return float(lo), float(hi)


def _clipped(estimate: float, lo: float, hi: float, kind: str, n: int, n_facts: int = 0) -> Interval:
    lo, hi = min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)
    assert 0.0 <= lo <= hi <= 1.0, (lo, hi)  # an accuracy's interval never leaves [0, 1]
    return Interval(estimate, lo, hi, kind, n, n_facts)


def matches_matrix(per_example: Sequence[str]) -> np.ndarray:
    """The seeds × facts 0/1 matrix of per-fact exact-match strings (one per seed, e.g. "0110").

    Raises:
        ValueError: a string holds anything but '0'/'1', is empty, or the seeds scored different
            numbers of facts (the facts must be shared for a facts × seeds bootstrap).

    >>> matches_matrix(["0110", "1110"]).tolist()
    [[0, 1, 1, 0], [1, 1, 1, 0]]
    """
    strs = [str(s) for s in per_example]
    if not strs:
        raise ValueError("matches_matrix needs at least one per-example string, got none")
    lens = {len(s) for s in strs}
    if len(lens) != 1 or 0 in lens:
        raise ValueError(f"per-example strings must be non-empty and of one length (the same facts in every seed), "
                         f"got lengths {[len(s) for s in strs]}; score every seed on the same split")
    bad = sorted({c for s in strs for c in s} - {"0", "1"})
    if bad:
        raise ValueError(f"per-example strings hold only '0'/'1' (each fact's exact match), got {bad}")
    return (np.frombuffer("".join(strs).encode(), dtype=np.uint8) - ord("0")).reshape(len(strs), -1).astype(np.int64)


def _draw_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``n_boot`` × ``n``: how often each of ``n`` items is drawn in each of ``n_boot`` resamples
    of size ``n`` with replacement.

    >>> c = _draw_counts(np.random.default_rng(0), 5, 3)
    >>> c.shape, c.sum(axis=1).tolist()
    ((3, 5), [5, 5, 5])
    """
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def accuracy_facts_seeds(matches, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Interval:
    """Mean over seeds of the per-seed accuracy of ``matches`` (seeds × facts, 0/1) and its 95%
    two-way percentile bootstrap interval: per replicate, the facts are resampled with
    replacement once (the same draw for every seed, as every seed scored the same facts) and
    the seeds independently; the replicate is the mean over the drawn seeds of their accuracy on
    the drawn facts.  Deterministic for a given ``seed``; inside [0, 1] always.

    >>> accuracy_facts_seeds([[0, 0, 0]]), accuracy_facts_seeds([[1], [1]]).low
    (Interval(estimate=0.0, low=0.0, high=0.0, kind='bootstrap facts×seeds', n=1, n_facts=3), 1.0)
    """
    x = np.asarray(matches)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"matches must be a non-empty seeds × facts matrix, got shape {x.shape}")
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"matches hold each fact's exact match (0 or 1), got values {np.unique(x).tolist()}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    x = x.astype(np.int64)
    k, m = x.shape
    rng = np.random.default_rng(seed)
    facts = _draw_counts(rng, m, n_boot)  # B × m: how often each fact is drawn
    seeds = _draw_counts(rng, k, n_boot)  # B × k: how often each seed is drawn
    hits = facts @ x.T  # B × k: each seed's hits on the drawn facts (integers)
    stats = (seeds * hits).sum(axis=1) / (k * m)  # an integer ≤ k·m over k·m: in [0, 1] exactly
    return _clipped(float(x.mean(axis=1).mean()), *_percentile(stats), "bootstrap facts×seeds", k, m)


def accuracy_seeds(values, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Interval:
    """Mean of per-seed accuracies ``values`` and its 95% percentile bootstrap interval over
    seeds (resampled with replacement), clipped to [0, 1]: the fallback for tables without
    per-fact matches.  One seed: no interval (NaN).

    >>> accuracy_seeds([0.3, 0.5])      # two seeds: the replicates are 0.3, 0.4, 0.5
    Interval(estimate=0.4, low=0.3, high=0.5, kind='bootstrap seeds', n=2, n_facts=0)
    """
    v = _values(values, "accuracy_seeds")
    _check_unit(v, "accuracy_seeds")
    est = float(v.mean())
    if v.size < 2:
        return Interval(est, float("nan"), float("nan"), "bootstrap seeds", 1)
    rng = np.random.default_rng(seed)
    counts = _draw_counts(rng, v.size, n_boot)
    return _clipped(est, *_percentile(counts @ v / v.size), "bootstrap seeds", v.size)


def t_interval(values) -> Interval:
    """Mean of ``values`` and its 95% Student-t interval ``mean ± t_{0.975, n−1}·sd/√n`` (NaN
    bounds for one value or a non-finite one).

    >>> iv = t_interval([0.3, 0.5])
    >>> round(iv.estimate, 12), round(iv.half_width, 4)          # t(0.975, 1)·0.1414/√2
    (0.4, 1.2706)
    """
    v = _values(values, "t_interval")
    m = float(v.mean())
    if v.size < 2 or not np.isfinite(v).all():
        return Interval(m, float("nan"), float("nan"), "t", v.size)
    h = _tcrit(v.size) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return Interval(m, m - h, m + h, "t", v.size)


def _exp(x: float) -> float:
    return x if x != x else math.inf if x > 709 else math.exp(x)


def perplexity_geometric(values) -> Interval:
    """Geometric mean of perplexities ``values`` and ``exp`` of the 95% t-interval of their logs
    (always > 0; asymmetric around the geometric mean).  A perplexity is exp of a mean NLL ≥ 0,
    so when every value is ≥ 1 the lower end is clipped to 1 (the metric's range).

    Raises:
        ValueError: a perplexity ≤ 0 (a perplexity is exp of a mean NLL).

    >>> iv = perplexity_geometric([10.0, 10.0, 10.0])
    >>> round(iv.estimate, 9), round(iv.low, 9), round(iv.high, 9)
    (10.0, 10.0, 10.0)
    """
    v = _values(values, "perplexity_geometric")
    if (v <= 0).any():
        raise ValueError(f"perplexities must be > 0, got {v[v <= 0].tolist()}; is this quantity a perplexity?")
    t = t_interval(np.log(v))
    low = _exp(t.low)
    if (v >= 1).all() and low < 1:
        low = 1.0
    iv = Interval(_exp(t.estimate), low, _exp(t.high), "geometric t", t.n)
    assert not (iv.low <= 0), iv  # exp(·) > 0 (NaN when there is no interval)
    return iv


def interval_for(quantity: str, values, per_example: Optional[Sequence] = None, n_boot: int = N_BOOT,
                 seed: int = BOOT_SEED) -> Interval:
    """The interval of ``quantity``'s per-seed ``values`` (in seed order): an accuracy with every
    seed's per-fact matches (``per_example``, strings of '0'/'1' of one length) gets the facts ×
    seeds bootstrap, an accuracy without them the bootstrap over seeds, a perplexity the
    geometric t-interval, anything else the t-interval.

    >>> interval_for("forget_acc", [0.5, 0.5], ["01", "10"]).kind, interval_for("forget_acc", [0.5]).kind
    ('bootstrap facts×seeds', 'bootstrap seeds')
    >>> interval_for("general_ppl", [3.0, 5.0]).kind, interval_for("forget_nll", [3.0, 5.0]).kind
    ('geometric t', 't')
    """
    if is_accuracy(quantity):
        if per_example is not None and all(isinstance(s, str) and s for s in per_example):
            x = matches_matrix(per_example)
            v = _values(values, f"interval_for({quantity!r})")
            if len(v) != len(x):
                raise ValueError(f"{quantity}: {len(v)} values but {len(x)} per-example strings; pass one per seed")
            if not np.allclose(v, x.mean(axis=1), atol=1e-9):
                raise ValueError(f"{quantity}: the values {v.tolist()} are not the per-example accuracies "
                                 f"{x.mean(axis=1).tolist()}; the per-example strings belong to other rows")
            return accuracy_facts_seeds(x, n_boot, seed)
        return accuracy_seeds(values, n_boot, seed)
    if is_perplexity(quantity):
        return perplexity_geometric(values)
    return t_interval(values)


def per_seed_text(values) -> str:
    """Per-seed values "/"-joined, rounded to 6 significant digits (positional).

    >>> per_seed_text([0.1, 1 / 3, 12345.678])
    '0.1/0.333333/12345.7'
    """
    return "/".join(np.format_float_positional(float(v), precision=6, fractional=False, trim="-")
                    if math.isfinite(v) else str(float(v)) for v in values)
