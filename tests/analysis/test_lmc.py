"""Linear-mode-connectivity barriers between a study's checkpoints (optigrade.analysis.lmc,
`optigrade lmc`): each barrier equals the formula evaluated directly on the rebuilt endpoints;
θ₀ is an endpoint; interrupted work is kept and resumed; bad input refused before any work;
the figure draws the matrix from lmc.parquet."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis import lmc
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.deltas import load_delta
from optigrade.analysis.geometry import probe_batch
from optigrade.analysis.study import run_study

from .conftest import small_study_dict


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_bench, small_model):
    """Three optimizers × two seeds, no attacks or geometry: six saved Δs."""
    out = tmp_path_factory.mktemp("lmc") / "study"
    cfg = StudyConfig.from_dict(small_study_dict(
        optimizers=[{"name": "adam", "lr": 3e-3, "steps": 3}, {"name": "sgd", "lr": 0.5, "steps": 3},
                    {"name": "zo-sgd", "lr": 1e-2, "steps": 3}],
        seeds=[0, 1], attacks=[], geometry={"enabled": False}, diagnostics={"enabled": False}, reference=False))
    run_study(cfg, out, progress=False, base=small_model, benchmark=small_bench)
    return out


def _loss(model, bench, data, n):
    from optigrade import landscape as ls

    return ls.Probe(model, [probe_batch(bench, data, n)]).loss()


def test_barriers_equal_the_formula_on_the_rebuilt_endpoints(study, tmp_path, small_bench, small_model):
    d = tmp_path / "s"
    shutil.copytree(study, d)
    df = lmc.lmc_barriers(d, data="forget,retain", examples=6, points=5, progress=False, base=small_model,
                          benchmark=small_bench)
    # per (data, seed): θ₀ + 3 runs → 6 pairs
    assert len(df) == 2 * 2 * 6 and set(df["data"]) == {"forget", "retain"}
    assert set(df["endpoint_a"]) | set(df["endpoint_b"]) == {"original", "adam", "sgd", "zo-sgd"}
    on_disk = pd.read_parquet(d / lmc.LMC_FILE)
    pd.testing.assert_frame_equal(on_disk.drop(columns="seconds"), df.drop(columns="seconds"))
    row = df[(df.data == "retain") & (df.endpoint_a == "adam") & (df.endpoint_b == "zo-sgd") & (df.seed == 1)].iloc[0]
    ta = load_delta(d / "runs" / f"{row.run_a}.delta.safetensors").apply(small_model)
    tb = load_delta(d / "runs" / f"{row.run_b}.delta.safetensors").apply(small_model)
    pa = dict(ta.named_parameters())
    pb = dict(tb.named_parameters())
    losses = []
    for a in np.linspace(0.0, 1.0, 5):
        m = ta.__class__(ta.config)
        m.load_state_dict({n: (1 - a) * pa[n].detach() + a * pb[n].detach() if n in pa else t
                           for n, t in ta.state_dict().items()})
        losses.append(_loss(m, small_bench, "retain", 6))
    losses = np.array(losses)
    chord = (1 - np.linspace(0, 1, 5)) * losses[0] + np.linspace(0, 1, 5) * losses[-1]
    assert row.value == pytest.approx(float(np.max(losses - chord)), abs=1e-5)
    assert json.loads(row.losses) == pytest.approx(losses.tolist(), abs=1e-5)
    # θ₀ → θ_u: the first end is the base's own loss
    o = df[(df.data == "forget") & (df.endpoint_a == "original") & (df.endpoint_b == "sgd") & (df.seed == 0)].iloc[0]
    assert o.loss_a == pytest.approx(_loss(small_model, small_bench, "forget", 6), abs=1e-6)
    assert (df["value"] >= 0).all()  # the gap at the ends is 0, so the maximum is never negative


def test_resume_keeps_finished_pairs_and_refuses_other_settings(study, tmp_path, small_bench, small_model):
    d = tmp_path / "s"
    shutil.copytree(study, d)
    kw = dict(examples=4, points=3, progress=False, base=small_model, benchmark=small_bench)
    full = lmc.lmc_barriers(d, **kw)
    part = full.iloc[:4]
    from optigrade._files import atomic_write_parquet

    atomic_write_parquet(part, d / lmc.LMC_FILE)  # as if killed after four pairs
    with pytest.raises(ConfigError, match="exists; pass resume"):
        lmc.lmc_barriers(d, **kw)
    with pytest.raises(ConfigError, match="points=3"):
        lmc.lmc_barriers(d, resume=True, **{**kw, "points": 5})
    done = lmc.lmc_barriers(d, resume=True, **kw)
    pd.testing.assert_frame_equal(done.iloc[:4], part)  # kept as they were
    cols = ["data", "run_a", "run_b", "value"]
    pd.testing.assert_frame_equal(done[cols].sort_values(cols[:3]).reset_index(drop=True),
                                  full[cols].sort_values(cols[:3]).reset_index(drop=True), atol=1e-12)


def test_bad_input_refused_before_any_work(study, tmp_path, small_bench, small_model, monkeypatch):
    from optigrade.analysis import study as study_mod

    def fail(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(study_mod, "prepare", fail)
    with pytest.raises(ConfigError, match="not a study directory"):
        lmc.lmc_barriers(tmp_path)
    with pytest.raises(ConfigError, match="points must be"):
        lmc.lmc_barriers(study, points=2)
    with pytest.raises(ConfigError, match="objectives"):
        lmc.lmc_barriers(study, objectives=["npo"])


def test_cli_and_figure(study, tmp_path, small_bench, small_model, capsys):
    from optigrade.cli import main
    from optigrade.figures.barrier import barriers

    d = tmp_path / "s"
    shutil.copytree(study, d)
    lmc.lmc_barriers(d, examples=4, points=3, progress=False, base=small_model, benchmark=small_bench)
    assert main(["lmc", str(d), "--points", "2"]) == 2
    assert "points must be" in capsys.readouterr().err
    from optigrade.figures import write_all

    status = dict(write_all(d, tmp_path / "fig"))
    assert status["barrier"] == "written" and (tmp_path / "fig" / "barrier.png").stat().st_size > 0
    from optigrade.figures.driver import load_tables

    t = load_tables(d)
    fig = barriers(pd.concat([t["results"], t["lmc"]], ignore_index=True))
    ax = fig.axes[0]
    shown = {x.get_text() for x in ax.texts}
    means = t["lmc"].groupby(["endpoint_a", "endpoint_b"])["value"].mean()
    assert {f"{v:.2g}" for v in means} <= shown  # every pair's mean over seeds is printed in its cell
    assert ax.get_xlabel() and ax.get_ylabel() and "forget" in ax.get_title()


def test_checkpoint_plane(study, tmp_path, small_bench, small_model):
    from optigrade.analysis.deltas import load_delta

    d = tmp_path / "s"
    shutil.copytree(study, d)
    df = lmc.checkpoint_plane(d, ("adam", "sgd"), data="retain", examples=6, points=5, margin=0.0, seed=1,
                              progress=False, base=small_model, benchmark=small_bench)
    grid = df[df.quantity == "geo_slice_2d"]
    pts = df[df.quantity == "plane_point"].set_index("label")
    assert len(grid) == 25 and set(df["seed"]) == {1} and (d / lmc.PLANE_FILE).exists()
    x2, y2 = pts.loc["sgd", "a"], pts.loc["sgd", "b"]
    # θ_b − θ₀ = x2·d1 + y2·d2 with ‖d2‖ = ‖d1‖, d2 ⟂ d1: its norm and its projection on d1
    ta = load_delta(d / "runs" / f"{df.run_a.iloc[0]}.delta.safetensors").delta(small_model, torch.float64)
    tb = load_delta(d / "runs" / f"{df.run_b.iloc[0]}.delta.safetensors").delta(small_model, torch.float64)
    names = sorted(set(ta) | set(tb))
    va = torch.cat([ta[n].reshape(-1) if n in ta else torch.zeros(dict(small_model.named_parameters())[n].numel(),
                                                                  dtype=torch.float64) for n in names])
    vb = torch.cat([tb[n].reshape(-1) if n in tb else torch.zeros(dict(small_model.named_parameters())[n].numel(),
                                                                  dtype=torch.float64) for n in names])
    assert x2 == pytest.approx(float(vb @ va / (va @ va)), rel=1e-6)
    assert (x2 ** 2 + y2 ** 2) * float(va @ va) == pytest.approx(float(vb @ vb), rel=1e-6)
    # with margin 0 and θ_b's projection inside [0, 1], the grid's corners are θ₀ and θ_a
    if 0.0 <= x2 <= 1.0:
        at = grid.set_index(["a", "b"])["value"]
        assert at[(0.0, 0.0)] == pytest.approx(_loss(small_model, small_bench, "retain", 6), abs=1e-6)
        thetaa = load_delta(d / "runs" / f"{df.run_a.iloc[0]}.delta.safetensors").apply(small_model)
        assert at[(1.0, 0.0)] == pytest.approx(_loss(thetaa, small_bench, "retain", 6), abs=1e-5)
    with pytest.raises(ConfigError, match="endpoint 'lion'"):
        lmc.checkpoint_plane(d, ("adam", "lion"), base=small_model, benchmark=small_bench)


def test_barrier_matrix_names_unmatched_endpoints():
    from optigrade.figures.barrier import barriers

    runs = pd.DataFrame({"run_id": ["a", "b"], "optimizer": ["adam", "zo-sgd"], "objective": ["npo"] * 2,
                         "grade": [1.0, 0.0], "family": ["first-order", "zeroth-order"], "matched": [True, False],
                         "quantity": ["forget_acc"] * 2, "data": ["all"] * 2, "value": [0.1, 0.1], "seed": [0, 0]})
    pw = pd.DataFrame({"quantity": ["geo_lmc_barrier"] * 3, "endpoint_a": ["original", "original", "adam"],
                       "endpoint_b": ["adam", "zo-sgd", "zo-sgd"], "value": [0.0, 0.5, 1.5], "data": ["forget"] * 3,
                       "objective": ["npo"] * 3, "seed": [0, 0, 0]})
    ax = barriers(pd.concat([runs, pw], ignore_index=True)).axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert any("(not matched)" in t for t in ticks) and sum("(not matched)" in t for t in ticks) == 1
    assert {"0", "0.5", "1.5"} <= {t.get_text() for t in ax.texts}
