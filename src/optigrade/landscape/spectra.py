"""Hessian spectra from Hessian-vector products: Lanczos eigenpairs, trace, density, blocks.

All routines take a :class:`~landscape.probe.Probe` and count their HVPs through it.
Randomness comes from ``torch.Generator(seed)``; the global RNG is never touched.

The examples use a least-squares Probe whose Hessian H = AᵀA is known exactly
(:func:`optigrade.landscape._examples.least_squares`: 4 parameters, H the same at every θ).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.linalg import eigh_tridiagonal

from .._select import PRESETS, layer_pattern
from .probe import Cost, Probe
from .results import BlockSpectra, Density, EigenResult, TraceResult

WHICH = ("LA", "SA", "LM")
MEMORY = ("full", "low")


def _matvec(probe: Probe):
    def mv(q: torch.Tensor) -> torch.Tensor:
        return probe.hvp(q).detach().to("cpu", torch.float64)
    return mv


def lanczos(matvec, v0: torch.Tensor, m: int, callback=None, breakdown: float = 1e-12):
    """m steps of Lanczos with full reorthogonalization (twice, classical Gram–Schmidt).

    Builds an orthonormal basis Q (float64, CPU, rows q_1..q_j) of the Krylov space and the
    tridiagonal T = QᵀHQ with diagonal ``alpha`` and off-diagonal ``beta``:
        w = H q_j − β_{j−1} q_{j−1};  α_j = q_jᵀw;  w ← w − α_j q_j − Q(Qᵀw);  β_j = ‖w‖.
    Stops early at an invariant subspace (β_j ≤ breakdown·max|α|) or when ``callback(alpha,
    beta, j)`` returns True.  Returns ``(alpha, beta, Q)``; ``beta[-1]`` is the last β_m.

    On a diagonal matrix, n steps recover its eigenvalues (Ritz values of T):

    >>> A = torch.diag(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
    >>> alpha, beta, Q = lanczos(lambda q: A @ q, torch.ones(3, dtype=torch.float64), m=3)
    >>> np.round(eigh_tridiagonal(alpha, beta[:-1])[0], 10).tolist()
    [1.0, 2.0, 5.0]
    >>> np.allclose(Q @ Q.T, np.eye(3))
    True
    """
    n = v0.numel()
    m = min(m, n)
    Q = torch.zeros(m, n, dtype=torch.float64)
    q = v0.to(torch.float64) / v0.to(torch.float64).norm()
    alpha, beta = [], []
    for j in range(m):
        Q[j] = q
        w = matvec(q)
        a = float(q @ w)
        w = w - a * q
        if j > 0:
            w = w - beta[-1] * Q[j - 1]
        for _ in range(2):
            w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        b = float(w.norm())
        alpha.append(a)
        beta.append(b)
        scale = max(abs(x) for x in alpha) or 1.0
        if b <= breakdown * scale or (callback is not None and callback(alpha, beta, j)):
            return np.array(alpha), np.array(beta), Q[:j + 1]
        q = w / b
    return np.array(alpha), np.array(beta), Q


def _ritz(alpha, beta):
    if len(alpha) == 1:
        return np.array(alpha, dtype=float), np.ones((1, 1))
    return eigh_tridiagonal(np.asarray(alpha), np.asarray(beta[:-1]))


def _order(theta, which):
    if which == "LA":
        return np.argsort(-theta)
    if which == "SA":
        return np.argsort(theta)
    return np.argsort(-np.abs(theta))


def low_memory_window(k: int, max_iter: int) -> int:
    """Basis vectors the low-memory solver holds at once: W = min(max_iter, k + max(k, 8)).

    W − 1 − keep new Lanczos directions are added per restart cycle (keep: below)."""
    return int(min(max_iter, k + max(k, 8)))


def _keep(k: int, window: int) -> int:
    """Ritz vectors kept at a restart: the k wanted plus half of the rest of the window, so
    each cycle adds ≥ (W − k)/2 − 1 new directions (Wu & Simon 2000 keep about half)."""
    return min(window - 1, k + (window - k) // 2)


def eigen_memory_bytes(n_params: int, k: int, max_iter: int, memory: str = "full",
                       dtype_bytes: int = 8) -> int:
    """Peak bytes :func:`top_eigenvalues` itself holds (basis, Ritz vectors, working vectors;
    not the model, its activations or the HVP's own temporaries), n = ``n_params``:

        full:  (min(max_iter, n) + max(k, 4)) · n · dtype_bytes
               the whole basis Q (m × n) plus q_j, w and two temporaries of the
               Gram–Schmidt update, or the k returned eigenvectors at the end;
        low:   (W + k + 4) · n · dtype_bytes,  W = min(max_iter, n, k + max(k, 8))
               the window V (W × n), the k returned eigenvectors and four working vectors (w, the
               HVP's float64 result, the reorthogonalization's temporary, a restart's chunk buffer;
               restarts rotate V in place in column chunks).

    The solver works in float64 (``dtype_bytes=8``).  SmolLM2-135M's 134.5M parameters with
    k = 3, max_iter = 300: full 327 GB, low 19 GB (W + k + 4 = 18 vectors of 1.08 GB).

    >>> eigen_memory_bytes(1000, k=2, max_iter=30), eigen_memory_bytes(1000, 2, 30, "low")
    (272000, 128000)

    Raises:
        ValueError: a non-positive size or an unknown ``memory``.
    """
    for name, v in (("n_params", n_params), ("k", k), ("max_iter", max_iter),
                    ("dtype_bytes", dtype_bytes)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if memory not in MEMORY:
        raise ValueError(f"memory must be one of {MEMORY}, got {memory!r}")
    if memory == "full":
        return int((min(max_iter, n_params) + max(k, 4)) * n_params * dtype_bytes)
    window = min(low_memory_window(k, max_iter), n_params)
    return int((window + k + 4) * n_params * dtype_bytes)


def _estimated_error(theta, res, idx):
    """Per wanted Ritz value, min(r_i, r_i²/gap_i), gap_i = distance to the nearest other
    Ritz value: the Kato–Temple bound with the (unknown) spectral gap estimated from T."""
    out = np.empty(len(idx))
    for a, i in enumerate(idx):
        others = np.delete(theta, i)
        gap = np.abs(others - theta[i]).min() if len(others) else np.inf
        out[a] = min(res[a], res[a] ** 2 / gap) if gap > 0 else res[a]
    return out


class _Stop:
    """The stopping rule shared by both memory modes; call with the Ritz values θ, the last
    row of T's eigenvectors and β_j, returns (wanted indices, residuals, converged flags)."""

    def __init__(self, k, which, tol, rtol):
        self.k, self.which, self.tol, self.rtol, self.prev = k, which, tol, rtol, None

    def __call__(self, theta, s_last, b):
        idx = _order(theta, self.which)[:self.k]
        res = np.abs(b * s_last[idx])
        if self.rtol is None:
            return idx, res, res <= self.tol * _scale(theta)
        cur, prev = theta[idx], self.prev
        self.prev = cur
        fresh = prev is None or len(prev) != len(cur)
        change = np.full(len(cur), np.inf) if fresh else np.abs(cur - prev)
        bound = self.rtol * np.abs(cur)
        self.last = (len(theta), (_estimated_error(theta, res, idx) <= bound) & (change <= bound))
        return idx, res, self.last[1]

    def final(self, theta, s_last, b):
        """Converged flags at the last step, reusing the evaluation made there (if any)."""
        last = getattr(self, "last", None)
        return last[1] if last is not None and last[0] == len(theta) else self(theta, s_last, b)[2]


def _thick_restart(matvec, v0: torch.Tensor, stop: _Stop, *, window: int, max_iter: int,
                   vectors: bool, breakdown: float = 1e-12, chunk: int = 1 << 16):
    """Thick-restart Lanczos (Wu & Simon 2000) holding at most ``window`` basis vectors.

    Keeps the Krylov–Schur decomposition H V_j = V_j T_j + w e_jᵀ (V_j: rows v_1..v_j,
    orthonormal; w ⟂ V_j): each step w = H v_j is orthogonalized twice against all held rows,
    the projections fill column j of T (so T is exact Vᵀ H V, arrow-shaped after a restart),
    β_j = ‖w‖.  When the window is full, the ``keep`` best Ritz vectors Y = V S_keep replace V
    (in place, in column chunks), T becomes diag(θ_keep) and v_{keep+1} = w/β; the couplings
    β s_{j,i} reappear as the projections of the next H v_{keep+1}.  Ritz residuals stay
    ‖H y_i − θ_i y_i‖ = β_j |s_{j,i}| exactly (up to rounding), as in unrestarted Lanczos.
    Returns (θ_wanted, Ritz vectors or None, residuals, converged, steps, restarts).
    """
    n = v0.numel()
    W = max(2, min(window, n))
    V = torch.empty(W, n, dtype=torch.float64)  # (W, n): the only basis storage
    T = np.zeros((W, W))
    torch.div(v0.to(torch.float64), float(v0.to(torch.float64).norm()), out=V[0])
    j = steps = restarts = 0
    while True:
        w = matvec(V[j])  # (n,) float64, owned by the solver from here
        steps += 1
        h = V[:j + 1] @ w
        w.addmv_(V[:j + 1].T, h, alpha=-1.0)
        h2 = V[:j + 1] @ w
        w.addmv_(V[:j + 1].T, h2, alpha=-1.0)
        h += h2
        T[:j + 1, j] = T[j, :j + 1] = h.numpy()
        b = float(w.norm())
        theta, S = np.linalg.eigh(T[:j + 1, :j + 1])
        idx, res, conv = stop(theta, S[j], b)
        dead = b <= breakdown * _scale(theta) or j + 1 >= n
        if conv.all() or steps >= max_iter or dead:
            if len(idx) < stop.k:
                raise RuntimeError(f"Lanczos stopped at an invariant subspace of dimension "
                                   f"{len(theta)} < k={stop.k}; try another seed")
            del w
            vecs = (torch.from_numpy(S[:, idx]).T @ V[:j + 1]).numpy() if vectors else None
            return theta[idx], vecs, res, conv, steps, restarts
        if j + 1 < W:
            torch.div(w, b, out=V[j + 1])
            j += 1
            continue
        keep = _keep(stop.k, W)  # the window is full: restart with the best Ritz vectors
        best = _order(theta, stop.which)[:keep]
        Sk = torch.from_numpy(np.ascontiguousarray(S[:, best].T))  # (keep, W)
        for c in range(0, n, chunk):
            V[:keep, c:c + chunk] = Sk @ V[:, c:c + chunk]
        torch.div(w, b, out=V[keep])
        T[:] = 0.0
        T[np.arange(keep), np.arange(keep)] = theta[best]
        j, restarts = keep, restarts + 1


def top_eigenvalues(probe: Probe, k: int = 1, which: str = "LA", *, tol: float = 1e-6,
                    max_iter: int = 300, seed: int = 0, return_vectors: bool = True,
                    method: str = "lanczos", backend: str = "native",
                    pyhessian_max_iter: int = 100, pyhessian_tol: float = 1e-3,
                    memory: str = "full", rtol: float | None = None) -> EigenResult:
    """k extreme eigenvalues of H = ∇²L(θ) by Lanczos with full reorthogonalization.

    ``which``: "LA" largest algebraic, "SA" smallest algebraic, "LM" largest magnitude.
    Lanczos runs until every wanted Ritz pair has |β_m s_{m,i}| ≤ tol·max_j|θ_j| (the residual
    ‖Hy − θy‖ relative to the spectral scale; eigenvalue error ≤ residual, typically
    residual²/gap) or ``max_iter`` steps.  A single start vector finds one copy of a repeated
    eigenvalue in exact arithmetic; rounding usually exposes the others.
    ``method="eigsh"`` uses scipy's implicitly restarted Lanczos on the LinearOperator.
    ``backend="pyhessian"`` runs pyhessian 0.1 power iteration with deflation on the same
    Probe data: it finds the largest-*magnitude* eigenvalues ("LM" only), stops at relative
    change < ``pyhessian_tol`` and reports no residual (residuals here are computed after).

    ``memory`` (Lanczos only): ``"full"`` keeps the whole float64 basis Q (max_iter × n;
    134M parameters × 100 steps ≈ 108 GB).  ``"low"`` runs thick-restart Lanczos (Wu & Simon
    2000; equivalent to ARPACK's implicit restart with exact shifts) in a window of
    W = min(max_iter, k + max(k, 8)) vectors: when the window is full, the k + ⌊(W−k)/2⌋ best
    Ritz vectors are kept, the rest is discarded, and Lanczos continues from the residual.
    Memory: :func:`eigen_memory_bytes` ((W + k + 4)·n·8 bytes).  Error behaviour: the same
    residual ‖Hy − θy‖ = |β_j s_{j,i}| and the same stopping rule, so the same accuracy at
    convergence; up to W steps it *is* full Lanczos (same Ritz values up to rounding); after a
    restart the discarded directions slow convergence (more HVPs than "full" for the same
    tol, see ``settings["restarts"]``).  No ghost eigenvalues: every new direction is
    orthogonalized (twice) against the whole window, and H y_i = θ_i y_i + b_i v holds (up to
    rounding) for the kept Ritz vectors, so the discarded directions need no reorthogonalization.
    Measured solver memory (RSS peak minus one HVP's) matches the formula within 20%
    (tests/landscape/test_lowmem.py).
    ``rtol``: stop instead when every wanted Ritz value's estimated relative error is ≤ rtol:
    min(r_i, r_i²/gap_i) ≤ rtol·|θ_i| (Kato–Temple, gap_i = distance to the nearest other
    Ritz value, an estimate of the true gap, so a heuristic rather than a guarantee) *and* θ_i
    changed by ≤ rtol·|θ_i| in the last step; for comparisons at a given eigenvalue accuracy
    (the residual rule is stricter).  ``converged`` then reports this rule.

    Raises:
        ValueError: k ≤ 0 or k > number of parameters; unknown ``which``/``method``/``memory``;
            ``memory="low"`` or ``rtol`` with a method other than "lanczos"; rtol ≤ 0.

    Checked against the dense Hessian's ``eigvalsh``:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> lam = np.linalg.eigvalsh(H)
    >>> r = top_eigenvalues(probe, k=2)
    >>> np.allclose(r.eigenvalues, lam[::-1][:2], rtol=1e-5), bool(r.converged.all())
    (True, True)
    >>> np.allclose(top_eigenvalues(probe, 1, "SA", method="eigsh").eigenvalues, lam[0], rtol=1e-5)
    True
    >>> np.allclose(top_eigenvalues(probe, 2, memory="low").eigenvalues, lam[::-1][:2], rtol=1e-5)
    True
    """
    if not isinstance(k, (int, np.integer)) or k <= 0 or k > probe.numel:
        raise ValueError(f"k must be an integer in [1, {probe.numel}] (the parameter count), got {k!r}")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if method not in ("lanczos", "eigsh"):
        raise ValueError(f"method must be 'lanczos' or 'eigsh', got {method!r}")
    if backend not in ("native", "pyhessian"):
        raise ValueError(f"backend must be 'native' or 'pyhessian', got {backend!r}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    if not (pyhessian_tol > 0 and math.isfinite(pyhessian_tol)):
        raise ValueError(f"pyhessian_tol must be a finite number > 0, got {pyhessian_tol}")
    for name, v in (("max_iter", max_iter), ("pyhessian_max_iter", pyhessian_max_iter)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}; the Lanczos / power-iteration step "
                             "cap, e.g. 300")
    if memory not in MEMORY:
        raise ValueError(f"memory must be one of {MEMORY}, got {memory!r}")
    if rtol is not None and not (rtol > 0 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be None or a finite number > 0, got {rtol}")
    if (memory == "low" or rtol is not None) and (method != "lanczos" or backend != "native"):
        raise ValueError(f'memory="low" and rtol apply to method="lanczos", backend="native" only, '
                         f'got method={method!r}, backend={backend!r}; drop them or use the Lanczos solver')
    if backend == "pyhessian" and which != "LM":
        raise ValueError('backend="pyhessian" (power iteration) finds the largest-magnitude '
                         'eigenvalues: use which="LM"')
    settings = dict(k=k, which=which, tol=tol, max_iter=max_iter, seed=seed, method=method,
                    backend=backend, n_params=probe.numel)
    if memory != "full" or rtol is not None:  # recorded only when used: old settings unchanged
        settings.update(memory=memory, rtol=rtol)
    if backend == "pyhessian":
        solve, opts = _eig_pyhessian, dict(max_iter=pyhessian_max_iter, tol=pyhessian_tol)
    else:
        solve, opts = _EIGEN[method], dict(tol=tol, max_iter=max_iter, vectors=return_vectors)
        if method == "lanczos":
            opts.update(memory=memory, rtol=rtol)
    vals, vecs, res, conv, cost, extra = solve(probe, k, which, seed=seed, **opts)
    settings.update(extra)
    return EigenResult(vals, vecs if return_vectors else None, res, conv, settings, cost)


def _start_vector(probe: Probe, seed: int) -> torch.Tensor:
    return torch.randn(probe.numel, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _residuals(probe: Probe, vals, vecs) -> np.ndarray:
    """‖H y − λ y‖ per pair (one HVP each, after the solver's cost was read)."""
    return np.array([float((probe.hvp(torch.from_numpy(y)).cpu().double()
                            - lam * torch.from_numpy(y)).norm()) for lam, y in zip(vals, vecs)])


def _scale(theta) -> float:
    return max(np.abs(theta).max(), 1e-300)


def _eig_lanczos(probe, k, which, *, seed, tol, max_iter, vectors, memory="full", rtol=None):
    """Lanczos until every wanted Ritz residual ≤ tol·scale (or the ``rtol`` rule), with the
    whole basis (``memory="full"``) or thick restarts in a small window (``"low"``)."""
    start = probe.cost()
    stop = _Stop(k, which, tol, rtol)
    if memory == "low":
        window = min(low_memory_window(k, max_iter), probe.numel)
        vals, vecs, res, conv, steps, restarts = _thick_restart(
            _matvec(probe), _start_vector(probe, seed), stop, window=window,
            max_iter=max_iter, vectors=vectors)
        return (vals, vecs, res, conv, probe.cost() - start,
                dict(lanczos_steps=steps, window=window, restarts=restarts))

    def done(alpha, beta, j):
        if j + 1 < k:
            return False
        theta, s = _ritz(alpha, beta)
        return bool(stop(theta, s[-1], beta[-1])[2].all())

    alpha, beta, Q = lanczos(_matvec(probe), _start_vector(probe, seed), max_iter, callback=done)
    theta, s = _ritz(alpha, beta)
    idx = _order(theta, which)[:k]
    if len(idx) < k:
        raise RuntimeError(f"Lanczos stopped at an invariant subspace of dimension {len(theta)} "
                           f"< k={k}; try another seed")
    res = np.abs(beta[-1] * s[-1, idx])
    conv = res <= tol * _scale(theta) if rtol is None else stop.final(theta, s[-1], beta[-1])
    vecs = (torch.from_numpy(s[:, idx]).T @ Q).numpy() if vectors else None
    return (theta[idx], vecs, res, conv, probe.cost() - start,
            dict(lanczos_steps=len(alpha)))


def _eig_eigsh(probe, k, which, *, seed, tol, max_iter, vectors):
    """scipy's implicitly restarted Lanczos (ARPACK) on the Probe's LinearOperator."""
    from scipy.sparse.linalg import eigsh
    start = probe.cost()
    vals, vecs = eigsh(probe.as_linear_operator(), k=k, which=which, tol=tol,
                       v0=_start_vector(probe, seed).numpy(), maxiter=max_iter * probe.numel)
    order = _order(vals, which)
    vals, vecs = vals[order], vecs[:, order].T
    cost = probe.cost() - start
    res = _residuals(probe, vals, vecs)
    return vals, vecs, res, res <= tol * _scale(vals), cost, {}


def _eig_pyhessian(probe, k, which, *, seed, tol, max_iter):
    """pyhessian 0.1 power iteration with deflation (largest magnitude; no convergence flag)."""
    from ._pyhessian import pyhessian_eigen
    start = probe.cost()
    vals, vecs = pyhessian_eigen(probe, k, max_iter, tol, seed)
    cost = probe.cost() - start
    return (vals, vecs, _residuals(probe, vals, vecs), np.zeros(k, dtype=bool), cost,
            dict(pyhessian_max_iter=max_iter, pyhessian_tol=tol))


_EIGEN = {"lanczos": _eig_lanczos, "eigsh": _eig_eigsh}


def _check_n(n, name="n"):
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def hutchinson_trace(probe: Probe, n: int = 100, *, seed: int = 0, backend: str = "native",
                     pyhessian_tol: float = 1e-3) -> TraceResult:
    """Hutchinson: tr H ≈ (1/n) Σ_i z_iᵀ H z_i, z_i Rademacher; std error = sd(z_iᵀHz_i)/√n.

    Var(zᵀHz) = 2(‖H‖_F² − Σ_i H_ii²).  ``backend="pyhessian"`` runs pyhessian's ``trace``
    (up to ``n`` probes, stopping early when the running mean changes by < ``pyhessian_tol``
    relative: often after 2 probes) on the same data.

    Within a few standard errors of the exact trace:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> t = hutchinson_trace(probe, n=300)
    >>> bool(abs(t.estimate - np.trace(H)) <= 3 * t.std_error), t.cost.hvp
    (True, 300)
    """
    _check_n(n)
    if not (pyhessian_tol > 0 and math.isfinite(pyhessian_tol)):
        raise ValueError(f"pyhessian_tol must be a finite number > 0, got {pyhessian_tol}")
    start = probe.cost()
    settings = dict(n=n, seed=seed, distribution="rademacher", backend=backend)
    if backend == "pyhessian":
        from ._pyhessian import pyhessian_trace
        samples = np.asarray(pyhessian_trace(probe, n, pyhessian_tol, seed), dtype=float)
        settings["pyhessian_tol"] = pyhessian_tol
    elif backend == "native":
        gen = torch.Generator().manual_seed(seed)
        samples = np.empty(n)
        for i in range(n):
            z = probe.random_vector(gen, "rademacher")
            samples[i] = float(z.double() @ probe.hvp(z).double())
    else:
        raise ValueError(f"backend must be 'native' or 'pyhessian', got {backend!r}")
    se = float(samples.std(ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    settings["n_used"] = len(samples)
    return TraceResult(float(samples.mean()), se, samples, settings, probe.cost() - start)


def hutchpp_trace(probe: Probe, n: int = 99, *, seed: int = 0) -> TraceResult:
    """Hutch++ (Meyer et al. 2021) with n HVPs, n % 3 == 0, m = n/3:

        S (m Rademacher columns), Q = qr(H S);  tr H ≈ tr(QᵀHQ) + (1/m) Σ g_iᵀ P H P g_i,
        P = I − QQᵀ, g_i Rademacher.  std error = sd(g_iᵀPHPg_i)/√m (the first term is exact).

    With m = n/3 ≥ the parameter count the sketch spans the space: the estimate is exact.

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> bool(np.isclose(hutchpp_trace(probe, 12).estimate, np.trace(H), rtol=1e-10))
    True
    """
    _check_n(n)
    if n % 3 != 0:
        raise ValueError(f"Hutch++ needs n % 3 == 0 (n/3 sketch, n/3 exact, n/3 residual HVPs), got {n}")
    m = n // 3
    start = probe.cost()
    gen = torch.Generator().manual_seed(seed)
    hv = lambda x: probe.hvp(x).detach().cpu().double()
    S = [probe.random_vector(gen, "rademacher").cpu().double() for _ in range(m)]
    Y = torch.stack([hv(s) for s in S], dim=1)
    Qm, _ = torch.linalg.qr(Y)
    exact = sum(float(Qm[:, i] @ hv(Qm[:, i])) for i in range(Qm.shape[1]))
    samples = np.empty(m)
    for i in range(m):
        g = probe.random_vector(gen, "rademacher").cpu().double()
        g = g - Qm @ (Qm.T @ g)
        samples[i] = float(g @ hv(g))
    se = float(samples.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
    return TraceResult(exact + float(samples.mean()), se, exact + samples,
                       dict(n=n, seed=seed, method="hutch++", distribution="rademacher"),
                       probe.cost() - start)


def spectral_density(probe: Probe, m: int = 80, n_v: int = 4, *, width: float | None = None,
                     grid_points: int = 2000, seed: int = 0) -> Density:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019).

    Each of ``n_v`` runs: m Lanczos steps from a random unit Gaussian vector v; nodes θ_j =
    eigenvalues of T, weights w_j = (first component of T's eigenvector)²; then
    ∫ f dμ ≈ Σ_j w_j f(θ_j) with μ the spectral measure seen from v, E_v[μ] = (1/n) Σ δ_λi.
    ``width`` (std of the broadening Gaussian) defaults to √(1e-5·max(1, λmax − λmin)),
    PyHessian's default *variance* expressed as a std.

    With m ≥ the parameter count the nodes are H's eigenvalues:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> d = spectral_density(probe, m=4, n_v=30)
    >>> np.allclose(np.sort(d.nodes, axis=1), np.linalg.eigvalsh(H)), bool(abs(d.trace_estimate - np.trace(H)) <= 3 * d.trace_std_error)
    (True, True)
    """
    _check_n(m, "m")
    _check_n(n_v, "n_v")
    if width is not None and not (width > 0 and np.isfinite(width)):
        raise ValueError(f"width (a standard deviation) must be a finite number > 0, got {width}")
    start = probe.cost()
    gen = torch.Generator().manual_seed(seed)
    steps = min(m, probe.numel)
    nodes = np.zeros((n_v, steps))
    weights = np.zeros((n_v, steps))
    for r in range(n_v):
        v0 = torch.randn(probe.numel, generator=gen, dtype=torch.float64)
        alpha, beta, _ = lanczos(_matvec(probe), v0, steps)
        theta, s = _ritz(alpha, beta)
        nodes[r, :len(theta)] = theta
        weights[r, :len(theta)] = s[0] ** 2  # zero-weight padding if Lanczos broke down early
    lo, hi = nodes.min(), nodes.max()
    w = width if width is not None else float(np.sqrt(1e-5 * max(1.0, hi - lo)))
    grid = np.linspace(lo - 6 * w, hi + 6 * w, grid_points)
    dens = np.zeros_like(grid)
    for r in range(n_v):
        diff = grid[:, None] - nodes[r][None, :]
        dens += (weights[r][None, :] * np.exp(-0.5 * (diff / w) ** 2)).sum(1)
    dens /= n_v * w * np.sqrt(2 * np.pi)
    return Density(grid, dens, nodes, weights, w, probe.numel,
                   dict(m=steps, n_v=n_v, seed=seed, width_meaning="std"), probe.cost() - start)


def default_blocks(probe: Probe) -> dict:
    """Per transformer layer, plus attention / MLP / embeddings / norms when they match."""
    blocks = {}
    for name in ("attention", "mlp", "embeddings", "norms"):
        try:
            probe.subset(PRESETS[name])
            blocks[name] = name
        except ValueError:
            pass
    i = 0
    while True:
        try:
            probe.subset(layer_pattern(i))
        except ValueError:
            break
        blocks[f"layer_{i}"] = layer_pattern(i)
        i += 1
    return blocks or {"all": ".*"}


def block_spectra(probe: Probe, blocks: dict | Sequence | None = None, *, k: int = 1,
                  which: str = "LA", n_trace: int = 30, tol: float = 1e-4,
                  seed: int = 0) -> BlockSpectra:
    """Top-k eigenvalues (Lanczos) and Hutchinson trace of each diagonal block H_bb.

    ``blocks``: {name: pattern} or a list of patterns (see :mod:`optigrade._select`);
    default :func:`default_blocks`.  One tidy row per block × quantity
    (``lambda_max``/``lambda_<which>_i``, ``trace``, ``n_params``).

    Blocks are the diagonal blocks of H: the weights' H_ww = XᵀX and the bias' H_bb = n = 8:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> b = block_spectra(probe, {"weight": "weight", "bias": "bias"}, n_trace=0)
    >>> np.allclose(b.table.value, [np.linalg.eigvalsh(H[:3, :3]).max(), 8.0], rtol=1e-6)
    True
    """
    if blocks is None:
        blocks = default_blocks(probe)
    elif not isinstance(blocks, dict):
        blocks = {str(b): b for b in blocks}
    rows, total = [], Cost()
    for name, pat in blocks.items():
        sub = probe.subset(pat)
        kk = min(k, sub.numel)
        eig = top_eigenvalues(sub, kk, which, tol=tol, seed=seed, return_vectors=False)
        tr = hutchinson_trace(sub, n_trace, seed=seed) if n_trace else None
        total = total + eig.cost + (tr.cost if tr else Cost())
        for i, (v, r) in enumerate(zip(eig.eigenvalues, eig.residuals)):
            q = "lambda_max" if (i == 0 and which == "LA") else f"lambda_{which}_{i}"
            rows.append(dict(block=name, pattern=str(pat), quantity=q, index=i, value=float(v),
                             uncertainty=float(r), uncertainty_kind="residual",
                             unit="loss/param^2", n_params=sub.numel))
        if tr:
            rows.append(dict(block=name, pattern=str(pat), quantity="trace", index=0,
                             value=tr.estimate, uncertainty=tr.std_error,
                             uncertainty_kind="sem" if np.isfinite(tr.std_error) else "",
                             unit="loss/param^2", n_params=sub.numel))
    settings = dict(k=k, which=which, n_trace=n_trace, tol=tol, seed=seed)
    return BlockSpectra(pd.DataFrame(rows), settings, total)
