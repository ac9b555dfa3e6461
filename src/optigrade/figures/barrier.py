"""Figure 9: linear-mode-connectivity barriers.

B = max_α L((1−α)θa + αθb) − [(1−α)L(θa) + αL(θb)] (:func:`optigrade.landscape.mode_connectivity`).

* Pairwise barriers (rows with quantity ``geo_lmc_barrier`` and columns ``endpoint_a`` /
  ``endpoint_b`` naming two optimizers or controls): a matrix, mean over seeds.
* Otherwise what studies measure today: ``geo_interp_barrier``, the barrier on θ₀ → θ_u only,
  drawn per optimizer (per-seed points and 95% interval) and titled as such — it is not a
  barrier *between* grades.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from ._common import MissingData, legend_below, new_figure, objective_rows, seed_order, seeds_with_interval, styles
from ._names import optimizer_labels, split_label

__all__ = ["barriers"]


def _matrix(pw: pd.DataFrame, labels: dict):
    names = list(dict.fromkeys(list(pw["endpoint_a"].astype(str)) + list(pw["endpoint_b"].astype(str))))
    m = np.full((len(names), len(names)), np.nan)
    for (a, b), g in pw.groupby(["endpoint_a", "endpoint_b"]):
        i, j = names.index(str(a)), names.index(str(b))
        m[i, j] = m[j, i] = float(g["value"].mean())
    np.fill_diagonal(m, 0.0)
    fig, axes = new_figure(1, 1, w=1.0 + 0.7 * len(names), h=0.8 + 0.6 * len(names))
    ax = axes[0, 0]
    im = ax.imshow(m, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < np.nanmean(m) else "black")
    tick = [labels.get(n, n) for n in names]
    ax.set_xticks(range(len(names)), tick, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), tick, fontsize=7)
    ax.set_xlabel("endpoint θ_b")
    ax.set_ylabel("endpoint θ_a")
    fig.colorbar(im, ax=ax, label="barrier B (loss, nats/token)")
    fig.suptitle("Linear-mode-connectivity barrier between checkpoints (mean over seeds)", fontsize=11)
    return fig


def barriers(results: pd.DataFrame, objective: Optional[str] = None):
    """The pairwise barrier matrix when measured, else the θ₀ → θ_u barrier per optimizer.

    Columns read: quantity, data, optimizer, seed, value; for the matrix endpoint_a, endpoint_b.

    Raises:
        MissingData: neither pairwise nor θ₀ → θ_u barrier rows.
    """
    r, obj = objective_rows(results, objective)
    pw = r[r["quantity"] == "geo_lmc_barrier"]
    if len(pw) and {"endpoint_a", "endpoint_b"} <= set(pw.columns):
        return _matrix(pw, optimizer_labels(r))
    b = r[(r["quantity"] == "geo_interp_barrier") & (r["optimizer"] != "original")]
    if b.empty:
        raise MissingData("no barrier rows: neither pairwise 'geo_lmc_barrier' nor θ₀→θ_u 'geo_interp_barrier' "
                          "(the geometry stage ran without 'interpolation')")
    st = styles(r)
    opts = sorted(b["optimizer"].unique(), key=lambda o: st[o]["order"])
    splits = list(dict.fromkeys(b["data"]))
    fig, axes = new_figure(1, len(splits), w=max(3.2, 0.55 * len(opts) + 1.2), h=3.0)
    for ax, d in zip(axes[0], splits):
        for i, opt in enumerate(opts):
            x = seed_order(b[(b["optimizer"] == opt) & (b["data"] == d)])
            seeds_with_interval(ax, i, x["value"], "geo_interp_barrier", style=st[opt], spread=0.12, lower=0.0)
        ax.axhline(0, color="0.6", lw=0.7)
        ax.set_xticks(range(len(opts)), [st[o]["label"] for o in opts], rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(opts) - 0.4)
        ax.set_ylabel(f"barrier B on {split_label(d)}\n(loss, nats/token)", fontsize=9)
        ax.set_xlabel("optimizer or control", fontsize=8)
    legend_below(fig, [], [], note="Points: seeds; bars: 95% t-interval (B ≥ 0: clipped at 0). B > 0: the path θ₀ → θ_u rises above the "
                                   "chord.\nNo barriers between grades were measured.")
    fig.suptitle(f"Barrier on the straight path θ₀ → θ_u\n(not between grades){f', objective {obj}' if obj else ''}",
                 fontsize=10)
    return fig
