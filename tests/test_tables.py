"""optigrade._tables: the one tidy row schema, rows_to_frame, validate_frame, the Result mixin."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from optigrade._tables import (COST_COLUMNS, HEAD_COLUMNS, LEGACY_COLUMNS, SCHEMA,
                               UNCERTAINTY_KINDS, Result, rename_legacy, rows_to_frame,
                               validate_frame)


@dataclasses.dataclass(frozen=True)
class _Cost:
    loss: int = 0
    grad: int = 0
    hvp: int = 0


def test_schema_documents_every_column_once_in_order():
    assert list(SCHEMA)[:9] == HEAD_COLUMNS
    assert list(SCHEMA)[-3:] == COST_COLUMNS
    assert all(isinstance(v, str) and v for v in SCHEMA.values())


def test_rows_to_frame_orders_columns_and_fills_defaults():
    rows = [dict(quantity="loss", value=1.0, alpha=-1.0, index=0, unit="loss"),
            dict(quantity="loss", value=0.5, alpha=0.0, index=1, unit="loss"),
            dict(quantity="barrier", value=0.1)]
    df = rows_to_frame(rows, dict(seed=3, span=(-1, 1)), _Cost(5, 0, 1), run_id="r", data="forget")
    assert list(df.columns) == HEAD_COLUMNS + ["alpha", "setting_seed", "setting_span"] + COST_COLUMNS
    assert df.run_id.tolist() == ["r"] * 3 and df.subject.tolist() == [""] * 3
    assert df.data.tolist() == ["forget"] * 3
    assert df.index.tolist() == [0, 1, 2] and df["index"].tolist() == [0, 1, 0]
    assert math.isnan(df.uncertainty[2]) and df.uncertainty_kind[2] == "" and df.unit[2] == ""
    assert df.setting_span[0] == "(-1, 1)"  # non-scalars written as str
    assert df.cost_loss.tolist() == [5] * 3 and df.cost_hvp.tolist() == [1] * 3
    assert validate_frame(df) is df


def test_row_values_win_over_context():
    df = rows_to_frame([dict(quantity="acc", value=1.0, data="retain"),
                        dict(quantity="acc", value=0.5)], data="forget", subject="attacked:rtn-4bit")
    assert df.data.tolist() == ["retain", "forget"]
    assert set(df.subject) == {"attacked:rtn-4bit"}


@pytest.mark.parametrize("cost,expect", [(None, [np.nan] * 3), (dict(loss=2, hvp=4), [2, np.nan, 4]),
                                         (_Cost(1, 2, 3), [1, 2, 3])])
def test_cost_forms(cost, expect):
    df = rows_to_frame([dict(quantity="q", value=0.0)], cost=cost)
    np.testing.assert_array_equal(df[COST_COLUMNS].to_numpy(dtype=float)[0], np.array(expect, float))


def test_empty_rows_give_the_schema_columns():
    df = rows_to_frame([])
    assert list(df.columns) == HEAD_COLUMNS + COST_COLUMNS and len(df) == 0


BAD = [
    ("context key", lambda: rows_to_frame([dict(quantity="q", value=1)], metric="x"), "unknown context columns"),
    ("subject", lambda: rows_to_frame([dict(quantity="q", value=1)], subject="attacked"), "subject must be one of"),
    ("row lacks value", lambda: rows_to_frame([dict(quantity="q")]), "lacks \\['value'\\]"),
    ("missing columns", lambda: validate_frame(pd.DataFrame({"quantity": ["q"], "value": [1.0]})),
     "lacks schema columns \\['run_id', 'subject', 'data', 'index'"),
    ("order", lambda: validate_frame(rows_to_frame([dict(quantity="q", value=1)]).iloc[:, ::-1]),
     "out of schema order"),
    ("old key std_error", lambda: rows_to_frame([dict(quantity="q", value=1, std_error=0.1)]),
     r"old column name\(s\) \['std_error'\]; they were renamed to \['uncertainty'\]"),
    ("old key std_error_kind", lambda: rows_to_frame([dict(quantity="q", value=1, std_error_kind="sem")]),
     r"renamed to \['uncertainty_kind'\]"),
    ("old frame", lambda: validate_frame(rows_to_frame([dict(quantity="q", value=1)])
                                         .rename(columns={"uncertainty": "std_error"})),
     "renamed to \\['uncertainty'\\].*rename_legacy"),
    ("legacy both", lambda: rename_legacy(pd.DataFrame({"std_error": [1.0], "uncertainty": [1.0]})),
     "has both"),
]


@pytest.mark.parametrize("name,call,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_refused(name, call, match):
    with pytest.raises(ValueError, match=match):
        call()


@dataclasses.dataclass(frozen=True, repr=False)
class Big(Result):
    vector: np.ndarray
    matrix: object
    settings: dict
    cost: _Cost
    note: str = "x" * 200

    def _rows(self):
        return [dict(quantity="norm", value=float(np.linalg.norm(self.vector)))]


def test_result_repr_is_compact_and_frame_conforms():
    import torch
    r = Big(np.arange(430_000.0), torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(30)]),
            {f"k{i}": i for i in range(10)}, _Cost(1, 0, 0))
    text = repr(r)
    assert len(text) < 400 and "\n" not in text
    assert "array(430000,)[0 … 4.3e+05]" in text and "<Sequential>" in text and "+4 more" in text
    df = r.to_frame(run_id="r1", subject="original", data="weights")
    validate_frame(df)
    assert df.setting_k9[0] == 9 and df.cost_loss[0] == 1
    html = r._repr_html_()
    assert html.startswith("<b>Big</b>") and "<table" in html and "setting_k0" in html


def test_uncertainty_kinds_are_documented():
    assert list(UNCERTAINTY_KINDS) == ["", "sem", "residual", "bootstrap ci95 half-width",
                                       "ci95 half-width (t)"]
    assert "NOT a standard error" in UNCERTAINTY_KINDS["residual"]
    import optigrade._tables as t
    for kind in UNCERTAINTY_KINDS:
        assert f'"{kind}"' in t.__doc__  # the module docstring's table names every kind


def test_rename_legacy_reads_an_old_table_back_into_the_schema():
    new = rows_to_frame([dict(quantity="eigenvalue_LA", value=4.0, uncertainty=1e-9,
                              uncertainty_kind="residual")], run_id="r")
    old = new.rename(columns={v: k for k, v in LEGACY_COLUMNS.items()})
    assert "std_error" in old.columns and "uncertainty" not in old.columns
    back = validate_frame(rename_legacy(old))
    pd.testing.assert_frame_equal(back, new)
    assert "std_error" in old.columns  # a copy: the old frame is left as it was
    pd.testing.assert_frame_equal(rename_legacy(new), new)  # a current frame is unchanged
