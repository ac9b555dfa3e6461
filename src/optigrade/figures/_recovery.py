"""Per-run recovery and per-run predictors from a study's results (private).

recovery(r, a) = forget_acc(attacked:a, D) − forget_acc(unlearned, attack "none", D), D the
attacked row's split ("all"; "forget-half-B" for relearn-half), as in
:mod:`optigrade.analysis.explain` (positive: knowledge came back).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

__all__ = ["recovery", "per_run"]

_RUN = ["run_id", "optimizer", "seed", "grade", "family", "matched", "objective"]


def recovery(results: pd.DataFrame, response: str = "forget_acc") -> pd.DataFrame:
    """One row per (run, attack): run columns, ``attack``, ``data``, ``before``, ``after``,
    ``recovery``.  Empty when no attacked rows exist."""
    r = results[(results["quantity"] == response) & (results["optimizer"] != "original")]
    if "index" in r:
        r = r[r["index"] == 0]
    sub = r["subject"].astype(str) if "subject" in r else pd.Series("", index=r.index)
    att = r[sub.str.startswith("attacked:") & r["data"].isin(["all", "forget-half-B"])]
    unl = r[(r["attack"] == "none")].set_index(["run_id", "data"])["value"]
    unl = unl[~unl.index.duplicated()]
    cols = [c for c in _RUN if c in att]
    out = att[cols + ["attack", "data", "value"]].rename(columns={"value": "after"}).copy()
    out["before"] = [unl.get((a, d), np.nan) for a, d in zip(out["run_id"], out["data"])]
    out["recovery"] = out["after"] - out["before"]
    return out.dropna(subset=["recovery"]).reset_index(drop=True)


def per_run(results: pd.DataFrame, quantity: str, data: str, attack: Optional[str] = "none",
            **coords) -> pd.Series:
    """``{run_id: value}`` of one unlearned-checkpoint quantity (index 0; ``coords`` select
    coordinate columns, a NaN value selecting NaN)."""
    r = results[(results["quantity"] == quantity) & (results["data"] == data)]
    if attack is not None and "attack" in r:
        r = r[r["attack"] == attack]
    if "subject" in r:
        r = r[r["subject"] == "unlearned"]
    if "index" in r:
        r = r[r["index"] == 0]
    for c, v in coords.items():
        if c not in r:
            if v is None or v != v:
                continue
            return pd.Series(dtype=float)
        r = r[r[c].isna()] if v is None or (isinstance(v, float) and v != v) else r[r[c] == v]
    s = r.set_index("run_id")["value"]
    return s[~s.index.duplicated()]
