"""Figure 4: the loss on the straight path θ(α) = (1 − α)·θ₀ + α·θ_u, per optimizer (grade).

Reads the geometry stage's ``geo_interp`` rows (coordinate ``alpha``; one panel per ``data``
split), unlearned checkpoints only.  Per optimizer: per-seed points, the mean over seeds and its
95% t-band.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from ._common import MissingData, curve_with_seeds, legend_below, new_figure, objective_rows, style_handles, styles
from ._names import split_label

__all__ = ["interpolation"]


def interpolation(results: pd.DataFrame, objective: Optional[str] = None):
    """Loss along θ₀ → θ_u (``geo_interp`` against ``alpha``), one panel per data split.

    Columns read: quantity, alpha, data, optimizer, seed, value; optional subject, unit.

    Raises:
        MissingData: no ``geo_interp`` rows with an ``alpha`` column.
    """
    r, obj = objective_rows(results, objective)
    g = r[r["quantity"] == "geo_interp"] if "quantity" in r else r.iloc[:0]
    if g.empty or "alpha" not in g:
        raise MissingData("no interpolation rows (quantity 'geo_interp' with coordinate 'alpha'): the geometry "
                          "stage ran without 'interpolation'")
    st = styles(r)
    splits = list(dict.fromkeys(g["data"]))
    fig, axes = new_figure(1, len(splits), w=3.6, h=2.9)
    for ax, d in zip(axes[0], splits):
        gd = g[g["data"] == d]
        for opt in sorted(gd["optimizer"].unique(), key=lambda o: st[o]["order"]):
            curve_with_seeds(ax, gd[gd["optimizer"] == opt], "alpha", st[opt])
        ax.set_xlabel("α on θ(α) = (1 − α)·θ₀ + α·θ_u\n(0: original, 1: unlearned)", fontsize=8)
        ax.set_ylabel(f"loss on {split_label(d)} (nats/token)", fontsize=9)
        ax.set_xlim(-0.03, 1.03)
        v = gd["value"].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) and v.min() > 0 and v.max() / v.min() > 30:
            ax.set_yscale("log")
            ax.set_ylabel(ax.get_ylabel()[:-1] + ", log)", fontsize=9)
    h, lab = style_handles(st, [o for o in g["optimizer"].unique()], line=True)
    legend_below(fig, h, lab, ncol=min(len(lab), 3), note="Points: seeds; line: mean over seeds; band: 95% t-interval.")
    fig.suptitle(f"Loss on the straight path θ₀ → θ_u{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
