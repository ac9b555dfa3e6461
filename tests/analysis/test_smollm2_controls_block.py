"""README's "Grade or magnitude?" block is what benchmarks/bench_smollm2_controls.py renders from
benchmarks/smollm2_results.json (the CI check that README matches the code), and the renderer
works from a saved entry alone."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_smollm2_controls",
                                                  ROOT / "benchmarks" / "bench_smollm2_controls.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_block_matches_the_saved_results():
    b = _bench()
    text = (ROOT / "README.md").read_text()
    assert b.START in text and b.END in text
    block = text.split(b.START, 1)[1].split(b.END, 1)[0].strip("\n")
    assert block == b.readme_block(), ("README's smollm2-controls block is stale; regenerate it: "
                                       "python benchmarks/bench_smollm2_controls.py --readme")


def _entry(name="smollm2_controls_quick.yaml"):
    return {"config_name": name, "name": "q", "date": "2026-12-01", "machine": "x86_64", "study_minutes": 14.2,
            "geometry_minutes": 3.1, "objective": "npo",
            "config": {"seeds": [0], "target": 0.25, "utility_floor_retain": 0.5, "utility_max_ppl_ratio": 2.0,
                       "benchmark_kwargs": {"n_forget": 16, "n_heldout": 64},
                       "optimizers": [{"name": "zo-sgd", "params": "p"}, {"name": "adam", "params": "p"}]},
            "bench": {"n_general_test": 256},
            "table": [{"optimizer": "zo-sgd", "kind": "zeroth-order (grade 0)", "matched": "1/1",
                       "forget gguf": "0.25"}],
            "relearn_half": [], "verdicts": [],
            "reading": ["**Grade or magnitude is not decided by this study**: x.", "After gguf, ...: **not testable "
                                                                                    "here** (y)."],
            "explain": [], "explain_note": "n = 3 < 12"}


def test_render_from_an_entry_and_the_full_config_wins(tmp_path):
    b = _bench()
    text = b.render(_entry())
    assert "**The answer.** **Grade or magnitude is not decided" in text
    assert "| zo-sgd | zeroth-order (grade 0) | 1/1 | 0.25 |" in text
    assert "- After gguf" in text and "Explain: not run (n = 3 < 12)" in text
    assert "1 seed(s) and 16 forget facts: one fact is 0.062" in text
    assert "Not in this config: C3 (FO + noise in training), C5 (FO randomized smoothing), the hybrid" in text
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"runs": [1]}))
    assert b.readme_block(path) == b.NOT_RUN
    b.save(_entry(), path)
    assert json.loads(path.read_text())["runs"] == [1]  # the plain study's keys are kept
    assert "smollm2_controls_quick.yaml" in b.readme_block(path)
    b.save(_entry(b.FULL), path)
    assert "`smollm2_controls.yaml`" in b.readme_block(path)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{b.START}\nold\n{b.END}\nz\n")
    assert b.write_readme("new", readme) and readme.read_text() == f"a\n{b.START}\nnew\n{b.END}\nz\n"
    assert not b.write_readme("new", readme)


def test_readme_smollm2_block_matches_the_saved_results():
    """The SmolLM2 study's README block is what bench_smollm2.py renders from the saved JSON."""
    spec = importlib.util.spec_from_file_location("bench_smollm2", ROOT / "benchmarks" / "bench_smollm2.py")
    b = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(b)
    res = json.loads((ROOT / "benchmarks" / "smollm2_results.json").read_text())
    text = (ROOT / "README.md").read_text()
    block = text[text.index(b.README_START): text.index(b.README_END) + len(b.README_END)]
    assert block == b.render_readme(res).rstrip("\n"), ("README's smollm2-table block is stale; regenerate it: "
                                                         "python benchmarks/bench_smollm2.py --readme")
