"""landscape benchmark: HVP cost per mode, eigenvalues vs pyhessian, 2-D slice throughput.

    .venv/bin/python benchmarks/bench_landscape.py            # writes the "## landscape" section
                                                        # of benchmarks/RESULTS.md

Model: a random tiny LlamaForCausalLM (eager attention), one batch; torch runs one intra-op
thread (this machine's 2 cores are shared, and spinning threads distort timings).
Only the text between <!-- landscape:start --> and <!-- landscape:end --> is replaced.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import platform
import time

import sys

import numpy as np
import torch

from optigrade import landscape as ls
from optigrade.landscape.spectra import eigen_memory_bytes

START, END = "<!-- landscape:start -->", "<!-- landscape:end -->"


def make(hidden=64, layers=2, vocab=256, batch=4, seq=64, dtype=torch.float32, seed=0):
    import transformers as t
    torch.manual_seed(seed)
    cfg = t.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=seq, tie_word_embeddings=True)
    model = t.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    return model, [dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())]


def timeit(fn, reps):
    """Fastest of ``reps`` calls after a warm-up (the minimum resists a shared machine's noise)."""
    out = fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_hvp(reps):
    model, batches = make()
    probe = ls.Probe(model, batches)
    kept = ls.Probe(model, batches, keep_graph=True)
    v = torch.randn(probe.numel, generator=torch.Generator().manual_seed(2))
    t_grad, _ = timeit(probe.grad, reps)
    t_loss, _ = timeit(probe.loss, reps)
    m64, b64 = make(dtype=torch.float64)
    ref = ls.Probe(m64, b64).hvp(v.double())
    rows = []
    for name, fn in [("double backward (rebuilt)", lambda: probe.hvp(v)),
                     ("double backward, kept graph", lambda: kept.hvp(v)),
                     ("torch.func forward-over-reverse", lambda: probe.hvp(v, mode="func")),
                     ("finite difference (ε=5e-3/‖v‖, fp32)", lambda: probe.hvp(v, mode="fd"))]:
        hv, tg, th = fn(), [], []
        for _ in range(reps):  # interleave gradient and HVP so both see the same machine load
            t = time.perf_counter(); probe.grad(); tg.append(time.perf_counter() - t)  # noqa: E702
            t = time.perf_counter(); hv = fn(); th.append(time.perf_counter() - t)  # noqa: E702
        t, ratio = min(th), min(th) / min(tg)
        err = float((hv.double() - ref).norm() / ref.norm())
        goal = 2.1 if "finite" in name else 2.5
        ok = ratio <= goal and ("finite" not in name or err <= 1e-3)
        med = float(np.median(np.array(th) / np.array(tg)))  # paired reps: robust to load swings
        rows.append((name, t * 1e3, ratio, err, goal, ok, med))
    return probe.numel, t_grad, t_loss, rows


def _oracle_steps(probe, ref, k, rel=1e-3, seed=0):
    """Lanczos steps (= HVPs) until all k Ritz values are within ``rel`` of the reference."""
    hit = []

    def cb(alpha, beta, j):
        if j + 1 >= k:
            theta = np.linalg.eigvalsh(np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1))
            top = theta[np.argsort(-np.abs(theta))][:k]
            if np.all(np.abs(top - ref[:k]) <= rel * np.abs(ref[:k])):
                hit.append(j + 1)
                return True
        return False
    v0 = torch.randn(probe.numel, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ls.lanczos(lambda q: probe.hvp(q).double(), v0, 400, callback=cb)
    return hit[0] if hit else None


def bench_eigen():
    model, batches = make(dtype=torch.float64)
    probe = ls.Probe(model, batches, keep_graph=True)  # pyhessian also keeps the graph
    ref = ls.top_eigenvalues(probe, 5, "LM", tol=1e-10, max_iter=400).eigenvalues
    out = []
    have_ph = importlib.util.find_spec("pyhessian") is not None
    for k in (1, 5):
        t = time.perf_counter()
        ours = ls.top_eigenvalues(probe, k, "LM", tol=1e-3, return_vectors=False)
        t_ours = time.perf_counter() - t
        e_ours = float(np.max(np.abs(ours.eigenvalues - ref[:k]) / np.abs(ref[:k])))
        low = ls.top_eigenvalues(probe, k, "LM", tol=1e-3, return_vectors=False, memory="low")
        row = dict(k=k, ours_hvp=ours.cost.hvp, ours_s=t_ours, ours_err=e_ours,
                   oracle=_oracle_steps(probe, ref, k), low_hvp=low.cost.hvp,
                   low_err=float(np.max(np.abs(low.eigenvalues - ref[:k]) / np.abs(ref[:k]))),
                   low_mb=eigen_memory_bytes(probe.numel, k, 300, "low") / 2 ** 20,
                   full_mb=eigen_memory_bytes(probe.numel, k, 300) / 2 ** 20)
        if have_ph:
            t = time.perf_counter()
            ph = ls.top_eigenvalues(probe, k, "LM", backend="pyhessian", return_vectors=False)
            row["ph_s"] = time.perf_counter() - t
            row["ph_hvp"] = ph.cost.hvp - k  # minus the k residual HVPs we add afterwards
            srt = ph.eigenvalues[np.argsort(-np.abs(ph.eigenvalues))]
            row["ph_err"] = float(np.max(np.abs(srt - ref[:k]) / np.abs(ref[:k])))
        out.append(row)
    equal = _equal_accuracy(probe, ref) if have_ph else []
    return probe.numel, ref, out, have_ph, equal


def _equal_accuracy(probe, ref, ph_tols=(1e-3, 1e-4, 1e-5, 1e-6)):
    """Top-1 (largest magnitude) at equal achieved accuracy, both from seed 0.

    For each pyhessian tol: pyhessian's HVPs and its achieved relative error e against the
    reference; then ours with the eigenvalue-accuracy stopping rule ``rtol=e`` (no knowledge
    of the reference beyond the target) and its own achieved error, which must be ≤ e for
    the comparison to count; and the oracle (fewest Lanczos steps whose Ritz value is within e).
    """
    rows = []
    for tol in ph_tols:
        ph = ls.top_eigenvalues(probe, 1, "LM", backend="pyhessian", pyhessian_tol=tol,
                                pyhessian_max_iter=1000, return_vectors=False)
        e_ph = float(abs(ph.eigenvalues[0] - ref[0]) / abs(ref[0]))
        ours = ls.top_eigenvalues(probe, 1, "LM", rtol=e_ph, return_vectors=False)
        e_ours = float(abs(ours.eigenvalues[0] - ref[0]) / abs(ref[0]))
        rows.append(dict(tol=tol, ph_hvp=ph.cost.hvp - 1, e_ph=e_ph, ours_hvp=ours.cost.hvp,
                         e_ours=e_ours, oracle=_oracle_steps(probe, ref, 1, rel=e_ph)))
    return rows


def bench_slice(points):
    model, batches = make()
    probe = ls.Probe(model, batches)
    n_pts = points * points
    fwd, sl = [], []
    for _ in range(3):  # interleaved, best of 3: the machine is shared
        t = time.perf_counter()
        for _ in range(n_pts):
            probe.loss()
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = ls.slice_2d(probe, points=(points, points))
        sl.append(time.perf_counter() - t)
    weight_bytes = probe.numel * probe.params[0].element_size()
    extra = 3 * weight_bytes  # one saved copy + d1 + d2 (held by Probe.moving for the grid)
    return dict(points=n_pts, t_fwd=min(fwd) / n_pts, t_slice=min(sl),
                ratio=min(fwd) / min(sl), weight_mb=weight_bytes / 2 ** 20,
                extra_mb=extra / 2 ** 20, loss_evals=s.cost.loss)


def report(hvp, eig, sl) -> str:
    n, t_grad, t_loss, rows = hvp
    lines = [START, "## landscape", "",
             f"Run: `python benchmarks/bench_landscape.py` on {platform.machine()}, torch "
             f"{torch.__version__}, 1 intra-op thread, fastest of N repetitions; random tiny Llama (hidden 64, 2 layers, "
             f"vocab 256, eager), one batch 4 × 64 tokens, {n} parameters.", "",
             f"### HVP cost per mode (fp32; gradient {t_grad * 1e3:.1f} ms, loss {t_loss * 1e3:.1f} ms)", "",
             "HVP / gradient = fastest HVP / fastest gradient (the goal's measure); the median of "
             "the per-repetition ratios (gradient and HVP timed back to back) shows the spread "
             "on this shared machine.", "",
             "| mode | ms / HVP | HVP / gradient | median paired ratio | rel. error vs fp64 exact | goal | met |",
             "|---|---|---|---|---|---|---|"]
    for name, ms, ratio, err, goal, ok, med in rows:
        extra = " and err ≤ 1e-3" if "finite" in name else ""
        lines.append(f"| {name} | {ms:.1f} | {ratio:.2f}× | {med:.2f}× | {err:.1e} | ≤ {goal}×{extra} | "
                     f"{'yes' if ok else 'no'} |")
    n2, ref, out, have_ph, equal = eig
    lines += ["", f"### Top eigenvalues, largest magnitude (fp64, {n2} parameters; reference "
              f"λ = {', '.join(f'{x:.4g}' for x in ref)})", "",
              "Both keep the first backward's graph (one extra backward per HVP). Ours: Lanczos, "
              "full reorthogonalization, stop when every residual ≤ 1e-3·max|θ| (a stricter "
              "rule than 1e-3 eigenvalue accuracy); 'ours to 1e-3' = Lanczos steps until every "
              "Ritz value is within 1e-3 of the reference (oracle count). pyhessian 0.1: power "
              "iteration with deflation, maxIter 100, tol 1e-3 relative change (its own stop; "
              "it does not necessarily reach 1e-3). Ratios use our stopping rule.", "",
              "| k | ours HVPs (to 1e-3) | ours s | ours max rel. err | pyhessian HVPs | pyhessian s | "
              "pyhessian max rel. err | HVP ratio (goal ≥ 5×) | time ratio (goal ≥ 3×) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in out:
        if have_ph:
            hr, tr = r["ph_hvp"] / r["ours_hvp"], r["ph_s"] / r["ours_s"]
            lines.append(f"| {r['k']} | {r['ours_hvp']} ({r['oracle']}) | {r['ours_s']:.2f} | {r['ours_err']:.1e} | "
                         f"{r['ph_hvp']} | {r['ph_s']:.2f} | {r['ph_err']:.1e} | {hr:.1f}× "
                         f"({'met' if hr >= 5 else 'missed'}) | {tr:.1f}× "
                         f"({'met' if tr >= 3 else 'missed'}) |")
        else:
            lines.append(f"| {r['k']} | {r['ours_hvp']} ({r['oracle']}) | {r['ours_s']:.2f} | {r['ours_err']:.1e} "
                         f"| pyhessian not installed | | | | |")
    if equal:
        lines += ["", "### Top-1 at equal accuracy (largest magnitude, fp64, seed 0 for both)", "",
                  "pyhessian at each tol (maxIter 1000) reaches some relative error e against the "
                  "reference; ours then runs with the eigenvalue-accuracy rule `rtol=e` (stop "
                  "when min(r, r²/gap) ≤ e·|θ| and θ changed by ≤ e·|θ|; the reference is not "
                  "used) and counts only if its own achieved error is ≤ e. Oracle: fewest "
                  "Lanczos steps within e. Goal: ≥ 2× fewer HVPs at equal accuracy.", "",
                  "| pyhessian tol | pyhessian HVPs | pyhessian rel. err e | ours HVPs (rtol=e) | "
                  "ours rel. err | ours ≤ e | oracle | HVP ratio | goal ≥ 2× |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in equal:
            ratio, ok = r["ph_hvp"] / r["ours_hvp"], r["e_ours"] <= r["e_ph"]
            lines.append(f"| {r['tol']:.0e} | {r['ph_hvp']} | {r['e_ph']:.1e} | {r['ours_hvp']} | "
                         f"{r['e_ours']:.1e} | {'yes' if ok else 'no'} | {r['oracle']} | "
                         f"{ratio:.1f}× | {'met' if ok and ratio >= 2 else 'missed'} |")
    lines += ["", "### Low-memory Lanczos (`memory=\"low\"`, thick restart), same problem, tol 1e-3", "",
              "| k | full HVPs | low HVPs | low max rel. err | solver memory full / low at "
              "max_iter 300 (`eigen_memory_bytes`) |", "|---|---|---|---|---|"]
    for r in out:
        lines.append(f"| {r['k']} | {r['ours_hvp']} | {r['low_hvp']} | {r['low_err']:.1e} | "
                     f"{r['full_mb']:.0f} MB / {r['low_mb']:.1f} MB |")
    lines += ["", f"### 2-D slice ({sl['points']} points, fp32)", "",
              f"- forward-pass bound: {sl['points']} × {sl['t_fwd'] * 1e3:.1f} ms = "
              f"{sl['points'] * sl['t_fwd']:.2f} s; slice took {sl['t_slice']:.2f} s "
              f"({sl['loss_evals']} loss passes): throughput {sl['ratio']:.2f}× the bound "
              f"(goal ≥ 0.9×: {'met' if sl['ratio'] >= 0.9 else 'missed'}).",
              f"- extra memory by construction: one weight copy + two directions = "
              f"{sl['extra_mb']:.2f} MB for {sl['weight_mb']:.2f} MB of weights (3×; goal ≤ two "
              f"directions + one copy: met). Counted from the tensors held, not a measured RSS peak.",
              "", END]
    return "\n".join(lines)


def write(section: str, path: pathlib.Path):
    from _results import write_section  # benchmarks/_results.py (this script's directory is on sys.path)

    write_section(section, path, START, END)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--points", type=int, default=11, help="2-D grid side")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    section = report(bench_hvp(args.reps), bench_eigen(), bench_slice(args.points))
    write(section, pathlib.Path(args.out))
    print(section)


if __name__ == "__main__":
    main()
