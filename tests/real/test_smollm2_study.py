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

    # the benchmark script's tables render from this study's table
    bench = _bench_module()
    comp = bench.compact(r, cfg, res.seconds)
    comp["bench"] = facts.settings()
    text, readme = bench.render(comp), bench.render_readme(comp)
    assert "| original |" in text and "| adam |" in readme and "forget after gguf" in readme
    assert bench.reading(comp)


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
