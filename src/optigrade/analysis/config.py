"""Study configuration: YAML ↔ pydantic models, validated before any run starts.

A study YAML maps 1:1 onto :class:`StudyConfig` (pydantic; every field of a run's
:class:`~optigrade.unlearning.config.UnlearnConfig` is settable: the shared
:class:`~optigrade.unlearning.config.Setup` fields at the top level, the optimizer's in each
``optimizers`` entry, the objective's in each ``objectives`` entry, the seed from ``seeds``)::

    name: demo
    objectives: [npo, {name: simnpo, beta: 2.5}]   # hyperparameters next to the name
    seeds: [0, 1, 2]
    target: 0.1            # matched forgetting: stop at forget_acc <= target
    eval_every: 5
    optimizers:
      - {name: adam, lr: 1.0e-3, steps: 300}
      - {name: zo-sgd, lr: 1.0e-4, steps: 600, eval_every: 25, optimizer_kwargs: {q: 4}}
    attacks:
      - {kind: quantize, label: rtn4, bits: 4}
      - {kind: relearn, label: relearn-half, steps: 30, lr: 1.0e-4, protocol: half}
      - {kind: noise, label: noise, sigma: 0.01}
      - {kind: gguf, label: gguf, types: source}   # GGUF re-export (models loaded from a GGUF)
    diagnostics: {bits: [4, 8], group_size: null}

On a real model (``configs/smollm2.yaml``): ``model: smollm2``, ``benchmark: smollm2-facts``,
``benchmark_kwargs`` (RealFacts arguments such as ``n_forget``), per-optimizer ``params`` (a
regex: which weights the optimizer moves), ``retain_floor`` (stop a run whose retain accuracy
falls below it: reported as ``retain-guard``, not as forgetting) and ``threads``.

Every error names the setting, the bad value and the fix (:class:`unlearning.ConfigError`).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional

from pydantic import BeforeValidator, field_validator, model_validator

from .._validate import ConfigError
from .attacks import AttackSpec, attack_spec, check_bits, check_group_size
from ..unlearning.config import (OPTIONAL_SPLITS, SPLITS, F, ObjectiveSpec, OptimizerSpec, Setup, Spec, UnlearnConfig,
                                 check_optimizer)

__all__ = ["OptimizerSpec", "ObjectiveSpec", "DiagnosticsSpec", "GeometrySpec", "StudyConfig", "load_config",
           "file_safe"]


def file_safe(text: str) -> str:
    """``text`` as a file name: every character other than letters, digits and ``_.+-`` becomes
    ``_`` (how run ids are made; :class:`StudyConfig` refuses labels that would collide).

    >>> file_safe("npo__adam (mlp)__s2")
    'npo__adam__mlp___s2'
    """
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


class DiagnosticsSpec(Spec):
    """Mechanism diagnostics per run: quantizer bit widths, group size, symmetry; ``gguf``:
    also the bin crossing under the source file's GGUF types (models loaded from a GGUF);
    ``quantization``: the honest quantization diagnostics (level change, surviving update, half-steps).

    >>> DiagnosticsSpec(bits=[4]).bits, DiagnosticsSpec().group_size
    ([4], None)
    >>> DiagnosticsSpec(bits=[9])
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: diagnostics.bits: bits=9 is outside 2..8; RTN supports 2 to 8 bits, e.g. bits: 4
    """

    bits: List[int] = F([4, 8], "RTN bit widths of the bin-crossing diagnostic (2..8)", "[4, 8]")
    group_size: Optional[int] = F(None, "RTN group size of the diagnostic (null: per output channel)", 64, ge=1)
    symmetric: bool = True
    enabled: bool = True
    gguf: bool = True
    quantization: bool = F(True, "also the level-change fraction, surviving-update ratio / cosine and half-step "
                           "displacement (analysis.quant_diagnostics) for each RTN bit width and the GGUF export", False)

    @field_validator("bits")
    @classmethod
    def _bits(cls, v):
        for b in v:
            _bits_ok(b, "diagnostics.bits")
        return v


#: What ``geometry.quantities`` may name (see :mod:`optigrade.analysis.geometry`).
GEOMETRY_QUANTITIES = ("eigenvalues", "trace", "sharpness", "interpolation", "slices", "loss_change",
                       "radius", "relearn_step")


class GeometrySpec(Spec):
    """The geometry stage (:mod:`optigrade.analysis.geometry`): the loss landscape on forget and
    retain data around the original and every unlearned checkpoint, and each attack read against
    it.  Budgets are per checkpoint and data split; the cost lands in ``cost_*`` / ``geo_seconds``.

    >>> g = GeometrySpec()
    >>> g.enabled, g.data, g.k, g.trace_queries
    (True, ['forget', 'retain'], 3, 18)
    >>> GeometrySpec(quantities=["eigenvalues", "curvature"])
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: geometry.quantities: unknown 'curvature'; choose from eigenvalues, trace, sharpness, interpolation, slices, loss_change, radius, relearn_step
    """

    enabled: bool = F(True, "run the geometry stage", False)
    quantities: List[str] = F(list(GEOMETRY_QUANTITIES), "which quantities", "[eigenvalues, trace, loss_change]")
    data: List[str] = F(["forget", "retain"], "data splits the loss is measured on (forget, retain)", "[forget]")
    examples: int = F(32, "examples per split in the Probe's fixed batch (the split's first N)", 32, ge=2)
    params: Optional[str] = F(None, "which weights the Probe measures (a pattern: regex | glob: | preset; null: all)",
                              r"layers\.(2[4-9])\.")
    keep_graph: bool = F(True, "keep the gradient graph so each HVP is one backward (memory for speed)", True)
    k: int = F(3, "top Hessian eigenvalues (Lanczos)", 3, ge=1)
    lanczos_iter: int = F(20, "Lanczos iterations (HVPs) at most", 20, ge=2)
    trace_queries: int = F(18, "Hutch++ HVPs for tr H (a multiple of 3)", 18, ge=3)
    sharpness_samples: int = F(8, "noise draws per average sharpness (antithetic: 2 losses each)", 8, ge=2)
    noise_scales: List[float] = F([0.25, 0.5, 1.0], "multiples c of the quantization-noise std s/sqrt(12)",
                                  "[0.25, 0.5, 1.0]")
    noise_bits: Optional[int] = F(None, "RTN bit width of the noise scale (null: the first quantize attack's, else 4)",
                                  4)
    noise_group_size: Optional[int] = F(None, "RTN group size of the noise scale (null: that attack's)", 64, ge=1)
    noise_symmetric: Optional[bool] = F(None, "RTN symmetry of the noise scale (null: that attack's)", True)
    adaptive_rho: float = F(0.01, "weight-scaled sharpness: per-weight std rho*|theta_i|", 0.01, gt=0)
    slice_points: int = F(9, "points of the 1-D slices on t in [-0.5, 1.5]", 9, ge=3)
    interp_points: int = F(9, "points of the interpolation theta_0 -> theta_u on [0, 1]", 9, ge=2)
    radius_samples: int = F(100, "noise draws of the certified radius", 100, ge=1)
    radius_alpha: float = F(0.001, "certified radius confidence level alpha", 0.001, gt=0, lt=1)
    uniform_samples: int = F(8, "Hutchinson draws of the uniform-noise loss-change prediction", 8, ge=2)
    seed: int = F(0, "seed of every random direction / probe vector", 0, ge=0)
    theory: bool = F(True, "the SPEC §3.1 theory checks on the original model (ZO mean vs grad L_mu; L_mu - L vs "
                     "(mu^2/2) tr H)", False)
    theory_mu: float = F(1e-3, "mu of the ZO-gradient check", 1e-3, gt=0)
    theory_queries: List[int] = F([1, 4, 16], "query counts q of the ZO-gradient check", "[1, 4, 16]")
    theory_repeats: int = F(4, "ZO estimates per q", 4, ge=2)
    theory_reference_n: int = F(4, "antithetic gradient pairs of the Monte-Carlo grad L_mu", 4, ge=0)
    theory_mus: List[float] = F([1e-3, 1e-2, 3e-2], "mu values of the smoothing-gap check", "[1.0e-3, 1.0e-2]")
    theory_samples: int = F(16, "antithetic draws of L_mu - L", 16, ge=2)
    theory_trace_queries: int = F(30, "Hutchinson HVPs for tr H in the smoothing-gap check", 30, ge=2)

    def memory_bytes(self, n_params: int, model_bytes: int = 0) -> int:
        """Peak memory the stage's vectors need on ``n_params`` measured weights, on top of the
        models the study holds: the Lanczos basis (``lanczos_iter`` float64 vectors), the
        Hutch++ sketch (two thirds of ``trace_queries`` vectors), a handful of working vectors,
        and (``keep_graph``) the gradient graph, counted as one more model.

        >>> round(GeometrySpec(lanczos_iter=20, trace_queries=18).memory_bytes(134_515_008) / 1e9, 1)  # SmolLM2, all
        28.0
        """
        n = int(n_params)
        vectors = 8 * n * max(self.lanczos_iter if "eigenvalues" in self.quantities else 0,
                              2 * self.trace_queries // 3 if "trace" in self.quantities else 0)
        return int(vectors + 8 * n * 6 + (model_bytes if self.keep_graph else 0))

    @field_validator("quantities", "data", "noise_scales", "theory_queries", "theory_mus")
    @classmethod
    def _lists(cls, v, info):
        name = info.field_name
        if not v or len(set(map(str, v))) != len(v):
            raise ValueError(f"geometry.{name} must be a non-empty list without duplicates, got {v!r}")
        if name == "quantities":
            bad = [q for q in v if q not in GEOMETRY_QUANTITIES]
            if bad:
                raise ValueError(f"geometry.quantities: unknown {bad[0]!r}; choose from {', '.join(GEOMETRY_QUANTITIES)}")
        if name == "data":
            bad = [d for d in v if d not in ("forget", "retain")]
            if bad:
                raise ValueError(f"geometry.data: unknown split {bad[0]!r}; the geometry is measured on forget and/or retain "
                                 "data, e.g. data: [forget, retain]")
        if name in ("noise_scales", "theory_mus") and not all(isinstance(c, (int, float)) and 0 < c < float("inf")
                                                             for c in v):
            raise ValueError(f"geometry.{name} must be numbers > 0, got {v!r}; e.g. [0.25, 0.5, 1.0]")
        if name == "theory_queries" and not all(isinstance(c, int) and c >= 1 for c in v):
            raise ValueError(f"geometry.theory_queries must be integers >= 1, got {v!r}; e.g. [1, 4, 16]")
        return v

    @field_validator("trace_queries")
    @classmethod
    def _hutchpp(cls, v):
        if v % 3:
            raise ValueError(f"geometry.trace_queries={v} is not a multiple of 3 (Hutch++ splits its HVPs in thirds); "
                             f"e.g. {3 * max(1, round(v / 3))}")
        return v

    @field_validator("noise_bits")
    @classmethod
    def _noise_bits(cls, v):
        if v is not None:
            _bits_ok(v, "geometry.noise_bits")
        return v

    def resolved(self, attacks) -> "GeometrySpec":
        """This spec with the noise grid filled from the first quantize attack (else 4 bits,
        per output channel, symmetric)."""
        q = next((a.resolved() for a in attacks if a.kind == "quantize"), {})
        return self.model_copy(update={
            "noise_bits": self.noise_bits if self.noise_bits is not None else int(q.get("bits", 4)),
            "noise_group_size": self.noise_group_size if self.noise_group_size is not None else q.get("group_size"),
            "noise_symmetric": self.noise_symmetric if self.noise_symmetric is not None else bool(q.get("symmetric", True)),
        })

    def settings(self) -> dict:
        return self.model_dump(mode="json")


def _objectives(v):
    if not isinstance(v, list):
        raise ValueError(f"objectives must be a list, got {v!r}; e.g. objectives: [npo, {{name: simnpo, beta: 2.5}}]")
    return [_at(f"objectives[{i}]", ObjectiveSpec.coerce, o, i) for i, o in enumerate(v)]


def _optimizers(v):
    if not isinstance(v, list):
        raise ValueError(f"optimizers must be a list of {{name, lr, steps}} mappings, got {v!r}")
    return [o if isinstance(o, OptimizerSpec) else _at(f"optimizers[{i}]", OptimizerSpec.from_dict, o, i)
            for i, o in enumerate(v)]


def _at(where: str, build, *args):
    """``build(*args)``, its error prefixed with where in the YAML it happened (nested configs
    are built by their own constructor, so pydantic does not know the path)."""
    try:
        return build(*args)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _diagnostics(v):
    return v if isinstance(v, DiagnosticsSpec) else _at("diagnostics", DiagnosticsSpec.from_dict, v or {})


def _geometry(v):
    return v if isinstance(v, GeometrySpec) else _at("geometry", GeometrySpec.from_dict, v or {})


def _controls(v):
    from .controls import ControlSpec

    if not isinstance(v, list):
        raise ValueError(f"controls must be a list of {{kind, label, ...}} mappings, got {v!r}; e.g. controls: "
                         "[{kind: noise, label: noise-like-zo, match: zo-sgd}]")
    return [c if isinstance(c, ControlSpec) else _at(f"controls[{i}]", ControlSpec.from_dict, c)
            for i, c in enumerate(v)]


def _attacks(v):
    if not isinstance(v, list):
        raise ValueError(f"attacks must be a list of {{kind, ...}} mappings, got {v!r}")
    out, seen = [], set()
    for i, a in enumerate(v or []):
        spec = attack_spec(a, f"attacks[{i}]")
        if spec.key in seen or spec.key == "none":
            raise ValueError(f"attacks[{i}]: label {spec.key!r} is used twice (or is the reserved 'none'); give "
                             "each attack a distinct label")
        seen.add(spec.key)
        out.append(spec)
    return out


class StudyConfig(Setup):
    """optimizers × objectives × attacks × seeds at matched forgetting (see module docstring).

    Every :class:`~optigrade.unlearning.config.Setup` field (model, benchmark, target, ...) is
    set once for the whole study; each optimizer entry (:class:`OptimizerSpec`) and objective
    entry (:class:`ObjectiveSpec`) fills the rest of a run's
    :class:`~optigrade.unlearning.config.UnlearnConfig` (:meth:`unlearn_config`).

    ``eval_retain`` / ``eval_general`` cap the retain(-paraphrase) examples and general-text
    sentences scored at every evaluation (fixed subsets, the first N) to keep a study cheap;
    None scores everything.  ``threads`` is torch's intra-op thread count during the study.

    >>> cfg = StudyConfig(objectives=["npo", {"name": "simnpo", "beta": 2.5}], seeds=[0, 1],
    ...                   optimizers=[{"name": "adam", "lr": 1e-3, "steps": 100},
    ...                               {"name": "zo-sgd", "lr": 1e-3, "optimizer_kwargs": {"q": 4}}],
    ...                   attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}])
    >>> [o.key for o in cfg.objectives], [a.key for a in cfg.attacks]
    (['npo', 'simnpo(beta=2.5)'], ['rtn4'])
    >>> run = cfg.unlearn_config(cfg.objectives[1], cfg.optimizers[1], seed=1)
    >>> run.objective, run.objective_kwargs, run.optimizer, run.steps, run.seed, run.target
    ('simnpo', {'beta': 2.5}, 'zo-sgd', 200, 1, 0.1)
    >>> StudyConfig(optimizers=[{"name": "adam", "lr": 1e-3}], seeds=[0, 0])
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: seeds has duplicates: [0, 0]; list each seed once
    """

    name: str = F("study", "the study's name (default output directory runs/<name>)", "demo")
    optimizers: Annotated[List[OptimizerSpec], BeforeValidator(_optimizers)] = F(
        [], "the optimizers to compare", "[{name: adam, lr: 1.0e-3, steps: 300}]")
    objectives: Annotated[List[ObjectiveSpec], BeforeValidator(_objectives)] = F(
        ["npo", "graddiff"], "the unlearning objectives", "[npo, graddiff]", validate_default=True)
    attacks: Annotated[List[AttackSpec], BeforeValidator(_attacks)] = F(
        [], "the attacks on every unlearned model", "[{kind: quantize, label: rtn4, bits: 4}]")
    seeds: List[int] = F([0], "the study seeds (data order, ZO directions, relearning)", "[0, 1, 2]")
    eval_retain: Optional[int] = F(200, "retain examples scored per evaluation (null: all)", 200, ge=1)
    eval_general: Optional[int] = F(100, "general-text sentences scored per evaluation (null: all)", 100, ge=1)
    eval_splits: List[str] = F(["forget", "forget_para", "retain", "retain_para"], "splits scored per evaluation",
                               "[forget, retain]")
    reference: bool = F(True, "also attack the original (not unlearned) model once", True)
    benchmark_metrics: Optional[Dict[str, Any]] = F(
        {}, "the benchmark's published metrics (TOFU, MUSE, WMDP) on every scored model, with these arguments "
        "(e.g. {limit: 100}); null: skip them (the built-in benchmarks have none)", "{}")
    threads: Optional[int] = F(1, "torch intra-op threads during the study (null: torch's default)", 1, ge=1)
    diagnostics: Annotated[DiagnosticsSpec, BeforeValidator(_diagnostics)] = F(
        DiagnosticsSpec(), "mechanism diagnostics", "{bits: [4, 8]}")
    controls: Annotated[list, BeforeValidator(_controls)] = F(
        [], "controls built from θ₀ and other runs' updates (analysis.controls: noise, fo_noise, scale)",
        "[{kind: noise, label: noise-like-zo, match: zo-sgd}]")
    geometry: Annotated[GeometrySpec, BeforeValidator(_geometry)] = F(
        GeometrySpec(), "the geometry stage (loss landscape around every checkpoint)", "{k: 3, trace_queries: 18}")

    @field_validator("name", "eval_splits")
    @classmethod
    def _names(cls, v, info):
        if info.field_name == "name" and (v in ("", ".", "..") or Path(v).name != v or "/" in v or "\\" in v):
            raise ValueError(f"name must be a plain file name, got {v!r}; it names the default output directory "
                             "runs/<name> (choose where results go with --out), e.g. name: demo")
        if info.field_name == "eval_splits":
            bad = [s for s in v if s not in SPLITS + OPTIONAL_SPLITS]
            if not v or bad or len(set(v)) != len(v):
                why = f"unknown {bad}" if bad else "empty" if not v else "duplicates"
                raise ValueError(f"eval_splits must list splits of {list(SPLITS + OPTIONAL_SPLITS)}, each once, got "
                                 f"{v!r} ({why}; heldout needs a benchmark with a held-out split, e.g. "
                                 "smollm2-facts with n_heldout); "
                                 "e.g. eval_splits: [forget, forget_para, retain, retain_para]")
            if "forget" not in v:
                raise ValueError(f"eval_splits must include 'forget' (the forget accuracy every table reports), "
                                 f"got {v!r}; e.g. eval_splits: [forget, retain]")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        if not isinstance(v, list):
            raise ValueError(f"seeds must be a list, got {v!r}; e.g. seeds: [0, 1, 2]")
        if not v or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in v):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {v!r}; e.g. seeds: [0, 1, 2]")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds has duplicates: {v!r}; list each seed once")
        return v

    @model_validator(mode="after")
    def _study_checks(self):
        if self.utility_floor_retain is not None and "retain" not in self.eval_splits:
            raise ValueError(f"utility_floor_retain={self.utility_floor_retain} needs retain accuracy, but eval_splits "
                             f"{self.eval_splits!r} does not score 'retain'; add it (eval_splits: [forget, retain]) or "
                             "set utility_floor_retain: null")
        if not self.optimizers:
            raise ValueError("optimizers is empty; list at least one, e.g. optimizers: [{name: adam, lr: 1.0e-3, steps: 300}]")
        if not self.objectives:
            raise ValueError("objectives is empty; e.g. objectives: [npo]")
        seen = set()
        for o in self.objectives:
            if o.key in seen:
                raise ValueError(f"objective {o.key!r} listed twice; list each objective (with its settings) once")
            seen.add(o.key)
        seen = set()
        for i, o in enumerate(self.optimizers):
            where = f"optimizers[{i}] ({o.key})"
            if o.key in seen:
                raise ValueError(f"{where}: label {o.key!r} used twice; give each entry a distinct label")
            seen.add(o.key)
            ee = o.eval_every or self.eval_every
            if o.steps < ee:
                raise ValueError(f"{where}: step cap steps={o.steps} < eval_every={ee}, so the target "
                                 f"{self.target} can never be checked before the cap; raise steps to >= {ee} "
                                 "or lower eval_every")
            try:
                check_optimizer(o.name, o.lr, o.optimizer_kwargs)
            except ValueError as e:
                raise ValueError(f"{where}: {e}".replace("; choose one of:", "; choose from:")) from None
        labels = [o.key for o in self.optimizers]
        seen = set()
        for i, c in enumerate(self.controls):
            where = f"controls[{i}] ({c.label})"
            if c.label in labels or c.label in seen:
                raise ValueError(f"{where}: label {c.label!r} is already used by an optimizer entry or another "
                                 "control; give each entry a distinct label")
            seen.add(c.label)
            for ref in ("source", "match"):
                r = getattr(c, ref)
                if r is not None and r not in labels:
                    raise ValueError(f"{where}: {ref} {r!r} names no optimizer entry; choose from {labels}")
        self._check_run_ids()
        return self

    def _check_run_ids(self) -> None:
        """Two entries whose file-safe run ids coincide (``adam 1`` and ``adam_1``) would share one
        run file: refused, naming both."""
        for what, keys in (("objectives", [(o.key, o, None) for o in self.objectives]),
                           ("optimizers and controls", [(o.key, None, o) for o in [*self.optimizers, *self.controls]])):
            seen = {}
            for key, obj, opt in keys:
                rid = file_safe(f"{(obj or self.objectives[0]).key}__{(opt or self.optimizers[0]).key}__s0")
                if rid in seen:
                    raise ValueError(f"{what}: {seen[rid]!r} and {key!r} give the same run id {rid!r} (labels are "
                                     "made file-safe: characters other than letters, digits and _.+- become _); "
                                     "rename one of them")
                seen[rid] = key

    # ------------------------------------------------------------ runs
    def unlearn_config(self, objective, opt: OptimizerSpec, seed: int, **over) -> UnlearnConfig:
        """The :class:`~optigrade.unlearning.config.UnlearnConfig` of one run: this study's
        :class:`Setup` fields, the optimizer entry's and the objective's (``over`` replaces
        fields, e.g. ``optimizer_kwargs`` with the run's seed)."""
        obj = ObjectiveSpec.coerce(objective)
        setup = {k: copy.deepcopy(getattr(self, k)) for k in Setup.model_fields}
        d = {**setup, **opt.run_fields(self), **obj.run_fields(), "seed": seed}
        d.update(over)
        return UnlearnConfig(**d)

    def to_dict(self) -> dict:
        d = self.model_dump(mode="python")
        d["objectives"] = [o.to_yaml() for o in self.objectives]
        d["attacks"] = [a.to_dict() for a in self.attacks]
        d["controls"] = [c.to_dict() for c in self.controls]
        return d

    # ------------------------------------------------------------ validation against a model
    def validate(self, model=None) -> "StudyConfig":
        """Construction checked everything that needs no model; with ``model`` also check each
        optimizer's ``params`` regex and the quantizer group sizes against it."""
        if model is None:
            return self
        from .._select import matcher

        named = list(model.named_parameters())
        names = [n for n, _ in named]
        for i, o in enumerate(self.optimizers):
            if o.params is not None and not any(matcher(o.params)(n, p) for n, p in named):
                raise ConfigError(f"optimizers[{i}] ({o.key}): params {o.params!r} matches no parameter of "
                                  f"model {self.model!r}; names look like {names[min(3, len(names) - 1)]!r}")
        for i, a in enumerate(self.attacks):
            a.check_model(model, f"attacks[{i}]", self.model)
        for i, c in enumerate(self.controls):
            if c.params is not None and not any(matcher(c.params)(n, p) for n, p in named):
                raise ConfigError(f"controls[{i}] ({c.label}): params {c.params!r} matches no parameter of model "
                                  f"{self.model!r}; names look like {names[min(3, len(names) - 1)]!r}")
        g = self.geometry
        if g.enabled:
            if g.params is not None and not any(matcher(g.params)(n, p) for n, p in named):
                raise ConfigError(f"geometry.params {g.params!r} matches no parameter of model {self.model!r}; names "
                                  f"look like {names[min(3, len(names) - 1)]!r}")
            sel = [p for n, p in named if g.params is None or matcher(g.params)(n, p)]
            need = g.memory_bytes(sum(p.numel() for p in sel),
                                  sum(p.numel() * p.element_size() for _, p in named))
            have = available_memory_bytes()
            if have is not None and need > 0.8 * have:
                raise ConfigError(
                    f"geometry needs ~{_size(need)} for its vectors on {sum(p.numel() for p in sel):,} weights "
                    f"(lanczos_iter={g.lanczos_iter} float64 Lanczos vectors, trace_queries={g.trace_queries}), more "
                    f"than 80% of the {_size(have)} available; measure a subset (geometry.params, e.g. "
                    r"'layers\.(2[4-9])\.mlp\.down_proj'), fewer iterations (geometry.lanczos_iter: 6), or "
                    "geometry: {enabled: false}")
            gr = g.resolved(self.attacks)
            try:
                check_group_size(model, gr.noise_group_size)
            except ValueError as e:
                raise ConfigError(f"geometry.noise_group_size: {e}") from None
        try:
            check_group_size(model, self.diagnostics.group_size)
        except ValueError as e:
            raise ConfigError(f"diagnostics: {e}") from None
        return self


def _size(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def available_memory_bytes() -> Optional[int]:
    """Memory the system can still give (``MemAvailable`` of /proc/meminfo, else psutil), or
    None when neither is readable (the check is then skipped)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil, or it cannot read: skip the check
        return None


def _bits_ok(b, where):
    try:
        check_bits(b)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def load_config(path, benchmark: Optional[str] = None, benchmark_kwargs: Optional[Dict[str, Any]] = None
                ) -> StudyConfig:
    """Read and parse a study YAML into a validated :class:`StudyConfig` (the checks that need
    the model run in :meth:`StudyConfig.validate`).  ``benchmark`` / ``benchmark_kwargs``
    (``optigrade study --benchmark / --data-dir / --bench-arg``) override the file's before it is
    validated, so a file without its ``data_dir`` is complete once the flag gives it.

    >>> from optigrade.demo import config_path
    >>> cfg = load_config(config_path("demo_quick.yaml"))
    >>> cfg.name, [o.name for o in cfg.optimizers], [a.kind for a in cfg.attacks]
    ('demo-quick', ['adam'], ['quantize', 'relearn'])
    >>> load_config("no/such.yaml")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: study config 'no/such.yaml' not found; pass a YAML file such as configs/demo.yaml
    """
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"study config {str(p)!r} not found; pass a YAML file such as configs/demo.yaml")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None  # one line
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: a study config must be a YAML mapping, got {type(d).__name__}")
    _resolve_data_dir(d, p.parent)
    if benchmark is not None or benchmark_kwargs:  # command-line flags over the file, validated with it
        sec = d.pop("benchmark", None)
        kw = dict(d.get("benchmark_kwargs") or {})
        if isinstance(sec, dict):
            sec = dict(sec)
            name = sec.pop("name", None)
            kw = {**sec, **kw}
        else:
            name = sec
        if benchmark is not None and benchmark != (name or "synthetic"):
            kw = {}  # another benchmark: the file's arguments are not its
        d["benchmark"] = benchmark or name or "synthetic"
        d["benchmark_kwargs"] = {**kw, **(benchmark_kwargs or {})}
    return StudyConfig(**d)


def _resolve_data_dir(d: dict, base: Path) -> None:
    """A relative ``data_dir`` (in a ``benchmark:`` section or ``benchmark_kwargs``) is relative to
    the YAML file's directory, as a reader of the file expects; made absolute here."""
    for holder in (d.get("benchmark"), d.get("benchmark_kwargs")):
        if isinstance(holder, dict) and isinstance(holder.get("data_dir"), str):
            q = Path(holder["data_dir"]).expanduser()
            if not q.is_absolute():
                holder["data_dir"] = str((base / q).resolve())
