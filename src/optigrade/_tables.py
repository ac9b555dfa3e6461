"""The one tidy row schema of optigrade (private floor module).

Every measurement (a landscape quantity, an attack outcome, a diagnostic, a study metric) is
one row of a long table with the columns of :data:`SCHEMA`, in this order:

==================  ==========================================================================
column              meaning
==================  ==========================================================================
run_id              which run (study job) the row belongs to; "" outside a study
subject             which weights were measured: "original", "unlearned",
                    "attacked:<label>" (e.g. "attacked:rtn-4bit"), or "" when not said
data                the data split the quantity was measured on: "forget", "retain",
                    "general", "forget-half-B", ..., "weights" (no data: a norm of the
                    weights), "all", or ""
quantity            what was measured ("hessian_trace", "eigenvalue_LA", "forget_acc", ...)
index               position within a vector-valued quantity (eigenvalue i, grid point i); 0
value               the number
std_error           its uncertainty (NaN when none)
std_error_kind      what std_error is: "" (none), "sem" (standard error of a mean),
                    "bootstrap", "residual" (‖Hy − λy‖, bounds an eigenvalue's error), ...
unit                "loss", "loss/param^2", "probability", "l2 weight norm", ... or ""
<coordinates>       optional per-row columns that place a row (alpha, a, b, block, ...)
setting_<name>      one column per setting that produced the row, repeated on every row
cost_loss           loss passes spent (one pass = all of the measured batches); NaN unknown
cost_grad           gradient passes spent
cost_hvp            Hessian-vector-product passes spent
==================  ==========================================================================

>>> df = rows_to_frame([dict(quantity="hessian_trace", value=12.5, std_error=0.3,
...                          std_error_kind="sem", unit="loss/param^2")],
...                    settings=dict(n=30, seed=0), cost=dict(loss=0, grad=0, hvp=30),
...                    run_id="r1", subject="unlearned", data="forget")
>>> list(df.columns) == list(SCHEMA)[:9] + ["setting_n", "setting_seed"] + COST_COLUMNS
True
>>> df[["subject", "data", "quantity", "value", "cost_hvp"]].to_dict("records")
[{'subject': 'unlearned', 'data': 'forget', 'quantity': 'hessian_trace', 'value': 12.5, 'cost_hvp': 30}]
>>> validate_frame(df.drop(columns=["unit"]))
Traceback (most recent call last):
...
ValueError: the frame lacks schema columns ['unit']; build it with optigrade._tables.rows_to_frame
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["SCHEMA", "HEAD_COLUMNS", "COST_COLUMNS", "SETTING_PREFIX", "CONTEXT",
           "rows_to_frame", "validate_frame", "Result"]

#: Ordered column → one-line meaning (``setting_<name>`` and ``<coordinates>`` stand for
#: families of columns).
SCHEMA: dict[str, str] = {
    "run_id": "which run (study job) the row belongs to; '' outside a study",
    "subject": "weights measured: 'original' | 'unlearned' | 'attacked:<label>' | ''",
    "data": "data split measured on: forget | retain | general | forget-half-B | weights | all | ''",
    "quantity": "what was measured",
    "index": "position within a vector-valued quantity (0 for scalars)",
    "value": "the number",
    "std_error": "its uncertainty (NaN when none)",
    "std_error_kind": "'' | 'sem' | 'bootstrap' | 'residual' | ...",
    "unit": "unit of value ('' when dimensionless or unknown)",
    "<coordinates>": "optional per-row columns placing the row (alpha, a, b, block, ...)",
    "setting_<name>": "a setting that produced the row, repeated on every row",
    "cost_loss": "loss passes spent (NaN when unknown)",
    "cost_grad": "gradient passes spent (NaN when unknown)",
    "cost_hvp": "Hessian-vector-product passes spent (NaN when unknown)",
}

HEAD_COLUMNS = ["run_id", "subject", "data", "quantity", "index", "value", "std_error",
                "std_error_kind", "unit"]
COST_COLUMNS = ["cost_loss", "cost_grad", "cost_hvp"]
SETTING_PREFIX = "setting_"
#: The columns ``rows_to_frame(..., **context)`` may fill for every row.
CONTEXT = ("run_id", "subject", "data")

_DEFAULTS = {"run_id": "", "subject": "", "data": "", "index": 0, "std_error": float("nan"),
             "std_error_kind": "", "unit": ""}
_SUBJECTS = ("original", "unlearned", "attacked:<label>", "")


def _check_subject(value) -> None:
    if not (value in ("original", "unlearned", "") or
            (isinstance(value, str) and value.startswith("attacked:") and len(value) > 9)):
        raise ValueError(f"subject must be one of {list(_SUBJECTS)}, got {value!r}; the weights "
                         f"a row was measured on, try 'unlearned' or 'attacked:rtn-4bit'")


def _scalar(v):
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)


def _cost_columns(cost) -> dict:
    if cost is None:
        return dict.fromkeys(COST_COLUMNS, float("nan"))
    if isinstance(cost, Mapping):
        return {f"cost_{k}": cost.get(k, float("nan")) for k in ("loss", "grad", "hvp")}
    return {f"cost_{k}": getattr(cost, k) for k in ("loss", "grad", "hvp")}


def order_columns(columns: Iterable[str]) -> list[str]:
    """Schema order: head columns, coordinates (first-seen order), settings, costs."""
    columns = list(columns)
    rest = [c for c in columns if c not in HEAD_COLUMNS and c not in COST_COLUMNS]
    coords = [c for c in rest if not c.startswith(SETTING_PREFIX)]
    settings = [c for c in rest if c.startswith(SETTING_PREFIX)]
    return ([c for c in HEAD_COLUMNS if c in columns] + coords + settings
            + [c for c in COST_COLUMNS if c in columns])


def rows_to_frame(rows: Iterable[Mapping], settings: Mapping | None = None, cost=None,
                  **context) -> pd.DataFrame:
    """Tidy table in :data:`SCHEMA` order from row dicts.

    Args:
        rows: dicts with at least ``quantity`` and ``value``; any of the other head columns
            (missing ones get their defaults: "" / 0 / NaN) and coordinate columns.
        settings: ``{name: value}`` repeated on every row as ``setting_<name>`` (values that
            are not int / float / str / bool / None are written as ``str``).
        cost: an object with ``loss, grad, hvp`` attributes (a ``landscape.Cost``), a mapping
            with those keys, or None (NaN: unknown).
        **context: ``run_id``, ``subject``, ``data`` for every row that does not set its own.

    Raises:
        ValueError: a row without ``quantity`` or ``value``, a context key outside
            ``run_id, subject, data``, a subject outside the vocabulary.
    """
    bad = sorted(set(context) - set(CONTEXT))
    if bad:
        raise ValueError(f"unknown context columns {bad}; rows_to_frame fills only {list(CONTEXT)} "
                         f"for every row (put other settings in settings=...)")
    if "subject" in context:
        _check_subject(context["subject"])
    fixed = {**_DEFAULTS, **context}
    extra = {f"{SETTING_PREFIX}{k}": _scalar(v) for k, v in (settings or {}).items()}
    extra.update(_cost_columns(cost))
    out = []
    for r in rows:
        missing = [c for c in ("quantity", "value") if c not in r]
        if missing:
            raise ValueError(f"row {dict(r)!r} lacks {missing}; every row needs a quantity and a value")
        out.append({**fixed, **r, **extra})
    df = pd.DataFrame(out, columns=None if out else HEAD_COLUMNS + COST_COLUMNS)
    return df[order_columns(df.columns)]


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against :data:`SCHEMA` and return it unchanged.

    Raises:
        ValueError: schema columns missing (named), columns out of schema order, or a subject
            outside the vocabulary.
    """
    missing = [c for c in HEAD_COLUMNS + COST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"the frame lacks schema columns {missing}; build it with "
                         f"optigrade._tables.rows_to_frame")
    if list(df.columns) != order_columns(df.columns):
        raise ValueError(f"columns out of schema order: {list(df.columns)}; expected "
                         f"{order_columns(df.columns)} (head, coordinates, setting_*, cost_*)")
    for s in pd.unique(df["subject"]):
        _check_subject(s)
    return df


# ------------------------------------------------------------------------------ Result base
def _short(v, width: int = 60) -> str:
    """A one-line summary of a value: scalars as is, arrays by shape (small ones in full)."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        return repr(bool(v) if isinstance(v, np.bool_) else v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    if isinstance(v, str):
        return repr(v if len(v) <= width else v[:width - 3] + "...")
    if isinstance(v, pd.DataFrame):
        return f"<DataFrame {v.shape[0]}×{v.shape[1]}>"
    if hasattr(v, "shape") and hasattr(v, "dtype"):  # numpy array or torch tensor
        a = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
        if a.ndim == 1 and a.size <= 6:
            return "[" + ", ".join(_short(x.item()) for x in a) + "]"
        if a.size and np.issubdtype(a.dtype, np.number):
            return f"array{tuple(a.shape)}[{np.nanmin(a):.4g} … {np.nanmax(a):.4g}]"
        return f"array{tuple(a.shape)}"
    if isinstance(v, Mapping):
        items = [f"{k}={_short(x, 24)}" for k, x in list(v.items())[:6]]
        more = f", +{len(v) - 6} more" if len(v) > 6 else ""
        return "{" + ", ".join(items) + more + "}"
    if dataclasses.is_dataclass(v) and len(repr(v)) <= width:
        return repr(v)
    return f"<{type(v).__name__}>"


class Result:
    """Mixin for frozen result dataclasses: ``to_frame``, a compact repr, Jupyter HTML.

    A subclass implements ``_rows() -> list[dict]`` (head and coordinate columns) and has
    ``settings`` and ``cost`` attributes (or overrides ``_settings()``); declare it with
    ``@dataclass(frozen=True, repr=False)`` so the compact ``__repr__`` below is kept.

    >>> @dataclasses.dataclass(frozen=True, repr=False)
    ... class Mean(Result):
    ...     samples: np.ndarray
    ...     settings: dict
    ...     cost: object = None
    ...     def _rows(self):
    ...         se = self.samples.std(ddof=1) / math.sqrt(len(self.samples))
    ...         return [dict(quantity="mean", value=float(self.samples.mean()),
    ...                      std_error=float(se), std_error_kind="sem")]
    >>> r = Mean(np.arange(1000.0), dict(n=1000))
    >>> r
    Mean(samples=array(1000,)[0 … 999], settings={n=1000}, cost=None)
    >>> r.to_frame(subject="original")[["subject", "quantity", "value", "setting_n"]]
        subject quantity  value  setting_n
    0  original     mean  499.5       1000
    >>> "<table" in r._repr_html_()
    True
    """

    def _rows(self) -> list[dict]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError(f"{type(self).__name__} must define _rows()")

    def _settings(self) -> Mapping | None:
        return getattr(self, "settings", None)

    def to_frame(self, **context) -> pd.DataFrame:
        """The result as tidy rows (:data:`SCHEMA`); ``context``: run_id, subject, data."""
        return rows_to_frame(self._rows(), self._settings(), getattr(self, "cost", None),
                             **context)

    def __repr__(self) -> str:
        if not dataclasses.is_dataclass(self):  # pragma: no cover - misuse
            return object.__repr__(self)
        parts = [f"{f.name}={_short(getattr(self, f.name))}" for f in dataclasses.fields(self)
                 if f.repr]
        return f"{type(self).__name__}({', '.join(parts)})"

    def _repr_html_(self) -> str:
        return f"<b>{type(self).__name__}</b>" + self.to_frame()._repr_html_()
