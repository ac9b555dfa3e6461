"""The small frozen results every landscape function returns.

Each is an :class:`optigrade._tables.Result`: ``.to_frame(run_id=…, subject=…, data=…)``
gives tidy rows in the one schema (:data:`optigrade._tables.SCHEMA`), the repr is one compact
line, and Jupyter renders the table.  ``.plot()`` returns a matplotlib figure drawn without
pyplot state that Jupyter shows inline (it has a ``_repr_png_``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .._tables import Result
from .probe import Cost

__all__ = ["EigenResult", "TraceResult", "Density", "BlockSpectra", "SharpnessResult",
           "CertifiedRadius", "Slice1D", "Slice2D", "LossChange", "new_figure"]

CURVATURE = "loss/param^2"


from .._figure import InlineFigure, new_figure  # noqa: E402,F401 - re-exported (the floor holds them)


def _sem(x: float) -> str:
    return "sem" if np.isfinite(x) else ""


# ---------------------------------------------------------------------------------- spectra
@dataclass(frozen=True, repr=False)
class EigenResult(Result):
    """Top-k eigenpairs of H.  ``residuals[i]`` = ‖H y_i − λ_i y_i‖₂ = |β_m s_{m,i}|, reported
    as the row's ``uncertainty`` with ``uncertainty_kind`` "residual": a bound on the distance
    from the Ritz value λ_i to the nearest eigenvalue of H, not a standard error.

    >>> from optigrade import landscape as ls
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> df = ls.top_eigenvalues(probe, 2).to_frame(subject="unlearned", data="forget")
    >>> df[["subject", "quantity", "index", "uncertainty_kind"]].values.tolist()
    [['unlearned', 'eigenvalue_LA', 0, 'residual'], ['unlearned', 'eigenvalue_LA', 1, 'residual']]
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    residuals: np.ndarray
    converged: np.ndarray
    settings: dict
    cost: Cost

    @property
    def n_hvp(self) -> int:
        return self.cost.hvp

    def plot(self, ax=None):
        """The Ritz values by index with their residual bounds (red ticks: λ_i ± ‖H y_i − λ_i y_i‖);
        hollow markers: not converged.

            >>> from optigrade import landscape as ls
            >>> from optigrade.landscape._examples import least_squares
            >>> probe, H = least_squares()
            >>> fig = ls.top_eigenvalues(probe, 3).plot(); fig.axes[0].get_ylabel()
            'eigenvalue [loss/param²]'
        """
        fig = ax.figure if ax is not None else new_figure(figsize=(4.5, 3.2), layout="constrained")
        ax = ax or fig.add_subplot(111)
        x = np.arange(len(self.eigenvalues))
        ok = np.asarray(self.converged, bool)
        ax.errorbar(x, self.eigenvalues, yerr=self.residuals, fmt="none", ecolor="C3", capsize=6,
                    label="± residual ‖Hy − λy‖ (bound)")
        ax.plot(x[ok], self.eigenvalues[ok], "o", color="C0", label="converged")
        if (~ok).any():
            ax.plot(x[~ok], self.eigenvalues[~ok], "o", mfc="none", color="C0", label="not converged")
        ax.set_xticks(x, [f"λ{i + 1}" for i in x])
        ax.set_xlabel(f"top eigenvalues ({self.settings.get('which', 'LA')}, {self.cost.hvp} HVPs)")
        ax.set_ylabel("eigenvalue [loss/param²]")
        ax.legend(fontsize=7)
        return fig

    def _rows(self):
        return [dict(quantity=f"eigenvalue_{self.settings['which']}", index=i, value=float(v),
                     uncertainty=float(r), uncertainty_kind="residual", unit=CURVATURE,
                     converged=bool(c))
                for i, (v, r, c) in enumerate(zip(self.eigenvalues, self.residuals, self.converged))]


@dataclass(frozen=True, repr=False)
class TraceResult(Result):
    """Stochastic estimate of tr H with its standard error (the row's ``uncertainty``, kind
    "sem"; NaN and kind "" when there are fewer than two samples).

    >>> import numpy as np
    >>> r = TraceResult(estimate=3.0, std_error=0.1, samples=np.array([2.9, 3.1]),
    ...                 settings=dict(n=2), cost=Cost(hvp=2))
    >>> r
    TraceResult(estimate=3, std_error=0.1, samples=[2.9, 3.1], settings={n=2}, cost=Cost(loss=0, grad=0, hvp=2))
    >>> r.to_frame(subject="unlearned", data="forget")[["quantity", "value", "uncertainty_kind"]].values.tolist()
    [['hessian_trace', 3.0, 'sem']]
    """

    estimate: float
    std_error: float
    samples: np.ndarray
    settings: dict
    cost: Cost

    def plot(self, ax=None):
        """The running mean of the per-query samples with its ±1 standard-error band, and the
        final estimate.

            >>> import numpy as np
            >>> r = TraceResult(estimate=3.0, std_error=0.1, samples=np.array([2.9, 3.1, 3.0]),
            ...                 settings=dict(n=3), cost=Cost(hvp=3))
            >>> r.plot().axes[0].get_xlabel()
            'queries (HVPs)'
        """
        fig = ax.figure if ax is not None else new_figure(figsize=(4.5, 3.2), layout="constrained")
        ax = ax or fig.add_subplot(111)
        x = np.asarray(self.samples, float).ravel()
        if len(x):
            k = np.arange(1, len(x) + 1)
            mean = np.cumsum(x) / k
            sem = np.array([x[:i].std(ddof=1) / np.sqrt(i) if i > 1 else np.nan for i in k])
            ax.plot(k, x, ".", color="0.6", label="samples")
            ax.plot(k, mean, color="C0", label="running mean")
            ax.fill_between(k, mean - sem, mean + sem, color="C0", alpha=0.2, label="± 1 sem")
        ax.axhline(self.estimate, color="C3", lw=0.8, ls="--", label=f"estimate {self.estimate:.4g}")
        ax.set_xlabel("queries (HVPs)")
        ax.set_ylabel("tr H [loss/param²]")
        ax.legend(fontsize=7)
        return fig

    def _rows(self):
        return [dict(quantity="hessian_trace", value=self.estimate, uncertainty=self.std_error,
                     uncertainty_kind=_sem(self.std_error), unit=CURVATURE)]


@dataclass(frozen=True, repr=False)
class Density(Result):
    """Stochastic-Lanczos-quadrature spectral density (normalized to integrate to 1).

    ``nodes``/``weights``: (n_v, m) Ritz values and squared first components of the Ritz
    vectors per run; ``density`` on ``grid``: (1/n_v) Σ_runs Σ_j w_j N(x; θ_j, width²) where
    ``width`` is the Gaussian's *standard deviation* (not its variance).

    >>> from optigrade import landscape as ls
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> d = ls.spectral_density(probe, m=4, n_v=2, width=0.5)
    >>> d.to_frame().quantity.tolist(), float(d.to_frame().setting_width_std[0]), type(d.plot()).__name__
    (['slq_trace', 'slq_lambda_max', 'slq_lambda_min'], 0.5, 'InlineFigure')
    >>> bool(np.isclose(d.moment(0), 1.0))      # the quadrature weights sum to one per run
    True
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    width: float
    n_params: int
    settings: dict
    cost: Cost

    def moment(self, p: int = 1) -> float:
        """Quadrature estimate of (1/n) tr Hᵖ = mean over runs of Σ_j w_j θ_jᵖ."""
        return float(np.mean(np.sum(self.weights * self.nodes ** p, axis=1)))

    @property
    def trace_estimate(self) -> float:
        return self.n_params * self.moment(1)

    @property
    def trace_std_error(self) -> float:
        per = self.n_params * np.sum(self.weights * self.nodes, axis=1)
        return float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else float("nan")

    def _settings(self):
        return {**self.settings, "width_std": self.width}

    def _rows(self):
        se = self.trace_std_error
        return [dict(quantity="slq_trace", value=self.trace_estimate, uncertainty=se,
                     uncertainty_kind=_sem(se), unit=CURVATURE),
                dict(quantity="slq_lambda_max", value=float(self.nodes.max()), unit=CURVATURE),
                dict(quantity="slq_lambda_min", value=float(self.nodes.min()), unit=CURVATURE)]

    def curve(self, width: float | None = None, points: int = 200):
        """``(x, density)``: the same quadrature (nodes θ_j, weights w_j, averaged over runs) with
        each node broadened by a Gaussian of std ``width`` (default: 1/80 of the Ritz range, a
        curve one can read; the stored ``density`` uses :func:`spectral_density`'s ``width``, by
        default PyHessian's far narrower √(1e-5·range), which draws spikes).  It integrates to 1
        and its first moment is the SLQ estimate of tr H / n.

            >>> from optigrade import landscape as ls
            >>> from optigrade.landscape._examples import least_squares
            >>> probe, H = least_squares()
            >>> x, y = ls.spectral_density(probe, m=6, n_v=2).curve()
            >>> bool(abs(np.trapezoid(y, x) - 1) < 1e-3)
            True
        """
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        sig = float(width) if width is not None else max(hi - lo, 1e-12) / 80
        x = np.linspace(lo - 4 * sig, hi + 4 * sig, points)
        z = (x[None, None, :] - self.nodes[:, :, None]) / sig
        y = (self.weights[:, :, None] * np.exp(-0.5 * z ** 2)).sum(1).mean(0) / (sig * np.sqrt(2 * np.pi))
        return x, y

    def plot(self, ax=None, log: bool = True, width: float | None = None):
        """The density on a log axis (down to 1e-6 of its peak).  The stored curve is drawn when
        its width is at least 1/200 of the Ritz range; a narrower one (PyHessian's default draws
        isolated spikes) is re-broadened for the picture with :meth:`curve` (σ = range/80, or
        ``width``), and the title says which."""
        fig = ax.figure if ax is not None else new_figure(figsize=(5, 3.5), layout="constrained")
        ax = ax or fig.add_subplot(111)
        span = max(float(self.nodes.max() - self.nodes.min()), 1e-12)
        if width is None and self.width >= span / 200:
            x, y, what = self.grid, self.density, f"std={self.width:.2g}"
        else:
            x, y = self.curve(width)
            what = f"drawn with std={(width or span / 80):.2g}; stored std={self.width:.2g}"
        ax.plot(x, np.maximum(y, 1e-300) if log else y)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(max(y.max() * 1e-6, 1e-300), y.max() * 2)
        ax.set_xlabel("eigenvalue [loss/param²]")
        ax.set_ylabel("density")
        ax.set_title(f"SLQ density (m={self.settings['m']}, n_v={self.settings['n_v']}, {what})", fontsize=9)
        return fig


#: Legend texts of BlockSpectra.plot (tests and readers look for them).
SEM_LABEL = "± 1 s.e."
RESIDUAL_LABEL = "residual bound ‖Hy−λy‖ (not a standard error)"


def _unit_tex(unit: str) -> str:
    return unit.replace("^2", "²")


def _block_title(q: str, settings: dict) -> str:
    if q == "lambda_max":
        return "largest eigenvalue λ_max of each diagonal block H_bb (Lanczos)"
    if q == "trace":
        return f"trace of each diagonal block H_bb (Hutchinson, n={settings.get('n_trace')})"
    return f"{q} of each diagonal block H_bb (Lanczos)"


@dataclass(frozen=True, repr=False)
class BlockSpectra(Result):
    """Per-block curvature: diagonal blocks H_bb (other blocks' weights held fixed).

    ``table``: one row per block × quantity (columns block, pattern, quantity, index, value,
    uncertainty, uncertainty_kind, unit, n_params); ``to_frame()`` adds the schema's columns.
    Eigenvalue rows carry the Lanczos residual (kind "residual"), trace rows the
    Hutchinson standard error (kind "sem"): see :data:`optigrade._tables.UNCERTAINTY_KINDS`.

    >>> from optigrade import landscape as ls
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> b = ls.block_spectra(probe, {"w": "weight", "b": "bias"}, n_trace=5)
    >>> b.table[["block", "quantity", "uncertainty_kind", "n_params"]].values.tolist()
    [['w', 'lambda_max', 'residual', 3], ['w', 'trace', 'sem', 3], ['b', 'lambda_max', 'residual', 1], ['b', 'trace', 'sem', 1]]
    >>> list(b.to_frame(run_id="r7").run_id.unique())
    ['r7']
    >>> fig = b.plot(["lambda_max", "trace"])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['λ_max [loss/param²]', 'trace [loss/param²]']
    >>> [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    ['± 1 s.e.']
    """

    table: pd.DataFrame
    settings: dict
    cost: Cost

    def _rows(self):
        return self.table.to_dict("records")

    def plot(self, quantity: str | Sequence[str] = "lambda_max"):
        """Bars of ``quantity`` per block; one panel per quantity when given a list.

        Each panel says what its bars are: error bars only on rows whose uncertainty is a
        standard error (kind "sem", legend "± 1 s.e."); a Lanczos residual (kind "residual")
        is a bound on the distance from the Ritz value to the nearest eigenvalue, not a
        standard error: it is drawn as red "_" marks at λ ± r when visible on the axis and is
        named, with its largest value, in the legend either way.  Title and y-label carry the
        unit.

        Raises:
            ValueError: a quantity that is not in the table (the ones there are named).
        """
        qs = [quantity] if isinstance(quantity, str) else list(quantity)
        have = list(dict.fromkeys(self.table.quantity)) if len(self.table) else []
        bad = [q for q in qs if q not in have]
        if bad or not qs:
            raise ValueError(f"quantity {bad or qs!r} is not in this BlockSpectra; it has "
                             f"{have} (trace rows need n_trace > 0)")
        nb = max(int((self.table.quantity == q).sum()) for q in qs)
        fig = new_figure(figsize=(len(qs) * max(4.5, 0.55 * nb + 2.5), 4.2),
                         layout="constrained")
        for i, q in enumerate(qs):
            self._panel(fig.add_subplot(1, len(qs), i + 1), q)
        return fig

    def _panel(self, ax, q: str) -> None:
        from matplotlib.lines import Line2D
        df = self.table[self.table.quantity == q].reset_index(drop=True)
        x = np.arange(len(df))
        value = df.value.to_numpy(float)
        unc = df.uncertainty.to_numpy(float)
        kind = df.uncertainty_kind.to_numpy(str)
        ax.bar(x, value, color="C0")
        handles = []
        sem = (kind == "sem") & np.isfinite(unc)
        if sem.any():
            handles.append(ax.errorbar(x[sem], value[sem], yerr=unc[sem], fmt="none",
                                       ecolor="k", capsize=4, label=SEM_LABEL))
        res = (kind == "residual") & np.isfinite(unc)
        if res.any():
            r = unc[res]
            lo, hi = ax.get_ylim()
            shown = r >= 0.005 * (hi - lo)
            label = f"{RESIDUAL_LABEL}\nlargest {r.max():.2g}"
            if shown.any():
                xs, vs, rs = x[res][shown], value[res][shown], r[shown]
                ax.plot(np.r_[xs, xs], np.r_[vs - rs, vs + rs], linestyle="none",
                        marker="_", markersize=14, color="C3")
            else:
                label += ", too small to draw"
            handles.append(Line2D([], [], linestyle="none", marker="_", markersize=14,
                                  color="C3", label=label))
        unit = _unit_tex(str(df.unit.iloc[0])) if len(df) and df.unit.iloc[0] else ""
        name = "λ_max" if q == "lambda_max" else q
        ax.set_ylabel(f"{name} [{unit}]" if unit else name)
        ax.set_title(_block_title(q, self.settings) + (f"\n[{unit}]" if unit else ""),
                     fontsize=9)
        ax.set_xticks(x, df.block.astype(str), rotation=60, ha="right")
        if handles:  # headroom above the bars so the legend covers none of them
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi + 0.12 * len(handles) * (hi - lo))
            ax.legend(handles=handles, fontsize=7, loc="upper left")


# -------------------------------------------------------------------------------- sharpness
@dataclass(frozen=True, repr=False)
class SharpnessResult(Result):
    """One sharpness number: ``value`` = L(perturbed) − L(θ) (or σ* for PAC-Bayes);
    ``std_error`` (a Monte-Carlo standard error, NaN when none) is the row's ``uncertainty``.

    >>> r = SharpnessResult("sam_sharpness", value=0.02, std_error=float("nan"), loss=1.5,
    ...                     settings=dict(rho=0.1), cost=Cost(loss=1, grad=1))
    >>> r.to_frame()[["quantity", "value", "unit", "setting_rho", "cost_grad"]].values.tolist()
    [['sam_sharpness', 0.02, 'loss', 0.1, 1], ['loss_at_checkpoint', 1.5, 'loss', 0.1, 1]]
    """

    kind: str
    value: float
    std_error: float
    loss: float
    settings: dict
    cost: Cost
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def plot(self, ax=None):
        """The loss at the checkpoint and after the perturbation (value ± its standard error);
        for PAC-Bayes, the bisection path σ → rise (``history``).

            >>> r = SharpnessResult("average_sharpness", value=0.02, std_error=0.005, loss=1.5,
            ...                     settings=dict(rho=0.1), cost=Cost(loss=9))
            >>> r.plot().axes[0].get_ylabel()
            'loss rise L(θ + ε) − L(θ)'
        """
        fig = ax.figure if ax is not None else new_figure(figsize=(4.2, 3.2), layout="constrained")
        ax = ax or fig.add_subplot(111)
        h = np.asarray(self.history, float)
        if self.kind == "pac_bayes_sigma" and h.ndim == 2 and len(h):
            ax.plot(h[:, 0], h[:, 1], "o-", color="C0")
            ax.axvline(self.value, color="C3", ls="--", label=f"σ* = {self.value:.3g}")
            ax.set_xlabel("σ (noise std)")
            ax.set_ylabel("expected loss rise")
            ax.legend(fontsize=7)
            return fig
        yerr = [self.std_error] if np.isfinite(self.std_error) else None
        ax.bar([0], [self.value], yerr=yerr, capsize=6, color="C0", width=0.5)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks([0], [self.kind.replace("_", " ")])
        ax.set_xlim(-1, 1)
        ax.set_xlabel(", ".join(f"{k} {v}" for k, v in self.settings.items() if isinstance(v, (int, float)))
                      or "sharpness")
        ax.set_ylabel("loss rise L(θ + ε) − L(θ)")
        ax.set_title(f"{self.value:.4g}" + (f" ± {self.std_error:.2g} (sem)" if np.isfinite(self.std_error) else "")
                     + f"; L(θ) = {self.loss:.4g}", fontsize=9)
        return fig

    def _rows(self):
        unit = "param-space std" if self.kind == "pac_bayes_sigma" else "loss"
        return [dict(quantity=self.kind, value=self.value, uncertainty=self.std_error,
                     uncertainty_kind=_sem(self.std_error), unit=unit),
                dict(quantity="loss_at_checkpoint", value=self.loss, unit="loss")]


# ---------------------------------------------------------------------------------- certify
@dataclass(frozen=True, repr=False)
class CertifiedRadius(Result):
    """A certified ℓ2 radius (in weight space, same units as θ) and what produced it.

    >>> from optigrade.landscape import radius_from_outcomes
    >>> r = radius_from_outcomes([0] * 50, sigma=0.1, n_params=100)
    >>> r.to_frame().quantity.tolist()
    ['certified_radius', 'smoothed_metric_bound', 'smoothed_metric_estimate', 'noise_norm_approx']
    >>> float(r.to_frame().value[3])                     # ‖σε‖ ≈ σ√d
    1.0
    """

    radius: float
    certified: bool
    bound: float
    estimate: float
    n: int
    settings: dict
    cost: Cost

    def plot(self, ax=None):
        """The certified radius next to the typical norm of the smoothing noise ‖σε‖ ≈ σ√d and,
        when given in ``settings['delta_norm']``, the attack's ‖δ‖ (log scale: they differ by orders
        of magnitude).

            >>> from optigrade.landscape import radius_from_outcomes
            >>> radius_from_outcomes([0] * 50, sigma=0.1, n_params=100).plot().axes[0].get_xlabel()
            'ℓ2 norm in weight space (log scale)'
        """
        fig = ax.figure if ax is not None else new_figure(figsize=(4.8, 2.6), layout="constrained")
        ax = ax or fig.add_subplot(111)
        noise = self.settings["sigma"] * np.sqrt(self.settings.get("n_params", 0))
        names, vals = ["certified radius", "noise ‖σε‖ ≈ σ√d"], [self.radius, noise]
        if "delta_norm" in self.settings:
            names.append("attack ‖δ‖")
            vals.append(float(self.settings["delta_norm"]))
        shown = [max(v, 1e-300) for v in vals]
        ax.barh(range(len(vals)), shown, color=["C0" if self.certified else "0.7", "0.5", "C3"][: len(vals)])
        ax.set_yticks(range(len(vals)), names)
        ax.set_ylabel(f"σ = {self.settings['sigma']:.3g}")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: no overlapping minor ones
        ax.set_xlabel("ℓ2 norm in weight space (log scale)")
        ax.set_title(f"{'certified' if self.certified else 'not certified'}: p bound {self.bound:.3g} "
                     f"(estimate {self.estimate:.3g}, n = {self.n})", fontsize=9)
        return fig

    def _rows(self):
        noise = self.settings["sigma"] * np.sqrt(self.settings.get("n_params", 0))
        return [dict(quantity="certified_radius", value=self.radius, unit="l2 weight norm",
                     certified=self.certified),
                dict(quantity="smoothed_metric_bound", value=self.bound, unit="probability"),
                dict(quantity="smoothed_metric_estimate", value=self.estimate, unit="probability"),
                dict(quantity="noise_norm_approx", value=noise, unit="l2 weight norm")]


# ----------------------------------------------------------------------------------- slices
@dataclass(frozen=True, repr=False)
class _Slice(Result):
    """Losses on a grid of points around θ0; ``kind`` names how the grid was laid out."""

    losses: np.ndarray
    kind: str
    settings: dict
    cost: Cost

    def _settings(self):
        return {"kind": self.kind, **self.settings}


@dataclass(frozen=True, repr=False)
class Slice1D(_Slice):
    """Losses L(θ0 + α·d) along one line (or between checkpoints: θ(α) = (1−α)θa + αθb);
    ``extras``: scalars measured alongside (dHd, second_difference, barrier, ...).

    >>> from optigrade import landscape as ls
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> s = ls.slice_1d(probe, points=3)
    >>> s.to_frame()[["quantity", "index", "alpha", "setting_kind"]].values.tolist()[:3]
    [['loss', 0, -1.0, 'slice_1d'], ['loss', 1, 0.0, 'slice_1d'], ['loss', 2, 1.0, 'slice_1d']]
    >>> s.to_frame().quantity.tolist()[3:]
    ['dHd', 'second_difference']
    """

    alphas: np.ndarray
    extras: dict = field(default_factory=dict)

    def _rows(self):
        rows = [dict(quantity="loss", index=i, alpha=float(a), value=float(l), unit="loss")
                for i, (a, l) in enumerate(zip(self.alphas, self.losses))]
        return rows + [dict(quantity=k, value=float(v), unit="") for k, v in self.extras.items()]

    def plot(self, ax=None):
        fig = ax.figure if ax is not None else new_figure(figsize=(5, 3.5))
        ax = ax or fig.add_subplot(111)
        ax.plot(self.alphas, self.losses, marker=".")
        ax.set_xlabel("α")
        ax.set_ylabel("loss")
        ax.set_title(self.kind)
        return fig


@dataclass(frozen=True, repr=False)
class Slice2D(_Slice):
    """Losses on a plane θ0 + a·d1 + b·d2; ``losses[j, i]`` is at (xs[i], ys[j]);
    ``points`` names the (a, b) of checkpoints drawn on the plane.

    >>> from optigrade import landscape as ls
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> theta = probe.flat_params()
    >>> s = ls.slice_2d(probe, checkpoints=(theta, theta + 1, theta - 1), points=(3, 2))
    >>> s.kind, s.points["θ1"], s.to_frame().shape[0], type(s.plot("contour")).__name__
    ('plane_checkpoints', (1.0, 0.0), 6, 'InlineFigure')
    """

    xs: np.ndarray
    ys: np.ndarray
    points: dict = field(default_factory=dict)

    def _rows(self):
        return [dict(quantity="loss", index=j * len(self.xs) + i, a=float(x), b=float(y),
                     value=float(self.losses[j, i]), unit="loss")
                for j, y in enumerate(self.ys) for i, x in enumerate(self.xs)]

    def plot(self, kind: str = "both", levels: int = 30):
        """Contour and/or 3-D surface; marks the named points (checkpoints) if any."""
        if kind not in ("contour", "surface", "both"):
            raise ValueError(f"kind must be 'contour', 'surface' or 'both', got {kind!r}")
        n = 2 if kind == "both" else 1
        fig = new_figure(figsize=(5 * n, 4))
        X, Y = np.meshgrid(self.xs, self.ys)
        col = 1
        if kind in ("contour", "both"):
            ax = fig.add_subplot(1, n, col)
            cs = ax.contour(X, Y, self.losses, levels=levels)
            ax.clabel(cs, fontsize=6)
            for name, (x, y) in self.points.items():
                ax.plot(x, y, "k*")
                ax.annotate(name, (x, y))
            ax.set_xlabel("a (d1)")
            ax.set_ylabel("b (d2)")
            col += 1
        if kind in ("surface", "both"):
            ax = fig.add_subplot(1, n, col, projection="3d")
            ax.plot_surface(X, Y, self.losses, cmap="viridis")
            ax.set_zlabel("loss")
        fig.suptitle(self.kind)
        return fig


# ------------------------------------------------------------------------------ loss change
def _rel_error(pred: float, measured: float) -> float:
    """|pred − measured| / |measured|; 0 when both are 0, inf when only ``measured`` is 0."""
    err = abs(pred - measured)
    if measured == 0:
        return 0.0 if err == 0 else float("inf")
    return err / abs(measured)


@dataclass(frozen=True, repr=False)
class LossChange(Result):
    """ΔL = L(θ+δ) − L(θ) measured, next to its Taylor predictions (SPEC §3.2, §3.4).

    ``first_order`` = gᵀδ, ``second_order`` = gᵀδ + ½·``curvature`` with ``curvature`` = δᵀHδ
    (g = ∇L(θ), H = ∇²L(θ), δ the displacement actually applied, see
    :func:`~optigrade.landscape.loss_change`).  ``resolution`` = eps(dtype)·max(|L(θ)|,
    |L(θ+δ)|): a measured ΔL within a few of these is rounding, not signal.

    >>> r = LossChange(loss=2.0, loss_perturbed=2.5, first_order=0.4, curvature=0.2,
    ...                delta_norm=0.1, rounding_norm=0.0, resolution=4.4e-16,
    ...                settings=dict(dtype="torch.float64"), cost=Cost(loss=1, grad=1, hvp=1))
    >>> r.measured, r.second_order, round(r.first_order_rel_error, 12), r.second_order_rel_error
    (0.5, 0.5, 0.2, 0.0)
    >>> r.to_frame()[["quantity", "value", "unit"]].values.tolist()[:3]
    [['loss_change', 0.5, 'loss'], ['loss_change_first_order', 0.4, 'loss'], ['loss_change_second_order', 0.5, 'loss']]
    """

    loss: float
    loss_perturbed: float
    first_order: float
    curvature: float
    delta_norm: float
    rounding_norm: float
    resolution: float
    settings: dict
    cost: Cost

    @property
    def measured(self) -> float:
        """ΔL = L(θ+δ) − L(θ)."""
        return self.loss_perturbed - self.loss

    @property
    def second_order(self) -> float:
        """gᵀδ + ½δᵀHδ."""
        return self.first_order + 0.5 * self.curvature

    @property
    def first_order_rel_error(self) -> float:
        return _rel_error(self.first_order, self.measured)

    @property
    def second_order_rel_error(self) -> float:
        return _rel_error(self.second_order, self.measured)

    def plot(self, ax=None):
        """Measured ΔL next to its first- and second-order predictions; the dotted band is the
        rounding resolution (a ΔL inside it is not signal).

            >>> r = LossChange(loss=2.0, loss_perturbed=2.5, first_order=0.4, curvature=0.2,
            ...                delta_norm=0.1, rounding_norm=0.0, resolution=4.4e-16,
            ...                settings={}, cost=Cost(loss=1, grad=1, hvp=1))
            >>> [t.get_text() for t in r.plot().axes[0].get_xticklabels()]
            ['measured', 'gᵀδ', 'gᵀδ + ½δᵀHδ']
        """
        fig = ax.figure if ax is not None else new_figure(figsize=(4.2, 3.2), layout="constrained")
        ax = ax or fig.add_subplot(111)
        ax.bar([0, 1, 2], [self.measured, self.first_order, self.second_order], color=["C0", "0.6", "C2"])
        ax.axhline(0, color="k", lw=0.6)
        for y in (self.resolution, -self.resolution):
            ax.axhline(y, color="C3", lw=0.6, ls=":")
        ax.set_xticks([0, 1, 2], ["measured", "gᵀδ", "gᵀδ + ½δᵀHδ"])
        ax.set_xlabel("measured ΔL and its Taylor predictions (dotted: rounding resolution)")
        ax.set_ylabel("ΔL = L(θ+δ) − L(θ) [loss]")
        ax.set_title(f"‖δ‖ = {self.delta_norm:.3g}; 2nd-order rel. error {self.second_order_rel_error:.2g}", fontsize=9)
        return fig

    def _rows(self):
        rel = "|prediction − measured| / |measured|"
        return [dict(quantity="loss_change", value=self.measured, unit="loss"),
                dict(quantity="loss_change_first_order", value=self.first_order, unit="loss"),
                dict(quantity="loss_change_second_order", value=self.second_order, unit="loss"),
                dict(quantity="first_order_rel_error", value=self.first_order_rel_error,
                     unit=rel),
                dict(quantity="second_order_rel_error", value=self.second_order_rel_error,
                     unit=rel),
                dict(quantity="curvature_along_delta", value=self.curvature, unit="loss"),
                dict(quantity="delta_norm", value=self.delta_norm, unit="l2 weight norm"),
                dict(quantity="delta_rounding_norm", value=self.rounding_norm,
                     unit="l2 weight norm"),
                dict(quantity="loss_change_resolution", value=self.resolution, unit="loss"),
                dict(quantity="loss_at_checkpoint", value=self.loss, unit="loss")]
