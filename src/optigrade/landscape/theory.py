"""Theory checks (SPEC §3.1): ZO is gradient descent on a smoothed loss, measured.

For Gaussian u ~ N(0, I) the smoothed loss is L_μ(θ) = E_u L(θ + μu), and

    (a) the two-point estimator ĝ = (1/q) Σ_i [L(θ+μu_i) − L(θ−μu_i)] / (2μ) · u_i has
        E ĝ = ∇L_μ(θ) = E_u ∇L(θ + μu);
    (b) L_μ(θ) − L(θ) = (μ²/2)·tr H(θ) + O(μ⁴)  (odd terms vanish by symmetry of u).

Each function returns a tidy table (:func:`optigrade._tables.rows_to_frame`, the one schema)
that puts the measurement next to what the theory predicts, with standard errors, so a report
can show where the statements hold (small μ, many queries) and where they stop holding.
Directions come from :mod:`optigrade._directions` (seeded, never the global RNG), drawn the
same way the ZO optimizers draw them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import _validate as V
from .._directions import DISTRIBUTIONS, Seeded, mix_seed
from .._tables import rows_to_frame
from .probe import Probe, flatten
from .sharpness import average_sharpness
from .spectra import hutchinson_trace

__all__ = ["zo_gradient_check", "smoothing_gap_check", "EXACT_TRACE_MAX"]

#: ``trace="exact"`` spends one HVP per parameter; above this many parameters use Hutchinson.
EXACT_TRACE_MAX = 4096
_REF_STREAM = 0x5EF  # seeds of the reference draws: mix_seed(seed, _REF_STREAM, k)


def _sem(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _direction(probe: Probe, seed: int, dist: str) -> torch.Tensor:
    """The flat float64 direction z of ``Seeded(seed, dist)`` over the probe's parameters."""
    return flatten(Seeded(seed, dist).tensors(probe.params, dtype=torch.float64), torch.float64)


def _spread_constant(d: int, dist: str) -> int:
    """c in E‖ĝ_q − ∇L‖² = (c/q)·‖∇L‖² when the central difference is exact (quadratic L):
    Gaussian u: E[(gᵀu)²‖u‖²] = (d+2)‖g‖², so c = d+1; the sphere with gain d and Rademacher
    z (‖z‖² = d) give d‖g‖², so c = d−1."""
    return d + 1 if dist == "gaussian" else d - 1


def _queries(queries) -> list[int]:
    qs = list(queries) if isinstance(queries, (list, tuple)) else [queries]
    if not qs:
        raise ValueError("queries is empty; give query counts per estimate, try (1, 4, 16, 64)")
    return [V.int_at_least("queries[i]", q, 1, "directions per ZO estimate", 4) for q in qs]


def _reference(probe: Probe, mu: float, n: int, seed: int):
    """(r, rel. std error of r): r = (1/n) Σ_k ½[∇L(θ+μw_k) + ∇L(θ−μw_k)], w_k ~ N(0, I)
    (antithetic: unbiased for ∇L_μ, exact on quadratics); n = 0 gives r = ∇L(θ), error 0."""
    if n == 0:
        return probe.grad().double(), 0.0
    samples = []
    for k in range(n):
        w = _direction(probe, mix_seed(seed, _REF_STREAM, k), "gaussian")
        with probe.perturbed(w, mu):
            gp = probe.grad().double()
        with probe.perturbed(w, -mu):
            gm = probe.grad().double()
        samples.append(0.5 * (gp + gm))
    s = torch.stack(samples)
    ref = s.mean(0)
    var = s.var(0, unbiased=True).sum() / n if n > 1 else torch.tensor(float("nan"))
    norm = float(ref.norm())
    return ref, float(var.sqrt()) / norm if norm > 0 else float("nan")


def zo_gradient_check(probe: Probe, mu: float, queries: Sequence[int] = (1, 4, 16, 64),
                      dist: str = "gaussian", seed: int = 0, *, repeats: int = 8,
                      reference_n: int = 16) -> pd.DataFrame:
    """Two-point ZO estimates against a Monte-Carlo ∇L_μ as the number of queries q grows.

    For each q in ``queries``, ``repeats`` independent estimates (as in
    :func:`optigrade.optimizers.zo_estimate`, central differences, u_i = a_i·z_i):

        ĝ_q = (γ/q) Σ_i [L(θ+μu_i) − L(θ−μu_i)] / (2μ) · u_i,

    γ = d for ``"sphere"`` (unit u; E ĝ is then the ball-smoothed gradient), else 1; and the
    reference r = (1/n) Σ_k ½[∇L(θ+μw_k) + ∇L(θ−μw_k)], w_k ~ N(0, I), n = ``reference_n``
    (unbiased for ∇L_μ; ``reference_n=0`` uses ∇L(θ), right when μ is small).  Reported per q
    (mean over repeats ± standard error): cos(ĝ_q, r), ‖ĝ_q − r‖/‖r‖ and ‖ĝ_q − r‖²/‖r‖²,
    the last next to its prediction c/q (exact for a quadratic loss, where the central
    difference is gᵀu): c = d+1 for Gaussian u, d−1 for the sphere and Rademacher.  The mean
    of *all* estimates (N = repeats·Σq queries) is reported as ``zo_pooled_*`` next to c/N:
    it approaches r as N grows, which is statement (a) of SPEC §3.1.

    For ``"sphere"``/``"rademacher"`` the reference is still the Gaussian ∇L_μ; they agree
    with E ĝ on quadratics and up to O(μ²) third-derivative terms otherwise.

    Args:
        probe: model, data and loss at θ. mu: μ, the smoothing radius (> 0).
        queries: directions per estimate (each ≥ 1). dist: "gaussian" | "sphere" |
        "rademacher". seed: directions are ``Seeded(mix_seed(seed, q, r, i), dist)``.
        repeats: estimates per q (≥ 2, for a standard error). reference_n: antithetic
        gradient pairs for r (≥ 0).

    Returns:
        tidy rows (coordinate column ``queries``): zo_cosine, zo_rel_error, zo_sq_rel_error,
        zo_sq_rel_error_predicted per q; zo_pooled_cosine, zo_pooled_rel_error,
        zo_pooled_sq_rel_error, zo_pooled_sq_rel_error_predicted; reference_rel_std_error
        (noise of r), reference_vs_gradient_rel_diff (‖r − ∇L‖/‖∇L‖: smoothing bias + noise),
        grad_norm.  Cost: 2·repeats·Σq losses, 2·reference_n + 1 gradients.

    Raises:
        ValueError: a bad argument (named), or r = 0 (a stationary point: cosine undefined).

    On least squares (d = 4) the mean of 8·(4 + 16) estimates points along ∇L, and the
    squared error per estimate matches c/q = 5/q within its standard error:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> df = zo_gradient_check(probe, mu=1e-3, queries=(4, 16), repeats=40, reference_n=2)
    >>> pooled = df.set_index("quantity").value
    >>> bool(pooled["zo_pooled_cosine"] > 0.98)
    True
    >>> sq = df[df.quantity == "zo_sq_rel_error"]
    >>> bool((abs(sq.value - 5 / sq.queries) < 4 * sq.std_error).all())
    True
    """
    mu = V.positive("mu", mu, "the smoothing radius of the ZO estimator", "1e-3")
    qs = _queries(queries)
    V.choice("dist", dist, DISTRIBUTIONS, "the direction distribution")
    seed = V.seed(seed)
    repeats = V.int_at_least("repeats", repeats, 2, "independent estimates per query count", 8)
    reference_n = V.int_at_least("reference_n", reference_n, 0,
                                 "antithetic gradient pairs for the reference ∇L_μ", 16)
    start = probe.cost()
    d = probe.numel
    grad = probe.grad().double()
    ref, ref_se = _reference(probe, mu, reference_n, seed)
    rn = float(ref.norm())
    if rn == 0:
        raise ValueError("the reference gradient is zero (a stationary point), so cosine and "
                         "relative error are undefined; check the estimator at a θ with ∇L ≠ 0")
    c = _spread_constant(d, dist)
    gain = d if dist == "sphere" else 1.0
    pooled = torch.zeros_like(ref)
    rows = []
    for k, q in enumerate(qs):
        cos, rel = np.empty(repeats), np.empty(repeats)
        for r in range(repeats):
            est = torch.zeros_like(ref)
            for i in range(q):
                z = _direction(probe, mix_seed(seed, q, r, i), dist)
                u = z / z.norm() if dist == "sphere" else z
                with probe.perturbed(u, mu):
                    lp = probe.loss()
                with probe.perturbed(u, -mu):
                    lm = probe.loss()
                est += (gain * (lp - lm) / (2 * mu) / q) * u
            pooled += q * est
            en = float(est.norm())
            cos[r] = float(est @ ref) / (en * rn) if en > 0 else 0.0
            rel[r] = float((est - ref).norm()) / rn
        place = dict(index=k, queries=q)
        rows += [dict(quantity="zo_cosine", value=float(cos.mean()), std_error=_sem(cos),
                      std_error_kind="sem", **place),
                 dict(quantity="zo_rel_error", value=float(rel.mean()), std_error=_sem(rel),
                      std_error_kind="sem", **place),
                 dict(quantity="zo_sq_rel_error", value=float((rel ** 2).mean()),
                      std_error=_sem(rel ** 2), std_error_kind="sem", **place),
                 dict(quantity="zo_sq_rel_error_predicted", value=c / q, **place)]
    total = repeats * sum(qs)
    pooled /= total
    pn = float(pooled.norm())
    prel = float((pooled - ref).norm()) / rn
    gn = float(grad.norm())
    place = dict(queries=total)
    rows += [dict(quantity="zo_pooled_cosine", value=float(pooled @ ref) / (pn * rn) if pn else 0.0,
                  **place),
             dict(quantity="zo_pooled_rel_error", value=prel, **place),
             dict(quantity="zo_pooled_sq_rel_error", value=prel ** 2, **place),
             dict(quantity="zo_pooled_sq_rel_error_predicted", value=c / total, **place),
             dict(quantity="reference_rel_std_error", value=ref_se),
             dict(quantity="reference_vs_gradient_rel_diff",
                  value=float((ref - grad).norm()) / gn if gn > 0 else float("nan")),
             dict(quantity="grad_norm", value=gn, unit="loss/param")]
    settings = dict(mu=mu, dist=dist, seed=seed, repeats=repeats, reference_n=reference_n,
                    reference="gradient" if reference_n == 0 else
                    "gaussian-smoothed gradient, antithetic MC",
                    difference="central", gain=gain, n_params=d, spread_constant=c)
    return rows_to_frame(rows, settings, probe.cost() - start)


def _exact_trace(probe: Probe) -> float:
    """Σ_i e_iᵀ H e_i: one HVP per parameter (small models only)."""
    if probe.numel > EXACT_TRACE_MAX:
        raise ValueError(f"trace='exact' needs one HVP per parameter and the probe has "
                         f"{probe.numel} > {EXACT_TRACE_MAX}; use trace='hutchinson'")
    total = 0.0
    for i in range(probe.numel):
        e = torch.zeros(probe.numel, dtype=torch.float64)
        e[i] = 1.0
        total += float(probe.hvp(e)[i])
    return total


def _trace(probe: Probe, trace, trace_n: int, seed: int):
    """(tr H, its standard error, what produced it)."""
    if isinstance(trace, (int, float)) and not isinstance(trace, bool):
        if not math.isfinite(trace):
            raise ValueError(f"trace must be finite, got {trace}; pass tr H, 'exact' or "
                             f"'hutchinson'")
        return float(trace), float("nan"), "given"
    V.choice("trace", trace, ("hutchinson", "exact"), "how tr H is obtained (or pass a number)")
    if trace == "exact":
        return _exact_trace(probe), float("nan"), "exact"
    t = hutchinson_trace(probe, n=trace_n, seed=seed)
    return t.estimate, t.std_error, "hutchinson"


def smoothing_gap_check(probe: Probe, mus: Sequence[float] = (1e-3, 1e-2, 1e-1), n: int = 64,
                        *, trace="hutchinson", trace_n: int = 100,
                        seed: int = 0) -> pd.DataFrame:
    """L_μ − L by Monte Carlo next to (μ²/2)·tr H, per μ (SPEC §3.1 (b)).

        measured:   L_μ(θ) − L(θ) ≈ (1/n) Σ_k ½[L(θ+μz_k) + L(θ−μz_k)] − L(θ),  z_k ~ N(0, I)
        predicted:  (μ²/2)·tr H(θ)

    The antithetic pairs cancel every odd term, so on a quadratic each sample is exactly
    (μ²/2)·z_kᵀHz_k and the two agree within the standard errors; otherwise the O(μ⁴) term
    shows as a ratio drifting away from 1 at large μ, and at small μ the measured gap falls
    toward ``loss_resolution`` (eps(dtype)·|L|), below which it is rounding.  The same n
    draws are reused at every μ (common random numbers: the trend over μ is not noise).
    The measurement is :func:`~optigrade.landscape.average_sharpness` with ρ = μ.

    Args:
        probe: model, data and loss at θ. mus: smoothing radii μ (each > 0).
        n: antithetic noise pairs per μ (≥ 2). trace: ``"hutchinson"`` (``trace_n``
        Rademacher probes, with standard error), ``"exact"`` (one HVP per parameter, ≤
        :data:`EXACT_TRACE_MAX` parameters) or a number (tr H known). seed: noise and probes.

    Returns:
        tidy rows (coordinate column ``mu``): smoothed_gap (± sem), smoothed_gap_predicted
        (± the trace's sem × μ²/2), smoothed_gap_ratio (measured / predicted, delta-method
        error), smoothed_gap_z ((measured − predicted) / combined error) per μ; then
        hessian_trace, loss_at_checkpoint, loss_resolution.  Cost: len(mus)·(2n + 1) losses
        + the trace's HVPs.

    On least squares (H = AᵀA) with the exact trace:

    >>> import numpy as np
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> df = smoothing_gap_check(probe, mus=(1e-2, 1e-1), n=200, trace=float(np.trace(H)))
    >>> z = df[df.quantity == "smoothed_gap_z"].value
    >>> bool((z.abs() < 4).all())
    True
    """
    ms = list(mus) if isinstance(mus, (list, tuple)) else [mus]
    if not ms:
        raise ValueError("mus is empty; give smoothing radii, try (1e-3, 1e-2, 1e-1)")
    ms = [V.positive("mus[i]", m, "a smoothing radius μ", "1e-2") for m in ms]
    n = V.int_at_least("n", n, 2, "antithetic noise pairs per μ (for a standard error)", 64)
    trace_n = V.int_at_least("trace_n", trace_n, 2, "Hutchinson probes for tr H", 100)
    seed = V.seed(seed)
    start = probe.cost()
    tr, tr_se, tr_kind = _trace(probe, trace, trace_n, seed)
    rows, loss0 = [], None
    for k, mu in enumerate(ms):
        s = average_sharpness(probe, mu, n=n, antithetic=True, seed=seed)
        loss0 = s.loss
        pred, pred_se = 0.5 * mu ** 2 * tr, 0.5 * mu ** 2 * tr_se
        se_p = pred_se if math.isfinite(pred_se) else 0.0
        comb = math.hypot(s.std_error, se_p)
        ratio = s.value / pred if pred != 0 else float("nan")
        ratio_se = (abs(ratio) * math.hypot(s.std_error / s.value, se_p / pred)
                    if pred != 0 and s.value != 0 else float("nan"))
        place = dict(index=k, mu=mu)
        rows += [dict(quantity="smoothed_gap", value=s.value, std_error=s.std_error,
                      std_error_kind="sem", unit="loss", **place),
                 dict(quantity="smoothed_gap_predicted", value=pred, std_error=pred_se,
                      std_error_kind="sem" if math.isfinite(pred_se) else "", unit="loss",
                      **place),
                 dict(quantity="smoothed_gap_ratio", value=ratio, std_error=ratio_se,
                      std_error_kind="delta-method" if math.isfinite(ratio_se) else "", **place),
                 dict(quantity="smoothed_gap_z",
                      value=(s.value - pred) / comb if comb > 0 else float("nan"), **place)]
    eps = float(torch.finfo(probe.dtype).eps) if probe.dtype.is_floating_point else 0.0
    rows += [dict(quantity="hessian_trace", value=tr, std_error=tr_se,
                  std_error_kind="sem" if math.isfinite(tr_se) else "", unit="loss/param^2"),
             dict(quantity="loss_at_checkpoint", value=loss0, unit="loss"),
             dict(quantity="loss_resolution", value=eps * abs(loss0), unit="loss")]
    settings = dict(n=n, seed=seed, trace=tr_kind, trace_n=trace_n if tr_kind == "hutchinson"
                    else 0, antithetic=True, common_random_numbers=True,
                    noise="z ~ N(0, I), θ ± μz", n_params=probe.numel)
    return rows_to_frame(rows, settings, probe.cost() - start)
