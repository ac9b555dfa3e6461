r"""batch landscape benchmark: top-3 Hessian eigenvalues of SmolLM2-135M's forget loss on its last 6 layers,
through `optigrade landscape` on the SmolLM2 study's saved updates (issue 14's record: ≤ 10 min on 2 cores).

    .venv/bin/python benchmarks/bench_batch.py [--study runs/smollm2] [--no-write]

Needs the SmolLM2 study directory (``optigrade demo --model smollm2``, ~40 min) for its saved Δ files.
Measured: the plan's estimate (solver bytes for a full and a thick-restart basis, seconds from one timed
HVP), then each checkpoint's wall time, HVPs, eigenvalues with their Lanczos residuals, the peak RSS
(VmHWM) of the process, and the load average at the start and end (the machine is shared).
Only the text between <!-- batch:start --> and <!-- batch:end --> of benchmarks/RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import tempfile
import time

START, END = "<!-- batch:start -->", "<!-- batch:end -->"
PARAMS = r"layers\.(2[4-9])\."
RUNS = ("npo__adam__down_proj_L24-29___s0", "npo__zo-sgd__down_proj_L24-29___s0")


def _vmhwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="runs/smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args(argv)
    import torch

    from optigrade.analysis import batch
    from optigrade.landscape.spectra import eigen_memory_bytes

    torch.set_num_threads(a.threads)
    paths = [pathlib.Path(a.study) / "runs" / f"{r}.delta.safetensors" for r in RUNS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"{missing[0]} is missing: run `optigrade demo --model smollm2` first (~40 min)")
    load0 = os.getloadavg()
    out = pathlib.Path(tempfile.mkdtemp()) / "ls"
    t0 = time.perf_counter()
    table = batch.landscape_report([str(p) for p in paths], quantities="top_eig", data="forget", out=out,
                                   params=PARAMS, examples=8, k=3, lanczos_iter=40, progress=False, threads=a.threads)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    n = int(table["n_params"].iloc[0])
    full, low = eigen_memory_bytes(n, 3, 40, "full"), eigen_memory_bytes(n, 3, 40, "low")
    log = (out / "landscape.log").read_text()
    plan = [line.strip() for line in log.splitlines() if "HVP" in line and ("plan" in line or "top_eig" in line)][:2]
    lines = [START, "## batch landscape (SmolLM2)", "",
             f"Run: `python benchmarks/bench_batch.py` on {platform.machine()}, torch {torch.__version__}, {a.threads} "
             f"threads; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end (other jobs share the 2 "
             "cores: per-HVP times swing with them). `optigrade landscape` on two saved updates of the SmolLM2 "
             f"study ({', '.join(RUNS)}), quantity top_eig (k = 3, Lanczos ≤ 40 steps, residual ≤ 1e-6·max|θ|), "
             f"forget data (8 facts), params `{PARAMS}` = all of layers 24-29 ({n:,} parameters), prefix cache on "
             "(automatic for late layers), the Lanczos basis chosen by the plan. Goal: top-3 in ≤ 10 minutes on 2 "
             "cores.", "",
             f"Plan printed before the work: {' / '.join(plan)}. Solver memory for this Probe: full float64 basis "
             f"{full / 2**30:.2f} GiB, thick restart {low / 2**30:.2f} GiB (SmolLM2's full parameter set would need "
             f"{eigen_memory_bytes(134_515_008, 3, 40, 'full') / 2**30:.0f} GiB with a full basis).", "",
             "| checkpoint | seconds (batch, Probe and solver) | HVPs | λ₁, λ₂, λ₃ (residual) | basis | goal ≤ 10 min |",
             "|---|---|---|---|---|---|"]
    for ck, g in table.groupby("checkpoint"):
        g = g.sort_values("index")
        ev = ", ".join(f"{v:.4g} ({u:.1e})" for v, u in zip(g["value"], g["uncertainty"]))
        secs = float(g["seconds"].iloc[0])
        lines.append(f"| {ck} | {secs:.0f} | {int(g['task_hvp'].iloc[0])} | {ev} | "
                     f"{g['setting_memory'].iloc[0] if 'setting_memory' in g and isinstance(g['setting_memory'].iloc[0], str) else 'full'} | "
                     f"{'met' if secs <= 600 else 'missed'} |")
    lines += ["", f"Whole command (both checkpoints, SmolLM2 loaded and its facts verified once): {wall:.0f} s; peak RSS "
              f"{_vmhwm() / 2**30:.2f} GiB.", "", END]
    section = "\n".join(lines)
    print(section)
    if not a.no_write:
        path = pathlib.Path(a.out)
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        if START in text and END in text:
            text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
