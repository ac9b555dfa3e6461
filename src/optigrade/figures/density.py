"""Figure 7: the Hessian spectral density (stochastic Lanczos quadrature) per checkpoint.

Reads a batch landscape table (``landscape.parquet`` of ``optigrade landscape``): rows with
quantity ``spectral_density`` and coordinate ``lambda`` (``quantity_group`` "density"); one
panel per ``data`` split, one curve per ``checkpoint`` coloured by its optimizer (parsed from
"<study>.<objective>__<optimizer>__s<seed>").
"""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from ._common import MissingData, legend_below, new_figure, styles
from ._names import checkpoint_optimizer, split_label

__all__ = ["spectral_density"]

_LS = ["-", "--", ":", "-."]


def spectral_density(landscape: pd.DataFrame, labels=None, floor: float = 1e-6):
    """Density of Hessian eigenvalues against λ (log density), one curve per checkpoint.

    Columns read: quantity, lambda, value, data, checkpoint (or run_id).  ``labels``: optimizer →
    reader-facing name (a study's, for its controls: ``optimizer_labels(results)``); the y axis
    stops at ``floor`` × the largest density (a Gaussian's tails are not data).

    Raises:
        MissingData: no ``spectral_density`` rows with a ``lambda`` column.
    """
    d = landscape[landscape["quantity"] == "spectral_density"] if "quantity" in landscape else landscape.iloc[:0]
    if d.empty or "lambda" not in d:
        raise MissingData("no spectral density rows (quantity 'spectral_density' with coordinate 'lambda'): the "
                          "landscape report ran without 'density'")
    ck = d["checkpoint"] if "checkpoint" in d else d["run_id"]
    parsed = [checkpoint_optimizer(c) for c in ck]
    d = d.assign(optimizer=[p[0] for p in parsed], seed=[p[1] for p in parsed], _ck=ck)
    st = styles(d)
    for o, v in st.items():
        if labels and o in labels:
            v["label"] = labels[o]
    splits = list(dict.fromkeys(d["data"]))
    fig, axes = new_figure(1, len(splits), w=3.8, h=2.9, sharey=True)
    for ax, s in zip(axes[0], splits):
        for (c, opt, seed), g in d[d["data"] == s].groupby(["_ck", "optimizer", "seed"], sort=False):
            g = g.sort_values("lambda")
            k = int(seed) if str(seed).isdigit() else 0
            ax.plot(g["lambda"], g["value"], color=st[opt]["color"], ls=_LS[k % len(_LS)], lw=1.1)
        ax.set_yscale("log")
        top = float(d["value"].max())
        if top > 0:
            ax.set_ylim(top * floor, top * 3)
        ax.set_xlabel("Hessian eigenvalue λ (loss/param²)")
        ax.set_title(split_label(s) or s, fontsize=9)
    axes[0, 0].set_ylabel("spectral density\n(SLQ, Gaussian-smoothed; log)")
    hs = [Line2D([], [], color=st[o]["color"]) for o in sorted(st, key=lambda o: st[o]["order"])]
    lab = [st[o]["label"] for o in sorted(st, key=lambda o: st[o]["order"])]
    seeds = sorted({p[1] for p in parsed if p[1]})
    if len(seeds) > 1:
        hs += [Line2D([], [], color="0.3", ls=_LS[int(k) % len(_LS)]) for k in seeds]
        lab += [f"seed {k}" for k in seeds]
    legend_below(fig, hs, lab, ncol=min(len(lab), 3))
    fig.suptitle("Hessian spectral density per checkpoint", fontsize=11)
    return fig
