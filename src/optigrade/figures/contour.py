"""Figure 6: the loss on a 2-D plane around the original model, with the unlearned checkpoints.

Reads rows with coordinates ``a`` and ``b`` (:class:`optigrade.landscape.Slice2D` rows,
L(θ₀ + a·d1 + b·d2); quantity ``loss`` or ``geo_slice_2d``); one panel per plane (``run_id`` or
``checkpoint`` × ``data``).  The checkpoints drawn on the plane come from rows with quantity
``plane_point`` (columns ``a``, ``b``, ``label``) or from ``points`` ({label: (a, b)}); the
origin θ₀ is always marked.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from ._common import MissingData, new_figure
from ._names import split_label

__all__ = ["contour_2d"]

_MARKS = ["o", "s", "^", "D", "v", "P"]


def contour_2d(table: pd.DataFrame, points: Optional[Mapping[str, Tuple[float, float]]] = None):
    """Filled contours of the loss over (a, b) with a colour bar; the checkpoints as markers.

    Columns read: a, b, value, quantity; optional run_id / checkpoint, data, label (plane_point).

    Raises:
        MissingData: no rows with both ``a`` and ``b``.
    """
    if "a" not in table or "b" not in table:
        raise MissingData("no 2-D slice rows (coordinates 'a' and 'b'): no plane was measured")
    grid = table[table["quantity"].isin(["loss", "geo_slice_2d"]) & table["a"].notna() & table["b"].notna()]
    if grid.empty:
        raise MissingData("no 2-D slice rows (coordinates 'a' and 'b'): no plane was measured")
    marks = table[table["quantity"] == "plane_point"]
    key = [c for c in ("checkpoint", "run_id", "data") if c in grid]
    planes = list(grid.groupby(key, sort=False)) if key else [((), grid)]
    fig, axes = new_figure(1, len(planes), w=3.9, h=3.3)
    for ax, (k, g) in zip(axes[0], planes):
        g = g.groupby(["b", "a"])["value"].mean().unstack("a")
        A, B = np.meshgrid(g.columns.to_numpy(float), g.index.to_numpy(float))
        cs = ax.contourf(A, B, g.to_numpy(float), levels=20, cmap="viridis")
        ax.contour(A, B, g.to_numpy(float), levels=10, colors="white", linewidths=0.4, alpha=0.6)
        fig.colorbar(cs, ax=ax, label="loss (nats/token)")
        pts = {"original θ₀": (0.0, 0.0)}
        mine = marks
        if len(marks) and key:  # the points of this plane only
            kk = k if isinstance(k, tuple) else (k,)
            for c, v in zip(key, kk):
                if c in mine:
                    mine = mine[mine[c] == v]
        if len(mine):
            pts.update({str(r["label"]): (float(r["a"]), float(r["b"])) for _, r in mine.iterrows()})
        pts.update(points or {})
        for i, (name, (pa, pb)) in enumerate(pts.items()):
            ax.plot([pa], [pb], marker="*" if i == 0 else _MARKS[i % len(_MARKS)], ms=11 if i == 0 else 8,
                    color="white" if i == 0 else "#E69F00", mec="black", ls="", label=name)
        ax.set_xlabel("a (along d1 = θ_u − θ₀)")
        ax.set_ylabel("b (along d2, orthogonal, ‖d2‖ = ‖d1‖)")
        k = k if isinstance(k, tuple) else (k,)
        split = dict(zip(key, k)).get("data", "")
        ax.set_title(" · ".join(str(x) for x, c in zip(k, key) if c != "data")
                     + (f" ({split_label(split)})" if split else ""), fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(pts)),
                  framealpha=0.8)  # below the axes: never over a checkpoint
    fig.suptitle("Loss on a plane through the original model", fontsize=11)
    return fig
