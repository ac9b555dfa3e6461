r"""Batch landscape reports: many checkpoints × quantities × data splits into one tidy table.

``optigrade landscape CKPT... --quantities top_eig,trace --data both --out DIR`` (and
:func:`landscape_report`) measures, for every checkpoint, the requested loss-landscape
quantities on fixed forget / retain batches of the checkpoint's own benchmark and writes

* ``DIR/landscape.parquet``: one tidy table (:data:`optigrade._tables.SCHEMA`) with, per row,
  ``checkpoint``, ``quantity_group`` (the requested quantity), ``data`` (the split), ``value``,
  ``uncertainty`` and ``uncertainty_kind``, the settings (``setting_*``), the passes spent
  (``cost_loss`` / ``cost_grad`` / ``cost_hvp``: the *measurement's* passes; ``task_hvp`` /
  ``task_loss``: everything the (checkpoint, quantity, split) cost) and ``seconds``;
* ``DIR/parts/<checkpoint>/<quantity>__<split>.parquet``: each finished (checkpoint, quantity,
  split), written atomically the moment it is done, so a killed run loses at most the
  measurements in flight; ``--resume`` computes only the missing parts, and the final table is
  rebuilt from the parts (no row lost or duplicated);
* ``DIR/report.md`` / ``report.html`` (a checkpoint × quantity table and figures in
  ``DIR/figures/``), ``DIR/settings.json`` (what produced the parts) and ``DIR/landscape.log``.

**Checkpoints** (refused before any work when a path is none of these):

1. an ``optigrade unlearn`` directory (``manifest.json``): its base and benchmark are rebuilt from
   the manifest, and the base's sha256 must equal the recorded ``base_sha256``;
2. a study's saved Δ (``<study>/runs/<run_id>.delta.safetensors``, or a study directory: every Δ
   in it): the base and benchmark come from the study's ``config.yaml``, θ_u = the stored values
   on that base (:mod:`optigrade.analysis.deltas`, which refuses a base of another sha256);
3. any Hugging Face model directory (``config.json``) with ``base=`` naming its base (a model
   name or directory) and ``benchmark=`` the benchmark whose splits give the batches.

``base=`` given for (1) or (2) replaces the recorded base; its sha256 must still match.

**Quantities** (:data:`QUANTITIES`; the landscape functions of :mod:`optigrade.landscape`):
``top_eig`` (Lanczos, k largest), ``trace`` (Hutch++), ``density`` (SLQ), ``sharpness``
(weight-scaled average sharpness), ``slices`` (1-D loss along Δ = θ_u − θ₀ and along a random
direction of equal norm; the random one only when there is no base), ``radius`` (certified
radius at the threshold ½(L(θ₀) + L(θ_u)): needs a base), ``loss_change`` (ΔL of going back to
θ₀ with its first- and second-order predictions: needs a base).

**Backends**: ``local`` (default) runs the tasks, one per (checkpoint, quantity), in this process
(``workers=1``) or a process pool of ``workers`` processes; ``ray`` submits one Ray task per
(checkpoint, quantity) to a running cluster (``address=``, e.g. ``"ray://head:10001"`` or
``"auto"``) or a local Ray instance (``address=None``).  Same seeds, same numbers on every
backend.  Workers read the checkpoints by their paths, so on a cluster the paths must be
visible to every node (a shared filesystem); the driver writes every part.

**Memory and time**: before any work :func:`estimate` prints, per quantity, the HVPs and loss
passes it will make, the bytes its solver holds next to the model (Lanczos basis, Hutch++
sketch, directions) and a time estimate from one timed loss / gradient / HVP pass on the first
checkpoint; with ``budget`` (bytes, or "4GB") a plan that does not fit is refused, naming the
quantity and the advice (``--params`` a smaller subset, fewer iterations).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .._quiet import quiet_transformers as _quiet  # transformers' own bars off inside
from .._validate import ConfigError
from .config import available_memory_bytes

__all__ = ["QUANTITIES", "NEEDS_BASE", "Checkpoint", "BatchSettings", "find_checkpoints", "estimate",
           "landscape_report", "parse_bytes"]

#: the quantities a batch report computes (``--quantities``)
QUANTITIES = ("top_eig", "trace", "density", "sharpness", "slices", "radius", "loss_change")
#: quantities that need the checkpoint's base θ₀
NEEDS_BASE = ("radius", "loss_change")
SPLITS = ("forget", "retain")
_ID = re.compile(r"[^A-Za-z0-9_.+=-]+")
log = logging.getLogger("optigrade.landscape")


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class BatchSettings:
    """Everything that changes a batch report's numbers (compared on ``--resume``)."""

    quantities: Tuple[str, ...] = ("top_eig", "trace")
    data: Tuple[str, ...] = ("forget",)
    params: Optional[str] = None
    examples: int = 16
    k: int = 3
    lanczos_iter: int = 20
    trace_queries: int = 18
    density_steps: int = 30
    density_vectors: int = 2
    sharpness_rho: float = 0.01
    sharpness_samples: int = 8
    slice_points: int = 9
    radius_samples: int = 100
    radius_sigma: float = 1e-3
    radius_alpha: float = 0.001
    seed: int = 0
    prefix_cache: Optional[bool] = None  # None: on when ``params`` leaves a frozen prefix (late layers)
    lanczos_memory: str = "auto"  # "full" basis, "low" (thick restart), "auto": low when full does not fit

    def validate(self) -> "BatchSettings":
        unknown = [q for q in self.quantities if q not in QUANTITIES]
        if unknown:
            raise ConfigError(f"unknown quantity {unknown[0]!r}; choose from {', '.join(QUANTITIES)} "
                              "(comma-separated, e.g. --quantities top_eig,trace)")
        if not self.quantities:
            raise ConfigError(f"no quantity given; choose from {', '.join(QUANTITIES)}")
        bad = [d for d in self.data if d not in SPLITS]
        if bad or not self.data:
            raise ConfigError(f"data {bad[0] if bad else self.data!r} is not a split; use forget, retain or both")
        for name in ("examples", "k", "lanczos_iter", "trace_queries", "density_steps", "density_vectors",
                     "sharpness_samples", "slice_points", "radius_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.examples < 2:
            raise ConfigError(f"examples must be >= 2 (the Probe's fixed batch), got {self.examples}")
        if self.trace_queries % 3:
            raise ConfigError(f"trace_queries must be a multiple of 3 (Hutch++ splits it in thirds), got "
                              f"{self.trace_queries}; e.g. 18")
        if self.k > self.lanczos_iter:
            raise ConfigError(f"k={self.k} eigenvalues need at least k Lanczos iterations, lanczos_iter="
                              f"{self.lanczos_iter}; raise lanczos_iter or lower k")
        for name in ("sharpness_rho", "radius_sigma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        if self.lanczos_memory not in ("auto", "full", "low"):
            raise ConfigError(f"lanczos_memory must be auto, full or low, got {self.lanczos_memory!r}")
        if not 0 < self.radius_alpha < 1:
            raise ConfigError(f"radius_alpha must be in (0, 1), got {self.radius_alpha!r}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantities"], d["data"] = list(self.quantities), list(self.data)
        return d


def _data(data) -> Tuple[str, ...]:
    if isinstance(data, str):
        return SPLITS if data == "both" else tuple(x.strip() for x in data.split(",") if x.strip())
    return tuple(data)


def parse_bytes(text) -> int:
    """``"4GB"`` / ``"512MiB"`` / ``"1e9"`` / 4096 → bytes (decimal GB = 1e9, binary GiB = 2**30).

        >>> parse_bytes("4GB"), parse_bytes("1.5GiB"), parse_bytes(1000)
        (4000000000, 1610612736, 1000)
        >>> parse_bytes("lots")
        Traceback (most recent call last):
        ...
        optigrade._validate.ConfigError: budget 'lots' is not a size; give bytes or a number with a unit, e.g. 4GB, 512MiB
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][0-9]+)?)\s*([KMGT]i?B|B)?\s*", str(text))
    units = {None: 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
             "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40}
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"budget {text!r} is not a size; give bytes or a number with a unit, e.g. 4GB, 512MiB")
    return int(float(m.group(1)) * units[m.group(2)])


# ----------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a batch report (:func:`find_checkpoints`).

    ``kind``: "unlearn" (an ``optigrade unlearn`` directory), "delta" (a study's saved Δ) or
    "hf" (a Hugging Face model directory).  ``identity``: a hash of what defines its weights
    (the manifest's and weights' sha256, the Δ's ``tensors_sha256``), compared on resume."""

    id: str
    kind: str
    path: str
    base: Optional[str] = None
    base_sha256: Optional[str] = None
    benchmark: Optional[str] = None
    identity: str = ""
    setup: Dict[str, Any] = field(default_factory=dict)


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_identity(d: Path) -> str:
    files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
    return hashlib.sha256("".join(_sha_file(f) for f in files).encode()).hexdigest()[:16]


def _unique_id(name: str, taken: set) -> str:
    base = _ID.sub("_", name).strip("_") or "checkpoint"
    out, i = base, 2
    while out in taken:
        out, i = f"{base}~{i}", i + 1
    taken.add(out)
    return out


def _delta_checkpoint(p: Path, base: Optional[str], taken: set) -> Checkpoint:
    from .deltas import DeltaError, load_delta

    study = p.parent.parent
    if not (study / "config.yaml").is_file():
        raise ConfigError(f"{p} is a saved Δ but {study / 'config.yaml'} is missing: a Δ is read next to its "
                          "study's config (runs/<run_id>.delta.safetensors inside the study directory)")
    try:
        d = load_delta(p)
    except (DeltaError, OSError, ValueError) as e:
        raise ConfigError(f"{p} is not a readable saved Δ: {e}") from None
    return Checkpoint(id=_unique_id(f"{study.name}.{d.run_id or p.name.split('.')[0]}", taken), kind="delta",
                      path=str(p), base=base, base_sha256=d.base_sha256,
                      identity=str(d.meta.get("tensors_sha256", ""))[:16] if hasattr(d, "meta") else "",
                      setup={"study_config": str(study / "config.yaml")})


def find_checkpoints(paths: Sequence, *, base: Optional[str] = None, benchmark: Optional[str] = None,
                     benchmark_kwargs: Optional[Dict[str, Any]] = None) -> List[Checkpoint]:
    """Resolve ``paths`` to checkpoints (module docstring), refusing before any work a path that
    is none of the known kinds, a Hugging Face directory without ``base`` (when a quantity needs
    one: checked by :func:`landscape_report`), or a damaged file.  ``benchmark_kwargs`` (e.g. a
    ``data_dir``) override the recorded benchmark arguments (all of them when ``benchmark``
    names another benchmark)."""
    out = _find_checkpoints(paths, base, benchmark)
    if benchmark_kwargs:
        for ck in out:
            ck.setup["benchmark_kwargs"] = dict(benchmark_kwargs)
    return out


def _find_checkpoints(paths, base, benchmark) -> List[Checkpoint]:
    if not paths:
        raise ConfigError("no checkpoint given: pass one or more `optigrade unlearn` directories, saved Δ files "
                          "(runs/<id>.delta.safetensors) or study directories, or model directories with --base")
    out: List[Checkpoint] = []
    taken: set = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise ConfigError(f"checkpoint {str(raw)!r} does not exist")
        if p.is_file() and p.name.endswith(".delta.safetensors"):
            out.append(_delta_checkpoint(p, base, taken))
        elif p.is_dir() and (p / "manifest.json").is_file():
            from optigrade.unlearning.models import read_manifest

            man = read_manifest(p)
            cfg = man.get("config") if isinstance(man.get("config"), dict) else {}
            ident = hashlib.sha256(((man.get("base_sha256") or "") + _weights_identity(p)).encode()).hexdigest()[:16]
            out.append(Checkpoint(id=_unique_id(p.name, taken), kind="unlearn", path=str(p), base=base,
                                  base_sha256=man.get("base_sha256"), benchmark=benchmark, identity=ident,
                                  setup={"config": cfg}))
        elif p.is_dir() and (p / "study.json").is_file() and (p / "runs").is_dir():
            deltas = sorted((p / "runs").glob("*.delta.safetensors"))
            if not deltas:
                raise ConfigError(f"study directory {str(p)!r} holds no saved Δ (runs/*.delta.safetensors); rerun "
                                  "the study with this optigrade, which saves one per unlearning run")
            out += [_delta_checkpoint(d, base, taken) for d in deltas]
        elif p.is_dir() and (p / "config.json").is_file():
            if benchmark is None:
                raise ConfigError(f"{str(p)!r} is a model directory without an optigrade manifest: name the "
                                  "benchmark whose forget / retain splits give the batches (--benchmark NAME)")
            out.append(Checkpoint(id=_unique_id(p.name, taken), kind="hf", path=str(p), base=base,
                                  benchmark=benchmark, identity=_weights_identity(p)))
        else:
            raise ConfigError(f"{str(raw)!r} is not a checkpoint: expected an `optigrade unlearn` directory "
                              "(manifest.json), a study's runs/<id>.delta.safetensors or a study directory, or a "
                              "Hugging Face model directory (config.json) with --base")
    return out


# ----------------------------------------------------------------------------- materialize
_LOADED: Dict[str, tuple] = {}  # per process: checkpoint key → (model, base, bench); one kept
_BASES: Dict[str, tuple] = {}   # per process: base key → (base, bench, sha256); one kept (shared by a study's Δs)


_BASE_FIELDS = ("model", "benchmark", "benchmark_kwargs", "forget_fraction", "n_entities", "device", "dtype")


def _base_key(ck: Checkpoint) -> str:
    """What determines a checkpoint's base and benchmark (checkpoints sharing it share one build)."""
    if ck.kind == "delta":
        return json.dumps(["delta", ck.setup["study_config"], ck.base, ck.setup.get("benchmark_kwargs")],
                          sort_keys=True, default=str)
    if ck.kind == "unlearn":  # the fields that build the base and benchmark (not the optimizer's)
        c = {k: v for k, v in (ck.setup.get("config") or {}).items() if k in _BASE_FIELDS}
        return json.dumps(["unlearn", c, ck.base, ck.benchmark, ck.setup.get("benchmark_kwargs")], sort_keys=True,
                          default=str)
    return json.dumps(["hf", ck.base, ck.benchmark, ck.path if ck.base is None else "",
                       ck.setup.get("benchmark_kwargs")], sort_keys=True, default=str)


def _build_base(ck: Checkpoint):
    """``(base or None, benchmark)`` of a checkpoint, built from its manifest / study config / flags."""
    from optigrade.unlearning.run import build

    if ck.kind == "unlearn":
        from optigrade.unlearning.config import UnlearnConfig

        cfg = dict(ck.setup.get("config") or {})
        if ck.base is not None:
            cfg["model"] = ck.base
        if ck.benchmark is not None:
            if ck.benchmark != cfg.get("benchmark"):
                cfg.pop("benchmark_kwargs", None)
            cfg["benchmark"] = ck.benchmark
        if ck.setup.get("benchmark_kwargs"):
            cfg["benchmark_kwargs"] = {**(cfg.get("benchmark_kwargs") or {}), **ck.setup["benchmark_kwargs"]}
        bench, base = build(UnlearnConfig(**{k: v for k, v in cfg.items() if k in UnlearnConfig.model_fields}),
                            False, None, None)
        return base, bench
    if ck.kind == "delta":
        from .config import load_config
        from .study import prepare

        cfg = load_config(ck.setup["study_config"])
        if ck.base is not None:
            cfg.model = ck.base
        if ck.setup.get("benchmark_kwargs"):  # e.g. the data directory moved since the study ran
            cfg = type(cfg)(**{**cfg.model_dump(), "benchmark_kwargs": {**cfg.benchmark_kwargs,
                                                                        **ck.setup["benchmark_kwargs"]}})
        base, bench = prepare(cfg, progress=False)
        return base, bench
    from optigrade.unlearning.config import Setup

    bk = ck.setup.get("benchmark_kwargs") or {}
    if ck.base is not None:
        bench, base = build(Setup(benchmark=ck.benchmark, benchmark_kwargs=bk, model=ck.base), False, None, None)
        return base, bench
    from optigrade.unlearning.models import load

    model, tok = load(ck.path)
    bench, _ = build(Setup(benchmark=ck.benchmark, benchmark_kwargs=bk), False, None, model,
                     tokenizer=tok)  # verified against itself; a data layout tokenized by its own tokenizer
    return None, bench


def base_of(ck: Checkpoint):
    """``(base or None, benchmark)`` of ``ck`` (cached per base key), its sha256 checked against the
    one the checkpoint records (a manifest's ``base_sha256``, a Δ's header): ConfigError naming both."""
    from optigrade.unlearning.run import base_sha256

    key = _base_key(ck)
    if key not in _BASES:
        _BASES.clear()
        try:
            base, bench = _build_base(ck)
        except Exception as e:  # ModelLoadError, DeltaError, ...
            if type(e).__name__ in ("DeltaError", "ModelLoadError"):
                raise ConfigError(f"checkpoint {ck.id}: {e}") from None
            raise
        if base is not None:
            base.eval()
        _BASES[key] = (base, bench, base_sha256(base) if base is not None else None)
    base, bench, sha = _BASES[key]
    if base is not None and ck.base_sha256 and sha != ck.base_sha256:
        what = "manifest" if ck.kind == "unlearn" else "saved Δ"
        raise ConfigError(f"checkpoint {ck.id}: its {what} records base sha256 {ck.base_sha256[:16]}…, but the "
                          f"base {'given (--base ' + ck.base + ')' if ck.base else 'rebuilt from its ' + what} has "
                          f"{sha[:16]}…; pass the base it was unlearned from (--base)")
    return base, bench


def materialize(ck: Checkpoint):
    """``(model, base or None, benchmark)`` of a checkpoint (cached: one per process; the base and
    benchmark shared by every checkpoint with the same base key), the base's sha256 checked."""
    key = json.dumps([ck.identity, ck.path, ck.base, ck.benchmark, ck.kind])
    hit = _LOADED.get(key)
    if hit is not None:
        return hit
    _LOADED.clear()
    base, bench = base_of(ck)
    try:
        if ck.kind == "delta":
            from .deltas import load_delta

            model = load_delta(ck.path).apply(base)  # checks the base's sha256 again, against the tensors read
        else:
            from optigrade.unlearning.models import load

            model, _ = load(ck.path)
    except Exception as e:
        if type(e).__name__ in ("DeltaError", "ModelLoadError"):
            raise ConfigError(f"checkpoint {ck.id}: {e}") from None
        raise
    model.eval()
    _LOADED[key] = (model, base, bench)
    return model, base, bench


# ----------------------------------------------------------------------------- one measurement
def _probe(model, bench, split: str, s: BatchSettings):
    from optigrade import landscape as ls

    from .geometry import probe_batch

    batch = probe_batch(bench, split, s.examples)
    if s.prefix_cache is None and s.params is not None:  # auto: the cache whenever a frozen prefix exists
        try:
            return ls.Probe(model, [batch], param_filter=s.params, prefix_cache=True)
        except ValueError as e:
            if not str(e).startswith("prefix_cache=True"):
                raise
    return ls.Probe(model, [batch], param_filter=s.params, prefix_cache=bool(s.prefix_cache))


def _measure(quantity: str, probe, base, s: BatchSettings) -> List[pd.DataFrame]:
    """The landscape function(s) of ``quantity`` on ``probe``, as tidy frames."""
    from optigrade import landscape as ls

    if quantity == "top_eig":
        return [ls.top_eigenvalues(probe, k=s.k, max_iter=s.lanczos_iter, seed=s.seed, return_vectors=False,
                                   memory=_lanczos_mode(s, probe.numel, None)).to_frame()]  # resolved by the plan
    if quantity == "trace":
        return [ls.hutchpp_trace(probe, s.trace_queries, seed=s.seed).to_frame()]
    if quantity == "density":
        d = ls.spectral_density(probe, m=s.density_steps, n_v=s.density_vectors, seed=s.seed)
        # the curve for reading and plotting: the same quadrature, each node a Gaussian of std σ = 1/80
        # of the Ritz range (Density.curve; the landscape default is far narrower: spikes)
        sig = max(float(d.nodes.max() - d.nodes.min()), 1e-12) / 80
        x, dens = d.curve(sig)
        curve = pd.DataFrame({"quantity": "spectral_density", "index": np.arange(len(x)), "value": dens,
                              "uncertainty": np.nan, "uncertainty_kind": "", "unit": "1/(loss/param^2)",
                              "lambda": x, "setting_curve_width_std": sig})
        return [d.to_frame(), curve]
    if quantity == "sharpness":
        return [ls.average_sharpness(probe, rho=s.sharpness_rho, n=s.sharpness_samples, adaptive=True,
                                     seed=s.seed).to_frame()]
    from .geometry import _flat  # the Probe's parameters (or a model's same-named ones) as one float64 vector

    theta = _flat(probe)
    if quantity == "slices":
        frames = []
        r = ls.random_direction(probe, seed=s.seed, normalization="filter").double()
        if base is not None:
            d = theta - _flat(probe, base)
            if float(d.norm()) > 0:
                r = r * (float(d.norm()) / float(r.norm()))
                frames.append(ls.slice_1d(probe, d.to(probe.dtype), span=(-1.0, 0.5), points=s.slice_points,
                                          curvature=False).to_frame().assign(direction="toward base (-Δ at -1)"))
        frames.append(ls.slice_1d(probe, r.to(probe.dtype), span=(-1.0, 0.5), points=s.slice_points,
                                  curvature=False).to_frame().assign(direction="random, ‖Δ‖" if base is not None
                                                                     else "random, filter-normalized"))
        return frames
    theta0 = _flat(probe, base)
    if quantity == "loss_change":
        return [ls.loss_change(probe, (theta0 - theta).to(probe.dtype)).to_frame()]
    if quantity == "radius":
        from optigrade.landscape.probe import Probe

        l_u = probe.loss()
        with probe.perturbed((theta0 - theta).to(probe.dtype), 1.0):
            l_0 = probe.loss()
        thr = 0.5 * (l_0 + l_u)
        cr = ls.certified_radius(probe, sigma=s.radius_sigma, n=s.radius_samples, alpha=s.radius_alpha,
                                 loss_threshold=thr, seed=s.seed)
        return [cr.to_frame().assign(setting_loss_threshold=thr)]
    raise ValueError(quantity)  # pragma: no cover - validated


def run_task(ck: Checkpoint, quantity: str, s: BatchSettings, splits: Optional[Sequence[str]] = None,
             on_part=None, progress: bool = False) -> List[Tuple[str, pd.DataFrame]]:
    """One task: ``quantity`` on every split of checkpoint ``ck`` → ``[(split, frame)]``; with
    ``on_part(ck, quantity, split, frame)`` each split is handed over as soon as it is done."""
    import torch

    from .._tables import rows_to_frame  # noqa: F401 - the schema the frames follow

    torch.manual_seed(s.seed)
    with _quiet():
        model, base, bench = materialize(ck)
    out = []
    for split in splits or s.data:
        t0 = time.perf_counter()
        probe = _probe(model, bench, split, s)
        before = probe.cost()
        bar = getattr(probe, "progress", None)
        total = sum(_passes(quantity, s, base is not None))  # an upper bound (Lanczos may stop early)
        ctx = bar(total, f"{ck.id} {quantity} {split}", enabled=progress) if bar is not None else _Null()
        with ctx:
            frames = _measure(quantity, probe, base, s)
        spent = probe.cost() - before
        df = pd.concat(frames, ignore_index=True)
        df["run_id"], df["subject"], df["data"] = ck.id, "unlearned" if base is not None else "checkpoint", split
        df.insert(0, "checkpoint", ck.id)
        df.insert(1, "quantity_group", quantity)
        df["checkpoint_kind"], df["checkpoint_path"] = ck.kind, ck.path
        df["task_loss"], df["task_grad"], df["task_hvp"] = spent.loss, spent.grad, spent.hvp
        df["seconds"] = time.perf_counter() - t0
        df["n_params"], df["prefix_cache"] = probe.numel, bool(probe.prefix_cache)
        out.append((split, df))
        if on_part is not None:
            on_part(ck, quantity, split, df)
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ----------------------------------------------------------------------------- estimates
def _passes(q: str, s: BatchSettings, has_base: bool) -> Tuple[int, int]:
    """(HVPs, loss-or-gradient passes) ``q`` makes on one split (upper bounds)."""
    return {"top_eig": (s.lanczos_iter, 0), "trace": (s.trace_queries, 0),
            "density": (s.density_steps * s.density_vectors, 0),
            "sharpness": (0, 2 * s.sharpness_samples + 1),
            "slices": (0, s.slice_points * (2 if has_base else 1)),
            "radius": (0, s.radius_samples + 2), "loss_change": (1, 3)}[q]


def _lanczos_mode(s: BatchSettings, n: int, budget: Optional[int]) -> str:
    """The Lanczos memory mode: the setting, or with "auto" the full basis when it takes at most
    a quarter of ``budget`` (default: of the available memory), else thick restart ("low")."""
    if s.lanczos_memory != "auto":
        return s.lanczos_memory
    from optigrade.landscape.spectra import eigen_memory_bytes

    limit = budget if budget is not None else (available_memory_bytes() or 8 * 10 ** 9)
    return "full" if eigen_memory_bytes(n, s.k, s.lanczos_iter, "full") <= limit // 4 else "low"


def solver_bytes(q: str, n: int, s: BatchSettings, budget: Optional[int] = None) -> int:
    """Bytes a quantity's solver holds next to the model for a Probe of ``n`` parameters:
    Lanczos keeps its float64 basis (``lanczos_iter`` × n × 8, or what
    :func:`optigrade.landscape.spectra.eigen_memory_bytes` reports), Hutch++ its sketch S, the
    products Y = HS and Q of Y's QR (3 × trace_queries/3 float64 columns) and six working
    vectors, SLQ one run's basis; the rest a few float64 vectors."""
    from optigrade.landscape.spectra import eigen_memory_bytes

    vec = 8 * n
    if q == "top_eig":
        return int(eigen_memory_bytes(n, s.k, s.lanczos_iter, _lanczos_mode(s, n, budget)))
    if q == "trace":  # the sketch S, Y = H·S and its QR factor Q (LAPACK works on a copy of Y), each m = n/3 columns
        return (3 * (s.trace_queries // 3) + 6) * vec
    if q == "density":
        return (s.density_steps + 4) * vec
    return 6 * vec  # sharpness, slices, radius, loss_change: θ, directions, a gradient


def _model_bytes(m) -> int:
    return sum(p.numel() * p.element_size() for p in m.parameters()) if m is not None else 0


def estimate(checkpoints: Sequence[Checkpoint], s: BatchSettings, *, budget: Optional[int] = None,
             time_pilot: bool = True) -> pd.DataFrame:
    """The plan's cost per quantity, before any work: HVPs and loss passes per checkpoint and
    split, the solver's bytes, the peak estimate (checkpoint + base + the Probe's float64 θ copy
    + solver) and, with ``time_pilot``, seconds from one timed loss, gradient and HVP on the first
    checkpoint's first split.  Refuses (ConfigError) a quantity whose peak exceeds ``budget``
    (default: 80% of the available memory), with the advice."""
    ck = checkpoints[0]
    model, base, bench = materialize(ck)
    probe = _probe(model, bench, s.data[0], s)
    n = probe.numel
    t_loss = t_grad = t_hvp = float("nan")
    if time_pilot:
        import torch

        t0 = time.perf_counter()
        probe.loss()
        t_loss = time.perf_counter() - t0
        t0 = time.perf_counter()
        g = probe.grad()
        t_grad = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe.hvp(torch.ones_like(g))
        t_hvp = time.perf_counter() - t0
    fixed = _model_bytes(model) + _model_bytes(base) + 2 * 8 * n
    avail = available_memory_bytes()
    limit = budget if budget is not None else (int(0.8 * avail) if avail else None)
    rows = []
    for q in s.quantities:
        hvp, loss = _passes(q, s, base is not None)
        sb = solver_bytes(q, n, s, limit)
        per = hvp * t_hvp + loss * t_loss
        rows.append(dict(quantity=q, note=f"{_lanczos_mode(s, n, limit)} Lanczos basis" if q == "top_eig" else "",
                         n_params=n, hvps_per_split=hvp, losses_per_split=loss, solver_bytes=sb,
                         peak_bytes=fixed + sb, seconds_per_split=per,
                         seconds_total=per * len(s.data) * len(checkpoints)))
    plan = pd.DataFrame(rows)
    if limit is not None:
        over = plan[plan["peak_bytes"] > limit]
        if len(over):
            r = over.iloc[0]
            raise ConfigError(
                f"{r['quantity']} needs about {r['peak_bytes'] / 1e9:.2f} GB (model and base "
                f"{fixed / 1e9:.2f} GB + solver {r['solver_bytes'] / 1e9:.2f} GB for {n:,} parameters), over the "
                f"budget {limit / 1e9:.2f} GB; measure a subset (--params, e.g. 'layers\\.(2[4-9])\\.'), fewer "
                "iterations (--lanczos-iter, --trace-queries, --density-steps)"
                + (", --lanczos-memory low (thick restart: a few vectors)" if r["quantity"] == "top_eig"
                   and s.lanczos_memory == "full" else "") + " or raise --budget")
    plan.attrs.update(t_loss=t_loss, t_grad=t_grad, t_hvp=t_hvp, budget=limit,
                      lanczos_memory=_lanczos_mode(s, n, limit))
    return plan


def format_plan(plan: pd.DataFrame, n_checkpoints: int, n_splits: int) -> str:
    lines = [f"plan: {n_checkpoints} checkpoint(s) × {n_splits} split(s); one pass on the first: loss "
             f"{plan.attrs.get('t_loss', float('nan')):.3f} s, gradient {plan.attrs.get('t_grad', float('nan')):.3f} s, "
             f"HVP {plan.attrs.get('t_hvp', float('nan')):.3f} s"]
    for r in plan.to_dict("records"):
        lines.append(f"  {r['quantity']:<12} {r['hvps_per_split']:>5} HVPs + {r['losses_per_split']:>4} losses per split, "
                     f"peak ≈ {r['peak_bytes'] / 1e6:,.0f} MB, ≈ {r['seconds_total']:.0f} s in all"
                     + (f" ({r['note']})" if r.get("note") else ""))
    total = float(plan["seconds_total"].sum())
    lines.append(f"  total ≈ {total / 60:.1f} min on one worker"
                 + (f"; budget {plan.attrs['budget'] / 1e9:.2f} GB" if plan.attrs.get("budget") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the output directory
def _part_path(out: Path, ck: str, q: str, split: str) -> Path:
    return out / "parts" / ck / f"{q}__{split}.parquet"


def _check_settings(out: Path, settings: dict, checkpoints: Sequence[Checkpoint], resume: bool,
                    overwrite: bool) -> None:
    """Refuse, before work, an --out holding another report (unless --overwrite) or different
    settings (naming the first difference)."""
    from .._files import atomic_write_json

    path = out / "settings.json"
    idents = {c.id: c.identity for c in checkpoints}
    if path.exists() and not overwrite:
        if not resume:
            raise ConfigError(f"{out} already holds a landscape report; pass --resume to complete it or --overwrite "
                              "to start again")
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} is unreadable ({e}); pass --overwrite to start again") from None
        for k, v in settings.items():
            if old.get("settings", {}).get(k) != v:
                raise ConfigError(f"{out} was computed with {k}={old.get('settings', {}).get(k)!r}, this run asks "
                                  f"{k}={v!r}; pass the same settings to --resume, or --overwrite to start again")
        for cid, ident in idents.items():
            prev = old.get("checkpoints", {}).get(cid)
            if prev is not None and prev != ident:
                raise ConfigError(f"checkpoint {cid} in {out} was computed from other weights (identity {prev} vs "
                                  f"{ident}); pass --overwrite or another --out")
        idents = {**old.get("checkpoints", {}), **idents}
    elif not path.exists() and out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists, is not empty and holds no landscape report; choose a new --out or pass "
                          "--overwrite")
    if overwrite and out.exists():
        import shutil

        for name in ("parts", "figures"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("landscape.parquet", "report.md", "report.html", "settings.json", "landscape.log"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"settings": settings, "checkpoints": idents})


def _write_part(out: Path, ck, q: str, split: str, df: pd.DataFrame) -> None:
    from .._files import atomic_write_parquet

    atomic_write_parquet(df, _part_path(out, ck.id, q, split))
    log.info("done %s %s %s: %d rows, %.1f s, %d HVPs", ck.id, q, split, len(df), float(df["seconds"].iloc[0]),
             int(df["task_hvp"].iloc[0]))


def collect(out) -> pd.DataFrame:
    """The report's table from its parts (one frame; no part read twice)."""
    parts = sorted(Path(out).glob("parts/*/*.parquet"))
    if not parts:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


# ----------------------------------------------------------------------------- backends
def _ray_task(ck_dict, quantity, settings_dict, splits):
    ck = Checkpoint(**ck_dict)
    s = BatchSettings(**{**settings_dict, "quantities": tuple(settings_dict["quantities"]),
                         "data": tuple(settings_dict["data"])})
    return [(split, df) for split, df in run_task(ck, quantity, s, splits)]


def _pool_task(args):
    ck_dict, quantity, settings_dict, splits, threads = args
    import torch

    torch.set_num_threads(threads)
    return ck_dict["id"], quantity, _ray_task(ck_dict, quantity, settings_dict, splits)


def _run_local(todo, s, out, workers, progress, threads):
    if workers == 1:
        for ck, q, splits in todo:
            run_task(ck, q, s, splits, on_part=lambda c, qq, sp, df: _write_part(out, c, qq, sp, df),
                     progress=progress)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    by_id = {ck.id: ck for ck, _, _ in todo}
    sd = s.to_dict()
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_pool_task, (asdict(ck), q, sd, list(splits), threads)) for ck, q, splits in todo]
        for f in as_completed(futs):
            cid, q, parts = f.result()
            for split, df in parts:
                _write_part(out, by_id[cid], q, split, df)


def _run_ray(todo, s, out, address):
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'optigrade[distributed]' (or pip install ray)") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if address is None else None)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        by_id = {ck.id: ck for ck, _, _ in todo}
        pending = {remote.remote(asdict(ck), q, s.to_dict(), list(splits)): (ck.id, q) for ck, q, splits in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cid, q = pending.pop(ref)
                for split, df in ray.get(ref):
                    _write_part(out, by_id[cid], q, split, df)
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- the report
def landscape_report(checkpoints: Sequence, *, quantities: Sequence[str] = ("top_eig", "trace"),
                     data="forget", out, resume: bool = False, overwrite: bool = False, backend: str = "local",
                     address: Optional[str] = None, workers: int = 1, params: Optional[str] = None,
                     base: Optional[str] = None, benchmark: Optional[str] = None,
                     benchmark_kwargs: Optional[Dict[str, Any]] = None, budget=None,
                     progress: bool = True, report: bool = True, threads: int = 1, **settings) -> pd.DataFrame:
    """Measure ``quantities`` on ``data`` (``"forget"``, ``"retain"`` or ``"both"``) for every
    checkpoint into ``out`` (module docstring) and return the table.

    Args:
        checkpoints: paths (or :class:`Checkpoint` objects).
        quantities: names from :data:`QUANTITIES`.
        out: output directory; ``resume`` completes an earlier report with the same settings,
            ``overwrite`` starts again.
        backend: "local" (``workers`` processes; 1 = this process) or "ray" (``address``).
        params: which weights the Probe measures (a pattern; None: all).
        base / benchmark: override or supply the base model and benchmark (module docstring).
        benchmark_kwargs: override the benchmark's arguments (e.g. ``{"data_dir": DIR}`` for a TOFU,
            MUSE or WMDP layout).
        budget: memory budget (bytes or "4GB"); default 80% of the available memory.
        progress: a bar per measurement and a log line per finished part.
        report: write report.md / report.html and figures.
        **settings: the remaining :class:`BatchSettings` fields (k, lanczos_iter, ...).

    Raises:
        ConfigError: before any work, for a path that is not a checkpoint, an unknown quantity,
            a base whose sha256 is not the recorded one, a quantity that needs a base on a
            checkpoint without one, an --out holding different settings, a plan over budget.
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(quantities, str):
        quantities = [q.strip() for q in quantities.split(",") if q.strip()]
    s = BatchSettings(quantities=tuple(quantities), data=_data(data), params=params, **settings).validate()
    cks = [c if isinstance(c, Checkpoint) else None for c in checkpoints]
    if any(c is None for c in cks):
        cks = find_checkpoints([c for c in checkpoints if not isinstance(c, Checkpoint)], base=base,
                               benchmark=benchmark, benchmark_kwargs=benchmark_kwargs) + [c for c in checkpoints if isinstance(c, Checkpoint)]
    need = [q for q in s.quantities if q in NEEDS_BASE]
    for ck in cks:
        if need and ck.kind == "hf" and ck.base is None:
            raise ConfigError(f"{need[0]} needs the checkpoint's base θ₀, and {ck.path} is a model directory: pass "
                              "--base (the model it was unlearned from) or drop " + ", ".join(need))
    budget_b = parse_bytes(budget) if budget is not None else None
    out = Path(out)
    from .._outdir import check_out, output_lock

    out = check_out(out, overwrite=True)
    with output_lock(out):
        # every checkpoint is built once before work: its base checked against the recorded sha256
        with _quiet():
            for ck in cks:  # every base built once and checked against the recorded sha256, before any work
                base_of(ck)
            plan = estimate(cks, s, budget=budget_b)
        _check_settings(out, s.to_dict(), cks, resume, overwrite)
        from dataclasses import replace

        s = replace(s, lanczos_memory=plan.attrs["lanczos_memory"])  # "auto" resolved once, for every task
        handler = logging.FileHandler(out / "landscape.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        stream = None
        if progress:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter("optigrade landscape: %(message)s"))
            log.addHandler(stream)
        log.setLevel(logging.INFO)
        try:
            log.info("%s", format_plan(plan, len(cks), len(s.data)))
            todo = []
            skipped = 0
            for ck in cks:
                for q in s.quantities:
                    missing = [sp for sp in s.data if not _part_path(out, ck.id, q, sp).exists()]
                    skipped += len(s.data) - len(missing)
                    if missing:
                        todo.append((ck, q, missing))
            if skipped:
                log.info("resume: %d finished part(s) kept, %d task(s) to run", skipped, len(todo))
            t0 = time.perf_counter()
            quiet = _quiet()
            with quiet:
                if backend == "ray":
                    _run_ray(todo, s, out, address)
                else:
                    _run_local(todo, s, out, workers, progress, threads)
            table = collect(out)
            from .._files import atomic_write_parquet

            atomic_write_parquet(table, out / "landscape.parquet")
            if report:
                write_report(table, out)
            log.info("finished: %d checkpoint(s), %d quantity(ies), %d split(s) → %d rows in %s (%.0f s; %d part(s) "
                     "computed, %d kept)", len(cks), len(s.quantities), len(s.data), len(table),
                     out / "landscape.parquet", time.perf_counter() - t0,
                     sum(len(m) for _, _, m in todo), skipped)
        finally:
            log.removeHandler(handler)
            handler.close()
            if stream is not None:
                log.removeHandler(stream)
    return table





# ----------------------------------------------------------------------------- summary, report
#: the headline value of each quantity: (landscape quantity, index or None for all, label)
HEADLINE = {"top_eig": ("eigenvalue_LA", 0, "λmax"), "trace": ("hessian_trace", None, "tr H"),
            "sharpness": ("average_sharpness", None, "avg. sharpness"),
            "radius": ("certified_radius", None, "certified radius"),
            "loss_change": ("loss_change", None, "ΔL back to θ₀")}


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint × (quantity, split) headline values "v ± u (kind)" (a wide frame)."""
    rows = []
    for (ck, grp, split), g in table.groupby(["checkpoint", "quantity_group", "data"], sort=True):
        if grp not in HEADLINE:
            continue
        qn, idx, label = HEADLINE[grp]
        sel = g[g["quantity"] == qn]
        if idx is not None and "index" in sel:
            sel = sel[sel["index"] == idx]
        if not len(sel):
            continue
        r = sel.iloc[0]
        u = r.get("uncertainty", float("nan"))
        txt = f"{r['value']:.4g}" + (f" ± {u:.2g} ({r.get('uncertainty_kind', '')})" if pd.notna(u) else "")
        rows.append(dict(checkpoint=ck, column=f"{label} [{split}]", text=txt))
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).pivot(index="checkpoint", columns="column", values="text").fillna("—")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figures(table: pd.DataFrame, fig_dir: Path) -> List[Path]:
    import matplotlib.pyplot as plt  # the session's backend (Agg when headless); figures are closed after saving

    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []
    cks = sorted(table["checkpoint"].unique())
    for grp in ("top_eig", "trace", "sharpness"):
        qn, idx, label = HEADLINE[grp]
        sel = table[(table["quantity_group"] == grp) & (table["quantity"] == qn)]
        if idx is not None:
            sel = sel[sel["index"] == idx]
        if not len(sel):
            continue
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(cks) + 2), 3.6), constrained_layout=True)
        splits = sorted(sel["data"].unique())
        w = 0.8 / len(splits)
        for j, split in enumerate(splits):
            ss = sel[sel["data"] == split].set_index("checkpoint").reindex(cks)
            x = np.arange(len(cks)) + (j - (len(splits) - 1) / 2) * w
            err = ss["uncertainty"].where(ss["uncertainty_kind"] == "sem")  # only standard errors are bars
            ax.bar(x, ss["value"], w, label=f"{split} data", color=["#0072B2", "#E69F00"][j % 2],
                   yerr=err.fillna(0).to_numpy() if err.notna().any() else None, capsize=2)
        ax.set_xticks(np.arange(len(cks)), cks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"{label} ({sel['unit'].iloc[0] or 'loss'})")
        ax.set_title(f"{label} per checkpoint" + (" (error bars: ± 1 s.e.)" if (sel["uncertainty_kind"] == "sem").any()
                                                  else ""))
        ax.legend(fontsize=8)
        made.append(_save(fig, fig_dir / f"{grp}.png"))
    dens = table[(table["quantity_group"] == "density") & (table["quantity"] == "spectral_density")]
    if len(dens) and "lambda" in dens:
        fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
        for (ck, split), g in dens.groupby(["checkpoint", "data"]):
            ax.plot(g["lambda"], g["value"], label=f"{ck} ({split})", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("Hessian eigenvalue λ")
        ax.set_ylabel("density (SLQ, Gaussian-smoothed)")
        ax.legend(fontsize=6)
        made.append(_save(fig, fig_dir / "density.png"))
    sl = table[(table["quantity_group"] == "slices") & (table["quantity"] == "loss")]
    if len(sl) and "alpha" in sl:
        fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
        for (ck, split, direction), g in sl.groupby(["checkpoint", "data", "direction"]):
            ax.plot(g["alpha"], g["value"], marker="o", ms=2, lw=1,
                    ls="-" if direction.startswith("toward") else ":", label=f"{ck} ({split}) {direction}")
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("α (θ_u + α·d; α = −1 along d = Δ is the base θ₀)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=5)
        made.append(_save(fig, fig_dir / "slices.png"))
    return made


def write_report(table: pd.DataFrame, out) -> None:
    """report.md and report.html: the checkpoint × quantity table, cost, figures."""
    from .._files import atomic_write_text
    from .report import _to_md

    out = Path(out)
    figs = _figures(table, out / "figures") if len(table) else []
    summ = summary_table(table) if len(table) else pd.DataFrame()
    cost = (table.drop_duplicates(["checkpoint", "quantity_group", "data"])
            .groupby("quantity_group")[["task_hvp", "task_loss", "seconds"]].sum()) if len(table) else pd.DataFrame()
    md = ["# Landscape report", "",
          f"{table['checkpoint'].nunique() if len(table) else 0} checkpoint(s); table: `landscape.parquet` "
          f"({len(table)} rows). Uncertainty kinds: 'residual' = Lanczos residual ‖Hy − λy‖ (a bound, not a "
          "standard error), 'sem' = Monte-Carlo standard error.", ""]
    if len(summ):
        md += [_to_md(summ.reset_index()), ""]
    if len(cost):
        md += ["Cost per quantity (all checkpoints and splits):", "", _to_md(cost.reset_index().round(1)), ""]
    md += [f"![{p.stem}](figures/{p.name})" for p in figs]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    html = ["<html><head><meta charset='utf-8'><title>Landscape report</title></head><body>",
            "<h1>Landscape report</h1>", f"<p>{md[2]}</p>"]
    if len(summ):
        html.append(summ.to_html())
    if len(cost):
        html.append("<h2>Cost</h2>" + cost.to_html(float_format="%.1f"))
    html += [f"<img src='figures/{p.name}' alt='{p.stem}'>" for p in figs]
    atomic_write_text(out / "report.html", "\n".join(html + ["</body></html>"]))
