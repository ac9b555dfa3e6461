"""The demo's wall time and how it splits over the study's stages (issue 12: the geometry stage
must cost ≤ 40% of the demo, and the demo ≤ 10 minutes on 2 CPU cores).

    python benchmarks/bench_demo.py                  # run `optigrade demo` (fresh, into runs/demo), then record
    python benchmarks/bench_demo.py --from runs/demo # record from a finished demo without re-running it

Writes the ``demo`` section of ``benchmarks/RESULTS.md`` from the study's own tables: every
run's ``unlearn_seconds``, ``run_seconds`` (unlearning + attacks + geometry + diagnostics) and
``geo_seconds`` (one value per checkpoint × data split), the reference's ``theory_seconds``, the
study's wall time from ``study.json``, and the HVP / loss passes the geometry spent
(``cost_*`` of the ``geo_*`` rows).  The numbers are one run on a shared machine: read the
shares, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo:start -->", "<!-- demo:end -->"


def split(out: Path) -> dict:
    """The stage split of a finished study in ``out`` (see the module docstring)."""
    from optigrade.analysis.report import load_study

    res, _ = load_study(out)
    meta = json.loads((out / "study.json").read_text())
    runs = res.drop_duplicates("run_id")
    geo = res[res["quantity"].astype(str).str.startswith("geo_") & res["geo_seconds"].notna()] \
        if "geo_seconds" in res else res.iloc[:0]
    probes = geo.drop_duplicates(["run_id", "data"])
    per_probe = probes["geo_seconds"] if len(geo) else pd.Series(dtype=float)
    theory = float(res["theory_seconds"].dropna().iloc[0]) if "theory_seconds" in res and \
        res["theory_seconds"].notna().any() else 0.0
    g = geo
    return {
        "study_seconds": float(meta.get("meta", meta).get("seconds", float("nan"))) if isinstance(meta, dict) else float("nan"),
        "runs": int((runs["run_id"] != "reference").sum()),
        "checkpoints": int(runs["run_id"].nunique()),
        "unlearn_seconds": float(runs["unlearn_seconds"].sum()),
        "run_seconds": float(runs["run_seconds"].sum()),
        "geometry_seconds": float(per_probe.sum()),
        "theory_seconds": theory,
        "probes": int(len(per_probe)),
        "probe_seconds_median": float(per_probe.median()) if len(per_probe) else float("nan"),
        "geometry_hvp": float(probes["geo_probe_hvp"].sum()) if "geo_probe_hvp" in probes else float("nan"),
        "geometry_loss": float(probes["geo_probe_loss"].sum()) if "geo_probe_loss" in probes else float("nan"),
        "settings": json.loads(g["setting_geometry"].dropna().iloc[0]) if "setting_geometry" in g and
        g["setting_geometry"].notna().any() else {},
    }


def render(s: dict, wall: float | None, command: str, note: str = "") -> str:
    geo = s["geometry_seconds"] + s["theory_seconds"]
    total = wall if wall else s["study_seconds"]
    rest = s["run_seconds"] - s["geometry_seconds"] - s["unlearn_seconds"]
    budget = {k: s["settings"].get(k) for k in ("examples", "k", "lanczos_iter", "trace_queries", "sharpness_samples",
                                                 "noise_scales", "slice_points", "interp_points", "radius_samples",
                                                 "uniform_samples", "data")}
    lines = [
        START, "## demo", "",
        f"Run: `{command}` on {platform.machine()}, torch {__import__('torch').__version__}, 1 intra-op thread "
        f"(the demo's `threads: 1`), 2-core machine shared with other work; {s['runs']} unlearning runs + the "
        f"reference, {s['checkpoints']} checkpoints. One run: read the shares, not the seconds.", "",
        "| stage | seconds | share of the demo |", "|---|---:|---:|",
        f"| whole demo (wall, incl. model load and report) | {total:.0f} | 100% |",
        f"| study (study.json) | {s['study_seconds']:.0f} | {100 * s['study_seconds'] / total:.0f}% |",
        f"| unlearning (Σ unlearn_seconds) | {s['unlearn_seconds']:.0f} | {100 * s['unlearn_seconds'] / total:.0f}% |",
        f"| attacks + diagnostics (Σ run_seconds − unlearning − geometry) | {rest:.0f} | {100 * rest / total:.0f}% |",
        f"| **geometry** ({s['probes']} checkpoint × split probes, median {s['probe_seconds_median']:.2f} s each) "
        f"+ theory checks ({s['theory_seconds']:.1f} s) | **{geo:.0f}** | **{100 * geo / total:.0f}%** |", "",
        f"Goal: demo ≤ 600 s ({'met' if total <= 600 else 'missed'}), geometry ≤ 40% of it "
        f"({'met' if geo <= 0.4 * total else 'missed'}). The geometry spent {s['geometry_hvp']:.0f} HVPs and "
        f"{s['geometry_loss']:.0f} loss passes; its budgets (configs/demo.yaml `geometry:`): "
        + ", ".join(f"{k} {v}" for k, v in budget.items() if v is not None) + ".", "",
        *([note, ""] if note else []), END]
    return "\n".join(lines) + "\n"


def write(text: str, path: Path = ROOT / "benchmarks" / "RESULTS.md") -> None:
    from _results import write_section  # benchmarks/_results.py (this script's directory is on sys.path)

    write_section(text, path, START, END)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", help="a finished demo directory (default: run the demo into runs/demo)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not write RESULTS.md")
    ap.add_argument("--note", default="", help="a line printed under the table (e.g. what else ran on the machine)")
    a = ap.parse_args(argv)
    wall = None
    if a.src:
        out, command = Path(a.src), "optigrade demo"
    else:
        out, command = ROOT / "runs" / "demo", "optigrade demo --overwrite"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "optigrade.cli", "demo", "--out", str(out), "--overwrite"], check=True)
        wall = time.perf_counter() - t0
    text = render(split(out), wall, command, a.note)
    print(text)
    if not a.no_write:
        write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
