"""Sharpness: how much the loss rises under weight perturbations of a stated size.

Every result's ``settings["rho_meaning"]`` says what ρ is: a *radius* (worst-case, SAM) or a
*per-coordinate standard deviation* (average-case, PAC-Bayes σ).  "Adaptive" variants scale
the perturbation elementwise by c = |θ| + η (Kwon et al. 2021, ASAM); :func:`average_sharpness`
also takes a given elementwise scale c (``scale=``, e.g. a quantization grid's half-step/√3).
"""

from __future__ import annotations

import numpy as np
import torch

from .probe import Probe
from .results import SharpnessResult


def _positive(name, x):
    if not (isinstance(x, (int, float, np.floating)) and np.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")


def _scale(probe: Probe, adaptive: bool, eta: float) -> torch.Tensor | None:
    if not adaptive:
        return None
    if not (eta >= 0 and np.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    return probe.flat_params().double().abs() + eta


def _given_scale(probe: Probe, scale) -> torch.Tensor:
    """``scale`` (a flat vector of ``probe.numel`` entries, torch or numpy, or a list of
    tensors shaped like ``probe.params``) as a flat float64 CPU tensor, checked finite, >= 0."""
    fix = (f"pass a flat tensor of probe.numel = {probe.numel} entries or a list of tensors "
           f"shaped like probe.params {[tuple(s) for s in probe.shapes][:4]}")
    if isinstance(scale, np.ndarray):
        scale = torch.from_numpy(np.ascontiguousarray(scale))
    if isinstance(scale, torch.Tensor):
        if scale.dim() != 1 or scale.numel() != probe.numel:
            raise ValueError(f"scale has shape {tuple(scale.shape)}; {fix}")
        c = scale.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(scale, (list, tuple)):
        parts = [torch.as_tensor(t) for t in scale]
        if len(parts) != len(probe.shapes) or any(t.shape != sh for t, sh in
                                                  zip(parts, probe.shapes)):
            raise ValueError(f"scale is a list of shapes {[tuple(t.shape) for t in parts][:4]} "
                             f"({len(parts)} tensors); {fix}")
        c = torch.cat([t.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
                       for t in parts]) if parts else torch.zeros(0, dtype=torch.float64)
    else:
        raise ValueError(f"scale must be a tensor or a list of tensors, got "
                         f"{type(scale).__name__}; {fix}")
    if not bool(torch.isfinite(c).all()):
        bad = int((~torch.isfinite(c)).nonzero()[0])
        raise ValueError(f"scale must be finite; entry {bad} (flat order) is {float(c[bad])}")
    if bool((c < 0).any()):
        bad = int((c < 0).nonzero()[0])
        raise ValueError(f"scale must be >= 0 (it is a per-coordinate std multiplier); entry "
                         f"{bad} (flat order) is {float(c[bad])}: pass |c|")
    return c


def _start(probe: Probe, adaptive: bool, eta: float):
    """(cost so far, elementwise scale c or None, L(θ)): what every sharpness measure reads
    before it perturbs anything."""
    start = probe.cost()
    c = _scale(probe, adaptive, eta)
    return start, c, probe.loss()


def _meaning(kind, norm, adaptive):
    if kind == "radius":
        ball = {"l2": "‖u‖₂ ≤ ρ", "linf": "max_i |u_i| ≤ ρ"}[norm]
        return (f"radius: δ = c⊙u with {ball}, c = |θ|+η" if adaptive else
                f"radius: {ball.replace('u', 'δ')}")
    return ("per-coordinate std: δ_i ~ N(0, (ρ·(|θ_i|+η))²)" if adaptive else
            "per-coordinate std: δ ~ N(0, ρ² I)")


def worst_case_sharpness(probe: Probe, rho: float, *, norm: str = "l2", steps: int = 20,
                         step_size: float | None = None, adaptive: bool = False,
                         eta: float = 0.0, seed: int = 0) -> SharpnessResult:
    """max_{‖u‖≤ρ} L(θ + c⊙u) − L(θ) by projected gradient ascent (a lower bound).

    Start u₀ random with ‖u₀‖ = ρ/2 (ℓ2) or uniform in [−ρ/2, ρ/2] (ℓ∞) so a zero gradient at a
    minimum does not stall; then, with g_u = c⊙∇L(θ + c⊙u),
        ℓ2:  u ← Π_ρ(u + step_size·ρ·g_u/‖g_u‖)   (default step_size 1)
        ℓ∞:  u ← clip(u + step_size·ρ·sign(g_u), −ρ, ρ)  (default step_size 0.25).
    Returns the largest loss rise seen.  On a quadratic at a minimum the ℓ2 value tends to
    ρ²λ_max/2.  Cost: ``steps`` gradients + 1 loss.

    At a least-squares minimum L(θ+δ) − L(θ) = ½δᵀHδ exactly (H = AᵀA), so the ℓ2 value
    approaches ρ²λ_max/2 from below:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares(at_minimum=True)
    >>> r = worst_case_sharpness(probe, rho=0.1, steps=30)
    >>> bool(np.isclose(r.value, 0.5 * 0.1**2 * np.linalg.eigvalsh(H).max(), rtol=1e-3))
    True
    """
    _positive("rho", rho)
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    step = step_size if step_size is not None else (1.0 if norm == "l2" else 0.25)
    _positive("step_size", step)
    start, c, l0 = _start(probe, adaptive, eta)
    gen = torch.Generator().manual_seed(seed)
    if norm == "l2":
        u = torch.randn(probe.numel, generator=gen, dtype=torch.float64)
        u *= 0.5 * rho / u.norm()
    else:
        u = (torch.rand(probe.numel, generator=gen, dtype=torch.float64) - 0.5) * rho
    hist = []
    for _ in range(steps):
        delta = u if c is None else c * u
        with probe.perturbed(delta):
            g, l = probe.grad(return_loss=True)
        hist.append(l - l0)
        gu = g.double().cpu() if c is None else c * g.double().cpu()
        if norm == "l2":
            gn = gu.norm()
            if gn == 0:
                break
            u = u + step * rho * gu / gn
            u = u * min(1.0, rho / float(u.norm()))
        else:
            u = (u + step * rho * torch.sign(gu)).clamp(-rho, rho)
    with probe.perturbed(u if c is None else c * u):
        hist.append(probe.loss() - l0)
    hist = np.array(hist)
    settings = dict(rho=rho, rho_meaning=_meaning("radius", norm, adaptive), norm=norm,
                    steps=steps, step_size=step, adaptive=adaptive, eta=eta, seed=seed)
    return SharpnessResult("worst_case_sharpness", float(hist.max()), float("nan"), l0,
                           settings, probe.cost() - start, hist)


def average_sharpness(probe: Probe, rho: float, *, n: int = 32, adaptive: bool = False,
                      eta: float = 0.0, antithetic: bool = True, seed: int = 0,
                      scale=None) -> SharpnessResult:
    """E_δ[L(θ+δ)] − L(θ), δ = ρ·c⊙z, z ~ N(0, I), by Monte Carlo with standard error.

    c is 1 (default), |θ| + η (``adaptive``), or given (``scale``: a flat tensor of
    ``probe.numel`` entries, or a list of tensors shaped like ``probe.params``; finite, >= 0),
    so δ_i ~ N(0, (ρ·c_i)²).  A given scale is for noise at a known per-weight size, e.g. the
    quantization-noise scale c_i = half-step_i/√3 (the std of a uniform rounding error) with
    ρ = 1 (or ¼, ½); ``settings["scale_rms"]`` records √(mean c_i²).

    With ``antithetic`` each draw uses (L(θ+δ) + L(θ−δ))/2 (first-order term cancels; still
    unbiased).  On a quadratic the expectation is (ρ²/2)·Σ_i c_i² H_ii = (ρ²/2)·tr H for c = 1,
    the smoothed-loss gap of SPEC §3.1.  Cost: n (or 2n) losses + 1.

    On a quadratic the antithetic rise is exactly ½δᵀHδ, so E = (ρ²/2)·tr H:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> r = average_sharpness(probe, rho=0.01, n=200)
    >>> bool(abs(r.value - 0.5 * 0.01**2 * np.trace(H)) <= 3 * r.std_error), r.cost.loss
    (True, 401)

    and with a given per-coordinate scale c, E = (ρ²/2)·Σ_i c_i² H_ii:

    >>> c = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    >>> r = average_sharpness(probe, rho=0.01, n=200, scale=c)
    >>> expect = 0.5 * 0.01**2 * float(np.sum(c.numpy()**2 * np.diag(H)))
    >>> bool(abs(r.value - expect) <= 3 * r.std_error), r.settings["rho_meaning"]
    (True, 'per-coordinate std: δ_i ~ N(0, (ρ·c_i)²), c given')
    >>> bool(np.isclose(r.settings["scale_rms"], np.sqrt(np.mean(c.numpy() ** 2))))
    True
    """
    _positive("rho", rho)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (for a standard error), got {n!r}")
    if scale is not None and adaptive:
        raise ValueError("scale= and adaptive=True both set the per-coordinate noise scale c "
                         "(given c, or c = |θ|+η); pass one of them (to use |θ|+η as the given "
                         "scale, pass scale=probe.flat_params().abs() + eta)")
    given = None if scale is None else _given_scale(probe, scale)
    start, c, l0 = _start(probe, adaptive, eta)
    if given is not None:
        c = given
    vals = _noise_rises(probe, rho, n, c, antithetic, seed, l0)
    meaning = ("per-coordinate std: δ_i ~ N(0, (ρ·c_i)²), c given" if given is not None else
               _meaning("std", None, adaptive))
    settings = dict(rho=rho, rho_meaning=meaning, n=n,
                    antithetic=antithetic, adaptive=adaptive, eta=eta, seed=seed)
    if given is not None:
        settings["scale_rms"] = float(given.square().mean().sqrt()) if given.numel() else 0.0
    return SharpnessResult("average_sharpness", float(vals.mean()),
                           float(vals.std(ddof=1) / np.sqrt(n)), l0, settings,
                           probe.cost() - start, vals)


def _noise_rises(probe, rho, n, c, antithetic, seed, l0):
    gen = torch.Generator().manual_seed(seed)
    vals = np.empty(n)
    for i in range(n):
        z = torch.randn(probe.numel, generator=gen, dtype=torch.float64)
        d = rho * (z if c is None else c * z)
        with probe.perturbed(d):
            lp = probe.loss()
        if antithetic:
            with probe.perturbed(d, -1.0):
                lp = 0.5 * (lp + probe.loss())
        vals[i] = lp - l0
    return vals


def sam_sharpness(probe: Probe, rho: float, *, adaptive: bool = False,
                  eta: float = 0.0) -> SharpnessResult:
    """One SAM step: L(θ + ε) − L(θ), ε = ρ g/‖g‖ (g = ∇L(θ)); ASAM: ε = ρ c²⊙g/‖c⊙g‖.

    ρ is the radius of the step (‖ε‖₂ = ρ, or ‖ε ⊘ c‖₂ = ρ adaptive).  Cost: 1 gradient + 1 loss.

    On a quadratic, L(θ + ε) − L(θ) = ρ‖g‖ + ½ρ² ĝᵀHĝ with ĝ = g/‖g‖ exactly:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> g = probe.grad().numpy(); u = g / np.linalg.norm(g)
    >>> r = sam_sharpness(probe, rho=0.1)
    >>> bool(np.isclose(r.value, 0.1 * np.linalg.norm(g) + 0.5 * 0.1**2 * u @ H @ u, rtol=1e-9))
    True
    """
    _positive("rho", rho)
    start = probe.cost()
    c = _scale(probe, adaptive, eta)
    g, l0 = probe.grad(return_loss=True)
    g = g.double().cpu()
    if c is None:
        eps = rho * g / g.norm() if g.norm() > 0 else torch.zeros_like(g)
    else:
        eps = rho * c * c * g / (c * g).norm() if (c * g).norm() > 0 else torch.zeros_like(g)
    with probe.perturbed(eps):
        l1 = probe.loss()
    settings = dict(rho=rho, rho_meaning=_meaning("radius", "l2", adaptive) + " (one step)",
                    adaptive=adaptive, eta=eta, grad_norm=float(g.norm()))
    return SharpnessResult("sam_sharpness", l1 - l0, float("nan"), l0, settings,
                           probe.cost() - start)


def pac_bayes_flatness(probe: Probe, target: float = 0.1, *, n: int = 16,
                       sigma_range: tuple = (1e-6, 1.0), iters: int = 20,
                       adaptive: bool = False, eta: float = 0.0, seed: int = 0) -> SharpnessResult:
    """σ* such that E_z[L(θ + σ*·c⊙z)] − L(θ) = ``target`` (Jiang et al. 2020's PAC-Bayes
    flatness; larger σ* = flatter; 1/σ*² enters the bound), by bisection on log σ.

    The same n antithetic noise draws are reused at every σ (common random numbers), so the
    estimated rise is a smooth function of σ.  ``value`` is σ*, a per-coordinate std; the
    rise at σ* is in ``history`` (the bisection path: columns σ, rise).

    On a quadratic the rise is exactly σ²·K with K = the rise at σ = 1 (``history[0]``,
    common random numbers), so σ* = √(target/K):

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> r = pac_bayes_flatness(probe, target=0.05, n=8, iters=30)
    >>> bool(np.isclose(r.value, np.sqrt(0.05 / r.history[0, 1]), rtol=1e-6))
    True
    """
    _positive("target", target)
    lo, hi = sigma_range
    _positive("sigma_range[0]", lo)
    _positive("sigma_range[1]", hi)
    if hi <= lo:
        raise ValueError(f"sigma_range must be (low, high) with low < high, got {sigma_range}")
    start, c, l0 = _start(probe, adaptive, eta)
    rise = lambda s: float(_noise_rises(probe, s, n, c, True, seed, l0).mean())
    path = []
    r_hi = rise(hi)
    path.append((hi, r_hi))
    if r_hi < target:
        sigma = hi  # never reached the target inside the range: report the bound honestly
    else:
        for _ in range(iters):
            mid = float(np.sqrt(lo * hi))
            r = rise(mid)
            path.append((mid, r))
            lo, hi = (mid, hi) if r < target else (lo, mid)
        sigma = float(np.sqrt(lo * hi))
    settings = dict(target=target, n=n, sigma_range=str(sigma_range), iters=iters,
                    adaptive=adaptive, eta=eta, seed=seed, reached=bool(r_hi >= target),
                    rho_meaning=_meaning("std", None, adaptive).replace("ρ", "σ"))
    return SharpnessResult("pac_bayes_sigma", sigma, float("nan"), l0, settings,
                           probe.cost() - start, np.array(path))
