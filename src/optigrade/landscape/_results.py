"""Shared pieces of the small frozen result objects every landscape function returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from .probe import Cost


def rows_to_frame(rows: list[dict], settings: dict, cost: Cost | None) -> pd.DataFrame:
    """Tidy table: one row per quantity, settings and cost repeated as columns.

    Columns: ``quantity, index, value, std_error, unit`` (+ any extras the rows carry), then
    ``setting_<name>`` for each setting and ``cost_loss, cost_grad, cost_hvp``.
    """
    base = {"index": 0, "std_error": float("nan"), "unit": ""}
    out = []
    for r in rows:
        row = {**base, **r}
        for k, v in settings.items():
            row[f"setting_{k}"] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
        if cost is not None:
            row.update(cost_loss=cost.loss, cost_grad=cost.grad, cost_hvp=cost.hvp)
        out.append(row)
    df = pd.DataFrame(out)
    first = ["quantity", "index", "value", "std_error", "unit"]
    return df[first + [c for c in df.columns if c not in first]]


def new_figure(**kw):
    """A matplotlib Figure built without pyplot state (Agg canvas), safe in scripts and tests."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def replace(obj: Any, **changes):
    return dataclasses.replace(obj, **changes)
