"""One unlearning run from a validated config: load, unlearn, save a checkpoint + manifest.

:class:`~optigrade.unlearning.config.UnlearnConfig` (pydantic) maps 1:1 onto ``optigrade
unlearn`` flags and onto study YAML entries and refuses bad input on construction (naming the
value and the fix), before any model is loaded.  :func:`run_unlearn` writes, atomically, a directory that
``transformers.AutoModelForCausalLM.from_pretrained`` opens::

    OUT/config.json, model.safetensors, tokenizer files   (save_pretrained)
    OUT/manifest.json    every setting, metrics before/after, stop reason, versions
    OUT/log.csv          the per-step log
"""

from __future__ import annotations

import json
import platform
from typing import Optional

import torch

from .._device import resolve_device, resolve_dtype
from .._files import check_out, clean_stale, dir_is_nonempty, model_fingerprint, output_lock
from .._quiet import maybe_quiet
from .._validate import ConfigError, ModelLoadError
from .benchmarks import BENCHMARKS, Benchmark
from .config import Setup, UnlearnConfig
from .._select import trainable
from .loop import RunDiverged, UnlearnResult, _check_args, match_status, unlearn
from .models import load, pretrained_tiny
from .models.base import place
from .objectives import make_objective

__all__ = ["UnlearnConfig", "ConfigError", "run_unlearn", "build", "build_benchmark", "build_model"]


def build_benchmark(cfg: Setup, model=None, tokenizer=None, progress: bool = False) -> Benchmark:
    """The benchmark of ``cfg`` (``benchmark_kwargs`` passed through, ``forget_fraction`` unless
    given there).  A benchmark built *against a model* (``needs_model = True``, e.g. RealFacts
    verifies which facts the model knows) gets ``model`` / ``tokenizer`` when given, else loads
    its own reference model.

    >>> b = build_benchmark(Setup(benchmark_kwargs={"n_entities": 20}, forget_fraction=0.2))
    >>> type(b).__name__, len({q.group for q in b.forget}) / 20
    ('SyntheticFacts', 0.2)
    """
    cls = BENCHMARKS.get(cfg.benchmark)
    kw = dict(cfg.benchmark_kwargs)
    kw.setdefault("forget_fraction", cfg.forget_fraction)
    if getattr(cls, "needs_model", False):
        kw.update(model=model, tokenizer=tokenizer, progress=progress)
    elif getattr(cls, "tokenizer_from_model", False):  # a data layout tokenized by the model's own tokenizer
        kw.update(tokenizer=tokenizer)
    return cls(**kw)


def build(cfg: Setup, progress: bool = True, benchmark: Optional[Benchmark] = None, model=None, tokenizer=None):
    """``(benchmark, model)`` for ``cfg`` in the order their dependencies need: the tiny model
    is pretrained on the benchmark, while a model-verified benchmark (``needs_model``) is built
    against its reference model when that is the model being unlearned (``cfg.model ==
    cls.reference_model``, e.g. RealFacts on "smollm2"); otherwise it loads the reference itself,
    so facts are always verified against the original, never against an unlearned checkpoint.
    The model is placed on ``cfg.device`` in ``cfg.dtype`` (an unavailable device is refused
    first, before anything is loaded).

    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts(n_entities=20)
    >>> m = tiny_llama(len(bench.tokenizer), seed=0)
    >>> b, model = build(Setup(), benchmark=bench, model=m)   # given parts are reused as they are
    >>> b is bench, model is m
    (True, True)
    """
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    cls = BENCHMARKS.get(cfg.benchmark)
    if benchmark is None and getattr(cls, "needs_model", False) and model is None \
            and cfg.model == getattr(cls, "reference_model", None):
        try:
            model, tok = load(cfg.model, device=device, dtype=dtype)
            return build_benchmark(cfg, model, tok, progress), model
        except ValueError as e:  # ModelLoadError, too few verified facts for the split, bad argument
            raise ConfigError(str(e)) from None
    if benchmark is None and tokenizer is not None and getattr(cls, "tokenizer_from_model", False):
        try:  # the given model's own tokenizer (e.g. a model directory's)
            benchmark = build_benchmark(cfg, tokenizer=tokenizer, progress=progress)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if benchmark is None and model is not None and getattr(cls, "tokenizer_from_model", False) and cfg.model != "tiny":
        raise ConfigError(f"the {cfg.benchmark} benchmark is tokenized by the model's tokenizer: with a given model, "
                          "pass its tokenizer too (build(cfg, model=model, tokenizer=tok)) or a built benchmark")
    if benchmark is None and model is None and getattr(cls, "tokenizer_from_model", False) and cfg.model != "tiny":
        # a local data layout (TOFU, MUSE, WMDP) on a real model: its text is tokenized by that model's
        # tokenizer, so the model is loaded first (the layout was checked when the config was validated);
        # on "tiny" the benchmark builds a word-level tokenizer from its data and the tiny model is
        # pretrained on it below
        try:
            model, tok = load(cfg.model, device=device, dtype=dtype)
        except ModelLoadError as e:
            raise ConfigError(str(e)) from None
        if tok is None:
            raise ConfigError(f"model {cfg.model!r} has no tokenizer files; the {cfg.benchmark} benchmark tokenizes "
                              "its data with the model's tokenizer: save one next to the weights")
        try:
            benchmark = build_benchmark(cfg, tokenizer=tok, progress=progress)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return benchmark, model
    if benchmark is None:
        try:
            benchmark = build_benchmark(cfg, progress=progress)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if model is None:
        model = build_model(cfg, benchmark, progress)
    return benchmark, model


def build_model(cfg: Setup, benchmark: Benchmark, progress: bool = True):
    """The starting model on ``cfg.device`` / ``cfg.dtype``: the cached pretrained tiny Llama
    (pretrained on ``benchmark``), a named model or a local checkpoint directory.

    >>> import tempfile
    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts(n_entities=20)
    >>> d = tempfile.mkdtemp()
    >>> tiny_llama(len(bench.tokenizer), seed=0).save_pretrained(d)
    >>> build_model(Setup(model=d, dtype="bfloat16"), bench).dtype
    torch.bfloat16
    """
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    if cfg.model == "tiny":
        model, _ = pretrained_tiny(benchmark, seed=0, progress=progress)
        return place(model, device, dtype)
    try:
        return load(cfg.model, device=device, dtype=dtype)[0]
    except ModelLoadError as e:
        raise ConfigError(str(e)) from None


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def base_sha256(model) -> str:
    """Full sha256 of the starting model's weights (:func:`~optigrade._files.model_fingerprint`
    ``full=True``): recorded in every manifest and study row; for the shipped tiny base it is
    ``weights_sha256`` of its ``recipe.json``."""
    return model_fingerprint(model, full=True)


def run_unlearn(cfg: UnlearnConfig, out=None, overwrite: bool = False, progress: bool = True,
                benchmark: Optional[Benchmark] = None, model=None, evaluate_before: bool = True,
                final_eval: bool = True) -> UnlearnResult:
    """Validate, build, unlearn and (when ``out`` is given) save.  ``benchmark`` / ``model``
    may be passed to reuse already-built ones (the model is modified in place).
    ``evaluate_before=False`` skips scoring the starting model (a study scores it once).

    When both the starting and the final model were scored, ``res.matched`` / ``res.match_reason``
    say whether the run is at matched forgetting (:func:`~optigrade.unlearning.loop.match_status`
    with the config's utility floors; also in the manifest).  A diverged run (non-finite loss or
    weights) is never saved: with ``out`` it raises :class:`~optigrade.unlearning.loop.RunDiverged`
    and writes nothing.

    >>> import tempfile, pathlib
    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts(n_entities=20)
    >>> cfg = UnlearnConfig(objective="npo", objective_kwargs={"beta": 0.2}, steps=2, eval_every=2, target=None)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "ckpt"
    >>> res = run_unlearn(cfg, out, benchmark=bench, model=tiny_llama(len(bench.tokenizer), seed=0), progress=False)
    >>> res.steps, res.stop_reason, sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".csv"))[:3]
    (2, 'budget', ['config.json', 'generation_config.json', 'log.csv'])
    >>> run_unlearn(cfg, out)
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: output directory '...ckpt' exists and is not empty; pass --overwrite or choose a new --out
    """
    if out is None:
        with maybe_quiet(progress):  # progress=False: transformers' load / save bars too
            return _run_unlearn(cfg, None, False, progress, benchmark, model, evaluate_before, final_eval)
    out = check_out(out, overwrite=overwrite, replace=True)  # a file, inside a file, `.`, not writable
    with output_lock(out):  # another process writing this --out: told now, before any work
        clean_stale(out)  # the .tmp / .old siblings a killed run left
        if dir_is_nonempty(out) and not overwrite:
            raise ConfigError(f"output directory {str(out)!r} exists and is not empty; pass --overwrite or choose a "
                              "new --out")
        if dir_is_nonempty(out) and not (out / "manifest.json").exists():
            raise ConfigError(f"output directory {str(out)!r} is not empty and holds no manifest.json, so optigrade "
                              "did not write it; --overwrite replaces only optigrade's own checkpoints: move its "
                              "files away or choose a new --out")
        with maybe_quiet(progress):
            return _run_unlearn(cfg, out, overwrite, progress, benchmark, model, evaluate_before, final_eval)


def _run_unlearn(cfg, out, overwrite, progress, benchmark, model, evaluate_before, final_eval) -> UnlearnResult:
    """:func:`run_unlearn` after its output checks (holding the output's lock)."""
    from optigrade import optimizers

    bench, model = build(cfg, progress, benchmark, model)
    try:  # the loop's own argument checks (e.g. a metric the benchmark has no split for), before any work
        _check_args(bench, cfg.steps, cfg.target, cfg.metric, cfg.eval_every, cfg.batch_size, cfg.seed, 200,
                    cfg.retain_floor)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    objective = make_objective(cfg.objective, **cfg.objective_kwargs)
    try:  # e.g. an RMU layer the model does not have: named with the model's layer count, before any work
        objective.check_model(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    base = base_sha256(model) if out is not None else None  # of the starting weights, before unlearning
    try:  # which weights move (the rest are frozen); a pattern selecting nothing is refused before any work
        params = trainable(model, cfg.params)
    except ValueError as e:
        raise ConfigError(f"params: {e}") from None
    before = bench.evaluate(model) if evaluate_before else {}
    try:
        opt = optimizers.make(cfg.optimizer, params, lr=cfg.lr, **cfg.optimizer_kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: {e}") from None
    res = unlearn(model, objective, opt, bench, steps=cfg.steps, target=cfg.target, metric=cfg.metric,
                  eval_every=cfg.eval_every, batch_size=cfg.batch_size, seed=cfg.seed, params=params,
                  retain_floor=cfg.retain_floor, final_eval=final_eval, progress=progress,
                  prefix_cache=cfg.prefix_cache)
    res.metrics_before = before
    if before and (res.metrics or res.diverged):
        res.matched, res.match_reason, _ = match_status(res.stop_reason, res.metrics, before,
                                                             cfg.utility_floor_retain, cfg.utility_max_ppl_ratio)
    if out is not None and res.diverged:  # never a checkpoint whose NaN weights evaluate as perfect forgetting
        raise RunDiverged(f"the run diverged ({res.note}); nothing was written to {str(out)!r}; lower the "
                          f"learning rate (lr={cfg.lr:g}) or use a more stable optimizer", res)
    if out is not None:
        manifest = {"config": cfg.to_dict(), "base_sha256": base, "benchmark": bench.settings(),
                    "objective": objective.settings(),
                    "optimizer": {"class": type(opt).__name__, "grade": getattr(opt, "grade", None),
                                  "defaults": {k: v for k, v in opt.defaults.items() if _jsonable(v)}},
                    "steps": res.steps, "stop_reason": res.stop_reason, "matched": res.matched,
                    "match_reason": res.match_reason, "metrics_before": before,
                    "metrics_after": res.metrics, "seconds": round(res.seconds, 3), "versions": versions()}
        res.save_pretrained(out, tokenizer=bench.tokenizer, manifest=manifest, overwrite=overwrite)
    return res


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
