"""The SmolLM2 study end to end (the smoke version of `optigrade demo --model smollm2`): Adam
unlearns 4 verified facts, the model is re-exported to its GGUF types and relearned on half the
forget facts; the benchmark script renders its README/RESULTS tables from the study's table."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_smollm2", ROOT / "benchmarks" / "bench_smollm2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_smollm2_study(smollm2, facts, tmp_path, snapshot_weights):
    from optigrade.analysis.config import StudyConfig
    from optigrade.demo import demo_config
    from optigrade.analysis.study import run_study

    model, _ = smollm2
    before = snapshot_weights(model)
    cfg = demo_config(quick=True, model="smollm2")
    res = run_study(cfg, tmp_path, progress=False, base=model, benchmark=facts)
    r = res.results
    assert set(r["attack"]) == {"none", "gguf", "relearn-half"}
    ref = r[(r["run_id"] == "reference") & (r["quantity"] == "forget_acc") & (r["data"] == "all")]
    # re-exporting the unmodified model to its source types is bit-exact: every fact still answered
    assert set(ref["value"]) == {1.0}
    run = r[r["run_id"] != "reference"]
    assert set(run["stop_reason"]) <= {"target", "budget", "retain-guard"}
    none = run[(run["attack"] == "none") & (run["data"] == "all")].set_index("quantity")["value"]
    assert none["forget_acc"] < 1.0, "4-6 Adam steps at lr 2e-5 must forget something"
    bc = float(run[run["quantity"] == "diag_gguf_bin_crossing"]["value"].iloc[0])
    assert 0.0 < bc < 1.0
    checks = json.loads(run["checks"].iloc[0])
    assert checks and checks[-1][0] == int(run["steps"].iloc[0])
    assert (tmp_path / "report.md").exists()
    after = snapshot_weights(model)
    assert all((before[k] == after[k]).all() for k in before), "the study modified the base model"

    # the geometry stage ran on the ZO subset only, for the original and the unlearned checkpoint, both splits
    geo = r[r["quantity"].str.startswith("geo_")]
    assert set(geo["run_id"]) == {"reference", run["run_id"].iloc[0]}
    spec = cfg.geometry
    assert spec.params == r"layers\.(2[4-9])\.mlp\.down_proj"
    blobs = set(geo["setting_geometry"])
    assert len(blobs) == 1 and json.loads(blobs.pop())["params"] == spec.params
    assert set(r.loc[r["quantity"].str.startswith("theory_"), "setting_geometry"].map(lambda b: json.loads(b)["params"])) \
        == {spec.params}
    for rid in set(geo["run_id"]):
        g = geo[geo["run_id"] == rid]
        for q in ("geo_loss", "geo_lambda_max", "geo_trace", "geo_qnoise_sharpness", "geo_adaptive_sharpness"):
            assert set(g.loc[g["quantity"] == q, "data"]) == {"forget", "retain"}, (rid, q)
        assert "geo_failed" not in set(g["quantity"]), g.loc[g["quantity"] == "geo_failed", "geo_note"].tolist()
    # the GGUF re-export of the unmodified model is bit-exact: δ = 0 on the subset, and the loss does not move
    ref_gguf = geo[(geo["run_id"] == "reference") & (geo["attack"] == "gguf")]
    assert float(ref_gguf.loc[ref_gguf["quantity"] == "geo_attack_norm", "value"].iloc[0]) == 0.0
    assert (tmp_path / "explain.parquet").exists()

    # the benchmark script's tables render from this study's table
    bench = _bench_module()
    comp = bench.compact(r, cfg, res.seconds)
    comp["bench"] = facts.settings()
    assert comp["geometry"]["params"] == spec.params and comp["explain"]["table"]
    g_run = next(x for x in comp["runs"] if x["optimizer"] == "adam")["geometry"]
    assert g_run["lambda_max"]["forget"][0] > 0 and set(g_run["seconds_by_data"]) == {"forget", "retain"}
    assert not any(q.startswith("geo_") for m in comp["runs"][0]["metrics"].values() for q in m)
    comp = json.loads(json.dumps(comp))  # what --readme reads back
    text, readme = bench.render(comp), bench.render_readme(comp)
    assert "| original |" in text and "| adam |" in readme and "forget after gguf" in readme
    assert "**Explain**" in readme and "What n allows: at most n = " in readme
    assert "### Geometry around each checkpoint" in text and "| λmax forget |" in text
    assert bench.reading(comp)


def _synthetic_results(n_runs=5, seed=0):
    """A small study table: n_runs unlearned runs and the reference, attack "q" (recovery rises
    with the curvature) and "dead" (moves nothing); diag_update_norm, geo_trace on forget."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = [dict(run_id="reference", subject="original", attack="none", data="all", quantity="forget_acc",
                 value=1.0, matched=False, grade=np.nan)]
    for i in range(n_runs):
        run = dict(run_id=f"r{i}", matched=True, grade=float(i % 3))
        c = float(i)  # curvature rank = recovery rank
        rows += [dict(run, subject="unlearned", attack="none", data="all", quantity="forget_acc", value=0.25),
                 dict(run, subject="attacked:q", attack="q", data="all", quantity="forget_acc", value=0.25 + 0.125 * i),
                 dict(run, subject="attacked:dead", attack="dead", data="all", quantity="forget_acc", value=0.25),
                 dict(run, subject="unlearned", attack="none", data="weights", quantity="diag_update_norm",
                      value=float(rng.uniform())),
                 dict(run, subject="unlearned", attack="none", data="forget", quantity="geo_trace", value=c)]
    return pd.DataFrame(rows)


def test_explain_rendering_from_a_results_dict():
    """The README / RESULTS Explain table comes from the saved dict alone: one row per judged
    hypothesis with n, ρ [CI] and partial ρ [CI] as the explain stage computed them, an attack
    that moved nothing collapsed to one 'not testable here' row, and a sentence on what n allows."""
    from optigrade.analysis.explain import explain

    bench = _bench_module()
    results = _synthetic_results()
    ex = json.loads(json.dumps(bench.explain_of(results)))
    res = {"explain": ex, "config": {"attacks": []}, "runs": []}
    lines = bench.explain_table(res, full=False)
    assert lines[0].startswith("| attack | hypothesis | predictor | n |")
    t = explain(results).table
    partial = t[(t["population"] == "matched") & (t["attack"] == "q") & (t["predictor"] == "geo_trace[forget]")
                & (t["kind"] == "partial spearman")].iloc[0]
    row = next(x for x in lines if x.startswith("| q | H-curvature | tr H (forget) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "5" and cells[5] == f"{partial['rho']:.2f} [{partial['ci_low']:.2f}, {partial['ci_high']:.2f}]"
    assert cells[6] == "not decidable at this n"  # n = 5 < 12
    assert any(x.startswith("| q | H-magnitude | ‖Δθ‖ | 5 |") for x in lines)
    dead = [x for x in lines if x.startswith("| dead |")]
    assert len(dead) == 1 and "not testable here: the attack moved nothing" in dead[0]
    assert lines[-1].startswith("| all | H-flat-ZO |") and "not decidable without controls C1–C3" in lines[-1]
    (s,) = bench.explain_sentences(res, full=False)
    assert "at most n = 5 matched runs per row, fewer than the 12" in s and "no hypothesis is supported or refuted" in s
    # absent quantities (no λmax in this table) are listed in the full version, not as rows
    full = bench.explain_sentences(res, full=True)
    assert "λmax (forget)" in full[-1] and not any("λmax" in x for x in bench.explain_table(res, True))
    assert bench.recovery_table(res)[2].startswith("| q | all | 5 | 4 | 0.250 [")
    # a study without geometry / explain renders none of it
    assert bench.explain_table({"explain": {"note": "x"}}, False) == [] and bench.geometry_table(
        {"runs": [{"geometry": None}]}) == []


def test_build_smollm2_run_from_config():
    """`optigrade unlearn --model smollm2 --benchmark smollm2-facts --bench-arg ...` builds the
    benchmark against the model it unlearns; a split the verified facts cannot fill is a
    ConfigError naming the counts, raised before any unlearning."""
    import pytest

    from optigrade.unlearning.run import ConfigError, UnlearnConfig, build

    cfg = UnlearnConfig(model="smollm2", benchmark="smollm2-facts",
                        benchmark_kwargs={"n_forget": 4, "n_retain": 16, "per_topic": 6}).validate()
    bench, model = build(cfg, progress=False)
    assert len(bench.splits["forget"]) == 4 and len(bench.splits["retain"]) == 16
    assert getattr(model, "gguf_types", None) is not None
    bad = UnlearnConfig(model="smollm2", benchmark="smollm2-facts",
                        benchmark_kwargs={"n_forget": 500, "per_topic": 6}).validate()
    with pytest.raises(ConfigError, match="verified"):
        build(bad, progress=False)
