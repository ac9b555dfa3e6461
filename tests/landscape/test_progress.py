"""Probe.progress: one tick per counted pass, ETA with a total, silence when disabled;
quiet_transformers restores transformers' progress-bar setting."""

import re

import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape._examples import least_squares
from optigrade.landscape._progress import TickingCounts, quiet_transformers


def passes(cost):
    return cost.loss + cost.grad + cost.hvp


def run_some(probe):
    """2 losses, 1 gradient, 2 double-backward HVPs, 1 finite-difference HVP: 6 passes."""
    v = torch.ones(probe.numel, dtype=torch.float64)
    probe.loss(), probe.loss(), probe.grad(), probe.hvp(v), probe.hvp(v), probe.hvp(v, mode="fd")


def test_ticks_equal_counted_passes_with_eta(capsys):
    probe, _ = least_squares()
    start = probe.cost()
    with probe.progress(6, "probe passes") as bar:
        run_some(probe)
    err = capsys.readouterr().err
    assert bar.n == passes(probe.cost() - start) == 6
    assert "probe passes" in err and "6/6" in err and "<00:00" in err  # elapsed<remaining (ETA)
    assert type(probe._spent) is dict and probe.cost() - start == ls.Cost(loss=2, grad=1, hvp=3)


def test_unknown_total_and_a_solver_inside(capsys):
    probe, _ = least_squares()
    with probe.progress(None, "lanczos") as bar:
        r = ls.top_eigenvalues(probe, 2, tol=1e-10)
    err = capsys.readouterr().err
    assert bar.n == r.cost.hvp > 0
    assert re.search(rf"{r.cost.hvp}pass", err.replace(" ", ""))


def test_disabled_prints_nothing(capsys):
    probe, _ = least_squares()
    start = probe.cost()
    with probe.progress(6, "quiet", enabled=False):
        run_some(probe)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert passes(probe.cost() - start) == 6 and type(probe._spent) is dict


def test_nested_bars_reset_and_exceptions(capsys):
    probe, _ = least_squares()
    with pytest.raises(RuntimeError, match="boom"):
        with probe.progress(None, "outer") as outer:
            probe.loss()
            with probe.progress(2, "inner") as inner:
                probe.loss(), probe.grad()
            probe.reset_counters()
            assert probe.cost() == ls.Cost()
            probe.grad()
            raise RuntimeError("boom")
    capsys.readouterr()
    assert (outer.n, inner.n) == (4, 2)
    assert type(probe._spent) is dict and probe.cost() == ls.Cost(grad=1)


def test_fd_hvp_ticks_once():
    seen = []
    c = TickingCounts({"loss": 0, "grad": 0, "hvp": 0}, [seen.append])
    c["hvp"] += 1
    c["grad"] -= 2
    c["grad"] += 1
    c["grad"] += 1
    assert seen == [1] and dict(c) == {"loss": 0, "grad": 0, "hvp": 1}


@pytest.mark.parametrize("total", [-1, 2.5, True, "3"])
def test_bad_total(total):
    probe, _ = least_squares()
    with pytest.raises(ValueError, match="total must be None"):
        with probe.progress(total, "x"):
            pass
    assert type(probe._spent) is dict


def test_quiet_transformers_restores_setting():
    from transformers.utils import logging
    logging.enable_progress_bar()
    with pytest.raises(KeyError):
        with quiet_transformers():
            assert not logging.is_progress_bar_enabled()
            raise KeyError("x")
    assert logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        with quiet_transformers():
            pass
        assert not logging.is_progress_bar_enabled()  # was off before: stays off
    finally:
        logging.enable_progress_bar()
