"""Loss slices: 1-D lines, interpolation between checkpoints, 2-D planes, mode connectivity.

Every grid point is written fresh as θ0 + a·d1 (+ b·d2) from saved weights (see
:meth:`Probe.moving`), never by accumulating steps, and the weights are restored bit for bit.

Filter normalization (Li et al. 2018), per parameter tensor θ_i with random direction d_i:
* nn.Linear weight [out, in], nn.Embedding [vocab, dim], ConvNd [out, in, ...]: per slice
  along dim 0 (each output unit / token row): d_r ← d_r·‖θ_r‖/‖d_r‖;
* transformers ``Conv1D`` weight [in, out] (GPT-2): per *column* (each output unit);
* 1-D tensors (biases, norm gains): zeroed by default (``one_d="zero"``), or with
  ``one_d="keep"`` normalized as a whole, d ← d·‖θ‖/‖d‖;
* tied weights: once (the Probe holds each shared tensor once).
"""

from __future__ import annotations

import numpy as np
import torch

from .probe import Probe, flatten
from .results import Slice1D, Slice2D


def _owners(model):
    out = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            out.setdefault(f"{mname}.{pname}" if mname else pname, mod)
    return out


def random_direction(probe: Probe, *, seed: int = 0, normalization: str = "filter",
                     one_d: str = "zero") -> torch.Tensor:
    """A Gaussian direction normalized per the module rules above (flat, params' dtype).

    ``normalization``: "filter" (default), "layer" (whole tensor: ‖d_i‖ = ‖θ_i‖) or "none".

    Filter normalization gives each output row of a weight the norm of that row; the bias
    (1-D) is zeroed:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> d = random_direction(probe, seed=0)
    >>> w = probe.model.weight.detach().reshape(-1)
    >>> bool(torch.isclose(d[:3].norm(), w.norm())), d[3].item()
    (True, 0.0)
    """
    if normalization not in ("filter", "layer", "none"):
        raise ValueError(f"normalization must be 'filter', 'layer' or 'none', got {normalization!r}")
    if one_d not in ("zero", "keep"):
        raise ValueError(f"one_d must be 'zero' or 'keep', got {one_d!r}")
    gen = torch.Generator().manual_seed(seed)
    owners = _owners(probe.model)
    parts = []
    for name, p in probe.named_params:
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        w = p.detach().cpu().double()
        if normalization == "none":
            pass
        elif p.dim() <= 1:
            d = torch.zeros_like(d) if one_d == "zero" else d * w.norm() / d.norm()
        elif normalization == "layer":
            d = d * w.norm() / d.norm()
        else:
            conv1d = type(owners.get(name)).__name__ == "Conv1D" and name.endswith("weight")
            dim = 0 if conv1d else tuple(range(1, p.dim()))  # reduce over the non-output dims
            d = d * w.norm(dim=dim, keepdim=True) / d.norm(dim=dim, keepdim=True).clamp_min(1e-30)
        parts.append(d)
    return flatten(parts).to(device=probe.device, dtype=probe.dtype)


def _flat_of(probe: Probe, theta) -> torch.Tensor:
    """Flat vector of the Probe's selected parameters from a state dict, model or vector."""
    if isinstance(theta, torch.nn.Module):
        theta = dict(theta.named_parameters())
    if isinstance(theta, dict):
        missing = [n for n in probe.names if n not in theta]
        if missing:
            raise ValueError(f"checkpoint lacks parameters {missing[:3]}; give a state dict "
                             f"with the Probe's parameter names")
        bad = [n for n, s in zip(probe.names, probe.shapes) if theta[n].shape != s]
        if bad:
            raise ValueError(f"checkpoint shapes differ from the model's for {bad[:3]}")
        return flatten([theta[n].detach() for n in probe.names]).to(probe.device, probe.dtype)
    v = torch.as_tensor(theta)
    if v.dim() != 1 or v.numel() != probe.numel:
        raise ValueError(f"checkpoint vector has shape {tuple(v.shape)}; expected ({probe.numel},)")
    v = v.to(probe.device, probe.dtype)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"checkpoint vector has {int((~torch.isfinite(v)).sum())} non-finite entries (nan / inf)")
    return v


def _grid(span, points, name="span"):
    lo, hi = span
    if not (hi > lo and np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} must be (low, high) with low < high, got {span}")
    if not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    return np.linspace(lo, hi, points)


def slice_1d(probe: Probe, direction=None, *, span=(-1.0, 1.0), points: int = 21,
             seed: int = 0, normalization: str = "filter", one_d: str = "zero",
             curvature: bool = True) -> Slice1D:
    """L(θ0 + α·d) on a grid of α; d random filter-normalized unless given.

    With ``curvature`` also dᵀHd (one HVP) and the central second difference
    (L(h) − 2L(0) + L(−h))/h² at the smallest grid step h (agree on smooth losses).

    α = 0 is the checkpoint itself, bit for bit; on a quadratic dᵀHd and the second
    difference agree with the dense Hessian:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> s = slice_1d(probe, points=5)
    >>> s.alphas.tolist(), float(s.losses[2]) == probe.loss()
    ([-1.0, -0.5, 0.0, 0.5, 1.0], True)
    >>> d = random_direction(probe).numpy()
    >>> np.allclose([s.extras["dHd"], s.extras["second_difference"]], d @ H @ d)
    True
    """
    alphas = _grid(span, points)
    start = probe.cost()
    d = random_direction(probe, seed=seed, normalization=normalization, one_d=one_d) \
        if direction is None else probe._as_tensors(direction)
    d = flatten(d) if isinstance(d, list) else d
    losses = np.empty(len(alphas))
    with probe.moving([d]) as move:
        for i, a in enumerate(alphas):
            move(a)
            losses[i] = probe.loss()
    extras = {}
    if curvature:
        extras["dHd"] = float(d.double() @ probe.hvp(d).double())
        h = float(np.min(np.abs(np.diff(alphas))))
        with probe.moving([d]) as move:
            vals = []
            for a in (-h, 0.0, h):
                move(a)
                vals.append(probe.loss())
        extras["second_difference"] = (vals[0] - 2 * vals[1] + vals[2]) / h ** 2
    settings = dict(normalization=normalization if direction is None else "given",
                    one_d=one_d, seed=seed, span=str(tuple(span)), points=points,
                    direction_norm=float(d.double().norm()))
    return Slice1D(alphas=alphas, losses=losses, kind="slice_1d", settings=settings,
                   cost=probe.cost() - start, extras=extras)


def interpolate(probe: Probe, theta_a, theta_b, *, alphas=None) -> Slice1D:
    """L((1−α)θa + αθb) for α in ``alphas`` (default 41 points from −0.5 to 1.5).

    θa, θb: state dicts, models (same architecture) or flat vectors over the Probe's params.
    Each point is written as θa + α(θb − θa) from θa (so α = 0 is θa exactly).

    On a quadratic, L((1−α)θa + αθb) = (1−α)L(θa) + αL(θb) − ½α(1−α)·dᵀHd, d = θb − θa:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> theta_a = probe.flat_params(); theta_b = theta_a + 0.5
    >>> r = interpolate(probe, theta_a, theta_b, alphas=[0.0, 0.5, 1.0])
    >>> d = (theta_b - theta_a).numpy()
    >>> bool(np.isclose(r.losses[1], 0.5 * (r.losses[0] + r.losses[2]) - d @ H @ d / 8))
    True
    """
    alphas = np.linspace(-0.5, 1.5, 41) if alphas is None else np.asarray(alphas, dtype=float)
    if alphas.ndim != 1 or len(alphas) == 0 or not np.isfinite(alphas).all():
        raise ValueError(f"alphas must be a non-empty 1-D sequence of finite numbers, got {alphas.tolist()}")
    start = probe.cost()
    a = _flat_of(probe, theta_a)
    d = _flat_of(probe, theta_b) - a
    losses = np.empty(len(alphas))
    with probe.moving([d], origin=a) as move:
        for i, al in enumerate(alphas):
            move(al)
            losses[i] = probe.loss()
    return Slice1D(alphas=alphas, losses=losses, kind="interpolation",
                   settings=dict(distance=float(d.double().norm())), cost=probe.cost() - start)


def mode_connectivity(probe: Probe, theta_a, theta_b, *, points: int = 21) -> Slice1D:
    """Linear-mode-connectivity barrier (SPEC §3.4) on α ∈ [0, 1]:

        B = max_α L((1−α)θa + αθb) − [(1−α)L(θa) + αL(θb)],

    reported in ``extras`` as ``barrier`` with its ``argmax_alpha`` (grid resolution).

    A convex loss has no barrier (the chord lies above the curve; the maximum gap is the
    endpoint's 0):

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> theta = probe.flat_params()
    >>> mode_connectivity(probe, theta, theta + 1.0, points=5).extras
    {'barrier': 0.0, 'argmax_alpha': 0.0}
    """
    alphas = _grid((0.0, 1.0), points)
    res = interpolate(probe, theta_a, theta_b, alphas=alphas)
    gap = res.losses - ((1 - alphas) * res.losses[0] + alphas * res.losses[-1])
    i = int(np.argmax(gap))
    return Slice1D(alphas=res.alphas, losses=res.losses, kind="mode_connectivity",
                   settings=res.settings, cost=res.cost,
                   extras=dict(barrier=float(gap[i]), argmax_alpha=float(alphas[i])))


# ------------------------------------------------------------------ planes: (origin, d1, d2)
# Each builder returns (origin or None for the current weights, d1, d2, named points, settings).
def _plane_checkpoints(probe, checkpoints, **_):
    if len(checkpoints) != 3:
        raise ValueError("checkpoints must be three: (θ0, θ1, θ2)")
    t0, t1, t2 = (_flat_of(probe, t) for t in checkpoints)
    d1 = t1 - t0
    u = (t2 - t0).double()
    d1d = d1.double()
    x2 = float(u @ d1d / (d1d @ d1d))
    perp = u - x2 * d1d
    d2 = (perp * d1d.norm() / perp.norm()).to(probe.dtype)
    named = {"θ0": (0.0, 0.0), "θ1": (1.0, 0.0), "θ2": (x2, float(perp.norm() / d1d.norm()))}
    return t0, d1, d2, named, {}


def _plane_pca(probe, trajectory, **_):
    thetas = [_flat_of(probe, t).double().cpu() for t in trajectory]
    if len(thetas) < 3:
        raise ValueError("a PCA plane needs a trajectory of at least 3 checkpoints")
    origin = thetas[-1]
    M = torch.stack([t - origin for t in thetas[:-1]])          # [T-1, n]
    G = (M @ M.T).numpy()                                       # Gram matrix, T-1 × T-1
    lam, U = np.linalg.eigh(G)
    lam, U = lam[::-1][:2], U[:, ::-1][:, :2]
    dirs = [(M.T @ torch.from_numpy(U[:, k].copy())) / np.sqrt(max(lam[k], 1e-300)) for k in range(2)]
    coords = {f"t{i}": (float(t @ dirs[0]), float(t @ dirs[1])) for i, t in enumerate(M)}
    coords[f"t{len(thetas) - 1}"] = (0.0, 0.0)
    explained = float(lam.sum() / max(np.trace(G), 1e-300))
    origin, d1, d2 = (x.to(probe.device, probe.dtype) for x in (origin, *dirs))
    return origin, d1, d2, coords, dict(explained_variance=explained)


def _plane_given(probe, directions, **_):
    if len(directions) != 2:
        raise ValueError("directions must be a pair (d1, d2)")
    d1, d2 = (flatten(probe._as_tensors(d)) for d in directions)
    return None, d1, d2, {}, {}


def _plane_random(probe, _, *, seed, normalization, one_d, orthogonalize):
    d1 = random_direction(probe, seed=seed, normalization=normalization, one_d=one_d)
    d2 = random_direction(probe, seed=seed + 1, normalization=normalization, one_d=one_d)
    if orthogonalize:
        a, b = d1.double(), d2.double()
        nb = b.norm()
        b = b - (a @ b) / (a @ a) * a
        d2 = (b * nb / b.norm()).to(probe.dtype)
    return None, d1, d2, {}, dict(normalization=normalization, one_d=one_d,
                                  orthogonalize=orthogonalize)


#: argument of slice_2d → (kind, builder)
_PLANES = {"checkpoints": ("plane_checkpoints", _plane_checkpoints),
           "trajectory": ("plane_pca", _plane_pca),
           "directions": ("plane_given", _plane_given),
           "random": ("plane_random", _plane_random)}


def slice_2d(probe: Probe, directions=None, *, checkpoints=None, trajectory=None,
             span=((-1.0, 1.0), (-1.0, 1.0)), points=(21, 21), seed: int = 0,
             normalization: str = "filter", one_d: str = "zero",
             orthogonalize: bool = True) -> Slice2D:
    """L(θ0 + a·d1 + b·d2) on a grid (``points`` = (n_a, n_b)); one of

    * random (default): two filter-normalized directions; with ``orthogonalize`` d2 is
      Gram–Schmidt orthogonalized to d1 and rescaled to its former norm; θ0 = current weights;
    * ``directions=(d1, d2)``: given, used as is (θ0 = current weights);
    * ``checkpoints=(θ0, θ1, θ2)``: θ0 origin, d1 = θ1 − θ0, d2 = (θ2 − θ0) orthogonalized to
      d1 and scaled to ‖d1‖; ``points`` names each checkpoint's (a, b);
    * ``trajectory=[θ_1..θ_T]``: origin θ_T, d1, d2 = unit top-2 principal directions of
      {θ_t − θ_T} (Li et al. 2018), ``settings["explained_variance"]``.
    Extra memory: two directions + one weight copy (+ the origin for checkpoint planes).

    The centre is the checkpoint; the plane's second difference along d1 is d1ᵀHd1:

    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> s = slice_2d(probe, points=(3, 3))
    >>> s.losses.shape, float(s.losses[1, 1]) == probe.loss()
    ((3, 3), True)
    >>> d1 = random_direction(probe, seed=0).numpy()
    >>> bool(np.isclose(s.losses[1, 0] - 2 * s.losses[1, 1] + s.losses[1, 2], d1 @ H @ d1))
    True
    """
    given = {k: v for k, v in dict(directions=directions, checkpoints=checkpoints,
                                   trajectory=trajectory).items() if v is not None}
    if len(given) > 1:
        raise ValueError("give at most one of directions, checkpoints, trajectory")
    xs, ys = _grid(span[0], points[0], "span[0]"), _grid(span[1], points[1], "span[1]")
    start = probe.cost()
    plane, spec = next(iter(given.items()), ("random", None))
    kind, build = _PLANES[plane]
    origin, d1, d2, named, extra = build(probe, spec, seed=seed, normalization=normalization,
                                         one_d=one_d, orthogonalize=orthogonalize)
    losses = np.empty((len(ys), len(xs)))
    with probe.moving([d1, d2], origin=origin) as move:
        for j, b in enumerate(ys):
            for i, a in enumerate(xs):
                move(a, b)
                losses[j, i] = probe.loss()
    settings = dict(seed=seed, **extra, points=str(tuple(points)), span=str(span))
    return Slice2D(xs=xs, ys=ys, losses=losses, kind=kind, settings=settings,
                   cost=probe.cost() - start, points=named)
