"""Every registered optimizer (GRU-wrapped ones included) runs through the unlearn loop's
closure contract and moves the weights, without the loop knowing its grade."""

import pytest
import torch

from optigrade import optimizers
from optigrade.unlearning import NPO, GradDiff, unlearn

NAMES = [i.name for i in optimizers.available(gru=True)]


@pytest.mark.parametrize("name", NAMES)
def test_loop_drives_every_optimizer(name, bench, tiny_model):
    before = [p.detach().clone() for p in tiny_model.parameters()]
    opt = optimizers.make(name, tiny_model.parameters(), lr=1e-4)
    res = unlearn(tiny_model, NPO() if "gru" in name else GradDiff(), opt, bench, steps=2, eval_every=2,
                  batch_size=4, final_eval=False, progress=False)
    assert res.steps == 2 and res.stop_reason == "budget"
    assert torch.isfinite(torch.tensor(res.log["loss"].to_numpy())).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters())), name
    if opt.grade == 0:
        assert res.log["n_grad"].sum() == 0  # zeroth-order: loss values only
