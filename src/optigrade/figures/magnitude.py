"""Figure 2 (the "magnitude figure"): recovery under each attack against the run's displacement,
grades and controls together (SCIENCE.md §3).

x: ‖Δ‖ = ‖θ_u − θ₀‖₂ (``diag_update_norm`` on ``weights``) and the mean per-weight move in
half-steps of the attack's quantization grid (``diag_half_steps_mean``, ``setting_quantizer`` /
``setting_bits``: RTN b-bit for ``rtn<b>``, the GGUF export for ``gguf*``; attacks without a grid
use the first grid measured, named on the axis); y: recovery of forget accuracy
(:func:`~optigrade.figures._recovery.recovery`).  One point per run (hollow: not at matched
forgetting and utility); per optimizer with ≥ 3 runs a cross at the mean with 95% t-intervals
in x and y.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
import pandas as pd

from optigrade.analysis.intervals import t_interval

from ._common import MissingData, legend_below, new_figure, objective_rows, style_handles, styles
from ._names import attack_label
from ._recovery import per_run, recovery

__all__ = ["recovery_vs_displacement"]


def _grid_for(results: pd.DataFrame, attack: str):
    """``(series {run: half-steps}, grid name)`` for ``attack``'s quantization grid."""
    w = results[(results["quantity"] == "diag_half_steps_mean") & (results["data"] == "weights")]
    if w.empty:
        return pd.Series(dtype=float), ""
    qz = w["setting_quantizer"].astype(object) if "setting_quantizer" in w else pd.Series("rtn", index=w.index)
    bits = w["setting_bits"] if "setting_bits" in w else pd.Series(np.nan, index=w.index)
    m = re.fullmatch(r"rtn-?(\d+)(?:bit)?", attack)
    if m:
        sel, name = (qz.fillna("rtn") == "rtn") & (bits == float(m.group(1))), f"RTN {m.group(1)}-bit grid"
    elif attack.startswith("gguf"):
        sel, name = qz == "gguf", "GGUF grid"
    else:
        first = (qz.iloc[0], bits.iloc[0])
        sel = (qz == first[0]) & ((bits == first[1]) | (bits.isna() & (first[1] != first[1])))
        name = "GGUF grid" if first[0] == "gguf" else f"RTN {first[1]:g}-bit grid"
    x = w[sel]
    s = x.set_index("run_id")["value"]
    return s[~s.index.duplicated()], name


def _panel(ax, rec: pd.DataFrame, xs: pd.Series, st) -> int:
    d = rec.assign(x=rec["run_id"].map(xs)).dropna(subset=["x", "recovery"])
    for opt, g in d.groupby("optimizer", sort=False):
        s = st[opt]
        filled = g["matched"].astype(bool).to_numpy() if "matched" in g else np.ones(len(g), bool)
        sc = ax.scatter(g["x"], g["recovery"], s=22, marker=s["marker"], edgecolors=s["color"], linewidths=0.9,
                        facecolors=[s["color"] if f else "white" for f in filled], zorder=3)
        sc.set_gid("per-seed")
        if len(g) >= 3:  # with 2 runs t(0.975, 1) = 12.7: a cross that says nothing and swamps the axis
            ix, iy = t_interval(g["x"]), t_interval(g["recovery"])
            if np.isfinite([ix.low, ix.high, iy.low, iy.high]).all():
                ax.errorbar([ix.estimate], [iy.estimate], xerr=[[ix.estimate - max(ix.low, 0.0)], [ix.high - ix.estimate]],
                            yerr=[[iy.estimate - iy.low], [iy.high - iy.estimate]], color=s["color"], lw=0.8,
                            capsize=2, alpha=0.6, zorder=2)
    ax.axhline(0, color="0.6", lw=0.7, zorder=1)
    if len(d) and d["x"].min() > 0 and d["x"].max() / d["x"].min() > 30:
        ax.set_xscale("log")
    return len(d)


def recovery_vs_displacement(results: pd.DataFrame, objective: Optional[str] = None):
    """Recovery of forget accuracy against ‖Δ‖ and against the half-steps on the attack's grid.

    Columns read: quantity, subject, attack, data, run_id, optimizer, seed, value, index; optional
    setting_quantizer, setting_bits, matched, grade, family, control_*.

    Raises:
        MissingData: no attacked forget accuracy, or no ``diag_update_norm`` rows.
    """
    r, obj = objective_rows(results, objective)
    rec = recovery(r)
    if rec.empty:
        raise MissingData("no attacked forget_acc rows (subject 'attacked:<label>') to compute recovery from")
    norm = per_run(r, "diag_update_norm", "weights", **({"setting_bits": np.nan} if "setting_bits" in r else {}))
    if norm.empty:
        raise MissingData("no displacement rows (quantity 'diag_update_norm' on 'weights'): the study ran no "
                          "diagnostics")
    attacks = list(dict.fromkeys(rec["attack"]))
    st = styles(r)
    fig, axes = new_figure(len(attacks), 2, w=3.3, h=2.3, sharey="row")
    for i, a in enumerate(attacks):
        ra = rec[rec["attack"] == a]
        half = " (half B)" if (ra["data"] == "forget-half-B").any() else ""
        _panel(axes[i, 0], ra, norm, st)
        axes[i, 0].set_ylabel(f"recovery after\n{attack_label(a)}{half}\n(Δ forget acc.)", fontsize=8)
        grid, name = _grid_for(r, a)
        n = _panel(axes[i, 1], ra, grid, st) if len(grid) else 0
        if not n:
            axes[i, 1].text(0.5, 0.5, "no half-step diagnostics", ha="center", va="center",
                            transform=axes[i, 1].transAxes, color="0.4", fontsize=8)
        axes[i, 1].set_xlabel(f"mean |Δ| per weight (half-steps, {name or 'no grid'})", fontsize=8)
        axes[i, 0].set_xlabel("‖Δ‖ = ‖θ_u − θ₀‖₂ (L2 weight norm)"
                              + (" (log)" if axes[i, 0].get_xscale() == "log" else ""), fontsize=8)
        if axes[i, 1].get_xscale() == "log":
            axes[i, 1].set_xlabel(axes[i, 1].get_xlabel() + " (log)", fontsize=8)
        axes[i, 1].axvline(1.0, color="0.6", ls=":", lw=0.8)
    opts = sorted(rec["optimizer"].unique(), key=lambda o: st[o]["order"])
    h, lab = style_handles(st, opts)
    note = ("One point per run (hollow: not at matched forgetting and utility); crosses (≥ 3 runs): mean with 95% t-intervals. "
            "Dotted: one half-step (below it a weight cannot leave its bin).")
    legend_below(fig, h, lab, ncol=min(len(lab), 3), note=note)
    fig.suptitle(f"Recovery vs displacement, grades and controls{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
