"""One unlearning run from a validated config: load, unlearn, save a checkpoint + manifest.

``UnlearnConfig`` maps 1:1 onto ``optigrade unlearn`` flags and onto study YAML entries;
:meth:`UnlearnConfig.validate` refuses bad input (naming the value and the fix) before any
model is loaded.  :func:`run_unlearn` writes, atomically, a directory that
``transformers.AutoModelForCausalLM.from_pretrained`` opens::

    OUT/config.json, model.safetensors, tokenizer files   (save_pretrained)
    OUT/manifest.json    every setting, metrics before/after, stop reason, versions
    OUT/log.csv          the per-step log
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .._validate import ConfigError
from .._files import atomic_dir, atomic_write_json, dir_is_nonempty
from .benchmark import Benchmark
from .loop import UnlearnResult, trainable_parameters, unlearn
from .models import NAMED_MODELS, ModelLoadError, load, pretrained_tiny
from .objectives import OBJECTIVES, make_objective
from .synthetic import SyntheticFacts

__all__ = ["UnlearnConfig", "ConfigError", "run_unlearn", "build", "build_benchmark", "build_model", "save_checkpoint"]

BENCHMARKS: Dict[str, Any] = {"synthetic": SyntheticFacts}  # plug-ins add more (e.g. "smollm2-facts")


@dataclass
class UnlearnConfig:
    """Everything that defines one unlearning run (saved in its manifest)."""

    objective: str = "graddiff"
    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 200
    target: Optional[float] = 0.1
    metric: str = "forget_acc"
    eval_every: int = 5
    batch_size: int = 16
    seed: int = 0
    model: str = "tiny"
    benchmark: str = "synthetic"
    forget_fraction: float = 0.1
    n_entities: int = 200
    params: Optional[str] = None  # regex over parameter names; None = all
    retain_floor: Optional[float] = None  # stop when retain_acc drops below this (see unlearn)
    benchmark_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra benchmark arguments
    objective_kwargs: Dict[str, Any] = field(default_factory=dict)
    optimizer_kwargs: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "UnlearnConfig":
        from optigrade import optimizers

        names = {i.name for i in optimizers.available(gru=True)}
        if self.optimizer not in names:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(sorted(names))}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}; e.g. --lr 1e-3 for Adam on the tiny model")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}; e.g. --steps 200")
        if not (isinstance(self.eval_every, int) and self.eval_every >= 1):
            raise ConfigError(f"eval_every must be a positive integer, got {self.eval_every!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (0.0 < float(self.forget_fraction) < 1.0):
            raise ConfigError(f"forget_fraction must be in (0, 1), got {self.forget_fraction!r}; e.g. 0.1 forgets 10% of entities")
        if self.target is not None and not (0.0 <= float(self.target) <= 1.0) and self.metric.endswith("_acc"):
            raise ConfigError(f"target must be in [0, 1] for metric {self.metric}, got {self.target!r}")
        if self.retain_floor is not None and not (0.0 <= float(self.retain_floor) <= 1.0):
            raise ConfigError(f"retain_floor must be in [0, 1], got {self.retain_floor!r}; e.g. 0.75 stops a run "
                              "whose retain accuracy falls below 75%")
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(f"unknown benchmark {self.benchmark!r}; choose one of: {', '.join(sorted(BENCHMARKS))}")
        if not isinstance(self.benchmark_kwargs, dict):
            raise ConfigError(f"benchmark_kwargs must be a mapping, got {self.benchmark_kwargs!r}; "
                              "e.g. {n_forget: 8, n_retain: 16}")
        _check_benchmark_kwargs(self.benchmark, self.benchmark_kwargs)
        if self.model != "tiny" and self.model not in NAMED_MODELS:
            p = Path(self.model).expanduser()
            if not p.exists():
                raise ConfigError(f"model {self.model!r}: no such path; give 'tiny', a named model "
                                  f"({', '.join(sorted(NAMED_MODELS)) or 'none installed'}) or a checkpoint directory")
            if not (p / "config.json").exists():
                raise ConfigError(f"model path {self.model!r} is not a model checkpoint (no config.json inside)")
        try:
            make_objective(self.objective, **self.objective_kwargs)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        try:  # hyperparameters are checked in the optimizer's __init__: build it on a dummy tensor
            optimizers.make(self.optimizer, [torch.nn.Parameter(torch.zeros(2))], lr=self.lr,
                            **self.optimizer_kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"optimizer {self.optimizer!r}: {e}") from None
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UnlearnConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown setting(s) {bad}; allowed: {sorted(known)}")
        return cls(**d)


_NOT_KWARGS = {"self", "model", "tokenizer", "progress"}


def _check_benchmark_kwargs(name: str, kw: dict) -> None:
    """Refuse benchmark arguments the benchmark's constructor does not take (before any work)."""
    import inspect

    cls = BENCHMARKS[name]
    allowed = sorted(set(inspect.signature(cls.__init__).parameters) - _NOT_KWARGS)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ConfigError(f"benchmark_kwargs: {bad} not accepted by benchmark {name!r}; allowed: {allowed}")


def build_benchmark(cfg: UnlearnConfig, model=None, tokenizer=None, progress: bool = False) -> Benchmark:
    """The benchmark of ``cfg`` (``benchmark_kwargs`` passed through).  A benchmark built
    *against a model* (``needs_model = True``, e.g. RealFacts verifies which facts the model
    knows) gets ``model`` / ``tokenizer`` when given, else loads its own reference model."""
    cls = BENCHMARKS[cfg.benchmark]
    kw = dict(cfg.benchmark_kwargs)
    if cfg.benchmark == "synthetic":
        kw.setdefault("n_entities", cfg.n_entities)
        kw.setdefault("seed", 0)
    kw.setdefault("forget_fraction", cfg.forget_fraction)
    if getattr(cls, "needs_model", False):
        kw.update(model=model, tokenizer=tokenizer, progress=progress)
    return cls(**kw)


def build(cfg: UnlearnConfig, progress: bool = True, benchmark: Optional[Benchmark] = None, model=None):
    """``(benchmark, model)`` for ``cfg`` in the order their dependencies need: the tiny model
    is pretrained on the benchmark, while a model-verified benchmark (``needs_model``) is built
    against its reference model when that is the model being unlearned (``cfg.model ==
    cls.reference_model``, e.g. RealFacts on "smollm2"); otherwise it loads the reference itself,
    so facts are always verified against the original, never against an unlearned checkpoint."""
    cls = BENCHMARKS[cfg.benchmark]
    if benchmark is None and getattr(cls, "needs_model", False) and model is None \
            and cfg.model == getattr(cls, "reference_model", None):
        try:
            model, tok = NAMED_MODELS[cfg.model]()
            return build_benchmark(cfg, model, tok, progress), model
        except ValueError as e:  # ModelLoadError, too few verified facts for the split, bad argument
            raise ConfigError(str(e)) from None
    if benchmark is None:
        try:
            benchmark = build_benchmark(cfg, progress=progress)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if model is None:
        model = build_model(cfg, benchmark, progress)
    return benchmark, model


def build_model(cfg: UnlearnConfig, benchmark: Benchmark, progress: bool = True):
    """The starting model: the cached pretrained tiny Llama, a named model or a local path."""
    if cfg.model == "tiny":
        model, _ = pretrained_tiny(benchmark, seed=0, progress=progress)
        return model
    try:
        return load(cfg.model)
    except ModelLoadError as e:
        raise ConfigError(str(e)) from None


def save_checkpoint(model, tokenizer, out, manifest: dict, log=None, overwrite: bool = False) -> Path:
    """Write model (safetensors) + tokenizer + manifest (+ log) to ``out`` atomically."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if log is not None:
            log.to_csv(tmp / "log.csv", index=False)
        atomic_write_json(tmp / "manifest.json", manifest)
    return out


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def run_unlearn(cfg: UnlearnConfig, out=None, overwrite: bool = False, progress: bool = True,
                benchmark: Optional[Benchmark] = None, model=None, evaluate_before: bool = True,
                final_eval: bool = True) -> UnlearnResult:
    """Validate, build, unlearn and (when ``out`` is given) save.  ``benchmark`` / ``model``
    may be passed to reuse already-built ones (the model is modified in place).
    ``evaluate_before=False`` skips scoring the starting model (a study scores it once)."""
    cfg.validate()
    if out is not None and dir_is_nonempty(Path(out)) and not overwrite:
        raise ConfigError(f"output directory {str(out)!r} exists and is not empty; pass --overwrite or choose a new --out")
    from optigrade import optimizers

    bench, model = build(cfg, progress, benchmark, model)
    before = bench.evaluate(model) if evaluate_before else {}
    objective = make_objective(cfg.objective, **cfg.objective_kwargs)
    params = trainable_parameters(model, cfg.params)
    try:
        opt = optimizers.make(cfg.optimizer, params, lr=cfg.lr, **cfg.optimizer_kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: {e}") from None
    res = unlearn(model, objective, opt, bench, steps=cfg.steps, target=cfg.target, metric=cfg.metric,
                  eval_every=cfg.eval_every, batch_size=cfg.batch_size, seed=cfg.seed, params=params,
                  retain_floor=cfg.retain_floor, final_eval=final_eval, progress=progress)
    res.metrics_before = before
    if out is not None:
        manifest = {"config": cfg.to_dict(), "benchmark": bench.settings(), "objective": objective.settings(),
                    "optimizer": {"class": type(opt).__name__, "grade": getattr(opt, "grade", None),
                                  "defaults": {k: v for k, v in opt.defaults.items() if _jsonable(v)}},
                    "steps": res.steps, "stop_reason": res.stop_reason, "metrics_before": before,
                    "metrics_after": res.metrics, "seconds": round(res.seconds, 3), "versions": versions()}
        save_checkpoint(model, bench.tokenizer, out, manifest, log=res.log, overwrite=overwrite)
    return res


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
