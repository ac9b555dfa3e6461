"""Batch landscape reports (optigrade.analysis.batch, `optigrade landscape`): rows equal the landscape
functions called directly; SIGKILL mid-batch then --resume gives the rows of an uninterrupted run;
a process pool and Ray give the local rows; the memory estimate against a measured peak; bad input
refused before any work."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis import batch
from optigrade.unlearning import TinyConfig, UnlearnConfig, tiny_llama
from optigrade.unlearning.run import build_benchmark, run_unlearn

from .._kill import kill_at_flag

ROOT = Path(__file__).resolve().parents[2]
CFG = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
#: columns that differ between runs of the same work (wall time, where the parts were written)
VOLATILE = ["seconds"]


def _ucfg(**kw):
    return UnlearnConfig(objective="npo", optimizer="adam", lr=1e-3, steps=3, eval_every=3, target=None,
                         benchmark_kwargs={"n_entities": 20}, batch_size=4, **kw)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A base model directory and three `optigrade unlearn` checkpoints unlearned from it."""
    root = tmp_path_factory.mktemp("batch")
    bench = build_benchmark(_ucfg())
    base = tiny_llama(len(bench.tokenizer), CFG, seed=0, tokenizer=bench.tokenizer)
    base.save_pretrained(root / "base")
    bench.tokenizer.save_pretrained(root / "base")
    paths = []
    for i, opt in enumerate(["adam", "sgd", "zo-sgd"]):
        cfg = _ucfg().model_copy(update={"model": str(root / "base"), "optimizer": opt, "seed": i,
                                         "lr": 1e-3 if opt != "sgd" else 1e-1})
        run_unlearn(cfg, root / f"ck_{opt}", progress=False)
        paths.append(str(root / f"ck_{opt}"))
    return root, paths


def _table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c not in VOLATILE]
    return df[cols].sort_values(["checkpoint", "quantity_group", "data", "quantity", "index"]
                                + (["direction"] if "direction" in df else [])).reset_index(drop=True)


def test_rows_equal_the_landscape_functions(ckpts, tmp_path):
    from optigrade import landscape as ls
    from optigrade.analysis.geometry import probe_batch
    from optigrade.unlearning.models import load

    _, paths = ckpts
    t = batch.landscape_report(paths[:1], quantities="top_eig,trace,loss_change", data="both", out=tmp_path / "o",
                               progress=False, k=2, lanczos_iter=12, trace_queries=6, examples=4)
    assert set(t["data"]) == {"forget", "retain"} and set(t["quantity_group"]) == {"top_eig", "trace", "loss_change"}
    model, _ = load(paths[0])
    bench = build_benchmark(_ucfg())
    probe = ls.Probe(model, [probe_batch(bench, "retain", 4)])
    ev = ls.top_eigenvalues(probe, k=2, max_iter=12, seed=0, return_vectors=False)
    got = t[(t.quantity_group == "top_eig") & (t.data == "retain")].sort_values("index")["value"].to_numpy()
    np.testing.assert_allclose(got, ev.eigenvalues, rtol=1e-10)
    tr = ls.hutchpp_trace(probe, 6, seed=0)
    assert t[(t.quantity == "hessian_trace") & (t.data == "retain")]["value"].item() == pytest.approx(tr.estimate, rel=1e-10)
    # ΔL back to the base equals L(θ₀) − L(θ_u) measured directly
    base, _ = load(str(Path(paths[0]).parent / "base"))
    lb = ls.Probe(base, [probe_batch(bench, "forget", 4)]).loss()
    lu = ls.Probe(model, [probe_batch(bench, "forget", 4)]).loss()
    got = t[(t.quantity == "loss_change") & (t.data == "forget")]["value"].item()
    assert got == pytest.approx(lb - lu, rel=1e-5, abs=1e-6)
    # every finished part is on disk, the table is their union, the report exists
    assert len(list((tmp_path / "o" / "parts").rglob("*.parquet"))) == 6
    assert len(pd.read_parquet(tmp_path / "o" / "landscape.parquet")) == len(t)
    md = (tmp_path / "o" / "report.md").read_text()
    assert "λmax [forget]" in md and "ck_adam" in md and (tmp_path / "o" / "figures" / "top_eig.png").exists()
    # the weights are untouched by the measurements (the model on disk is what was measured)
    for (n, p), (_, q) in zip(model.named_parameters(), load(paths[0])[0].named_parameters()):
        assert torch.equal(p, q), n


def _child(out: Path, paths, extra=()):
    code = textwrap.dedent(f"""
        import sys
        from optigrade.cli import main
        sys.exit(main(["landscape", *{list(paths)!r}, "--quantities", "top_eig,trace,sharpness", "--data", "both",
                       "--out", {str(out)!r}, "--k", "2", "--lanczos-iter", "10", "--trace-queries", "6",
                       "--examples", "4", "--no-progress", *{list(extra)!r}]))
    """)
    return [sys.executable, "-c", code]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_sigkill_mid_batch_then_resume_gives_the_uninterrupted_rows(ckpts, tmp_path):
    _, paths = ckpts
    full = tmp_path / "full"
    subprocess.run(_child(full, paths), check=True, env=_env(), capture_output=True)
    cut = tmp_path / "cut"
    flag = cut / "parts" / Path(paths[1]).name  # the second checkpoint has begun: the first is done
    env = _env()
    p = subprocess.Popen(_child(cut, paths), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import signal
    import time

    deadline = time.monotonic() + 300
    while not (flag.exists() and any(flag.glob("*.parquet"))):
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    done_before = {q.relative_to(cut) for q in (cut / "parts").rglob("*.parquet")}
    assert 0 < len(done_before) < 18 and not (cut / "landscape.parquet").exists()
    mtimes = {q: (cut / q).stat().st_mtime_ns for q in done_before}
    # without --resume the half-done directory is refused, naming the fix
    r = subprocess.run(_child(cut, paths), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = subprocess.run(_child(cut, paths, ["--resume"]), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for q, m in mtimes.items():  # finished parts were kept, not recomputed
        assert (cut / q).stat().st_mtime_ns == m
    a = _table(pd.read_parquet(full / "landscape.parquet"))
    b = _table(pd.read_parquet(cut / "landscape.parquet"))
    assert len(b) == len(a) and b.groupby(["checkpoint", "quantity_group", "data"]).ngroups == 18  # none lost
    assert not b.duplicated(["checkpoint", "quantity_group", "data", "quantity", "index"]).any()
    pd.testing.assert_frame_equal(a, b)
    log = (cut / "landscape.log").read_text()
    assert f"resume: {len(done_before)} finished part(s) kept" in log


def test_resume_with_other_settings_is_refused_naming_the_setting(ckpts, tmp_path):
    _, paths = ckpts
    out = tmp_path / "o"
    batch.landscape_report(paths[:1], quantities="trace", out=out, progress=False, trace_queries=6, examples=4)
    with pytest.raises(ConfigError, match=r"computed with trace_queries=6, this run asks trace_queries=9"):
        batch.landscape_report(paths[:1], quantities="trace", out=out, progress=False, trace_queries=9, examples=4,
                               resume=True)
    with pytest.raises(ConfigError, match=r"already holds a landscape report; pass --resume"):
        batch.landscape_report(paths[:1], quantities="trace", out=out, progress=False, trace_queries=6, examples=4)
    t = batch.landscape_report(paths[:1], quantities="trace", out=out, progress=False, trace_queries=9, examples=4,
                               overwrite=True)
    assert set(t["setting_n"]) == {9}


def test_process_pool_gives_the_in_process_rows(ckpts, tmp_path):
    _, paths = ckpts
    kw = dict(quantities="top_eig,slices", data="forget", progress=False, k=2, lanczos_iter=8, examples=4,
              report=False)
    torch.set_num_threads(1)
    a = batch.landscape_report(paths[:2], out=tmp_path / "a", **kw)
    b = batch.landscape_report(paths[:2], out=tmp_path / "b", workers=2, **kw)
    pd.testing.assert_frame_equal(_table(a), _table(b))


def test_ray_gives_the_local_rows(ckpts, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'optigrade[distributed]')")
    _, paths = ckpts
    kw = dict(quantities="top_eig,trace", data="both", progress=False, k=2, lanczos_iter=8, trace_queries=6,
              examples=4, report=False)
    torch.set_num_threads(1)
    a = batch.landscape_report(paths[:2], out=tmp_path / "a", **kw)
    b = batch.landscape_report(paths[:2], out=tmp_path / "b", backend="ray", **kw)
    pd.testing.assert_frame_equal(_table(a), _table(b))


def test_bad_input_is_refused_before_any_work(ckpts, tmp_path):
    root, paths = ckpts
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=r"is not a checkpoint: expected an `optigrade unlearn` directory"):
        batch.landscape_report([str(tmp_path)], out=out, progress=False)
    with pytest.raises(ConfigError, match=r"does not exist"):
        batch.landscape_report([str(tmp_path / "nowhere")], out=out, progress=False)
    with pytest.raises(ConfigError, match=r"unknown quantity 'curvature'; choose from top_eig, trace"):
        batch.landscape_report(paths[:1], quantities="top_eig,curvature", out=out, progress=False)
    with pytest.raises(ConfigError, match=r"data 'test' is not a split; use forget, retain or both"):
        batch.landscape_report(paths[:1], data="test", out=out, progress=False)
    # a base that is not the one the manifest records
    other = tiny_llama(len(build_benchmark(_ucfg()).tokenizer), CFG, seed=5)
    other.save_pretrained(tmp_path / "other")
    build_benchmark(_ucfg()).tokenizer.save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"manifest records base sha256 .* pass the base it was unlearned from"):
        batch.landscape_report(paths[:1], out=out, progress=False, base=str(tmp_path / "other"))
    # a model directory without a benchmark, and one whose quantity needs a base it lacks
    with pytest.raises(ConfigError, match=r"--benchmark NAME"):
        batch.landscape_report([str(root / "base")], out=out, progress=False)
    with pytest.raises(ConfigError, match=r"radius needs the checkpoint's base"):
        batch.landscape_report([str(root / "base")], quantities="radius", benchmark="synthetic", out=out,
                               progress=False)
    assert not out.exists() or not any(out.iterdir())  # nothing was written


def test_budget_too_low_is_refused_with_advice(ckpts, tmp_path):
    _, paths = ckpts
    with pytest.raises(ConfigError, match=r"top_eig needs about .* GB .* over the budget .*--params"):
        batch.landscape_report(paths[:1], quantities="top_eig", out=tmp_path / "o", progress=False, budget="1MB")
    assert not (tmp_path / "o" / "parts").exists()


_PEAK = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from optigrade.analysis import batch
    ck = batch.find_checkpoints([sys.argv[1]], base=sys.argv[2])[0]
    s = batch.BatchSettings(quantities=(sys.argv[3],), examples=4, lanczos_iter=40, trace_queries=30).validate()
    model, base, bench = batch.materialize(ck)
    plan = batch.estimate([ck], s, budget=10**12)
    probe = batch._probe(model, bench, "forget", s)
    probe.loss(); probe.grad()
    def rss(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    start = rss("VmRSS:")
    batch._measure(sys.argv[3], probe, base, s)
    print(json.dumps({"measured": rss("VmHWM:") - start, "estimated": int(plan["solver_bytes"].iloc[0])}))
""")


@pytest.mark.parametrize("quantity", ["top_eig", "trace"])
def test_memory_estimate_within_20_percent_of_the_measured_peak(tmp_path, quantity):
    """On the shipped tiny model's size (a 4-layer Llama of ~0.9M parameters here), the solver's
    estimated bytes against the peak resident memory the measurement adds (VmHWM after a reset)."""
    bench = build_benchmark(_ucfg())
    big = TinyConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4)
    base = tiny_llama(len(bench.tokenizer), big, seed=0, tokenizer=bench.tokenizer)
    base.save_pretrained(tmp_path / "base")
    bench.tokenizer.save_pretrained(tmp_path / "base")
    cfg = _ucfg().model_copy(update={"model": str(tmp_path / "base"), "steps": 1, "eval_every": 1})
    run_unlearn(cfg, tmp_path / "ck", progress=False)
    r = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "ck"), str(tmp_path / "base"), quantity],
                       env=_env(), capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["estimated"] > 20e6  # the solver dominates, not allocator noise
    assert abs(got["measured"] - got["estimated"]) <= 0.2 * got["measured"], got


def test_late_layer_params_use_the_prefix_cache_with_the_same_numbers(ckpts, tmp_path):
    _, paths = ckpts
    kw = dict(quantities="top_eig,trace", data="forget", progress=False, k=2, lanczos_iter=8, trace_queries=6,
              examples=4, report=False, params=r"layers\.1\.")
    auto = batch.landscape_report(paths[:1], out=tmp_path / "a", **kw)
    off = batch.landscape_report(paths[:1], out=tmp_path / "b", prefix_cache=False, **kw)
    assert auto["prefix_cache"].all() and not off["prefix_cache"].any()
    np.testing.assert_allclose(_table(auto)["value"], _table(off)["value"], rtol=1e-4)
    assert set(auto["n_params"]) == set(off["n_params"]) and auto["n_params"].iloc[0] < 20000


def test_low_memory_lanczos_gives_the_full_eigenvalues(ckpts, tmp_path):
    _, paths = ckpts
    kw = dict(quantities="top_eig", data="forget", progress=False, k=2, lanczos_iter=40, examples=4, report=False)
    full = batch.landscape_report(paths[:1], out=tmp_path / "a", lanczos_memory="full", **kw)
    low = batch.landscape_report(paths[:1], out=tmp_path / "b", lanczos_memory="low", **kw)
    assert set(low["setting_memory"]) == {"low"} and "setting_window" not in full  # full: the classic solver
    np.testing.assert_allclose(_table(low)["value"], _table(full)["value"], rtol=1e-6)
    ck = batch.find_checkpoints(paths[:1])[0]
    s = batch.BatchSettings(quantities=("top_eig",), lanczos_iter=40, k=2).validate()
    n = 10 ** 6
    assert batch._lanczos_mode(s, n, budget=10 ** 12) == "full" and batch._lanczos_mode(s, n, budget=10 ** 8) == "low"
    assert batch.solver_bytes("top_eig", n, s, 10 ** 8) < batch.solver_bytes("top_eig", n, s, 10 ** 12) / 2


def test_checkpoints_sharing_a_base_build_it_once(ckpts, tmp_path, monkeypatch):
    """Three checkpoints unlearned from one base with three optimizers: the base and benchmark are
    built (and hashed) once, not per checkpoint (a study's 48 SmolLM2 Δs would otherwise load 48 bases)."""
    _, paths = ckpts
    calls = []
    real = batch._build_base
    monkeypatch.setattr(batch, "_build_base", lambda ck: calls.append(ck.id) or real(ck))
    batch._BASES.clear()
    batch._LOADED.clear()
    t = batch.landscape_report(paths, quantities="trace", out=tmp_path / "o", progress=False, trace_queries=3,
                               examples=4, report=False)
    assert t["checkpoint"].nunique() == 3 and len(calls) == 1


def test_density_curve_is_the_quadrature_and_integrates_to_one(ckpts, tmp_path):
    _, paths = ckpts
    t = batch.landscape_report(paths[:1], quantities="density", out=tmp_path / "o", progress=False,
                               density_steps=8, density_vectors=2, examples=4, report=False)
    c = t[t["quantity"] == "spectral_density"].sort_values("lambda")
    assert len(c) == 200 and (c["value"] >= 0).all()
    assert np.trapezoid(c["value"], c["lambda"]) == pytest.approx(1.0, abs=1e-3)  # weights sum to one per run
    tr = t[t["quantity"] == "slq_trace"]["value"].item()
    n = int(t["n_params"].iloc[0])
    assert np.trapezoid(c["value"] * c["lambda"], c["lambda"]) * n == pytest.approx(tr, rel=1e-3)  # first moment
