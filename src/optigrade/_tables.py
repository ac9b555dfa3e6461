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
uncertainty         a number that says how far ``value`` may be off (NaN when none); what it
                    is, is said by uncertainty_kind (it is NOT always a standard error)
uncertainty_kind    what uncertainty is, one of :data:`UNCERTAINTY_KINDS` (below)
unit                "loss", "loss/param^2", "probability", "l2 weight norm", ... or ""
<coordinates>       optional per-row columns that place a row (alpha, a, b, block, ...)
setting_<name>      one column per setting that produced the row, repeated on every row
cost_loss           loss passes spent (one pass = all of the measured batches); NaN unknown
cost_grad           gradient passes spent
cost_hvp            Hessian-vector-product passes spent
==================  ==========================================================================

The kinds of ``uncertainty`` (:data:`UNCERTAINTY_KINDS`); only "sem" may be drawn as "± 1 s.e.":

============================  ================================================================
uncertainty_kind              what ``uncertainty`` is
============================  ================================================================
""                            none (uncertainty is NaN)
"sem"                         standard error of a Monte-Carlo mean: sample std / √n
"residual"                    Lanczos residual ‖Hy − λy‖₂ of a Ritz pair (λ, y), ‖y‖ = 1: a
                              bound on the distance from the Ritz value λ to the nearest
                              eigenvalue of H, NOT a standard error (it is deterministic)
"bootstrap ci95 half-width"   half the width of a 95 % bootstrap confidence interval
"ci95 half-width (t)"         half the width of a 95 % Student-t confidence interval
============================  ================================================================

Tables written before the rename have ``std_error`` / ``std_error_kind``: read them through
:func:`rename_legacy`.  A row dict or frame that still uses the old names is refused.

>>> df = rows_to_frame([dict(quantity="hessian_trace", value=12.5, uncertainty=0.3,
...                          uncertainty_kind="sem", unit="loss/param^2")],
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
>>> rows_to_frame([dict(quantity="hessian_trace", value=12.5, std_error=0.3)])
Traceback (most recent call last):
...
ValueError: row {...} uses the old column name(s) ['std_error']; they were renamed to ['uncertainty'] ...
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["SCHEMA", "HEAD_COLUMNS", "COST_COLUMNS", "SETTING_PREFIX", "CONTEXT",
           "UNCERTAINTY_KINDS", "LEGACY_COLUMNS", "rows_to_frame", "validate_frame",
           "rename_legacy", "Result"]

#: Ordered column → one-line meaning (``setting_<name>`` and ``<coordinates>`` stand for
#: families of columns).
SCHEMA: dict[str, str] = {
    "run_id": "which run (study job) the row belongs to; '' outside a study",
    "subject": "weights measured: 'original' | 'unlearned' | 'attacked:<label>' | ''",
    "data": "data split measured on: forget | retain | general | forget-half-B | forget-half-A | weights | all | ''",
    "quantity": "what was measured",
    "index": "position within a vector-valued quantity (0 for scalars)",
    "value": "the number",
    "uncertainty": "how far value may be off (NaN when none); what it is: uncertainty_kind",
    "uncertainty_kind": "'' | 'sem' | 'residual' | 'bootstrap ci95 half-width' | "
                        "'ci95 half-width (t)' (see UNCERTAINTY_KINDS)",
    "unit": "unit of value ('' when dimensionless or unknown)",
    "<coordinates>": "optional per-row columns placing the row (alpha, a, b, block, ...)",
    "setting_<name>": "a setting that produced the row, repeated on every row",
    "cost_loss": "loss passes spent (NaN when unknown)",
    "cost_grad": "gradient passes spent (NaN when unknown)",
    "cost_hvp": "Hessian-vector-product passes spent (NaN when unknown)",
}

HEAD_COLUMNS = ["run_id", "subject", "data", "quantity", "index", "value", "uncertainty",
                "uncertainty_kind", "unit"]
COST_COLUMNS = ["cost_loss", "cost_grad", "cost_hvp"]
SETTING_PREFIX = "setting_"
#: The columns ``rows_to_frame(..., **context)`` may fill for every row.
CONTEXT = ("run_id", "subject", "data")

#: uncertainty_kind → what the row's ``uncertainty`` is.
UNCERTAINTY_KINDS: dict[str, str] = {
    "": "none (uncertainty is NaN)",
    "sem": "standard error of a Monte-Carlo mean (sample std / sqrt(n))",
    "residual": "Lanczos residual ||Hy - lambda y||_2: a bound on the distance from the Ritz "
                "value to the nearest eigenvalue, NOT a standard error",
    "bootstrap ci95 half-width": "half the width of a 95% bootstrap confidence interval",
    "ci95 half-width (t)": "half the width of a 95% Student-t confidence interval",
}
#: Column names of tables written before the rename → their names now.
LEGACY_COLUMNS = {"std_error": "uncertainty", "std_error_kind": "uncertainty_kind"}

_DEFAULTS = {"run_id": "", "subject": "", "data": "", "index": 0, "uncertainty": float("nan"),
             "uncertainty_kind": "", "unit": ""}
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


def _refuse_legacy(columns, what: str) -> None:
    old = [c for c in LEGACY_COLUMNS if c in columns]
    if old:
        new = [LEGACY_COLUMNS[c] for c in old]
        raise ValueError(f"{what} uses the old column name(s) {old}; they were renamed to {new} "
                         f"(uncertainty_kind says what the number is: 'sem', 'residual', ...). "
                         f"Rename the keys, or read an old table with "
                         f"optigrade._tables.rename_legacy(df)")


def rename_legacy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the columns of tables written by earlier versions renamed
    (:data:`LEGACY_COLUMNS`: ``std_error`` → ``uncertainty``, ``std_error_kind`` →
    ``uncertainty_kind``); a frame without them is returned as a copy, unchanged.

    >>> old = pd.DataFrame({"quantity": ["eigenvalue_LA"], "value": [4.0], "std_error": [1e-9],
    ...                     "std_error_kind": ["residual"]})
    >>> list(rename_legacy(old).columns)
    ['quantity', 'value', 'uncertainty', 'uncertainty_kind']

    Raises:
        ValueError: ``df`` has both an old column and its new name (which one is right?).
    """
    both = [c for c, n in LEGACY_COLUMNS.items() if c in df.columns and n in df.columns]
    if both:
        raise ValueError(f"the frame has both {both} and {[LEGACY_COLUMNS[c] for c in both]}; "
                         f"drop one of each pair before rename_legacy")
    return df.rename(columns=LEGACY_COLUMNS)


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
        ValueError: a row without ``quantity`` or ``value``, a row with the old keys
            ``std_error`` / ``std_error_kind`` (now ``uncertainty`` / ``uncertainty_kind``),
            a context key outside ``run_id, subject, data``, a subject outside the vocabulary.
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
        _refuse_legacy(r.keys(), f"row {dict(r)!r}")
        missing = [c for c in ("quantity", "value") if c not in r]
        if missing:
            raise ValueError(f"row {dict(r)!r} lacks {missing}; every row needs a quantity and a value")
        out.append({**fixed, **r, **extra})
    df = pd.DataFrame(out, columns=None if out else HEAD_COLUMNS + COST_COLUMNS)
    return df[order_columns(df.columns)]


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against :data:`SCHEMA` and return it unchanged.

    Raises:
        ValueError: old columns ``std_error`` / ``std_error_kind`` (read old tables through
            :func:`rename_legacy`), schema columns missing (named), columns out of schema
            order, or a subject outside the vocabulary.
    """
    _refuse_legacy(df.columns, "the frame")
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
    ...                      uncertainty=float(se), uncertainty_kind="sem")]
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
