"""Theory checks (SPEC §3.1, §3.2, §3.4): what the local geometry predicts, next to what happens.

§3.1, ZO is gradient descent on a smoothed loss: for Gaussian u ~ N(0, I) the smoothed loss
is L_μ(θ) = E_u L(θ + μu), and

    (a) the two-point estimator ĝ = (1/q) Σ_i [L(θ+μu_i) − L(θ−μu_i)] / (2μ) · u_i has
        E ĝ = ∇L_μ(θ) = E_u ∇L(θ + μu);
    (b) L_μ(θ) − L(θ) = (μ²/2)·tr H(θ) + O(μ⁴)  (odd terms vanish by symmetry of u).

§3.2, quantization is a bounded weight perturbation: the loss change of an export δ = Q(θ) − θ
next to gᵀδ and gᵀδ + ½δᵀHδ, and (steps s known) the uniform-noise prediction (1/24)·Σ s_i²H_ii
(:func:`quantization_loss_check`).  §3.4, relearning: the first step's loss decrease next to
η‖g‖² − (η²/2)·gᵀHg (:func:`relearn_step_check`).

Each function returns a tidy table (:func:`optigrade._tables.rows_to_frame`, the one schema)
that puts the measurement next to what the theory predicts, with uncertainties, so a report
can show where the statements hold (small μ, many queries, small δ) and where they stop
holding.  Directions come from :mod:`optigrade._directions` (seeded, never the global RNG),
drawn the same way the ZO optimizers draw them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .. import _validate as V
from .._directions import DISTRIBUTIONS, Seeded, mix_seed
from .._tables import rows_to_frame
from .loss_change import _requested, loss_change
from .probe import Probe, flatten
from .results import _rel_error
from .sharpness import average_sharpness
from .spectra import hutchinson_trace

__all__ = ["zo_gradient_check", "smoothing_gap_check", "quantization_loss_check",
           "relearn_step_check", "EXACT_TRACE_MAX"]

#: ``trace="exact"`` spends one HVP per parameter; above this many parameters use Hutchinson.
EXACT_TRACE_MAX = 4096
_REF_STREAM = 0x5EF  # seeds of the reference draws: mix_seed(seed, _REF_STREAM, k)
_NOISE_STREAM = 0x0D1  # Rademacher probes of the uniform-noise term: mix_seed(seed, _NOISE_STREAM, k)


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
    >>> bool((abs(sq.value - 5 / sq.queries) < 4 * sq.uncertainty).all())
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
        rows += [dict(quantity="zo_cosine", value=float(cos.mean()), uncertainty=_sem(cos),
                      uncertainty_kind="sem", **place),
                 dict(quantity="zo_rel_error", value=float(rel.mean()), uncertainty=_sem(rel),
                      uncertainty_kind="sem", **place),
                 dict(quantity="zo_sq_rel_error", value=float((rel ** 2).mean()),
                      uncertainty=_sem(rel ** 2), uncertainty_kind="sem", **place),
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
        rows += [dict(quantity="smoothed_gap", value=s.value, uncertainty=s.std_error,
                      uncertainty_kind="sem", unit="loss", **place),
                 dict(quantity="smoothed_gap_predicted", value=pred, uncertainty=pred_se,
                      uncertainty_kind="sem" if math.isfinite(pred_se) else "", unit="loss",
                      **place),
                 dict(quantity="smoothed_gap_ratio", value=ratio, uncertainty=ratio_se,
                      uncertainty_kind="delta-method" if math.isfinite(ratio_se) else "", **place),
                 dict(quantity="smoothed_gap_z",
                      value=(s.value - pred) / comb if comb > 0 else float("nan"), **place)]
    eps = float(torch.finfo(probe.dtype).eps) if probe.dtype.is_floating_point else 0.0
    rows += [dict(quantity="hessian_trace", value=tr, uncertainty=tr_se,
                  uncertainty_kind="sem" if math.isfinite(tr_se) else "", unit="loss/param^2"),
             dict(quantity="loss_at_checkpoint", value=loss0, unit="loss"),
             dict(quantity="loss_resolution", value=eps * abs(loss0), unit="loss")]
    settings = dict(n=n, seed=seed, trace=tr_kind, trace_n=trace_n if tr_kind == "hutchinson"
                    else 0, antithetic=True, common_random_numbers=True,
                    noise="z ~ N(0, I), θ ± μz", n_params=probe.numel)
    return rows_to_frame(rows, settings, probe.cost() - start)


# ------------------------------------------------------------------ §3.2 quantization
def _checked(probe: Probe, what: str, v) -> None:
    """Refuse a vector that is not flat / per-tensor in the Probe's layout, or not finite,
    naming it (``what``); nothing is kept (a model-sized copy per label would be)."""
    try:
        probe._as_tensors(v)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{what}: {e}; give a flat vector of {probe.numel} entries or a list "
                         f"of tensors shaped like probe.params") from None


def _step_vector(probe: Probe, label: str, s) -> torch.Tensor:
    """The per-weight step s of ``label`` as a flat float64 vector (a number: the same s for
    every weight)."""
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        V.non_negative(f"steps[{label!r}]", s, "the quantization step s",
                       "a tensor of per-weight steps")
        return torch.full((probe.numel,), float(s), dtype=torch.float64, device=probe.device)
    _checked(probe, f"steps[{label!r}]", s)
    flat = _requested(probe, s)
    if bool((flat < 0).any()):
        raise ValueError(f"steps[{label!r}] has {int((flat < 0).sum())} negative entries; a "
                         f"quantization step s is >= 0 (|error| <= s/2), pass the steps' sizes")
    return flat


def _uniform_noise_term(probe: Probe, s: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """n samples of (1/24)·(s⊙z)ᵀH(s⊙z), z Rademacher (mean: (1/24)·Σ_i s_i² H_ii)."""
    out = np.empty(n)
    for k in range(n):
        v = s * _direction(probe, mix_seed(seed, _NOISE_STREAM, k), "rademacher")
        out[k] = float(v @ probe.hvp(v).double()) / 24.0
    return out


def quantization_loss_check(probe: Probe, deltas: Mapping[str, object], *,
                            steps: Mapping[str, object] | None = None, n: int = 16,
                            seed: int = 0) -> pd.DataFrame:
    """The loss change of each quantization error δ = Q(θ) − θ next to what the local geometry
    predicts (SPEC §3.2), per label (bit width, export type).

    For each label, :func:`~optigrade.landscape.loss_change` with one gradient shared over all
    labels: measured ΔL = L(θ + δ) − L(θ), first order gᵀδ, second order gᵀδ + ½δᵀHδ (one HVP
    per label) and their relative errors, on the applied δ̃ = fl(θ + δ) − θ.  With ``steps``
    (the per-weight step s of the quantizer), also the uniform-noise prediction: rounding
    error read as independent noise uniform on [−s_i/2, s_i/2] (mean 0, variance s_i²/12) gives

        E[ΔL] ≈ gᵀE[δ] + ½ Σ_i (s_i²/12) H_ii = (1/24)·Σ_i s_i² H_ii,

    estimated without the diagonal of H by Hutchinson with Rademacher z (z_i² = 1):
    (1/24)·(1/n) Σ_k (s⊙z_k)ᵀH(s⊙z_k), ± its standard error (kind "sem").  Each sample is
    Σ_i s_i² H_ii + Σ_{i≠j} s_i s_j z_i z_j H_ij, so the estimate is exact (sem 0) when
    s_i s_j H_ij = 0 for every i ≠ j (H diagonal on the quantized weights); with a constant s
    it is s²/24 times a Hutchinson estimate of tr H, not exact.  Its noise-model companion
    ``delta_norm_uniform_noise`` = √(Σ_i s_i²/12) is the ‖δ‖ uniform noise would have.  The
    same z_k serve every label (common random numbers: labels compare with less noise).

    A systematic δ (RTN is a function of θ, not noise) can have gᵀδ far from 0: then the
    measured change follows the first/second-order rows, not the noise prediction.

    Args:
        probe: model, data and loss at θ.
        deltas: label → δ, each a flat vector (torch or numpy) in the Probe's layout or a
            list of tensors shaped like ``probe.params``, e.g. ``{"rtn-4bit": Q₄(θ) − θ}``.
        steps: label → per-weight step s (same layouts, ≥ 0; a number: one s for every
            weight); labels without steps get no uniform-noise rows.
        n: Rademacher probes per label with steps (≥ 2, for a standard error).
        seed: the probes are ``Seeded(mix_seed(seed, 0x0D1, k), "rademacher")``.

    Returns:
        tidy rows with coordinate column ``label``: per label the rows of
        :class:`~optigrade.landscape.LossChange` (loss_change, loss_change_first_order,
        loss_change_second_order, first_order_rel_error, second_order_rel_error,
        curvature_along_delta, delta_norm, delta_rounding_norm, loss_change_resolution,
        loss_at_checkpoint) and, with steps, loss_change_uniform_noise (± sem) and
        delta_norm_uniform_noise.  Cost: 2 losses and 1 HVP per label, n HVPs per label with
        steps, 1 gradient.  The weights are restored bit for bit.

    Raises:
        ValueError: before any evaluation: deltas empty or not a mapping, a label that is
            not a non-empty string, a δ or s of the wrong shape or with non-finite entries, a
            negative s, steps for a label not in deltas, n < 2, a bad seed.

    On least squares (float64, H = AᵀA) the second-order prediction is the loss change, and
    with a constant step s the uniform-noise term estimates (s²/24)·tr H:

    >>> import numpy as np, torch
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> theta = probe.flat_params()
    >>> rtn = lambda s: s * torch.round(theta / s) - theta          # round to nearest, step s
    >>> df = quantization_loss_check(probe, {"s=0.5": rtn(0.5), "s=0.05": rtn(0.05)},
    ...                              steps={"s=0.5": 0.5}, n=200)
    >>> v = df.set_index(["label", "quantity"])
    >>> bool(v.value["s=0.5", "second_order_rel_error"] < 1e-9)
    True
    >>> noise = v.loc[("s=0.5", "loss_change_uniform_noise")]
    >>> bool(abs(noise.value - 0.5 ** 2 * np.trace(H) / 24) < 4 * noise.uncertainty)
    True
    >>> df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist()     # 2 labels, n = 200
    [4, 1, 202]
    """
    if not isinstance(deltas, Mapping) or not deltas:
        raise ValueError(f"deltas must be a non-empty mapping label -> δ, got {deltas!r}; try "
                         f"{{'rtn-4bit': Q(θ) − θ}} with δ flat or shaped like probe.params")
    labels = list(deltas)
    for label in labels:
        if not isinstance(label, str) or not label:
            raise ValueError(f"deltas has the label {label!r}; labels must be non-empty "
                             f"strings (they fill the 'label' column), e.g. 'rtn-4bit'")
        _checked(probe, f"deltas[{label!r}]", deltas[label])
    if steps is None:
        steps = {}
    if not isinstance(steps, Mapping):
        raise ValueError(f"steps must be a mapping label -> per-weight step s (or None), got "
                         f"{type(steps).__name__}; e.g. {{'{labels[0]}': s}}")
    stray = [k for k in steps if k not in deltas]
    if stray:
        raise ValueError(f"steps has labels {stray} that deltas lacks ({labels}); give steps "
                         f"only for labels in deltas")
    for label in steps:
        _step_vector(probe, label, steps[label])  # checked now, rebuilt when used
    n = V.int_at_least("n", n, 2, "Rademacher probes for the uniform-noise term", 16)
    seed = V.seed(seed)
    start = probe.cost()
    g = probe.grad().double()
    rows = []
    for label in labels:
        r = loss_change(probe, deltas[label], grad=g)
        rows += [{**row, "label": label} for row in r._rows()]
        if label in steps:
            s = _step_vector(probe, label, steps[label])
            samples = _uniform_noise_term(probe, s, n, seed)
            rows += [dict(quantity="loss_change_uniform_noise", value=float(samples.mean()),
                          uncertainty=_sem(samples), uncertainty_kind="sem", unit="loss",
                          label=label),
                     dict(quantity="delta_norm_uniform_noise",
                          value=math.sqrt(float(s @ s) / 12), unit="l2 weight norm",
                          label=label)]
    settings = dict(dtype=str(probe.dtype).replace("torch.", ""), hvp_mode=probe.hvp_mode,
                    n_params=probe.numel, n_labels=len(labels), n=n, seed=seed,
                    noise_model="uniform on [-s/2, s/2]: E dL = (1/24) sum s^2 H_ii",
                    noise_estimator="hutchinson, rademacher, common over labels",
                    shared_gradient=True)
    return rows_to_frame(rows, settings, probe.cost() - start)


# ---------------------------------------------------------------------- §3.4 relearning
def _lrs(lrs, given_direction: bool) -> list[float]:
    if lrs is None:
        if given_direction:
            return [1.0]
        raise ValueError("lrs is None; give step sizes η for the gradient step θ − η∇L, try "
                         "(1e-3, 1e-2, 1e-1) (lrs=None is for a given direction)")
    ls = list(lrs) if isinstance(lrs, (list, tuple, np.ndarray)) else [lrs]
    if not ls:
        raise ValueError("lrs is empty; give step sizes η, try (1e-3, 1e-2, 1e-1)")
    return [V.positive("lrs[i]", x, "a step size η", "1e-2") for x in ls]


def relearn_step_check(probe: Probe, lrs: Sequence[float] | None, *,
                       direction=None) -> pd.DataFrame:
    """The first relearning step's loss decrease next to its Taylor predictions (SPEC §3.4).

    Gradient step θ − η∇L (``direction=None``), per η in ``lrs``, g = ∇L(θ), H = ∇²L(θ):

        actual:        L(θ) − L(θ − ηg)
        first order:   η‖g‖²
        second order:  η‖g‖² − (η²/2)·gᵀHg

    A given step d (``direction``, e.g. Adam's first update per unit learning rate, or the
    update itself with ``lrs=None``) reads θ + ηd the same way: first order −η·gᵀd, second
    order −η·gᵀd − (η²/2)·dᵀHd.  One gradient and one HVP serve every η (a given d adds
    one HVP, for gᵀHg); one loss per η.  The predictions use the nominal step ηd; the step
    actually applied is fl(θ + ηd) − θ, and their difference is reported as
    ``step_rounding_norm`` (not negligible in bf16).

    The second-order prediction changes sign at η* = 2(−gᵀd)/(dᵀHd) (``lr_overshoot``; for
    the gradient step 2‖g‖²/gᵀHg): on a quadratic with gᵀHg > 0 a gradient step longer than
    η* overshoots and the loss rises.  ``curvature_along_gradient`` = gᵀHg/‖g‖².

    Args:
        probe: model, data and (forget) loss at θ (e.g. θ_u, the unlearned weights).
        lrs: step sizes η (each > 0); with ``direction`` may be None (the step as given).
        direction: None (the gradient step) or a step d: a flat vector (torch or numpy) in the
            Probe's layout or a list of tensors shaped like ``probe.params``.

    Returns:
        tidy rows with coordinate column ``lr``: relearn_decrease, relearn_decrease_first_order,
        relearn_decrease_second_order, first_order_rel_error, second_order_rel_error,
        step_norm (‖applied step‖), step_rounding_norm per η; then grad_norm,
        curvature_along_gradient, lr_overshoot, (with a direction) curvature_along_direction
        (dᵀHd/‖d‖²) and direction_cosine (cos(d, −g)), loss_at_checkpoint,
        loss_change_resolution (eps(dtype)·|L|).  Cost: 1 + len(lrs) losses, 1 gradient,
        1 HVP (2 with a direction).  The weights are restored bit for bit.

    Raises:
        ValueError: before any evaluation: lrs empty, None without a direction, or an η
            that is not a finite number > 0; a direction of the wrong shape or non-finite.

    On least squares (float64) the second-order prediction is the decrease itself, and at
    η = η* the step lands on the other side of the valley at the same height:

    >>> import numpy as np
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> g = probe.grad().numpy()
    >>> eta_star = 2 * (g @ g) / (g @ H @ g)
    >>> df = relearn_step_check(probe, [0.01, 0.1, eta_star])
    >>> v = df.set_index("quantity")
    >>> bool((v.loc["second_order_rel_error"].value.iloc[:2] < 1e-9).all())
    True
    >>> bool(np.isclose(v.value["lr_overshoot"], eta_star, rtol=1e-12))
    True
    >>> bool(abs(v.loc["relearn_decrease"].value.iloc[2]) < 1e-9 * eta_star * (g @ g))
    True
    >>> df[["cost_loss", "cost_grad", "cost_hvp"]].iloc[0].tolist()
    [4, 1, 1]
    """
    lr_list = _lrs(lrs, direction is not None)
    if direction is not None:
        _checked(probe, "direction", direction)
    start = probe.cost()
    l0 = probe.loss()
    g = probe.grad().double()
    gn2 = float(g @ g)
    ghg = float(g @ probe.hvp(g).double())
    if direction is None:
        d, gd, dhd = -g, -gn2, ghg
    else:
        d = _requested(probe, direction)
        gd = float(g @ d)
        dhd = float(d @ probe.hvp(d).double())
    theta = probe.flat_params().double()
    rows, top = [], abs(l0)
    for k, eta in enumerate(lr_list):
        with probe.perturbed(d, eta):
            l1 = probe.loss()
            applied = probe.flat_params().double() - theta
        top = max(top, abs(l1))
        actual = l0 - l1
        first = -eta * gd
        second = first - 0.5 * eta ** 2 * dhd
        place = dict(index=k, lr=eta)
        rel = "|prediction − measured| / |measured|"
        rows += [dict(quantity="relearn_decrease", value=actual, unit="loss", **place),
                 dict(quantity="relearn_decrease_first_order", value=first, unit="loss", **place),
                 dict(quantity="relearn_decrease_second_order", value=second, unit="loss",
                      **place),
                 dict(quantity="first_order_rel_error", value=_rel_error(first, actual),
                      unit=rel, **place),
                 dict(quantity="second_order_rel_error", value=_rel_error(second, actual),
                      unit=rel, **place),
                 dict(quantity="step_norm", value=float(applied.norm()),
                      unit="l2 weight norm", **place),
                 dict(quantity="step_rounding_norm", value=float((applied - eta * d).norm()),
                      unit="l2 weight norm", **place)]
    del theta
    dn2 = float(d @ d)
    nan = float("nan")
    rows += [dict(quantity="grad_norm", value=math.sqrt(gn2), unit="loss/param"),
             dict(quantity="curvature_along_gradient", value=ghg / gn2 if gn2 > 0 else nan,
                  unit="loss/param^2"),
             dict(quantity="lr_overshoot", value=-2 * gd / dhd if dhd != 0 else nan,
                  unit="step size")]
    if direction is not None:
        dn, gnorm = math.sqrt(dn2), math.sqrt(gn2)
        rows += [dict(quantity="curvature_along_direction", value=dhd / dn2 if dn2 > 0 else nan,
                      unit="loss/param^2"),
                 dict(quantity="direction_cosine",
                      value=-gd / (dn * gnorm) if dn > 0 and gnorm > 0 else nan)]
    eps = float(torch.finfo(probe.dtype).eps) if probe.dtype.is_floating_point else 0.0
    rows += [dict(quantity="loss_at_checkpoint", value=l0, unit="loss"),
             dict(quantity="loss_change_resolution", value=eps * top,
                  unit="loss")]
    settings = dict(step="theta - lr * grad" if direction is None else "theta + lr * direction",
                    dtype=str(probe.dtype).replace("torch.", ""), hvp_mode=probe.hvp_mode,
                    n_params=probe.numel, predictions="nominal step lr * d")
    return rows_to_frame(rows, settings, probe.cost() - start)
