"""The grade × objective × attack study at matched forgetting.

For every objective × optimizer × seed, :func:`run_study`

1. copies the base model and unlearns it with :func:`unlearning.run.run_unlearn` until the
   forget metric reaches ``target`` (``stop_reason="target"``) or the optimizer's step cap
   (``"budget"``: reported, the run is then *not* at matched forgetting);
2. evaluates it before any attack (attack ``"none"``) and after each attack
   (:mod:`analysis.attacks`; relearning with ``protocol="half"`` is measured on the held-out
   half B of the forget entities, ``data="forget-half-B"``; the half A it fine-tuned on is
   scored too, ``data="forget-half-A"``, so a table can say whether A itself was relearned);
3. computes the mechanism diagnostics (:mod:`analysis.diagnostics`) against the base model;
4. writes the run's tidy rows atomically to ``OUT/runs/<run_id>.parquet``, after its update
   θ_u − θ₀ (:mod:`.deltas`: the unlearned values of the tensors that moved, with the base's
   sha256) to ``OUT/runs/<run_id>.delta.safetensors`` (the rows' ``delta_file``), so geometry and
   reports can be computed later without re-running unlearning.

A diverged run (non-finite loss or weights) gets NaN values, no attack and no diagnostics.  When
the rows are gathered every run is judged (``matched``, ``match_reason``, ``match_detail``):
matched means it reached the target *and* kept retain accuracy and general perplexity within the
study's utility floors relative to the base model (``utility_floor_retain``,
``utility_max_ppl_ratio``; :func:`optigrade.unlearning.loop.match_status`).  The floors judge, they
change no number and are not part of the run hash, so ``resume`` with other floors relabels.

Finished runs are skipped on ``resume`` when their stored config hash matches and their delta
file is intact (else they are recomputed).  At the end the
per-run files are gathered into ``OUT/results.{parquet,csv}`` (one row per run × attack ×
quantity in the one tidy schema of :mod:`optigrade._tables`: ``subject``, ``data``,
``quantity``, ``value``, ..., every setting a column; the geometry stage's ``geo_*`` and the
theory checks' ``theory_*`` rows among them), ``OUT/summary.{parquet,csv}`` (per group: the
per-seed values and a 95% interval that respects the metric, :mod:`.intervals`), the explain
stage's ``OUT/explain*.parquet`` (:mod:`.explain`) and the report ``OUT/report.{md,html}``.
Controls (``controls:``, :mod:`.controls`) run after the optimizers they are built from.  ``OUT/study.json`` says whose the directory is
and where its study stands: written first (status "running", once the config has passed every
check), sealed last (status "complete", with the tables' sha256), so a killed study is never
reported as finished (:mod:`._studydir`); one process at a time writes ``OUT`` (a lock).

Deterministic per seed: data order, ZO directions (the optimizer's ``seed``), relearning and
noise all derive from the run's seed through local generators; timings are the only
non-reproducible columns (:data:`VOLATILE_COLUMNS`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import torch

from .._files import atomic_write_parquet, atomic_write_text, check_out, output_lock
from .._tables import HEAD_COLUMNS, SETTING_PREFIX
from .._validate import ConfigError
from .. import optimizers

from ..unlearning.config import Setup
from .attacks import AttackSpec, apply_attack, bin_crossing_gguf, forget_halves, half_view
from .config import OptimizerSpec, StudyConfig, file_safe
from .diagnostics import diagnose
from ._studydir import finish_study, start_study, study_mode

__all__ = ["run_study", "StudyResult", "EvalBudget", "run_id", "ATTACK_COLUMNS"]

VERSION = 2  # 2: pydantic configs (Setup fields, objective settings) in the hash
ATTACK_COLUMNS = ["bits", "group_size", "symmetric", "steps", "lr", "protocol", "n_samples", "batch_size",
                  "sigma", "relative", "types"]


# ----------------------------------------------------------------------------- evaluation
class EvalBudget:
    """A benchmark proxy whose ``evaluate`` scores fixed subsets (``eval_retain`` retain /
    retain-paraphrase examples, ``eval_general`` general sentences) and caches results by the
    model's exact weights, so the unmodified base model is scored once per study.  Everything
    else (batches, tokenizer, splits) is the wrapped benchmark's.

    Only the model given to :meth:`pin` (the study's base, which a study never modifies) is
    cached, by identity: hashing every weight of every unlearned or attacked model to find a
    cache hit that never comes would cost more than it saves on a large model.

    >>> _, bench, model = _toy()
    >>> eb = EvalBudget(bench, retain=10, general=5, splits=["forget", "retain"]).pin(model)
    >>> m = eb.evaluate(model)
    >>> 0 <= m["forget_acc"] <= 1, eb.evaluate(model) == m, len(eb._cache)   # the second call is cached
    (True, True, 1)
    """

    def __init__(self, benchmark, retain: Optional[int] = 200, general: Optional[int] = 100,
                 splits: Optional[List[str]] = None, batch_size: int = 256):
        self._bench = benchmark
        self._view = copy.copy(benchmark)
        if general is not None:
            self._view.general = {**benchmark.general, "test": list(benchmark.general["test"])[:general]}
        self._limit = {} if retain is None else {"retain": retain, "retain_para": retain}
        self._splits = splits
        self._bs = batch_size
        self._cache: Dict[tuple, dict] = {}
        self._pinned = None

    def pin(self, model) -> "EvalBudget":
        """Cache the scores of ``model`` (which must not change while pinned); returns self."""
        self._pinned = model
        self._cache = {}
        return self

    def __getattr__(self, name):
        return getattr(self._bench, name)

    def with_forget_groups(self, groups) -> "EvalBudget":
        """The same budget over a view whose forget splits keep only ``groups``."""
        out = EvalBudget.__new__(EvalBudget)
        out.__dict__.update(self.__dict__)
        out._bench = half_view(self._bench, groups)
        v = half_view(self._view, groups)
        out._view = v
        out._cache = {}
        return out

    def evaluate(self, model, splits=None, batch_size=None, general=True, limit=None, per_example=None):
        splits = splits if splits is not None else [s for s in (self._splits or list(self._bench.splits))
                                                    if s in self._bench.splits]
        lim = {**self._limit, **(limit or {})}
        if model is not self._pinned:
            return self._view.evaluate(model, splits=splits, batch_size=batch_size or self._bs, general=general,
                                       limit=lim, per_example=per_example)
        key = (tuple(splits), bool(general), tuple(sorted(lim.items())))
        if key not in self._cache:
            pe = {}
            m = self._view.evaluate(model, splits=splits, batch_size=batch_size or self._bs, general=general,
                                    limit=lim, per_example=pe)
            self._cache[key] = (m, pe)
        m, pe = self._cache[key]
        if per_example is not None:
            per_example.update({k: list(v) for k, v in pe.items()})
        return dict(m)


# ----------------------------------------------------------------------------- helpers
#: Columns holding wall-clock seconds: the only ones that differ between two runs of the same
#: study on the same machine (compare tables without them).
VOLATILE_COLUMNS = ["unlearn_seconds", "run_seconds", "geo_seconds", "theory_seconds"]

_ORIGINAL = OptimizerSpec(name="adam", label="original", lr=1.0)  # the reference row's stand-in entry

def run_id(objective, opt: OptimizerSpec, seed: int) -> str:
    """The run's file-safe name: ``<objective>__<optimizer label>__s<seed>``.

    >>> run_id("npo", OptimizerSpec(name="adam", label="adam (mlp)", lr=1e-3), 2)
    'npo__adam__mlp___s2'
    """
    return file_safe(f"{_objective_key(objective)}__{opt.key}__s{seed}")


def _objective_key(objective) -> str:
    return objective if isinstance(objective, str) else objective.key


#: Setup fields that judge a run's results (matched or not) without changing what it computes:
#: applied when the results are gathered, so they stay out of the run hash
_JUDGMENT = ("utility_floor_retain", "utility_max_ppl_ratio")
#: StudyConfig fields that change what a run computes (beyond its optimizer, objective, seed)
_SHARED = (*(k for k in Setup.model_fields if k not in _JUDGMENT), "eval_retain", "eval_general", "eval_splits",
           "attacks", "diagnostics", "geometry")


def _run_hash(cfg: StudyConfig, objective, opt: OptimizerSpec, seed: int, env: dict) -> str:
    """Hash of everything a run's numbers depend on: the shared settings, the objective, the
    optimizer, the seed and ``env`` (:func:`_environment`: the base weights' sha256, torch
    version, CPU capability)."""
    d = cfg.to_dict()
    shared = {k: d[k] for k in _SHARED}
    if d.get("benchmark_metrics", {}) != {}:  # the default leaves earlier studies' hashes as they were
        shared["benchmark_metrics"] = d["benchmark_metrics"]
    obj = objective if isinstance(objective, str) else objective.to_yaml()
    refs = {}  # a control: the optimizer entries whose runs it is built from
    for r in (getattr(opt, "source", None), getattr(opt, "match", None)):
        if r:
            refs[r] = next(o.to_dict() for o in cfg.optimizers if o.key == r)
    blob = json.dumps({"v": VERSION, "shared": shared, "objective": obj,
                       "opt": {**opt.to_dict(), "label": opt.key}, **({"refs": refs} if refs else {}),
                       "seed": seed, "env": env}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _environment(base) -> dict:
    """The columns every row of a study carries about where its numbers come from: the full
    sha256 of the base model's weights (for the shipped tiny base, ``weights_sha256`` of its
    ``recipe.json``), the torch version and the CPU capability (its kernels round differently)."""
    from optigrade.unlearning.run import base_sha256

    return {"base_sha256": base_sha256(base), "torch_version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _check_same_base(runs_dir: Path, env: dict) -> None:
    """Refuse to resume into run files computed on another base model (before any work)."""
    for path in sorted(runs_dir.glob("*.parquet")):
        try:
            old = pd.read_parquet(path, columns=["base_sha256"])["base_sha256"]
        except Exception:  # unreadable, or written before base_sha256 existed: its hash differs, it is recomputed
            continue
        if len(old) and old.iloc[0] != env["base_sha256"]:
            raise ConfigError(
                f"--resume would mix base models: {str(path)!r} was computed on a base with sha256 {old.iloc[0]}, "
                f"the base loaded now has sha256 {env['base_sha256']}; resume on the base those runs used, or pass "
                f"--overwrite to recompute every run (or choose another --out)")


def _attack_columns(a: Optional[AttackSpec]) -> dict:
    s = a.resolved() if a is not None else {}
    cols = {"attack": a.key if a else "none", "attack_kind": a.kind if a else "none"}
    for c in ATTACK_COLUMNS:
        v = s.get(c)
        cols[f"attack_{c}"] = None if v is None else str(v)
    cols["attack_settings"] = json.dumps(s, sort_keys=True, default=str) if a else "{}"
    return cols


def _unit(quantity: str) -> str:
    if quantity.endswith("_acc"):
        return "fraction"
    if quantity.endswith("_nll"):
        return "nats/token"
    return ""


def _metric_rows(common: dict, metrics: dict, data: str, subject: str,
                 per_example: Optional[dict] = None) -> List[dict]:
    """Rows of the one tidy schema (:mod:`optigrade._tables`): the run's context columns, then
    ``subject`` ("original" | "unlearned" | "attacked:<label>"), ``data`` (the split scored:
    "all" = every evaluation split, "forget-half-B", "weights"), ``quantity``, ``value``...;
    an accuracy row of a split in ``per_example`` also carries ``per_example``: each fact's exact
    match as a string of 0/1 in split order (what a bootstrap over facts resamples)."""
    pe = per_example or {}
    return [{**common, "subject": subject, "data": data, "quantity": k, "index": 0, "value": float(v),
             "uncertainty": float("nan"), "uncertainty_kind": "", "unit": _unit(k),
             **({"per_example": "".join(map(str, pe[k[:-4]]))} if k.endswith("_acc") and k[:-4] in pe else {})}
            for k, v in metrics.items()]


def _scored(bench, model, **kw):
    """``(metrics, per-example exact matches)`` of ``model`` on ``bench``."""
    pe: dict = {}
    return bench.evaluate(model, per_example=pe, **kw), pe


def _published(cfg: StudyConfig, bench, model) -> dict:
    """The benchmark's own published metrics (TOFU forget probability / ROUGE / model utility,
    MUSE VerbMem / KnowMem / PrivLeak, WMDP accuracy: :meth:`Benchmark.benchmark_metrics`) of
    ``model``, unless the config's ``benchmark_metrics`` is null; ``{}`` for the built-in
    benchmarks."""
    if cfg.benchmark_metrics is None:
        return {}
    return dict(bench.benchmark_metrics(model, **cfg.benchmark_metrics))


def _frame(rows: List[dict]) -> pd.DataFrame:
    """The schema's head columns first (run_id, subject, data, quantity, ...), then the run's
    context, then ``setting_*``."""
    df = pd.DataFrame(rows)
    head = [c for c in HEAD_COLUMNS if c in df]
    settings = sorted(c for c in df if c.startswith(SETTING_PREFIX))
    if "setting_bits" not in df:
        df["setting_bits"] = float("nan")
        settings = sorted(settings + ["setting_bits"])
    for c in settings:  # mixed columns (e.g. symmetric: only on diagnostic rows) keep None, as parquet reads them
        if df[c].dtype == object:
            df[c] = df[c].where(df[c].notna(), None)
    return df[head + [c for c in df if c not in head and c not in settings] + settings]


def _subject(a: Optional[AttackSpec], unlearned: bool) -> str:
    return f"attacked:{a.key}" if a is not None else ("unlearned" if unlearned else "original")


def _attack_all(cfg: StudyConfig, model, bench: EvalBudget, seed: int, common: dict, progress: bool,
                unlearned: bool = True, keep: Optional[dict] = None) -> List[dict]:
    """Rows for attack "none" and every attack of ``cfg`` on ``model`` (not modified); with
    ``keep`` (a dict) also ``keep[label]`` = the attacked weights the geometry stage measures."""
    from tqdm.auto import tqdm

    rows = []
    halves = {}  # relearn-half: fine-tuned on half A, measured on half B; A is scored too (was A itself relearned?)
    if any(a.kind == "relearn" and a.resolved()["protocol"] == "half" for a in cfg.attacks):
        a_groups, b_groups = forget_halves(bench, seed)
        halves = {"forget-half-B": bench.with_forget_groups(b_groups),
                  "forget-half-A": bench.with_forget_groups(a_groups)}
    fsplits = [s for s in ("forget", "forget_para") if s in bench.splits]
    none = _subject(None, unlearned)
    m, pe = _scored(bench, model)
    m.update(_published(cfg, bench, model))
    rows += _metric_rows({**common, **_attack_columns(None)}, m, "all", none, pe)
    for data, view in halves.items():
        m, pe = _scored(view, model, splits=fsplits, general=False)
        rows += _metric_rows({**common, **_attack_columns(None)}, m, data, none, pe)
    for a in tqdm(cfg.attacks, desc="attacks", disable=not progress, leave=False):
        attacked = apply_attack(a, model, bench, seed)
        half = a.kind == "relearn" and a.resolved()["protocol"] == "half"
        m, pe = _scored(halves["forget-half-B"] if half else bench, attacked)
        if not half:
            m.update(_published(cfg, bench, attacked))
        rows += _metric_rows({**common, **_attack_columns(a)}, m, "forget-half-B" if half else "all",
                             _subject(a, unlearned), pe)
        if half:
            m, pe = _scored(halves["forget-half-A"], attacked, splits=fsplits, general=False)
            rows += _metric_rows({**common, **_attack_columns(a)}, m, "forget-half-A", _subject(a, unlearned), pe)
        if keep is not None:
            from .geometry import kept_weights

            keep[a.key] = kept_weights(cfg.geometry, attacked)
        del attacked
    return rows


# ----------------------------------------------------------------------------- one run
def _one_run(cfg: StudyConfig, objective, opt: OptimizerSpec, seed: int, base, bench: EvalBudget,
             progress: bool, env: dict, delta_path: Optional[Path] = None,
             geo_base: Optional[Dict[str, float]] = None) -> pd.DataFrame:
    """One run's rows; with ``delta_path`` its update θ_u − θ₀ is saved there first
    (:func:`.deltas.save_delta`, also for a diverged run) and named in the ``delta_file`` column
    (``runs/<run_id>.delta.safetensors``, relative to the study's output)."""
    t0 = time.perf_counter()
    info = optimizers.info(opt.name)
    grade, family = info.grade, info.family
    kw = optimizers.with_seed(opt.name, opt.optimizer_kwargs, seed)  # each seed: its own ZO / Hutchinson draws
    ucfg = cfg.unlearn_config(objective, opt, seed, optimizer_kwargs=kw)
    model = copy.deepcopy(base)
    res = _unlearn(ucfg, bench, model, False)
    for p in model.parameters():  # unfreeze what a `params` subset froze: attacks see the whole model
        p.requires_grad_(True)
    log = res.log
    checks = log.dropna(subset=["forget_acc"]) if "forget_acc" in log else log.iloc[:0]
    common = {"run_id": run_id(objective, opt, seed), "config_hash": _run_hash(cfg, objective, opt, seed, env),
              "study": cfg.name, "model": cfg.model, **env, "objective": _objective_key(objective), "optimizer": opt.key, "optimizer_name": opt.name,
              "grade": float(grade), "family": family, "seed": int(seed), "lr": float(opt.lr),
              "optimizer_kwargs": json.dumps(kw, sort_keys=True, default=str), "step_cap": int(opt.steps),
              "eval_every": int(ucfg.eval_every), "target": float(cfg.target), "steps": int(res.steps),
              "stop_reason": res.stop_reason, "reached_target": res.stop_reason == "target",
              "params": opt.params or "", "retain_floor": float("nan") if ucfg.retain_floor is None
              else float(ucfg.retain_floor),
              "checks": json.dumps([[int(a), round(float(b), 4), round(float(c), 4)] for a, b, c in
                                    zip(checks["step"], checks["forget_acc"], checks["retain_acc"])])
              if len(checks) else "[]",
              "n_loss": int(log["n_loss"].sum()) if "n_loss" in log else 0,
              "n_grad": int(log["n_grad"].sum()) if "n_grad" in log else 0,
              "unlearn_seconds": float(res.seconds), "stop_note": res.note,
              "delta_file": "" if delta_path is None else f"runs/{Path(delta_path).name}"}
    return _checkpoint_rows(cfg, model, base, bench, seed, common, env, t0, res.diverged, delta_path, geo_base)


def _checkpoint_rows(cfg: StudyConfig, model, base, bench: EvalBudget, seed: int, common: dict, env: dict,
                     t0: float, diverged: bool, delta_path: Optional[Path], geo_base) -> pd.DataFrame:
    """Everything after a checkpoint exists (an unlearned run's or a control's): its delta, then
    (unless ``diverged``) the attacks, the geometry stage and the diagnostics, as the run's rows."""
    if delta_path is not None:  # before the run's parquet is written: a finished parquet always has its delta
        from .deltas import save_delta

        save_delta(base, model, delta_path, env["base_sha256"], run_id=common["run_id"],
                   config_hash=common["config_hash"])
    if diverged:  # NaN weights would score as perfect forgetting: no numbers, no attacks, no diagnostics
        nan = {k: float("nan") for k in bench.evaluate(base)}  # the base's metric names (cached)
        df = _frame(_metric_rows({**common, **_attack_columns(None)}, nan, "all", "unlearned"))
        df["run_seconds"] = time.perf_counter() - t0
        return df
    kept = {} if cfg.geometry.enabled else None
    rows = _attack_all(cfg, model, bench, seed, common, False, keep=kept)
    if cfg.geometry.enabled:
        rows += _geometry(cfg, model, bench, common, kept, base=base, base_losses=geo_base)
    if cfg.diagnostics.enabled:
        d = diagnose(base, model, cfg.diagnostics.bits, cfg.diagnostics.group_size, cfg.diagnostics.symmetric,
                     run_id=common["run_id"], subject="unlearned")
        ctx = {**common, **_attack_columns(None)}
        rows += [{**ctx, **r} for r in d.to_dict("records")]
        if cfg.diagnostics.gguf and getattr(base, "gguf_types", None) is not None:
            bc = bin_crossing_gguf(base, model)
            rows += _metric_rows(ctx, {"diag_gguf_bin_crossing": bc.fraction, "diag_changed_any": bc.changed_any},
                                 "weights", "unlearned")
        if cfg.diagnostics.quantization:  # level change, surviving update, half-steps (RTN and GGUF export)
            from .quant_diagnostics import quant_diagnose

            has_gguf = cfg.diagnostics.gguf and getattr(base, "gguf_types", None) is not None
            qd = quant_diagnose(base, model, cfg.diagnostics.bits, cfg.diagnostics.group_size,
                                cfg.diagnostics.symmetric, gguf_types="source" if has_gguf else None,
                                run_id=common["run_id"], subject="unlearned")
            rows += [{**ctx, **r} for r in qd.to_dict("records")]
    df = _frame(rows)
    df["run_seconds"] = time.perf_counter() - t0  # unlearning + attacks + diagnostics (not reproducible)
    return df


def _control_run(cfg: StudyConfig, objective, ctrl, seed: int, base, bench: EvalBudget, env: dict,
                 runs_dir: Path, delta_path: Optional[Path] = None, geo_base=None) -> pd.DataFrame:
    """A control's rows (:mod:`.controls`): its checkpoint built from θ₀ and the source / match
    runs' saved updates (same objective and seed), scored, then through :func:`_checkpoint_rows`
    like any run.  It "reaches the target" when its forget metric is ≤ the study's target."""
    from .controls import build_control, update_norms_per_tensor
    from .deltas import load_delta

    t0 = time.perf_counter()
    opts = {o.key: o for o in cfg.optimizers}

    def checkpoint(label):
        path = runs_dir / f"{run_id(objective, opts[label], seed)}.delta.safetensors"
        return load_delta(path).apply(base)

    source = checkpoint(ctrl.source) if ctrl.source else None
    norms = update_norms_per_tensor(base, checkpoint(ctrl.match)) if ctrl.match else None
    q = next((a.resolved() for a in cfg.attacks if a.kind == "quantize"), {})
    grid = (int(q.get("bits", 4)), q.get("group_size"), bool(q.get("symmetric", True)))
    model, info = build_control(ctrl, base, seed, source=source, match_norms=norms, grid=grid)
    del source
    for p in model.parameters():
        p.requires_grad_(True)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    m = bench.evaluate(model) if finite else {}
    reached = finite and m.get(cfg.metric, float("inf")) <= cfg.target
    src = opts.get(ctrl.source) if ctrl.source else None
    common = {"run_id": run_id(objective, ctrl, seed), "config_hash": _run_hash(cfg, objective, ctrl, seed, env),
              "study": cfg.name, "model": cfg.model, **env, "objective": _objective_key(objective),
              "optimizer": ctrl.key, "optimizer_name": f"control:{ctrl.kind}", "grade": float("nan"),
              "family": "control", "seed": int(seed), "lr": float("nan"),
              "optimizer_kwargs": json.dumps({**ctrl.to_dict(), **info, "grid": list(grid)}, sort_keys=True,
                                             default=str),
              "step_cap": 0, "eval_every": 0, "target": float(cfg.target), "steps": 0,
              "stop_reason": "target" if reached else ("diverged" if not finite else "not-reached"),
              "reached_target": bool(reached), "params": (src.params if src is not None else None) or ctrl.params or "",
              "retain_floor": float("nan"),
              "checks": json.dumps([[0, round(float(m.get("forget_acc", float("nan"))), 4),
                                     round(float(m.get("retain_acc", float("nan"))), 4)]]) if finite else "[]",
              "n_loss": 0, "n_grad": 0, "unlearn_seconds": 0.0,
              "stop_note": "" if finite else "the control's weights are not finite (its source diverged?)",
              "delta_file": "" if delta_path is None else f"runs/{Path(delta_path).name}",
              "control_kind": ctrl.kind, "control_source": ctrl.source or "", "control_match": ctrl.match or "",
              **{k: float(v) for k, v in info.items()}}
    return _checkpoint_rows(cfg, model, base, bench, seed, common, env, t0, not finite, delta_path, geo_base)


def _geometry(cfg: StudyConfig, model, bench: EvalBudget, common: dict, kept: dict, base=None,
              base_losses=None) -> List[dict]:
    """The geometry stage's rows (:mod:`.geometry`) with the run's context columns; rows about
    one attack carry that attack's columns."""
    from .geometry import geometry_rows

    spec = cfg.geometry.resolved(cfg.attacks)
    by_label = {a.key: a for a in cfg.attacks}
    quantizers = {a.key: (r["bits"], r.get("group_size"), r.get("symmetric", True))
                  for a in cfg.attacks if a.kind == "quantize" for r in [a.resolved()]}
    relearn = next((a.resolved() for a in cfg.attacks if a.kind == "relearn"), None)
    rows = geometry_rows(spec, model, bench, base=base, attacked=kept, quantizers=quantizers,
                         relearn_lr=None if relearn is None else float(relearn["lr"]), base_losses=base_losses)
    return [{**common, **_attack_columns(by_label.get(r["attack"])), **r} for r in rows]


def _unlearn(ucfg, bench, model, progress):
    """``run_unlearn`` without re-scoring the base model (the study scores it once) and without
    the full final evaluation (the attack pass scores the unattacked model itself)."""
    from optigrade.unlearning.run import run_unlearn

    return run_unlearn(ucfg, benchmark=bench, model=model, progress=progress, evaluate_before=False,
                       final_eval=False)


def _reference_rows(cfg: StudyConfig, base, bench: EvalBudget, progress: bool, env: dict) -> pd.DataFrame:
    seed = cfg.seeds[0]
    common = {"run_id": "reference", "config_hash": _run_hash(cfg, "none", _ORIGINAL, seed, env),
              "study": cfg.name, "model": cfg.model, **env, "objective": "none", "optimizer": "original", "optimizer_name": "original",
              "grade": float("nan"), "family": "", "seed": int(seed), "lr": float("nan"),
              "optimizer_kwargs": "{}", "step_cap": 0, "eval_every": 0, "target": float(cfg.target), "steps": 0,
              "stop_reason": "none", "reached_target": False, "params": "", "retain_floor": float("nan"),
              "checks": "[]", "n_loss": 0, "n_grad": 0, "unlearn_seconds": 0.0, "stop_note": "", "delta_file": ""}
    t0 = time.perf_counter()
    kept = {} if cfg.geometry.enabled else None
    rows = _attack_all(cfg, base, bench, seed, common, progress, unlearned=False, keep=kept)
    if cfg.geometry.enabled:
        rows += _geometry(cfg, base, bench, common, kept)
        if cfg.geometry.theory:
            from .geometry import theory_rows

            rows += [{**common, **_attack_columns(None), **r} for r in theory_rows(cfg.geometry.resolved(cfg.attacks), base, bench)]
    df = _frame(rows)
    df["run_seconds"] = time.perf_counter() - t0
    return df


# ----------------------------------------------------------------------------- the study
def _toy():
    """A two-step study on a small random tiny Llama (for the examples): ``(cfg, bench, model)``."""
    from ..unlearning import SyntheticFacts, TinyConfig, tiny_llama

    bench = SyntheticFacts(n_entities=20)
    model = tiny_llama(len(bench.tokenizer), TinyConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2), seed=0, tokenizer=bench.tokenizer)
    cfg = StudyConfig(name="toy", objectives=["npo"], target=0.0, eval_every=2, eval_retain=10, eval_general=5,
                      benchmark_kwargs={"n_entities": 20}, optimizers=[{"name": "adam", "lr": 1e-3, "steps": 2}],
                      attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}], diagnostics={"bits": [4]})
    return cfg, bench, model


@dataclass(repr=False)
class StudyResult:
    """What :func:`run_study` returns: the output directory, the tidy ``results`` (one row per
    run × subject × data × quantity), the ``summary`` over seeds, the run ids computed / reused
    (``skipped``) / not at matched forgetting (``capped``) and the wall time.

    >>> StudyResult(Path("runs/x"), None, None, ["a"], [], 1.0, []).computed
    ['a']
    """

    out: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    computed: List[str]
    skipped: List[str]
    seconds: float
    capped: List[str]

    def __repr__(self) -> str:
        """One line: where, how many runs computed / reused / not matched, rows, time.

            >>> StudyResult(Path("runs/x"), pd.DataFrame({"a": [1]}), None, ["a", "b"], ["c"], 61.0, ["b"])
            StudyResult(out=runs/x, runs computed 2 / reused 1, not at matched forgetting 1, 1 result rows, 1.0 min)
        """
        n = len(self.results) if self.results is not None else 0
        return (f"StudyResult(out={self.out}, runs computed {len(self.computed)} / reused {len(self.skipped)}, "
                f"not at matched forgetting {len(self.capped)}, {n} result rows, {self.seconds / 60:.1f} min)")

    def to_frame(self) -> pd.DataFrame:
        """The tidy results (one row per run × subject × data × quantity)."""
        return self.results

    def _repr_html_(self) -> str:
        head = f"<b>StudyResult</b> {self.out}: {len(self.computed)} runs computed, {len(self.skipped)} reused, " \
               f"{len(self.capped)} not at matched forgetting, {self.seconds / 60:.1f} min"
        if self.summary is None or not len(self.summary) or "objective" not in self.summary:
            return head
        from .report import _styled, headline_table

        parts = [head]
        for o in [o for o in dict.fromkeys(self.summary["objective"]) if o != "none"]:
            try:
                t = headline_table(self.summary, o)
            except Exception:  # a partial summary: the header alone
                continue
            parts.append(f"<p><b>{o}</b>: forget accuracy before/after each attack (unmatched rows greyed)</p>"
                         + _styled(t))
        return "".join(parts)


def prepare(cfg: StudyConfig, progress: bool = True, base=None, benchmark=None):
    """Validate ``cfg`` (names, ranges, then group sizes against the model) and build the
    benchmark and base model.  Raises :class:`ConfigError` before any run starts."""
    from optigrade.unlearning.run import build

    bench, base = build(cfg.setup(), progress, benchmark, base)  # ConfigError for a split too large, a missing package
    missing = [s for s in cfg.eval_splits if s not in bench.splits]
    if missing:
        raise ConfigError(f"eval_splits names {missing}, which benchmark {cfg.benchmark!r} does not have (it has "
                          f"{sorted(bench.splits)}); drop them, or give the benchmark a held-out split "
                          "(smollm2-facts: benchmark_kwargs: {n_heldout: 64})")
    cfg.validate(model=base)
    return base, bench


_DEFAULT = object()


def run_study(cfg: StudyConfig, out, resume: bool = False, overwrite: bool = False, progress: bool = True,
              base=None, benchmark=None, threads=_DEFAULT, figures=None) -> StudyResult:
    """Run (or resume) the study ``cfg`` into ``out``; see the module docstring.

    Args:
        resume: reuse finished runs whose config hash matches (others are recomputed).
        overwrite: discard the earlier study in ``out`` (its runs and tables; never a file a study
            does not write), once ``cfg`` has been validated against the model.
        base, benchmark: reuse an already built base model / benchmark (tests).
        threads: torch intra-op threads during the study (default: ``cfg.threads``; 1 is fastest
            for the tiny model on a shared machine; restored afterwards).  None leaves torch's
            setting.
        figures: ``figures(out, results)`` called once the tables are written and before the report, to draw
            the figures the report embeds (``optigrade.figures.write_all``: the CLI and the demo pass
            it; this room does not import the figures room).  A failure there is reported, not fatal.

    >>> import tempfile
    >>> cfg, bench, model = _toy()
    >>> out = tempfile.mkdtemp()
    >>> res = run_study(cfg, out, progress=False, base=model, benchmark=bench)
    >>> sorted(set(res.results["subject"])), res.computed
    (['attacked:rtn4', 'original', 'unlearned'], ['reference', 'npo__adam__s0'])
    >>> run_study(cfg, out, resume=True, progress=False, base=model, benchmark=bench).skipped
    ['reference', 'npo__adam__s0']
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other (--resume reuses the finished runs in "
                          "--out, --overwrite discards them); pass one of them")
    out = check_out(out, overwrite=overwrite, inside=("runs",))  # a file, inside a file, `.` + --overwrite, read-only
    with output_lock(out):  # another study on this --out: told now, before any work
        mode = study_mode(out, resume, overwrite)  # a non-study directory, or runs without --resume / --overwrite
        return _run_study(cfg, out, mode, resume, progress, base, benchmark, threads, figures)


def _run_study(cfg: StudyConfig, out: Path, mode: str, resume: bool, progress: bool, base, benchmark,
               threads, figures=None) -> StudyResult:
    """:func:`run_study` holding the output's lock, after its directory checks: nothing in
    ``out`` changes before ``cfg`` is validated against the model (:func:`prepare`)."""
    from tqdm.auto import tqdm

    from .report import summarize, write_report

    runs_dir = out / "runs"
    threads = cfg.threads if threads is _DEFAULT else threads
    base, bench = prepare(cfg, progress, base, benchmark)
    env = _environment(base)
    if resume and runs_dir.exists():
        _check_same_base(runs_dir, env)
    ebench = EvalBudget(bench, cfg.eval_retain, cfg.eval_general, cfg.eval_splits).pin(base)
    import yaml

    # study.json "running" first, then the last study's tables (and, --overwrite, its runs) go, then config.yaml
    marker = start_study(out, yaml.safe_dump(cfg.to_dict(), sort_keys=False), cfg.name, mode)
    old_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    jobs = [(o, opt, s) for o in cfg.objectives for opt in [*cfg.optimizers, *cfg.controls] for s in cfg.seeds]
    computed, skipped, capped, frames = [], [], [], []
    geo_base = None  # L(θ₀) on the geometry batches, computed once when a run needs it
    try:
        if threads:
            torch.set_num_threads(threads)
        base_m = ebench.evaluate(base)  # the utility floors' reference (cached: the reference rows reuse it)
        if cfg.reference:
            path = runs_dir / "reference.parquet"
            h = _run_hash(cfg, "none", _ORIGINAL, cfg.seeds[0], env)
            df = _load_if_fresh(path, h) if resume else None
            if df is None:
                df = _reference_rows(cfg, base, ebench, progress, env)
                atomic_write_parquet(df, path)
                computed.append("reference")
            else:
                skipped.append("reference")
            frames.append(_judge(df, cfg, base_m))
        bar = tqdm(jobs, desc=f"study {cfg.name}", disable=not progress)
        for objective, opt, seed in bar:
            rid = run_id(objective, opt, seed)
            bar.set_postfix_str(rid)
            path = runs_dir / f"{rid}.parquet"
            h = _run_hash(cfg, objective, opt, seed, env)
            dpath = runs_dir / f"{rid}.delta.safetensors"
            df = _load_if_fresh(path, h) if resume else None
            if df is not None and not _delta_is_fresh(dpath, env, h, rid):  # missing / damaged / another run's
                df = None
            if df is None:
                if geo_base is None and cfg.geometry.enabled:
                    from .geometry import base_losses

                    geo_base = base_losses(cfg.geometry, base, ebench)
                if isinstance(opt, OptimizerSpec):
                    df = _one_run(cfg, objective, opt, seed, base, ebench, progress, env, delta_path=dpath,
                                  geo_base=geo_base)
                else:  # a control, built from the runs above (same objective and seed)
                    df = _control_run(cfg, objective, opt, seed, base, ebench, env, runs_dir, delta_path=dpath,
                                      geo_base=geo_base)
                atomic_write_parquet(df, path)
                computed.append(rid)
            else:
                skipped.append(rid)
            df = _judge(df, cfg, base_m)
            if not df["matched"].iloc[0]:
                capped.append(rid)
                why, detail = df["match_reason"].iloc[0], df["match_detail"].iloc[0]
                how = {"not-reached": f"hit the step cap ({int(df['step_cap'].iloc[0])}) before {cfg.metric} <= "
                                      f"{cfg.target}" if df["family"].iloc[0] != "control" else
                                      f"(a control) has {cfg.metric} above the target {cfg.target}",
                       "retain-guard": f"was stopped by the retain guard (retain_acc < {df['retain_floor'].iloc[0]})",
                       "diverged": f"diverged ({df['stop_note'].iloc[0]}); lower its lr",
                       }.get(why, f"reached the target but lost utility ({detail})")
                msg = f"run {rid}: {how}; it is NOT at matched forgetting"
                (tqdm.write if progress else print)(msg)
            frames.append(df)
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    results = pd.concat(frames, ignore_index=True)
    summary = summarize(results)
    atomic_write_parquet(results, out / "results.parquet")
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    atomic_write_parquet(summary, out / "summary.parquet")
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    from optigrade.unlearning.run import versions

    meta = {"name": cfg.name, "seconds": round(seconds, 1), "computed": computed, "skipped": skipped,
            "capped": capped, "threads": threads, "base_sha256": env["base_sha256"], "versions": versions()}
    from .report import explain_or_note

    explained, why = explain_or_note(results)  # the explain stage: explain*.parquet next to the results
    if explained is not None:
        from .explain import write_explain

        write_explain(out, explained)
    if figures is not None:
        try:
            figures(out, results)
        except Exception as e:  # a figure must never cost the study its tables
            print(f"figures were not drawn: {type(e).__name__}: {e}", file=sys.stderr)
    write_report(out, results, summary, cfg, meta, explained)
    finish_study(out, marker, meta)  # last: study.json "complete", with the sha256 of the tables it vouches for
    return StudyResult(out, results, summary, computed, skipped, seconds, capped)


def _judge(df: pd.DataFrame, cfg: Setup, base: Dict[str, float]) -> pd.DataFrame:
    """One run's rows with ``matched`` / ``match_reason`` / ``match_detail``
    (:func:`~optigrade.unlearning.loop.match_status` of its unattacked metrics against the base
    model's ``base``) and the floors used (``utility_*``, ``base_retain_acc``, ``base_general_ppl``).
    The reference rows are never matched (``match_reason`` "reference")."""
    from ..unlearning.loop import match_status

    df = df.copy()
    if df["run_id"].iloc[0] == "reference":
        ok, why, detail = False, "reference", ""
    else:
        none = df[(df["attack"] == "none") & (df["data"] == "all") & (df["subject"] == "unlearned")]
        ok, why, detail = match_status(str(df["stop_reason"].iloc[0]), dict(zip(none["quantity"], none["value"])),
                                       base, cfg.utility_floor_retain, cfg.utility_max_ppl_ratio)
    df["matched"], df["match_reason"], df["match_detail"] = bool(ok), why, detail
    for k in _JUDGMENT:
        v = getattr(cfg, k)
        df[k] = float("nan") if v is None else float(v)
    df["base_retain_acc"] = float(base.get("retain_acc", float("nan")))
    df["base_general_ppl"] = float(base.get("general_ppl", float("nan")))
    return df


def _delta_is_fresh(path: Path, env: dict, h: str, rid: str) -> bool:
    """Whether ``path`` holds an intact delta (:func:`.deltas.load_delta` checks its tensors'
    sha256) of run ``rid`` with config hash ``h`` on the base ``env["base_sha256"]``."""
    from .deltas import load_delta

    try:
        d = load_delta(path)
    except (OSError, ValueError):
        return False
    return d.base_sha256 == env["base_sha256"] and d.run_id == rid and d.meta.get("config_hash") == h


def _load_if_fresh(path: Path, h: str) -> Optional[pd.DataFrame]:
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception:
        return None
    if df.empty or "config_hash" not in df or df["config_hash"].iloc[0] != h:
        return None
    return df
