"""Shared pieces of the figure modules (private): the Okabe–Ito palette, one style per optimizer,
per-seed points with their 95% interval, and :class:`MissingData` (a figure whose data is absent).

Every figure draws per-seed values as a scatter whose ``gid`` is ``"per-seed"`` and the estimate
over seeds with its interval (:func:`optigrade.analysis.intervals.interval_for`: a bootstrap
inside [0, 1] for accuracies, a geometric mean for perplexities, a t-interval otherwise) as an
error bar, so a test can read the plotted values back from the Axes.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import matplotlib.pyplot as plt  # the backend is the session's: Agg headless, inline in Jupyter (never forced)
import numpy as np
import pandas as pd

from optigrade.analysis import intervals as _iv

from ._names import optimizer_labels

__all__ = ["OKABE_ITO", "MissingData", "Style", "styles", "new_figure", "seeds_with_interval", "objective_rows",
           "require", "CONTROL_FAMILIES"]

#: Okabe & Ito (2008), colour-blind safe; black last (the reference), yellow late (low contrast)
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
CONTROL_FAMILIES = ("control", "first-order+noise")
PER_SEED = "per-seed"


class MissingData(LookupError):
    """The figure's data is absent from the table; the message says which rows it needs."""


class Style(dict):
    """Matplotlib keyword arguments of one optimizer (color, marker, label) plus ``order``."""


def styles(table: pd.DataFrame) -> Dict[str, Style]:
    """``{optimizer: Style}``: grades first by grade, then controls, then the rest; colours and
    markers by that order (the original model: black)."""
    labels = optimizer_labels(table)
    cols = [c for c in ("optimizer", "grade", "family") if c in table]
    o = table[cols].drop_duplicates("optimizer").copy()
    if "grade" not in o:
        o["grade"] = np.nan
    fam = o["family"] if "family" in o else pd.Series("", index=o.index)
    o["ctl"] = fam.isin(CONTROL_FAMILIES).astype(int) + (o["optimizer"] == "original").astype(int) * 2
    o["label"] = [labels.get(str(x), str(x)) for x in o["optimizer"]]
    o = o.sort_values(["ctl", "grade", "label"], na_position="last")
    out, k = {}, 0
    for r in o.itertuples(index=False):
        opt = str(r.optimizer)
        if opt == "original":
            out[opt] = Style(color="#000000", marker="*", label=labels.get(opt, opt), order=len(o))
            continue
        out[opt] = Style(color=OKABE_ITO[k % 7], marker=_MARKERS[k % len(_MARKERS)], label=labels.get(opt, opt),
                         order=k, control=bool(r.ctl == 1))
        k += 1
    return out


def new_figure(nrows: int = 1, ncols: int = 1, w: float = 3.4, h: float = 2.9, **kw):
    """A constrained-layout figure of ``nrows`` × ``ncols`` panels of about w × h inches; axes always 2-D."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 0.6, h * nrows + 0.4), squeeze=False,
                             layout="constrained", **kw)
    return fig, axes


def _interval(quantity: str, values: np.ndarray, per_example: Optional[Sequence] = None) -> _iv.Interval:
    pe = None
    if per_example is not None and _iv.is_accuracy(quantity):
        strs = [p for p in per_example if isinstance(p, str) and p]
        if len(strs) == len(values) and len({len(p) for p in strs}) == 1:
            pe = strs
    try:
        return _iv.interval_for(quantity, values, pe)
    except ValueError:  # values outside the metric's range (e.g. a recovery): the plain t-interval
        return _iv.t_interval(values)


def seeds_with_interval(ax, x: float, values, quantity: str = "", *, per_example=None, style: Optional[dict] = None,
                        spread: float = 0.08, label: Optional[str] = None, filled=None, lower: Optional[float] = None):
    """Per-seed ``values`` as points around ``x`` (spread ± ``spread``, deterministic) and, with
    two or more seeds, the estimate and its 95% interval as an error bar at ``x``.  ``filled``:
    one bool per value (hollow points: runs not at matched forgetting); ``lower``: the metric's
    lower bound (e.g. 0 for a radius), where a t-interval is clipped.  Returns the Interval."""
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    style = dict(style or {})
    color, marker = style.get("color", OKABE_ITO[0]), style.get("marker", "o")
    if not keep.any():
        return None
    pe = None if per_example is None else [p for p, k in zip(per_example, keep) if k]
    v = v[keep]
    fill = np.ones(len(v), bool) if filled is None else np.asarray(filled, bool)[keep]
    xs = x + (np.linspace(-spread, spread, len(v)) if len(v) > 1 else np.zeros(1))
    face = [color if f else "white" for f in fill]
    sc = ax.scatter(xs, v, s=18, marker=marker, facecolors=face, edgecolors=color, linewidths=0.9, zorder=3,
                    alpha=0.85, label=label)
    sc.set_gid(PER_SEED)
    iv = _interval(quantity, v, pe)
    if lower is not None and iv.low < lower:
        iv = _iv.Interval(iv.estimate, lower, iv.high, iv.kind, iv.n, iv.n_facts)
    if len(v) >= 2 and math.isfinite(iv.low) and math.isfinite(iv.high):
        ax.errorbar([x], [iv.estimate], yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], fmt="_",
                    color=color, ms=14, mew=2, elinewidth=1.4, capsize=3, zorder=4)
    return iv


def objective_rows(table: pd.DataFrame, objective: Optional[str] = None) -> tuple:
    """``(rows of one objective plus the original model's, objective)``: ``objective`` or the
    table's first."""
    if "objective" not in table:
        return table, ""
    objs = [o for o in dict.fromkeys(table["objective"].astype(str)) if o not in ("none", "nan", "")]
    if not objs:
        return table, ""
    obj = objective if objective is not None else objs[0]
    if obj not in objs:
        raise MissingData(f"objective {obj!r} is not in the table (it has {', '.join(objs)})")
    return table[(table["objective"] == obj) | (table["optimizer"] == "original")], obj


def require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise :class:`MissingData` naming ``what`` when ``table`` lacks one of ``columns``."""
    miss = [c for c in columns if c not in table]
    if miss:
        raise MissingData(f"{what}: the table has no column(s) {miss}")


def seed_order(x: pd.DataFrame) -> pd.DataFrame:
    return x.sort_values("seed") if "seed" in x else x


def legend_below(fig, handles: List, labels: List[str], ncol: Optional[int] = None, note: str = "") -> None:
    """One legend for the whole figure, under the panels (never over data); ``note`` (how to
    read the marks) as its title."""
    if not handles and not note:
        return
    leg = fig.legend(handles, labels, loc="outside lower center", ncol=max(1, ncol or min(len(labels), 3)), fontsize=8,
                     frameon=False, title=note or None, title_fontsize=7.5)
    if note:
        leg.get_title().set_color("0.3")


def style_handles(st: Dict[str, Style], opts: Sequence[str], line: bool = False):
    """Legend handles (marker, or line with marker) for ``opts`` in their order."""
    from matplotlib.lines import Line2D

    hs, ls = [], []
    for o in sorted(opts, key=lambda o: st[o]["order"]):
        s = st[o]
        hs.append(Line2D([], [], color=s["color"], marker=s["marker"], ls="-" if line else "", ms=6))
        ls.append(s["label"])
    return hs, ls


def curve_with_seeds(ax, rows: pd.DataFrame, x: str, style: dict, *, ls: str = "-", label: Optional[str] = None,
                     band: bool = True, points: bool = True) -> None:
    """Per-seed values of ``rows`` against column ``x`` as points, their mean over seeds as a
    line and (with ≥ 2 seeds at an x) the 95% t-interval as a band."""
    g = rows.dropna(subset=[x, "value"])
    if g.empty:
        return
    if points:
        sc = ax.scatter(g[x], g["value"], s=9, color=style["color"], marker=style["marker"], alpha=0.45,
                        linewidths=0, zorder=3)
        sc.set_gid(PER_SEED)
    xs, mean, lo, hi = [], [], [], []
    for xv, gg in g.groupby(x, sort=True):
        iv = _iv.t_interval(gg["value"].to_numpy(float))
        xs.append(xv)
        mean.append(iv.estimate)
        lo.append(iv.low)
        hi.append(iv.high)
    ax.plot(xs, mean, color=style["color"], ls=ls, lw=1.4, label=label, zorder=4)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if band and np.isfinite(lo).any():
        ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.13, lw=0, zorder=2)
