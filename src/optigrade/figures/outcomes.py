"""Figure 1: forgetting and utility before and after each attack, per optimizer (grade).

Reads a study's results (rows with ``quantity`` ∈ {forget_acc, retain_acc, general_ppl},
``attack``, ``data``, ``optimizer``, ``seed``, ``value``; ``per_example`` and ``matched`` when
present).  One panel per quantity; x: "before attack" then each attack; per optimizer the
per-seed values (hollow: a run not at matched forgetting and utility) and the estimate with its
95% interval (:mod:`optigrade.analysis.intervals`); the original model θ₀ as a dashed line.
relearn-half is scored on forget half B (the half never relearned): its column says so.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd

from ._common import (MissingData, legend_below, new_figure, objective_rows, seed_order, seeds_with_interval,
                      style_handles, styles)
from ._names import attack_label, quantity_label

__all__ = ["forget_utility"]

_QUANTITIES = ("forget_acc", "retain_acc", "general_ppl")
_YLABEL = {"forget_acc": "forget accuracy\n(fraction of facts)", "retain_acc": "retain accuracy\n(fraction of facts)",
           "general_ppl": "general perplexity\n(log scale; lower is better)"}


def _columns(r: pd.DataFrame) -> list:
    """``[(attack, data)]``: before attack on the full split, then every attack (relearn-half on half B)."""
    out = []
    for a in dict.fromkeys(r["attack"].astype(str)):
        d = r.loc[r["attack"] == a, "data"].astype(str)
        data = "all" if (d == "all").any() else "forget-half-B" if (d == "forget-half-B").any() else None
        if data is not None:
            out.append((a, data))
    return sorted(out, key=lambda t: t[0] != "none")


def forget_utility(results: pd.DataFrame, quantities: Sequence[str] = _QUANTITIES, objective: Optional[str] = None):
    """Forget accuracy, retain accuracy and general perplexity before / after each attack.

    Columns read: quantity, attack, data, optimizer, seed, value, subject; optional
    per_example, matched, objective, grade, family.

    Raises:
        MissingData: none of ``quantities`` has rows of an unlearned run.
    """
    r, obj = objective_rows(results, objective)
    r = r[r["quantity"].isin(quantities) & r["data"].isin(["all", "forget-half-B"])]
    runs = r[r["optimizer"] != "original"]
    if runs.empty:
        raise MissingData(f"no rows of {', '.join(quantities)} for an unlearned run")
    qs = [q for q in quantities if (runs["quantity"] == q).any()]
    st = styles(r)
    opts = sorted(runs["optimizer"].unique(), key=lambda o: st[o]["order"])
    cols = _columns(runs)
    fig, axes = new_figure(len(qs), 1, w=max(4.5, 0.35 * len(cols) * len(opts) + 1.5), h=2.4, sharex=True)
    width = 0.8 / max(len(opts), 1)
    for ax, q in zip(axes[:, 0], qs):
        rq = r[r["quantity"] == q]
        for j, opt in enumerate(opts):
            for i, (a, d) in enumerate(cols):
                x = seed_order(rq[(rq["optimizer"] == opt) & (rq["attack"] == a) & (rq["data"] == d)])
                if x.empty:
                    continue
                pe = x["per_example"].tolist() if "per_example" in x else None
                filled = x["matched"].astype(bool).tolist() if "matched" in x else None
                seeds_with_interval(ax, i + (j - (len(opts) - 1) / 2) * width, x["value"], q, per_example=pe,
                                    style=st[opt], spread=width * 0.3, filled=filled)
        orig = rq[(rq["optimizer"] == "original") & (rq["attack"] == "none") & (rq["data"] == "all")]
        if len(orig):
            ax.axhline(float(orig["value"].iloc[0]), color="black", ls="--", lw=0.9, zorder=1)
        ax.set_xticks(range(len(cols)), [attack_label(a) + ("\n(forget: on half B)" if d == "forget-half-B" else "")
                                         for a, d in cols], fontsize=8)
        for i in range(1, len(cols)):
            ax.axvline(i - 0.5, color="0.9", lw=0.8, zorder=0)
        ax.set_xlim(-0.5, len(cols) - 0.5)
        if q.endswith("_acc"):
            ax.set_ylim(-0.04, 1.04)
        elif q.endswith("_ppl"):
            ax.set_yscale("log")
        ax.set_ylabel(_YLABEL.get(q, quantity_label(q)), fontsize=9)
    axes[-1, 0].set_xlabel("attack (each metric on its own split: forget, retain, general text)", fontsize=9)
    h, lab = style_handles(st, opts)
    from matplotlib.lines import Line2D

    h.append(Line2D([], [], color="black", ls="--"))
    lab.append("original model θ₀")
    matched_note = " Hollow: a run not at matched forgetting and utility." if "matched" in r else ""
    legend_below(fig, h, lab, ncol=min(len(lab), 3), note=f"Points: seeds; bars: 95% interval over seeds.{matched_note}")
    fig.suptitle(f"Forgetting and utility before and after each attack{f' (objective {obj})' if obj else ''}",
                 fontsize=11)
    return fig
