"""Figure 5: 1-D loss slices through θ_u along each attack's direction δ and along a random
direction of the same norm (``geo_slice_attack`` / ``geo_slice_random``, coordinate ``alpha``:
θ_u + α·d, so α = 1 along δ is the attacked weights).

One panel per (attack, data split); colour: optimizer; solid: along δ; dotted: random
direction.  Mean over seeds with per-seed points.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from matplotlib.lines import Line2D

from ._common import MissingData, curve_with_seeds, legend_below, new_figure, objective_rows, style_handles, styles
from ._names import attack_label, split_label

__all__ = ["slices_1d"]

_Q = ("geo_slice_attack", "geo_slice_random")


def slices_1d(results: pd.DataFrame, objective: Optional[str] = None):
    """Loss along the attack direction and a random direction of equal norm, per attack.

    Columns read: quantity, alpha, attack, data, optimizer, seed, value.

    Raises:
        MissingData: no ``geo_slice_attack`` rows with an ``alpha`` column.
    """
    r, obj = objective_rows(results, objective)
    g = r[r["quantity"].isin(_Q)]
    if not (g["quantity"] == "geo_slice_attack").any() or "alpha" not in g:
        raise MissingData("no 1-D slice rows (quantity 'geo_slice_attack' with coordinate 'alpha'): the geometry "
                          "stage ran without 'slices'")
    st = styles(r)
    attacks = list(dict.fromkeys(g["attack"]))
    splits = list(dict.fromkeys(g["data"]))
    fig, axes = new_figure(len(splits), len(attacks), w=3.0, h=2.5, sharex=True)
    for i, d in enumerate(splits):
        for j, a in enumerate(attacks):
            ax = axes[i, j]
            ga = g[(g["attack"] == a) & (g["data"] == d)]
            for opt in sorted(ga["optimizer"].unique(), key=lambda o: st[o]["order"]):
                for q, ls in zip(_Q, ("-", ":")):
                    curve_with_seeds(ax, ga[(ga["optimizer"] == opt) & (ga["quantity"] == q)], "alpha", st[opt],
                                     ls=ls, band=False)
            ax.axvline(0, color="0.6", lw=0.6)
            ax.axvline(1, color="0.6", lw=0.6, ls="--")
            ax.set_title(f"{attack_label(a)}, {split_label(d)}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"loss on {split_label(d)}\n(nats/token)", fontsize=8)
            if i == len(splits) - 1:
                ax.set_xlabel("α on θ_u + α·d (α = 1 along δ: attacked)", fontsize=8)
    h, lab = style_handles(st, list(g["optimizer"].unique()))
    h += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls=":")]
    lab += ["along the attack δ", "random direction, ‖δ‖"]
    legend_below(fig, h, lab, ncol=min(len(lab), 3), note="Lines: mean over seeds; points: seeds.")
    fig.suptitle(f"Loss slices through θ_u along each attack and a random direction"
                 f"{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
