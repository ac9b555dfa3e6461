"""RELIABILITY.md appendix, API sections: every row refused with a ValueError / ConfigError
naming the value (before any work), or accepted because it is valid.  Rows whose fix belongs to
another engineer are strict xfails naming the defect (they flip to failures once it is fixed)."""

import copy
import re

import pytest
import torch

from ._api_cases import SECTIONS
from ._fixtures import damaged_checkpoint

ROWS = [pytest.param(*r[:3], id=r[0], marks=[r[3]] if r[3] is not None else [])
        for rows in SECTIONS.values() for r in rows]


class WorkStarted(AssertionError):
    pass


@pytest.fixture(scope="module")
def shared(bench, pretrained):
    from tests.landscape.conftest import MLP, mlp_batches, mlp_loss

    from optigrade.landscape import Probe

    P = Probe(MLP(), mlp_batches(), mlp_loss)
    return {"P": P, "theta": P.flat_params().detach().clone(), "mlp_batches": mlp_batches(),
            "mlp_loss": mlp_loss, "bench": bench, "pretrained": pretrained[0]}


@pytest.fixture
def ctx(shared, tmp_path, monkeypatch):
    from optigrade.unlearning import tiny_llama
    from optigrade.unlearning.loop import UnlearnResult
    import optigrade.unlearning.run as run_mod

    def no_work(*a, **k):
        raise WorkStarted("work started before the config was refused")

    monkeypatch.setattr(run_mod, "build_model", no_work)
    monkeypatch.setattr(run_mod, "unlearn", no_work)
    bench = shared["bench"]
    c = dict(shared)
    c.update(tmp=tmp_path, tiny=copy.deepcopy(shared["pretrained"]),
             net=torch.nn.Sequential(torch.nn.Linear(128, 8)),
             ckpt=lambda kind: damaged_checkpoint(kind, tmp_path / f"ckpt-{kind}", bench))
    import pandas as pd
    model = tiny_llama(len(bench.tokenizer), seed=0, tokenizer=bench.tokenizer)
    c["result"] = UnlearnResult(model, pd.DataFrame({"step": [1]}), steps=1, stop_reason="budget",
                                tokenizer=bench.tokenizer)
    return c


@pytest.mark.parametrize("case,call,match", ROWS)
def test_api_case(case, call, match, ctx):
    from optigrade._validate import ConfigError

    cost = ctx["P"].cost()
    if match is None:   # valid input: accepted
        call(ctx)
        return
    with pytest.raises((ValueError, ConfigError, TypeError, FileExistsError)) as err:
        call(ctx)
    if isinstance(err.value, TypeError):   # only an unknown keyword may surface as TypeError
        assert "unexpected keyword argument" in str(err.value), err.value
    assert re.search(match, str(err.value)), f"{case}: {err.value}"
    assert ctx["P"].cost() == cost  # refused before any loss / gradient / HVP pass on the shared Probe
