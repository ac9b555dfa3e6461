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


def _matrix(pw: pd.DataFrame, labels: dict, order: dict, unmatched=()):
    """One panel per data split: B(a, b) averaged over seeds (symmetric; 0 on the diagonal)."""
    names = list(dict.fromkeys(list(pw["endpoint_a"].astype(str)) + list(pw["endpoint_b"].astype(str))))
    names.sort(key=lambda n: (-1, 0) if n == "original" else (0, order.get(n, 99)))
    splits = list(dict.fromkeys(pw["data"])) if "data" in pw else [None]
    n = len(names)
    fig, axes = new_figure(1, len(splits), w=(1.6 + 0.62 * n) * len(splits), h=1.2 + 0.55 * n)
    for ax, d in zip(axes[0], splits):
        g0 = pw if d is None else pw[pw["data"] == d]
        m = np.full((n, n), np.nan)
        seeds = {}
        for (a, b), g in g0.groupby(["endpoint_a", "endpoint_b"]):
            i, j = names.index(str(a)), names.index(str(b))
            m[i, j] = m[j, i] = float(g["value"].mean())
            seeds[(i, j)] = seeds[(j, i)] = g["seed"].nunique() if "seed" in g else 1
        np.fill_diagonal(m, 0.0)
        hi = float(np.nanmax(m)) if np.isfinite(m).any() else 0.0
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=hi if hi > 0 else 1.0)  # all 0: dark, not mid-scale
        none = hi <= 0
        hi = hi if hi > 0 else 1.0
        for i in range(n):
            for j in range(n):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < 0.5 * hi else "black")
        tick = [labels.get(x, x) + (" (not matched)" if x in unmatched else "") for x in names]
        ax.set_xticks(range(n), tick, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(n), tick, fontsize=7)
        ax.set_xlabel("endpoint θ_b", fontsize=8)
        ax.set_ylabel("endpoint θ_a", fontsize=8)
        k = sorted(set(seeds.values()))
        ax.set_title(f"loss on {split_label(d) if d is not None else 'the probe batch'}"
                     f" (mean over {k[0] if len(k) == 1 else f'{k[0]}–{k[-1]}'} seed{'s' if k[-1] > 1 else ''})"
                     + ("\nevery barrier is 0: no ridge above the chord on this α grid" if none else ""),
                     fontsize=9)
        fig.colorbar(im, ax=ax, label="barrier B (nats/token)", shrink=0.8)
    fig.suptitle("Linear-mode-connectivity barrier between checkpoints: B = max over the straight path of the loss above "
                 "the chord\n(0: one basin; > 0: a ridge between the two solutions; same objective and seed)", fontsize=9)
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
        known = r[r["optimizer"].notna()] if "optimizer" in r else r.iloc[:0]
        st = styles(known) if len(known) else {}
        unmatched = set()  # endpoints none of whose runs is at matched forgetting: named on the axis, not hidden
        if "matched" in known and len(known):
            runs = known[known["optimizer"] != "original"].drop_duplicates("run_id") if "run_id" in known else known
            unmatched = {o for o, g in runs.groupby("optimizer") if not g["matched"].fillna(False).astype(bool).any()}
        return _matrix(pw, optimizer_labels(r), {k: v["order"] for k, v in st.items()}, unmatched)
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
