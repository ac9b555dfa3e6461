"""Grade or magnitude on SmolLM2-135M: the controls study (SCIENCE.md §3), saved and rendered.

    python benchmarks/bench_smollm2_controls.py                                # smollm2_controls.yaml (~60 min)
    python benchmarks/bench_smollm2_controls.py --config smollm2_controls_quick.yaml   # ~15 min
    python benchmarks/bench_smollm2_controls.py --readme     # re-render README's block from the JSON only

The study is a packaged config (``optigrade.demo.config_path``) run by the study engine, resumable
in ``runs/<config name>``.  Every grade and every control (C1 noise of ZO's size, C2 Adam + that
noise, C4 Adam's direction scaled to ZO's displacement ...) goes through the same attacks,
diagnostics, geometry and explain stages.  The tables and the reading
(:mod:`optigrade.analysis.magnitude`) are saved under ``"controls"`` in
``benchmarks/smollm2_results.json`` (one entry per config; the plain SmolLM2 study's keys are left
as they are), and README's ``smollm2-controls`` block is rendered from that JSON alone — the full
config's entry when it exists, else the quick one's — so a test can check README against it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "smollm2_results.json"
README = ROOT / "README.md"
START, END = "<!-- smollm2-controls:start -->", "<!-- smollm2-controls:end -->"
FULL, QUICK = "smollm2_controls.yaml", "smollm2_controls_quick.yaml"


def _clean(x):
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def compact(res, cfg, config_name: str, bench_settings: dict) -> dict:
    """What README and a reader need from a finished controls study."""
    import torch
    import transformers

    from optigrade.analysis.magnitude import control_kinds, magnitude_headline, magnitude_sentences, \
        magnitude_verdicts
    from optigrade.analysis.report import explain_or_note, explain_summary, grade_or_magnitude_table, \
        relearn_half_table

    r, s = res.results, res.summary
    obj = next(o for o in dict.fromkeys(s["objective"]) if o != "none")
    runs = r.drop_duplicates("run_id")
    geo = r.dropna(subset=["geo_seconds"]).drop_duplicates(["run_id", "data"]) if "geo_seconds" in r else r.iloc[:0]
    v = magnitude_verdicts(s, control_kinds(r), obj, target=float(cfg.target))
    explained, why = explain_or_note(r)
    per_run = []
    for _, x in runs.iterrows():
        per_run.append({k: x.get(k) for k in ("run_id", "optimizer", "family", "grade", "seed", "steps", "stop_reason",
                                             "matched", "match_reason", "match_detail", "unlearn_seconds",
                                             "run_seconds")})
    return _clean({
        "config_name": config_name, "name": cfg.name, "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(), "torch": torch.__version__, "transformers": transformers.__version__,
        "study_minutes": round(float(runs["run_seconds"].sum()) / 60, 2) if "run_seconds" in runs else None,
        "geometry_minutes": round(float(geo["geo_seconds"].sum()) / 60, 2),
        "invocation_minutes": round(res.seconds / 60, 2), "objective": obj,
        "config": cfg.to_dict(), "bench": bench_settings, "runs": per_run,
        "table": grade_or_magnitude_table(s, obj).fillna("").to_dict("records"),
        "relearn_half": relearn_half_table(s, obj).fillna("").to_dict("records"),
        "verdicts": v.to_dict("records"), "reading": magnitude_sentences(v), "headline": magnitude_headline(v),
        "explain": explain_summary(explained).fillna("").to_dict("records") if explained is not None else [],
        "explain_note": "" if explained is not None else str(why)})


def save(entry: dict, path: Path = RESULTS_JSON) -> None:
    """Put ``entry`` under ``["controls"][config_name]`` of the results JSON (atomic write; the
    rest of the file is kept as it is)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("controls", {})[entry["config_name"]] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _md(rows: List[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "") if r.get(c) is not None else "") for c in cols) + " |")
    return "\n".join(out)


def _limits(e: dict) -> List[str]:
    """What the study does not show, from its own settings."""
    c, b = e["config"], e.get("bench") or {}
    seeds = c.get("seeds", [])
    kw = c.get("benchmark_kwargs", {})
    params = {o.get("params") for o in c.get("optimizers", [])}
    out = [f"{len(seeds)} seed(s) and {kw.get('n_forget', '?')} forget facts: one fact is "
           f"{1 / kw['n_forget']:.3f} of forget accuracy; the intervals above are the resolution." if kw.get("n_forget")
           else f"{len(seeds)} seed(s)."]
    out.append(f"One model (SmolLM2-135M-Instruct from its Q4_1 GGUF), one objective ({e['objective']}), "
               "one forget target; not the paper's TOFU / MUSE / WMDP settings (issue 16).")
    if len(params) == 1 and None not in params:
        out.append(f"Every run moves only `{next(iter(params))}`: what holds for this subset may not hold when "
                   "every weight moves (first-order runs on the full model re-export differently).")
    kinds = {o.get("name") for o in c.get("optimizers", [])}
    missing = [n for n, k in (("C3 (FO + noise in training)", {"noisy-adam", "sgld"}),
                              ("C5 (FO randomized smoothing)", {"fo-rs", "sam"}),
                              ("the hybrid", {"hybrid"})) if not kinds & k]
    if missing:
        out.append("Not in this config: " + ", ".join(missing) + " (smollm2_controls_extended.yaml lists them; "
                   "not run within this budget).")
    return out


def render(e: dict) -> str:
    """README's block for one saved entry (from the JSON alone)."""
    c = e["config"]
    kw = c.get("benchmark_kwargs", {})
    head = (f"Study `{e['config_name']}` ({e['date']}, {e.get('study_minutes')} min on {e['machine']}, of which "
            f"geometry {e.get('geometry_minutes')} min): {kw.get('n_forget')} forget facts, {len(c.get('seeds', []))} "
            f"seed(s), objective {e['objective']}, target forget accuracy ≤ {c.get('target')}; utility out of sample "
            f"({kw.get('n_heldout', 0)} held-out verified facts no objective trains on, perplexity on "
            f"{(e.get('bench') or {}).get('n_general_test', '?')} sentences written apart); matched = target reached "
            f"with retain and held-out accuracy ≥ {c.get('utility_floor_retain')} × base and perplexity ≤ "
            f"{c.get('utility_max_ppl_ratio')} × base. Cells: estimate [95% interval] (per seed).")
    top = e.get("headline") or e["reading"][:1]
    parts = [head, "", "**The answer.** " + " ".join(top), ""]
    parts.append(_md(e["table"]))
    if e.get("relearn_half"):
        parts += ["", "Relearn-half (fine-tune on half A of the forget facts, measure half B; Deeb & Roger 2024):", "",
                  _md(e["relearn_half"])]
    if len(e["reading"]) > len(top):
        parts += ["", "**Each comparison** (no ordering is claimed where intervals overlap):", ""]
        parts += [f"- {x}" for x in e["reading"][len(top):]]
    if e.get("explain"):
        parts += ["", "Explain (Spearman / partial Spearman of recovery over runs, bootstrap 95% CI):", "",
                  _md(e["explain"])]
    elif e.get("explain_note"):
        parts += ["", f"Explain: not run ({e['explain_note']})."]
    parts += ["", "**What it does not show.**", ""] + [f"- {x}" for x in _limits(e)]
    parts += ["", f"_Generated by `python benchmarks/bench_smollm2_controls.py --readme` from "
                  f"`benchmarks/smollm2_results.json` (\"controls\" → `{e['config_name']}`)._"]
    return "\n".join(parts)


def pick(data: dict) -> Optional[dict]:
    """The entry README shows: the full config's when saved, else the quick one's."""
    c = data.get("controls", {})
    return c.get(FULL) or c.get(QUICK)


NOT_RUN = ("_Not run yet: `python benchmarks/bench_smollm2_controls.py --config smollm2_controls_quick.yaml` "
           "(~15 min on 2 CPU cores) or without `--config` for the full study (~60 min) writes this block._")


def readme_block(path: Path = RESULTS_JSON) -> str:
    """The block README must hold (a test checks it): rendered from the JSON's controls entry,
    or the not-run line."""
    e = pick(json.loads(path.read_text())) if path.exists() else None
    return NOT_RUN if e is None else render(e)


def write_readme(block: str, readme: Path = README) -> bool:
    """Replace README's block; True when the text changed."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block; add the two markers where the section goes")
    new = text.split(START)[0] + START + "\n" + block + "\n" + END + text.split(END, 1)[1]
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=FULL, help=f"packaged config name ({FULL} or {QUICK}) or a YAML path")
    ap.add_argument("--out", type=Path, default=None, help="study directory (resumable; default runs/<config name>)")
    ap.add_argument("--overwrite", action="store_true", help="recompute every study run")
    ap.add_argument("--no-write", action="store_true", help="print the block, write neither JSON nor README")
    ap.add_argument("--readme", action="store_true", help="run nothing: re-render README's block from the JSON")
    args = ap.parse_args(argv)
    if args.readme:
        block = readme_block()
        if not args.no_write:
            write_readme(block)
        print(block)
        return
    from optigrade.analysis.config import load_config
    from optigrade.analysis.study import prepare, run_study
    from optigrade.demo import config_path

    path = Path(args.config) if Path(args.config).exists() else config_path(args.config)
    cfg = load_config(path)
    out = args.out or ROOT / "runs" / cfg.name
    base, bench = prepare(cfg)
    res = run_study(cfg, out, resume=not args.overwrite, overwrite=args.overwrite, progress=True, base=base,
                    benchmark=bench)
    s = bench.settings()
    entry = compact(res, cfg, path.name, {k: s.get(k) for k in ("n_facts", "n_verified", "para_verified", "seed",
                                                                "data_hash", "n_heldout", "n_general_test")})
    if args.no_write:
        print(render(entry))
        return
    save(entry)
    block = readme_block()
    write_readme(block)
    print(block)


if __name__ == "__main__":
    main()
