"""Certified radius in weight space by randomized smoothing over parameters (SPEC §3.3).

For h(θ) ∈ [0, 1] (e.g. forget accuracy, or 1[forget loss ≤ ℓ*]: "knowledge is back") and
H(θ) = E_ε h(θ + σε), ε ~ N(0, I), Φ⁻¹(H) is (1/σ)-Lipschitz, so for ‖δ‖₂ ≤ r
    H(θ + δ) ≤ Φ(Φ⁻¹(H(θ)) + r/σ).
"Stays forgotten" radius: with an upper confidence bound H̄ ≥ H(θ) (level α) and threshold τ,
    r = σ·(Φ⁻¹(τ) − Φ⁻¹(H̄))  if H̄ < τ, else not certified (r = 0).
Class predictions (Cohen et al. 2019, CERTIFY): p̲_A = Clopper–Pearson lower bound on the top
class's probability, R = σ·Φ⁻¹(p̲_A) if p̲_A ≥ 1/2, else abstain.
Scale caution: ‖σε‖₂ ≈ σ√d, so certified radii are tiny next to the noise they average over.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import beta, norm

from .probe import Cost, Probe
from .results import CertifiedRadius


def _check(sigma=None, alpha=None, n=None, tau=None):
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n <= 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if tau is not None and not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau!r}")


def _outcome(v, i: int, what: str) -> float:
    """One draw's h, refused at once (not after all n draws) when it is not in [0, 1]."""
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} must return a value in [0, 1], got {v!r} at draw {i}; return 1.0 when the "
                         "noisy model recovers the forgotten data, else 0.0")
    return v


def clopper_pearson(k: int, n: int, alpha: float, side: str = "lower") -> float:
    """One-sided exact binomial bound at level α: lower = Beta⁻¹(α; k, n−k+1),
    upper = Beta⁻¹(1−α; k+1, n−k) (0 / 1 at the edges).

    >>> clopper_pearson(7, 20, 0.05) == float(beta.ppf(0.05, 7, 14))
    True
    >>> clopper_pearson(7, 20, 0.05, "upper") == float(beta.ppf(0.95, 8, 13)), clopper_pearson(0, 20, 0.05)
    (True, 0.0)
    """
    _check(alpha=alpha, n=n)
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    if side == "lower":
        return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    if side == "upper":
        return 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
    raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")


def hoeffding_upper(values, alpha: float) -> float:
    """Mean + √(log(1/α)/(2n)) for outcomes in [0, 1] (one-sided, level α)."""
    x = np.asarray(values, dtype=float)
    _check(alpha=alpha, n=len(x))
    return float(min(1.0, x.mean() + np.sqrt(np.log(1 / alpha) / (2 * len(x)))))


def bernstein_upper(values, alpha: float) -> float:
    """Empirical Bernstein (Maurer & Pontil 2009) for outcomes in [0, 1], level α:
    mean + √(2 V log(2/α)/n) + 7 log(2/α)/(3(n−1)), V the sample variance."""
    x = np.asarray(values, dtype=float)
    _check(alpha=alpha, n=len(x))
    if len(x) < 2:
        return 1.0
    L = np.log(2 / alpha)
    v = x.var(ddof=1)
    return float(min(1.0, x.mean() + np.sqrt(2 * v * L / len(x)) + 7 * L / (3 * (len(x) - 1))))


def radius_ceiling(n: int, alpha: float = 0.001, sigma: float = 1.0) -> float:
    """Largest Cohen radius n samples can certify (all agree): σ·Φ⁻¹(α^{1/n}).

    >>> radius_ceiling(100, 0.001, sigma=0.5) == float(0.5 * norm.ppf(0.001 ** (1 / 100)))
    True
    """
    _check(sigma=sigma, alpha=alpha, n=n)
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def radius_from_outcomes(outcomes, sigma: float, *, alpha: float = 0.001, tau: float = 0.5,
                         bound: str = "auto", n_params: int = 0,
                         cost: Cost = Cost()) -> CertifiedRadius:
    """Stays-forgotten radius from n outcomes h(θ + σε_i) ∈ [0, 1].

    ``bound``: "clopper-pearson" (outcomes must be 0/1), "hoeffding", "bernstein", or "auto"
    (Clopper–Pearson when every outcome is 0 or 1, else empirical Bernstein).


    No outcome of 100 "came back": the Clopper–Pearson upper bound is 1 − α^{1/n}, and the
    radius σ(Φ⁻¹(τ) − Φ⁻¹(1 − α^{1/n})):

    >>> r = radius_from_outcomes([0] * 100, sigma=0.02, alpha=0.001, tau=0.5)
    >>> ub = 1 - 0.001 ** (1 / 100)
    >>> r.certified, bool(np.isclose(r.bound, ub)), bool(np.isclose(r.radius, 0.02 * (norm.ppf(0.5) - norm.ppf(ub))))
    (True, True, True)
    """
    x = np.asarray(outcomes, dtype=float).reshape(-1)
    _check(sigma=sigma, alpha=alpha, n=len(x), tau=tau)
    if np.any((x < 0) | (x > 1)) or not np.all(np.isfinite(x)):
        raise ValueError("outcomes must lie in [0, 1]")
    binary = bool(np.all((x == 0) | (x == 1)))
    if bound == "auto":
        bound = "clopper-pearson" if binary else "bernstein"
    if bound == "clopper-pearson":
        if not binary:
            raise ValueError("Clopper–Pearson needs 0/1 outcomes; use bound='hoeffding' or "
                             "'bernstein' for outcomes in [0, 1]")
        ub = clopper_pearson(int(x.sum()), len(x), alpha, "upper")
    elif bound == "hoeffding":
        ub = hoeffding_upper(x, alpha)
    elif bound == "bernstein":
        ub = bernstein_upper(x, alpha)
    else:
        raise ValueError(f"bound must be auto/clopper-pearson/hoeffding/bernstein, got {bound!r}")
    ok = ub < tau
    r = float(sigma * (norm.ppf(tau) - norm.ppf(ub))) if ok else 0.0
    settings = dict(sigma=sigma, alpha=alpha, tau=tau, bound=bound, n_params=n_params,
                    sigma_meaning="per-coordinate noise std",
                    radius_meaning="l2 radius: H(θ+δ) < τ for every ‖δ‖₂ ≤ r (w.p. ≥ 1−α)")
    return CertifiedRadius(r, ok, ub, float(x.mean()), len(x), settings, cost)


def certified_radius(target, sigma: float, *, n: int = 1000, alpha: float = 0.001,
                     tau: float = 0.5, metric: Callable | None = None,
                     loss_threshold: float | None = None, bound: str = "auto",
                     seed: int = 0) -> CertifiedRadius:
    """Draw n noisy weights θ + σε, evaluate h, and certify (see module docstring).

    ``target``: a :class:`Probe` (its parameter selection is perturbed; h = ``metric(probe)``
    or, by default, 1[probe.loss() ≤ loss_threshold], "the forgotten data's loss is back below
    ℓ*") or a callable ``metric_fn(generator) -> float in [0, 1]`` that perturbs and evaluates
    one noisy model itself (σ is then only used in the radius formula).


    With a metric that never fires the radius has the closed form of
    :func:`radius_from_outcomes`; on a Probe the noise moves its selected weights and puts
    them back:

    >>> r = certified_radius(lambda gen: 0.0, sigma=0.1, n=50, alpha=0.01)
    >>> bool(np.isclose(r.radius, 0.1 * -norm.ppf(1 - 0.01 ** (1 / 50))))
    True
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, _ = least_squares()
    >>> before = probe.flat_params()
    >>> r = certified_radius(probe, sigma=1e-3, n=20, loss_threshold=probe.loss() - 1.0)
    >>> r.certified, r.cost.loss, torch.equal(probe.flat_params(), before)
    (True, 20, True)
    """
    _check(sigma=sigma, alpha=alpha, n=n, tau=tau)
    gen = torch.Generator().manual_seed(seed)
    if isinstance(target, Probe):
        if metric is None:
            if loss_threshold is None:
                raise ValueError("give metric(probe) -> [0, 1] or loss_threshold (h = 1[loss ≤ ℓ*])")
            if isinstance(loss_threshold, bool) or not isinstance(loss_threshold, (int, float, np.floating)) \
                    or not np.isfinite(loss_threshold):
                raise ValueError(f"loss_threshold must be a finite number, got {loss_threshold!r}; the loss ℓ* "
                                 "below which the forgotten data counts as recovered, e.g. probe.loss() - 1.0")
            metric = lambda p: float(p.loss() <= loss_threshold)
        start = target.cost()
        outs = []
        for i in range(n):
            z = target.random_vector(gen)
            with target.perturbed(z, sigma):
                outs.append(_outcome(metric(target), i, "metric(probe)"))
        return radius_from_outcomes(outs, sigma, alpha=alpha, tau=tau, bound=bound,
                                    n_params=target.numel, cost=target.cost() - start)
    if not callable(target):
        raise TypeError("target must be a Probe or a callable metric_fn(generator) -> [0, 1]")
    outs = [_outcome(target(gen), i, "metric_fn(generator)") for i in range(n)]
    return radius_from_outcomes(outs, sigma, alpha=alpha, tau=tau, bound=bound)


def cohen_radius(n_a: int, n: int, sigma: float, alpha: float = 0.001) -> tuple[float, float]:
    """(p̲_A, R): p̲_A = Clopper–Pearson lower bound, R = σΦ⁻¹(p̲_A), or R = nan (abstain) if
    p̲_A < 1/2.  SPEC worked example: n_A = 99000 of 100000, α = 0.001 → (0.98899, 2.29σ).

    >>> p, r = cohen_radius(99000, 100000, sigma=1.0)
    >>> p == float(beta.ppf(0.001, 99000, 1001)), r == float(norm.ppf(p)), round(r, 2)
    (True, True, 2.29)
    """
    p = clopper_pearson(n_a, n, alpha, "lower")
    _check(sigma=sigma)
    return p, (float(sigma * norm.ppf(p)) if p >= 0.5 else float("nan"))


def cohen_certify(classify: Callable, sigma: float, *, n0: int = 100, n: int = 100000,
                  alpha: float = 0.001, seed: int = 0) -> tuple:
    """CERTIFY (Cohen et al. 2019): ``classify(generator) -> label`` of one noisy draw.

    Picks the top class ĉ_A from n0 draws, counts it in n fresh draws, returns
    (ĉ_A, p̲_A, R) with R = σΦ⁻¹(p̲_A), or (None, p̲_A, nan) to abstain when p̲_A < 1/2.

    A classifier that always answers the same class certifies the ceiling σΦ⁻¹(α^{1/n}):

    >>> label, p, r = cohen_certify(lambda gen: "forgotten", sigma=0.1, n0=10, n=200)
    >>> label, bool(np.isclose(r, radius_ceiling(200, 0.001, 0.1)))
    ('forgotten', True)
    """
    _check(sigma=sigma, alpha=alpha, n=n)
    _check(n=n0)
    gen = torch.Generator().manual_seed(seed)
    first = [classify(gen) for _ in range(n0)]
    vals, counts = np.unique(np.asarray(first), return_counts=True)
    c_a = vals[np.argmax(counts)].item()  # the label as a Python object, not a numpy scalar
    n_a = sum(classify(gen) == c_a for _ in range(n))
    p, r = cohen_radius(int(n_a), n, sigma, alpha)
    return (c_a if np.isfinite(r) else None), p, r
