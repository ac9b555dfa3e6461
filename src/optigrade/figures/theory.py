"""Figure 11: the SPEC §3.1 theory checks on the original model (the ``theory_*`` rows).

Left: ‖ĝ_q − ∇L_μ‖² / ‖∇L_μ‖² of the ZO estimate against the number of queries q
(``theory_zo_sq_rel_error`` ± its standard error, coordinate ``queries``) with the predicted
c/q (``theory_zo_sq_rel_error_predicted``).  Right: the smoothing gap L_μ − L
(``theory_smoothed_gap``) against (μ²/2)·tr H (``theory_smoothed_gap_predicted``) over μ
(coordinate ``mu``).  A panel whose rows are absent says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import MissingData, OKABE_ITO, legend_below, new_figure

__all__ = ["theory_checks"]


def _series(t: pd.DataFrame, q: str, x: str) -> pd.DataFrame:
    g = t[(t["quantity"] == q)] if x in t else t.iloc[:0]
    g = g.dropna(subset=[x]) if len(g) else g
    unc = g["uncertainty"] if "uncertainty" in g else pd.Series(np.nan, index=g.index)
    kind = g["uncertainty_kind"] if "uncertainty_kind" in g else pd.Series("", index=g.index)
    return pd.DataFrame({"x": g[x].astype(float), "value": g["value"].astype(float),
                         "se": unc.where(kind == "sem")}).sort_values("x")


def _draw(ax, s: pd.DataFrame, color: str, marker: str, label: str, ls: str = "-") -> None:
    if s.empty:
        return
    ax.errorbar(s["x"], s["value"], yerr=s["se"].fillna(0).to_numpy(), color=color, marker=marker, ms=5, ls=ls,
                capsize=3, label=label)


def _xaxis(ax, s: pd.DataFrame) -> None:
    """Log x over several values; one value: a single labelled tick (a log axis of one point misleads)."""
    xs = sorted(s["x"].unique())
    if len(xs) > 1:
        ax.set_xscale("log")
    else:
        ax.set_xticks(xs, [f"{v:g}" for v in xs])


def theory_checks(results: pd.DataFrame):
    """The ZO-estimate check and the smoothing-gap check as two panels.

    Columns read: quantity, value, uncertainty, uncertainty_kind, queries, mu.

    Raises:
        MissingData: no ``theory_*`` rows.
    """
    t = results[results["quantity"].astype(str).str.startswith("theory_")]
    if t.empty:
        raise MissingData("no theory-check rows (quantity 'theory_*'): the study ran with geometry.theory off")
    fig, axes = new_figure(1, 2, w=3.6, h=3.0)
    ax = axes[0, 0]
    meas, pred = _series(t, "theory_zo_sq_rel_error", "queries"), _series(t, "theory_zo_sq_rel_error_predicted",
                                                                          "queries")
    if meas.empty:
        ax.text(0.5, 0.5, "no ZO-estimate rows", ha="center", va="center", transform=ax.transAxes, color="0.4")
    _draw(ax, meas, OKABE_ITO[0], "o", "measured (± 1 s.e. over repeats)")
    _draw(ax, pred, OKABE_ITO[1], "s", "predicted c/q", ls="--")
    if len(meas):
        _xaxis(ax, meas)
        ax.set_yscale("log")
    ax.set_xlabel("ZO queries q per estimate" + (" (log)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("‖ĝ_q − ∇L_μ‖² / ‖∇L_μ‖² (log)")
    ax.set_title("ZO estimate vs smoothed gradient ∇L_μ", fontsize=9)
    ax = axes[0, 1]
    meas, pred = _series(t, "theory_smoothed_gap", "mu"), _series(t, "theory_smoothed_gap_predicted", "mu")
    if meas.empty:
        ax.text(0.5, 0.5, "no smoothing-gap rows", ha="center", va="center", transform=ax.transAxes, color="0.4")
    _draw(ax, meas, OKABE_ITO[0], "o", "measured L_μ − L (± 1 s.e.)")
    _draw(ax, pred, OKABE_ITO[1], "s", "(μ²/2)·tr H (± 1 s.e.)", ls="--")
    if len(meas):
        _xaxis(ax, meas)
        if (meas["value"] > 0).all() and (pred.empty or (pred["value"] > 0).all()):
            ax.set_yscale("log")
    ax.set_xlabel("smoothing radius μ (weight units" + (", log)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel("forget-loss gap (nats/token" + (", log)" if ax.get_yscale() == "log" else ")"))
    ax.set_title("Smoothing gap vs trace prediction", fontsize=9)
    hs, labs = [], []
    for a in axes[0]:
        h, lab = a.get_legend_handles_labels()
        hs += h
        labs += lab
    seen = dict(zip(labs, hs))
    legend_below(fig, list(seen.values()), list(seen.keys()), ncol=2,
                 note="Original model, forget split. Orange: theory; blue: measured.")
    fig.suptitle("Theory checks (SPEC §3.1)", fontsize=11)
    return fig
