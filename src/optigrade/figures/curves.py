"""Figure 10: unlearning curves — forget and retain accuracy against the step, per run.

Reads the per-run evaluation checks a study keeps in its ``checks`` column (JSON
``[[step, forget_acc, retain_acc], ...]``, one value per run) and the forget ``target`` (the
matched-forgetting level, dashed).  Runs with fewer than two checks (controls, built without
training) have no curve.
"""

from __future__ import annotations

import json
from typing import Optional

import pandas as pd
from matplotlib.lines import Line2D

from ._common import MissingData, legend_below, new_figure, objective_rows, style_handles, styles

__all__ = ["unlearning_curves"]

_LS = ["-", "--", ":", "-."]


def _checks(results: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("run_id", "optimizer", "seed", "checks", "target") if c in results]
    rows = []
    for r in results[cols].drop_duplicates("run_id").to_dict("records"):
        try:
            pts = json.loads(r["checks"]) if isinstance(r["checks"], str) else []
        except ValueError:
            pts = []
        for p in pts:
            if len(p) >= 3:
                rows.append({**r, "step": float(p[0]), "forget_acc": float(p[1]), "retain_acc": float(p[2])})
    return pd.DataFrame(rows)


def unlearning_curves(results: pd.DataFrame, objective: Optional[str] = None):
    """Forget and retain accuracy vs step per run (colour: optimizer; line style: seed).

    Columns read: run_id, optimizer, seed, checks, target.

    Raises:
        MissingData: no run with two or more step-wise checks.
    """
    if "checks" not in results:
        raise MissingData("no step-wise rows: the results have no 'checks' column (per-run evaluation log)")
    r, obj = objective_rows(results, objective)
    c = _checks(r[r["optimizer"] != "original"])
    if c.empty:
        raise MissingData("no step-wise rows: no run kept evaluation checks")
    n = c.groupby("run_id")["step"].nunique()
    c = c[c["run_id"].isin(n[n >= 2].index)]
    if c.empty:
        raise MissingData("no step-wise rows: no run has two or more evaluation checks (controls have none)")
    st = styles(r)
    fig, axes = new_figure(1, 2, w=3.6, h=2.9, sharex=True)
    seeds = sorted(c["seed"].unique()) if "seed" in c else [0]
    for (run, opt), g in c.groupby(["run_id", "optimizer"], sort=False):
        g = g.sort_values("step")
        k = seeds.index(g["seed"].iloc[0]) if "seed" in g else 0
        for ax, q in zip(axes[0], ("forget_acc", "retain_acc")):
            ax.plot(g["step"], g[q], color=st[opt]["color"], ls=_LS[k % len(_LS)], marker=st[opt]["marker"], ms=3,
                    lw=1.1, gid="per-run")
    hs, lab = style_handles(st, list(c["optimizer"].unique()), line=True)
    if "target" in c and c["target"].notna().any():
        t = float(c["target"].dropna().iloc[0])
        axes[0, 0].axhline(t, color="black", ls="--", lw=0.9)
        hs.append(Line2D([], [], color="black", ls="--"))
        lab.append(f"matched-forgetting target ({t:g})")
    if len(seeds) > 1:
        hs += [Line2D([], [], color="0.3", ls=_LS[i % len(_LS)]) for i in range(len(seeds))]
        lab += [f"seed {s}" for s in seeds]
    axes[0, 0].set_ylabel("forget accuracy (fraction of facts)")
    axes[0, 1].set_ylabel("retain accuracy (fraction of facts)")
    for ax in axes[0]:
        ax.set_xlabel("unlearning step")
        ax.set_ylim(-0.04, 1.04)
    legend_below(fig, hs, lab, ncol=3, note="One line per run; a run stops at the target or its step cap.")
    fig.suptitle(f"Unlearning curves{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
