"""Figure 12: relearn-half recovery per optimizer (Deeb & Roger 2024; SCIENCE.md §5).

Relearning fine-tunes on forget half A; half B is never trained on.  Panels: forget accuracy on
half B (the test) and on half A ("was A relearned?"), each before (unlearned, attack "none")
and after relearn-half (attack ``relearn-half``), per optimizer: per-seed points and 95%
intervals; the original model's value on the half as a dashed line.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from matplotlib.lines import Line2D

from ._common import MissingData, legend_below, new_figure, objective_rows, seed_order, seeds_with_interval, styles

__all__ = ["relearn_half"]

_HALVES = (("forget-half-B", "half B (never relearned)"), ("forget-half-A", "half A (relearned)"))


def relearn_half(results: pd.DataFrame, attack: str = "relearn-half", objective: Optional[str] = None):
    """Forget accuracy on halves B and A before and after relearning on half A.

    Columns read: quantity, attack, data, optimizer, seed, value; optional per_example, matched.

    Raises:
        MissingData: no forget_acc rows of ``attack`` on forget-half-B.
    """
    r, obj = objective_rows(results, objective)
    r = r[r["quantity"] == "forget_acc"]
    if not ((r["attack"] == attack) & (r["data"] == "forget-half-B")).any():
        raise MissingData(f"no relearn-half rows (attack {attack!r}, data 'forget-half-B'): the study ran no "
                          "relearn-half attack")
    st = styles(r)
    opts = sorted(r.loc[(r["attack"] == attack) & (r["optimizer"] != "original"), "optimizer"].unique(),
                  key=lambda o: st[o]["order"])
    halves = [h for h in _HALVES if ((r["attack"] == attack) & (r["data"] == h[0])).any()]
    fig, axes = new_figure(1, len(halves), w=max(3.4, 0.6 * len(opts) + 1.4), h=3.2, sharey=True)
    for ax, (d, title) in zip(axes[0], halves):
        for i, opt in enumerate(opts):
            for k, (a, shade) in enumerate((("none", False), (attack, True))):
                x = seed_order(r[(r["optimizer"] == opt) & (r["attack"] == a) & (r["data"] == d)])
                if x.empty:
                    continue
                sty = dict(st[opt], marker="o" if k == 0 else "^")
                pe = x["per_example"].tolist() if "per_example" in x else None
                seeds_with_interval(ax, i + (k - 0.5) * 0.36, x["value"], "forget_acc", per_example=pe, style=sty,
                                    spread=0.08, filled=[shade] * len(x))
        orig = r[(r["optimizer"] == "original") & (r["attack"] == "none") & (r["data"] == d)]
        if len(orig):
            ax.axhline(float(orig["value"].iloc[0]), color="black", ls="--", lw=0.9)
        ax.set_xticks(range(len(opts)), [st[o]["label"] for o in opts], rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(opts) - 0.4)
        ax.set_ylim(-0.04, 1.04)
        ax.set_title(f"forget {title}", fontsize=9)
        ax.set_xlabel("optimizer or control", fontsize=8)
    axes[0, 0].set_ylabel("forget accuracy on the half\n(fraction of facts)")
    hs = [Line2D([], [], color="0.3", marker="o", mfc="white", ls=""), Line2D([], [], color="0.3", marker="^", ls=""),
          Line2D([], [], color="black", ls="--")]
    legend_below(fig, hs, ["unlearned (before relearning)", "after relearning on half A", "original model θ₀"], ncol=3,
                 note="Points: seeds; bars: 95% interval over seeds.")
    fig.suptitle(f"Relearn-half: does relearning half A bring back half B?{f' ({obj})' if obj else ''}", fontsize=10)
    return fig
