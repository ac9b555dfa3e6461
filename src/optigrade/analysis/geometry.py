"""The study's geometry stage: the loss landscape around every checkpoint, joined to what each
attack did to it (SCIENCE.md §4, G1–G3, G5; SPEC §3).

For a checkpoint θ (the original model θ₀ or an unlearned θ_u) and each data split D of
``geometry.data`` (forget / retain; a fixed batch: the split's first ``examples`` items) a
:class:`~optigrade.landscape.Probe` over the weights ``geometry.params`` gives, as rows of the
study's tidy table (``quantity`` prefixed ``geo_``; ``data`` = D; ``attack`` "none" unless said):

==========================  ==================================================================
quantity                    what
==========================  ==================================================================
geo_loss, geo_grad_norm     L(θ) on the batch and ‖∇L(θ)‖
geo_top_eigenvalue[i]       the k largest Hessian eigenvalues (Lanczos); uncertainty = the
                            Lanczos residual ‖Hy − λy‖ (kind "residual", an error bound)
geo_lambda_max              the largest of them (same residual)
geo_trace                   tr H by Hutch++ (uncertainty: its standard error, "sem")
geo_qnoise_sharpness        E L(θ + δ) − L(θ), δ_i ~ N(0, (c·σ_i)²), σ_i = s_i/√12 the std of
                            uniform rounding noise on the RTN grid of ``noise_bits`` (s_i the
                            step at weight i; 0 for weights RTN does not quantize), one row per
                            c in ``noise_scales`` (column ``noise_scale``), SCIENCE.md G2
geo_adaptive_sharpness      the same with σ_i = ρ·|θ_i| (weight-scaled, ASAM-style; ρ =
                            ``adaptive_rho``)
geo_interp[i], _barrier     unlearned only: L((1−α)θ₀ + αθ_u) on α ∈ [0, 1] (column ``alpha``)
                            and its barrier max_α L(α) − [(1−α)L(θ₀) + αL(θ_u)] (SPEC §3.4)
geo_relearn_step_*          forget only, with a relearn attack: the first SGD step of the
                            attack's lr, predicted vs actual decrease (SPEC §3.4)
geo_certified_radius        forget only, unlearned only: the weight-space radius within which
                            "the forget loss stays above ℓ* = (L(θ₀) + L(θ_u))/2" is certified
                            under N(0, σ²I) noise, σ = RMS of σ_i (SPEC §3.3), next to
                            geo_radius_ceiling (the most n draws can certify)
==========================  ==================================================================

and, for every attack A with δ = A(θ) − θ on the Probe's weights (``attack`` = A's label):

==============================  ==============================================================
geo_loss_change (+ _first,      L(θ + δ) − L(θ) measured, next to gᵀδ and gᵀδ + ½δᵀHδ
_second)                        (:func:`~optigrade.landscape.loss_change`); with RTN, also
                                ``geo_loss_change_uniform`` (1/24)Σ s_i² H_ii when available
geo_slice_attack[i]             L(θ + tδ), t ∈ [−0.5, 1.5] (column ``alpha``)
geo_slice_random[i]             L(θ + t·r), r a random filter-normalized direction, ‖r‖ = ‖δ‖
geo_attack_norm (weights)       ‖δ‖
geo_cos_attack_update (weights) cos(δ, −Δ), Δ = θ_u − θ₀ (unlearned only): ≈ 1 means the
                                attack reverses the update (snap-back, not sharpness)
geo_radius_over_attack_norm     certified radius / ‖δ‖ (forget; < 1: the certificate says
                                nothing about this attack — shown, not hidden)
==============================  ==============================================================

Every Probe measurement restores the weights bit for bit (the landscape functions' contract),
so the attacks and diagnostics that follow see the same model.
"""

from __future__ import annotations

import json
import math
import time
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from .._select import linear_weights
from .config import GEOMETRY_QUANTITIES

__all__ = ["geometry_rows", "theory_rows", "kept_weights", "base_losses", "noise_scale_vector", "quant_step_vector", "probe_batch", "GEOMETRY_QUANTITIES"]



def probe_batch(bench, split: str, n: int) -> dict:
    """The fixed batch of a geometry Probe: the first ``n`` examples of ``split`` (encoded
    prompt + answer, loss on the answer tokens), without the ``index`` key."""
    data = bench.splits[split]
    b = bench.encode_qa(data[: min(n, len(data))])
    return {k: v for k, v in b.items() if k != "index"}


@torch.no_grad()
def quant_step_vector(probe, bits: int, group_size: Optional[int] = None, symmetric: bool = True) -> torch.Tensor:
    """The RTN step s_i of weight i's group (flat over the Probe's parameters, float64), the
    grid of :func:`~optigrade.analysis.attacks.rtn.quantize_rtn` with these settings; 0 for the
    parameters the RTN attack leaves alone (norms, biases, embeddings: not ``nn.Linear`` weights).

    >>> import torch
    >>> from optigrade.landscape import Probe
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.LayerNorm(1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[0.875, -0.5, 0.125, 0.0]]))
    >>> probe = Probe(net, [(torch.ones(2, 4), torch.zeros(2, 1))],
    ...               lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
    >>> quant_step_vector(probe, bits=4).tolist()      # weight row: step 0.875/7; bias, LayerNorm: 0
    [0.125, 0.125, 0.125, 0.125, 0.0, 0.0, 0.0]
    """
    from .attacks.rtn import _grouped, quant_step

    quantized = {id(w) for _, w in linear_weights(probe.model)}
    parts = []
    for p in probe.params:
        if id(p) in quantized:
            s, _ = quant_step(p.detach(), bits, group_size, symmetric)
            parts.append(s.expand_as(_grouped(p.detach(), group_size)).reshape(-1).double().cpu())
        else:
            parts.append(torch.zeros(p.numel(), dtype=torch.float64))
    return torch.cat(parts).to(probe.device)


def noise_scale_vector(probe, bits: int, group_size: Optional[int] = None, symmetric: bool = True) -> torch.Tensor:
    """σ_i = s_i/√12 (:func:`quant_step_vector`): the standard deviation of uniform rounding
    noise on weight i's RTN grid (SPEC §3.2: variance s²/12), the quantization-noise scale of
    SCIENCE.md G2."""
    return quant_step_vector(probe, bits, group_size, symmetric) / math.sqrt(12)


def _flat(probe, weights=None) -> torch.Tensor:
    """The Probe's parameters as one float64 vector, or the same-named tensors of ``weights``
    (a model, or a mapping name → tensor such as :func:`kept_weights` returns)."""
    if weights is None:
        return torch.cat([p.detach().double().reshape(-1) for p in probe.params])
    named = dict(weights.named_parameters()) if isinstance(weights, torch.nn.Module) else weights
    return torch.cat([named[n].detach().to(probe.device).double().reshape(-1) for n in probe.names])


def kept_weights(spec, model) -> Dict[str, torch.Tensor]:
    """Copies of the tensors of ``model`` a geometry Probe with ``spec.params`` measures (what a
    study keeps of each attacked model, instead of the whole model)."""
    from .._select import select

    return {n: p.detach().clone() for n, p in select(model, None, spec.params, None)}


#: quantization_loss_check's quantities → the study's names (others become geo_loss_change_<name>).
_LOSS_CHANGE_NAMES = {"loss_change": "geo_loss_change", "loss_change_first_order": "geo_loss_change_first",
                      "loss_change_second_order": "geo_loss_change_second",
                      "loss_change_uniform_noise": "geo_loss_change_uniform"}


#: Columns of a landscape frame the study keeps (its own settings go into ``setting_geometry``).
_KEEP = ("quantity", "index", "value", "uncertainty", "uncertainty_kind", "unit", "alpha", "noise_scale", "lr",
         "label", "cost_loss", "cost_grad", "cost_hvp")


def _records(df) -> List[dict]:
    return [{k: v for k, v in r.items() if k in _KEEP} for r in df.to_dict("records")]


def _rows(res, **context) -> List[dict]:
    return _records(res.to_frame(**context))


def _row(quantity: str, value: float, unit: str = "", **extra) -> dict:
    return {"quantity": quantity, "value": float(value), "uncertainty": float("nan"), "uncertainty_kind": "",
            "unit": unit, **extra}


def _renamed(rows: List[dict], names: Mapping[str, str], **extra) -> List[dict]:
    """The rows of a landscape frame whose quantity ``names`` renames (others dropped), with
    ``extra`` columns added."""
    return [{**r, "quantity": names[r["quantity"]], **extra} for r in rows if r.get("quantity") in names]


def geometry_rows(spec, model, bench, *, base=None, attacked: Optional[Dict[str, object]] = None,
                  quantizers: Optional[Mapping[str, tuple]] = None, relearn_lr: Optional[float] = None,
                  base_losses: Optional[Dict[str, float]] = None) -> List[dict]:
    """The geometry rows (module docstring) of checkpoint ``model`` as dicts with ``subject``,
    ``data``, ``attack``, ``quantity``, ``index``, ``value``, ``uncertainty(_kind)``, ``unit``,
    coordinate columns (``alpha``, ``noise_scale``), ``setting_*`` and ``cost_*``.

    Args:
        spec: the study's :class:`~optigrade.analysis.config.GeometrySpec`.
        model: the checkpoint (not modified: every measurement restores it bit for bit).
        bench: the study's benchmark (its splits give the Probe batches).
        base: the original model θ₀ when ``model`` is an unlearned checkpoint (interpolation,
            cos(δ, −Δ), the certified radius's threshold); None for the original itself.
        attacked: attack label → the attacked model, or the tensors :func:`kept_weights` kept of
            it (its weights give δ).
        quantizers: attack label → (bits, group_size, symmetric) of the RTN attacks among them
            (their grid's steps give the uniform-noise prediction of the loss change).
        relearn_lr: the relearn attack's learning rate (the first-step check); None skips it.
        base_losses: data split → L(θ₀) on the same batch (for the radius threshold).
    """
    from optigrade import landscape as ls
    from optigrade.landscape.theory import quantization_loss_check, relearn_step_check

    attacked = attacked or {}
    q = set(spec.quantities)
    subject = "unlearned" if base is not None else "original"
    rows: List[dict] = []
    pattern = spec.params
    theta_0 = None
    for data in spec.data:
        t0 = time.perf_counter()
        batch = probe_batch(bench, data, spec.examples)
        try:
            probe = ls.Probe(model, [batch], param_filter=pattern, keep_graph=spec.keep_graph)
        except ValueError as e:  # a non-finite loss at the checkpoint (a collapsed run): nothing to measure
            if "not finite" not in str(e):
                raise
            rows.append({**_row("geo_loss", float("nan"), "loss (nats/token)"), "subject": subject, "data": data,
                         "geo_note": "the loss at this checkpoint is not finite: no geometry"})
            continue
        ctx = dict(subject=subject, data=data)
        drows: List[dict] = []
        cr = None

        def attempt(what, fn, **extra):
            """fn(), or None and a ``geo_failed`` row when the measurement meets non-finite numbers
            (a collapsed checkpoint: an HVP overflows) — recorded, not fatal to the study."""
            try:
                return fn()
            except (ValueError, FloatingPointError) as e:
                if "finite" not in str(e) and "nan" not in str(e).lower():
                    raise
                drows.append(_row("geo_failed", 1.0, "", geo_note=f"{what}: {' '.join(str(e).split())[:200]}",
                                  **extra))
                return None
        l0 = probe.loss()
        g = probe.grad()
        drows.append(_row("geo_loss", l0, "loss (nats/token)"))
        drows.append(_row("geo_grad_norm", float(g.double().norm()), "loss/param"))
        sigma = None
        if q & {"sharpness", "radius", "loss_change"}:
            sigma = noise_scale_vector(probe, spec.noise_bits, spec.noise_group_size, spec.noise_symmetric)
        if "eigenvalues" in q and (ev := attempt("eigenvalues", lambda: ls.top_eigenvalues(
                probe, k=spec.k, max_iter=spec.lanczos_iter, seed=spec.seed, return_vectors=False))) is not None:
            er = _rows(ev)
            drows += _renamed(er, {"eigenvalue_LA": "geo_top_eigenvalue"})
            drows += _renamed([r for r in er if r.get("quantity") == "eigenvalue_LA" and r.get("index") == 0],
                              {"eigenvalue_LA": "geo_lambda_max"})
        if "trace" in q and (tr := attempt("trace", lambda: ls.hutchpp_trace(probe, spec.trace_queries,
                                                                              seed=spec.seed))) is not None:
            drows += _renamed(_rows(tr), {"hessian_trace": "geo_trace"})
        if "sharpness" in q:
            for c in spec.noise_scales if float(sigma.max()) > 0 else []:  # no RTN-quantized weight: no scale
                r = attempt("sharpness", lambda: ls.average_sharpness(probe, rho=float(c), n=spec.sharpness_samples,
                                                                      scale=sigma, seed=spec.seed))
                if r is not None:
                    drows += _renamed(_rows(r), {"average_sharpness": "geo_qnoise_sharpness"}, noise_scale=float(c))
            r = attempt("adaptive sharpness", lambda: ls.average_sharpness(
                probe, rho=spec.adaptive_rho, n=spec.sharpness_samples, adaptive=True, seed=spec.seed))
            if r is not None:
                drows += _renamed(_rows(r), {"average_sharpness": "geo_adaptive_sharpness"})
        theta = _flat(probe)
        if base is not None:
            theta_0 = _flat(probe, base)
            alphas = np.linspace(0.0, 1.0, spec.interp_points)
            if "interpolation" in q and (s := attempt("interpolation", lambda: ls.interpolate(
                    probe, theta_0, theta, alphas=alphas))) is not None:
                lin = (1 - alphas) * s.losses[0] + alphas * s.losses[-1]
                for i, (a, v) in enumerate(zip(alphas, s.losses)):
                    drows.append(_row("geo_interp", v, "loss (nats/token)", index=i, alpha=float(a)))
                drows.append(_row("geo_interp_barrier", float(np.max(s.losses - lin)), "loss (nats/token)"))
        if "relearn_step" in q and data == "forget" and relearn_lr is not None and (rs := attempt(
                "relearn step", lambda: relearn_step_check(probe, [relearn_lr]))) is not None:
            for r in _records(rs):
                drows.append({**r, "quantity": f"geo_relearn_step_{r['quantity']}"})
        # ------------------------------------------------------------- each attack's δ
        deltas = {lab: _flat(probe, m) - theta for lab, m in attacked.items()}
        for lab in [lab for lab, d in deltas.items() if not bool(torch.isfinite(d).all())]:
            del deltas[lab]  # the attack broke the weights (e.g. relearning a collapsed model diverged)
            drows.append(_row("geo_attack_nonfinite", 1.0, "", attack=lab,
                              geo_note=f"attack {lab!r} left non-finite weights: no geometry along it"))
        if "loss_change" in q and deltas:
            steps = {lab: quant_step_vector(probe, *quantizers[lab]) for lab in deltas if lab in (quantizers or {})}
            lc = attempt("loss change", lambda: quantization_loss_check(probe, deltas, steps=steps or None,
                                                                         n=spec.uniform_samples, seed=spec.seed))
            for r in _records(lc) if lc is not None else []:
                q_name = _LOSS_CHANGE_NAMES.get(r["quantity"], f"geo_attack_{r['quantity']}")
                drows.append({**r, "quantity": q_name, "attack": r.pop("label")})
        radius = None
        if "radius" in q and data == "forget" and base is not None and base_losses and data in base_losses \
                and float(sigma.max()) > 0:
            thr = 0.5 * (base_losses[data] + l0)  # ℓ*: half of the forgetting undone
            sig = float(sigma.pow(2).mean().sqrt())  # isotropic σ: the RMS quantization-noise std
            cr = attempt("certified radius", lambda: ls.certified_radius(
                probe, sigma=sig, n=spec.radius_samples, alpha=spec.radius_alpha, loss_threshold=thr, seed=spec.seed))
        if cr is not None:
            radius = cr.radius if cr.certified else 0.0
            drows.append(_row("geo_certified_radius", radius, "l2 weight norm", setting_sigma=sig,
                              setting_radius_samples=spec.radius_samples, setting_loss_threshold=thr,
                              setting_certified=bool(cr.certified)))
            drows.append(_row("geo_radius_ceiling", ls.radius_ceiling(spec.radius_samples, spec.radius_alpha, sig),
                              "l2 weight norm", setting_sigma=sig))
        for lab, d in deltas.items():
            actx = dict(attack=lab)
            nd = float(d.norm())
            if "slices" in q and nd > 0:
                grid = (-0.5, 1.5)
                r_dir = ls.random_direction(probe, seed=spec.seed, normalization="filter").double()
                r_dir = (r_dir * (nd / float(r_dir.norm()))).to(probe.dtype)
                pair = attempt(f"slices along {lab}", lambda: (
                    ls.slice_1d(probe, d.to(probe.dtype), span=grid, points=spec.slice_points, curvature=False),
                    ls.slice_1d(probe, r_dir, span=grid, points=spec.slice_points, curvature=False)), attack=lab)
                if pair is not None:
                    for name, sl in (("geo_slice_attack", pair[0]), ("geo_slice_random", pair[1])):
                        for i, (a, v) in enumerate(zip(sl.alphas, sl.losses)):
                            drows.append(_row(name, v, "loss (nats/token)", index=i, alpha=float(a), **actx))
            if radius is not None:
                drows.append(_row("geo_radius_over_attack_norm", radius / nd if nd > 0 else float("nan"), "ratio", **actx))
            if data == spec.data[0]:  # weight-space quantities: once per checkpoint
                rows.append({**_row("geo_attack_norm", nd, "l2 weight norm", **actx), "subject": subject,
                             "data": "weights"})
                if base is not None:
                    upd = theta - theta_0
                    den = nd * float(upd.norm())
                    cos = float(-(d @ upd) / den) if den > 0 else float("nan")
                    rows.append({**_row("geo_cos_attack_update", cos, "cosine", **actx), "subject": subject,
                                 "data": "weights"})
        secs = time.perf_counter() - t0
        spent = probe.cost()  # everything this checkpoint × split cost (rows' cost_* are per measurement)
        for r in drows:
            r.update(ctx)
            r.setdefault("attack", "none")
            r["geo_seconds"] = secs
            r["geo_probe_loss"], r["geo_probe_grad"], r["geo_probe_hvp"] = spent.loss, spent.grad, spent.hvp
        rows += drows
    blob = json.dumps(spec.settings(), sort_keys=True)
    for r in rows:
        r.setdefault("attack", "none")
        r.setdefault("index", 0)
        r["setting_geometry"] = blob
    return rows


def theory_rows(spec, base, bench) -> List[dict]:
    """The SPEC §3.1 checks on the original model's forget loss (``quantity`` prefixed
    ``theory_``, subject "original", data "forget"): the mean of many two-point ZO estimates
    against a Monte-Carlo ∇L_μ as the queries grow (:func:`~optigrade.landscape.zo_gradient_check`)
    and L_μ − L against (μ²/2)·tr H over μ (:func:`~optigrade.landscape.smoothing_gap_check`).
    Checks (3) and (4) of the issue are per checkpoint: ``geo_loss_change*`` and
    ``geo_relearn_step_*``."""
    from optigrade import landscape as ls

    probe = ls.Probe(base, [probe_batch(bench, "forget", spec.examples)], param_filter=spec.params,
                     keep_graph=spec.keep_graph)
    keep = _KEEP + ("queries", "mu")
    rows = []
    t0 = time.perf_counter()
    zo = ls.zo_gradient_check(probe, mu=spec.theory_mu, queries=tuple(spec.theory_queries), seed=spec.seed,
                              repeats=spec.theory_repeats, reference_n=spec.theory_reference_n)
    gap = ls.smoothing_gap_check(probe, mus=tuple(spec.theory_mus), n=spec.theory_samples,
                                 trace_n=spec.theory_trace_queries, seed=spec.seed)
    for check, df in (("zo_gradient", zo), ("smoothing_gap", gap)):
        for r in df.to_dict("records"):
            r = {k: v for k, v in r.items() if k in keep}
            r.update(quantity=f"theory_{r['quantity']}", subject="original", data="forget", attack="none",
                     setting_check=check)
            if check == "zo_gradient":
                r["setting_mu"] = spec.theory_mu
            rows.append(r)
    blob = json.dumps(spec.settings(), sort_keys=True)
    secs = time.perf_counter() - t0
    for r in rows:
        r.setdefault("index", 0)
        r["setting_geometry"] = blob
        r["theory_seconds"] = secs
    return rows


def base_losses(spec, base, bench) -> Dict[str, float]:
    """L(θ₀) on each geometry batch (the certified radius's threshold ℓ* needs it)."""
    from optigrade import landscape as ls

    return {d: ls.Probe(base, [probe_batch(bench, d, spec.examples)], param_filter=spec.params).loss()
            for d in spec.data}
