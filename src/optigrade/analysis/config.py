"""Study configuration: YAML ↔ dataclasses, validated before any run starts.

A study YAML maps 1:1 onto :class:`StudyConfig`::

    name: demo
    objectives: [npo, graddiff]
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
import dataclasses
import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from optigrade.unlearning.run import ConfigError

__all__ = ["OptimizerSpec", "AttackSpec", "DiagnosticsSpec", "StudyConfig", "load_config", "ATTACK_KINDS"]


def _fields(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _strict(cls, d: Any, where: str) -> dict:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {d!r}")
    bad = sorted(set(d) - set(_fields(cls)))
    if bad:
        raise ConfigError(f"{where}: unknown setting(s) {bad}; allowed: {_fields(cls)}")
    return d


def _attack_params() -> Dict[str, Dict[str, Any]]:
    from . import attacks
    from . import gguf

    out = {}
    for kind, fn, skip in (("quantize", attacks.quantize_rtn, {"model"}),
                           ("relearn", attacks.relearn, {"model", "benchmark", "seed", "progress"}),
                           ("noise", attacks.weight_noise, {"model", "seed"}),
                           ("gguf", gguf.requantize_gguf, {"model", "source_types"})):
        sig = inspect.signature(fn)
        out[kind] = {k: (REQUIRED if p.default is inspect.Parameter.empty else p.default)
                     for k, p in sig.parameters.items() if k not in skip}
    return out


ATTACK_KINDS = ("quantize", "relearn", "noise", "gguf")
REQUIRED = "<required>"


@dataclass
class OptimizerSpec:
    """One optimizer of the study: registered ``name``, its ``lr``, step cap ``steps``, extra
    ``optimizer_kwargs``; ``label`` names it in tables (default: name); ``eval_every``
    overrides the study's stop-check interval for this optimizer; ``params`` (a regex over
    parameter names) restricts the weights it moves (e.g. ``'mlp\\.down_proj'`` for ZO on a
    real model); ``retain_floor`` overrides the study's retain guard."""

    name: str
    lr: float
    steps: int = 300
    label: Optional[str] = None
    eval_every: Optional[int] = None
    params: Optional[str] = None
    retain_floor: Optional[float] = None
    optimizer_kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name

    @classmethod
    def from_dict(cls, d, i=0) -> "OptimizerSpec":
        d = _strict(cls, d, f"optimizers[{i}]")
        if "name" not in d or "lr" not in d:
            raise ConfigError(f"optimizers[{i}] needs at least name and lr, e.g. {{name: adam, lr: 1.0e-3}}; got {d!r}")
        return cls(**d)


@dataclass
class AttackSpec:
    """One attack: ``kind`` (quantize | relearn | noise | gguf), a ``label`` for the tables and the
    attack function's keyword arguments in ``settings`` (flattened in YAML)."""

    kind: str
    label: Optional[str] = None
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.kind

    def resolved(self) -> Dict[str, Any]:
        """Every setting of the attack function, defaults filled in."""
        return {**_attack_params()[self.kind], **self.settings}

    @classmethod
    def from_dict(cls, d, i=0) -> "AttackSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"attacks[{i}] must be a mapping like {{kind: quantize, bits: 4}}, got {d!r}")
        d = dict(d)
        kind = d.pop("kind", None)
        label = d.pop("label", None)
        settings = d.pop("settings", {}) or {}
        settings = {**settings, **d}
        return cls(kind=kind, label=label, settings=settings)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "label": self.label, **self.settings}


@dataclass
class DiagnosticsSpec:
    """Mechanism diagnostics per run: quantizer bit widths, group size, symmetry; ``gguf``:
    also the bin crossing under the source file's GGUF types (models loaded from a GGUF)."""

    bits: List[int] = field(default_factory=lambda: [4, 8])
    group_size: Optional[int] = None
    symmetric: bool = True
    enabled: bool = True
    gguf: bool = True


@dataclass
class StudyConfig:
    """optimizers × objectives × attacks × seeds at matched forgetting (see module docstring).

    ``eval_retain`` / ``eval_general`` cap the retain(-paraphrase) examples and general-text
    sentences scored at every evaluation (fixed subsets, the first N) to keep a study cheap;
    None scores everything.  ``benchmark_kwargs`` go to the benchmark's constructor;
    ``retain_floor`` stops a run whose retain accuracy falls below it (``stop_reason
    "retain-guard"``); ``threads`` is torch's intra-op thread count during the study."""

    optimizers: List[OptimizerSpec] = field(default_factory=list)
    objectives: List[str] = field(default_factory=lambda: ["npo", "graddiff"])
    attacks: List[AttackSpec] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    name: str = "study"
    target: float = 0.1
    metric: str = "forget_acc"
    eval_every: int = 5
    batch_size: int = 16
    model: str = "tiny"
    benchmark: str = "synthetic"
    n_entities: int = 200
    forget_fraction: float = 0.1
    eval_retain: Optional[int] = 200
    eval_general: Optional[int] = 100
    eval_splits: List[str] = field(default_factory=lambda: ["forget", "forget_para", "retain", "retain_para"])
    reference: bool = True  # also attack the original (not unlearned) model once
    benchmark_kwargs: Dict[str, Any] = field(default_factory=dict)
    retain_floor: Optional[float] = None
    threads: Optional[int] = 1
    diagnostics: DiagnosticsSpec = field(default_factory=DiagnosticsSpec)

    # ------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        d = dict(_strict(cls, d, "study config"))
        if "optimizers" in d:
            if not isinstance(d["optimizers"], list):
                raise ConfigError(f"optimizers must be a list of {{name, lr, steps}} mappings, got {d['optimizers']!r}")
            d["optimizers"] = [OptimizerSpec.from_dict(o, i) for i, o in enumerate(d["optimizers"])]
        if "attacks" in d:
            if not isinstance(d["attacks"], list):
                raise ConfigError(f"attacks must be a list of {{kind, ...}} mappings, got {d['attacks']!r}")
            d["attacks"] = [AttackSpec.from_dict(a, i) for i, a in enumerate(d["attacks"] or [])]
        if "diagnostics" in d:
            d["diagnostics"] = DiagnosticsSpec(**_strict(DiagnosticsSpec, d["diagnostics"] or {}, "diagnostics"))
        for k in ("objectives", "seeds", "eval_splits"):
            if k in d and not isinstance(d[k], list):
                raise ConfigError(f"{k} must be a list, got {d[k]!r}; e.g. {k}: [{_EX[k]}]")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = [a.to_dict() for a in self.attacks]
        return d

    def unlearn_config(self, objective: str, opt: "OptimizerSpec", seed: int, **over):
        """The :class:`~unlearning.run.UnlearnConfig` of one run (``over`` replaces fields)."""
        import re as _re

        from optigrade.unlearning.run import UnlearnConfig

        if opt.params is not None:
            try:
                _re.compile(opt.params)
            except _re.error as e:
                raise ConfigError(f"params {opt.params!r} is not a valid regular expression ({e}); "
                                  "e.g. params: 'mlp\\.down_proj'") from None
        d = dict(objective=objective, optimizer=opt.name, lr=float(opt.lr), steps=opt.steps, target=self.target,
                 metric=self.metric, eval_every=opt.eval_every or self.eval_every, batch_size=self.batch_size,
                 seed=seed, model=self.model, benchmark=self.benchmark, forget_fraction=self.forget_fraction,
                 n_entities=self.n_entities, params=opt.params,
                 retain_floor=opt.retain_floor if opt.retain_floor is not None else self.retain_floor,
                 benchmark_kwargs=copy.deepcopy(self.benchmark_kwargs),
                 optimizer_kwargs=copy.deepcopy(opt.optimizer_kwargs))
        d.update(over)
        return UnlearnConfig(**d)

    # ------------------------------------------------------------ validation
    def validate(self, model=None) -> "StudyConfig":
        """Check everything that can be checked without running; with ``model`` also check
        quantizer group sizes against its ``nn.Linear`` row lengths."""
        from optigrade import optimizers
        from optigrade.unlearning.objectives import OBJECTIVES

        names = sorted(i.name for i in optimizers.available(gru=True))
        if not self.optimizers:
            raise ConfigError("optimizers is empty; list at least one, e.g. optimizers: [{name: adam, lr: 1.0e-3, steps: 300}]")
        if not self.objectives:
            raise ConfigError("objectives is empty; e.g. objectives: [npo]")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of integers, got {self.seeds!r}; e.g. seeds: [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds has duplicates: {self.seeds!r}; list each seed once")
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ConfigError(f"unknown objective {o!r}; choose from: {', '.join(sorted(OBJECTIVES))}")
        if not isinstance(self.target, (int, float)) or self.target < 0 or self.target > 1:
            raise ConfigError(f"target={self.target!r} is unreachable: {self.metric} lies in [0, 1]; "
                              "choose e.g. target: 0.1")
        if not (isinstance(self.eval_every, int) and self.eval_every >= 1):
            raise ConfigError(f"eval_every must be a positive integer, got {self.eval_every!r}; e.g. 5")
        seen = set()
        for i, o in enumerate(self.optimizers):
            where = f"optimizers[{i}] ({o.key})"
            if o.name not in names:
                raise ConfigError(f"{where}: unknown optimizer {o.name!r}; choose from: {', '.join(names)}")
            if o.key in seen:
                raise ConfigError(f"{where}: label {o.key!r} used twice; give each entry a distinct label")
            seen.add(o.key)
            if not (isinstance(o.lr, (int, float)) and not isinstance(o.lr, bool) and o.lr > 0):
                raise ConfigError(f"{where}: lr must be a number > 0, got {o.lr!r}; e.g. lr: 1.0e-3")
            if not (isinstance(o.steps, int) and o.steps >= 1):
                raise ConfigError(f"{where}: steps (the step cap) must be a positive integer, got {o.steps!r}; e.g. steps: 300")
            ee = o.eval_every or self.eval_every
            if not (isinstance(ee, int) and ee >= 1):
                raise ConfigError(f"{where}: eval_every must be a positive integer, got {ee!r}")
            if o.steps < ee:
                raise ConfigError(f"{where}: step cap steps={o.steps} < eval_every={ee}, so the target "
                                  f"{self.target} can never be checked before the cap; raise steps to >= {ee} "
                                  "or lower eval_every")
            if not isinstance(o.optimizer_kwargs, dict):
                raise ConfigError(f"{where}: optimizer_kwargs must be a mapping, got {o.optimizer_kwargs!r}")
            try:
                import torch
                optimizers.make(o.name, [torch.nn.Parameter(torch.zeros(2))], lr=o.lr, **o.optimizer_kwargs)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{where}: {e}") from None
            try:
                base_name = o.name[: -len("+gru")] if o.name.endswith("+gru") else o.name
                self.unlearn_config(self.objectives[0], o, 0, optimizer=base_name, optimizer_kwargs={}).validate()
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        params = _attack_params()
        seen = set()
        for i, a in enumerate(self.attacks):
            where = f"attacks[{i}]"
            if a.kind not in ATTACK_KINDS:
                raise ConfigError(f"{where}: unknown attack kind {a.kind!r}; choose from: {', '.join(ATTACK_KINDS)}")
            if a.key in seen or a.key == "none":
                raise ConfigError(f"{where}: label {a.key!r} is used twice (or is the reserved 'none'); give each attack a distinct label")
            seen.add(a.key)
            bad = sorted(set(a.settings) - set(params[a.kind]))
            if bad:
                raise ConfigError(f"{where} ({a.kind}): unknown setting(s) {bad}; allowed: {sorted(params[a.kind])}")
            s = a.resolved()
            missing = sorted(k for k, v in s.items() if v == REQUIRED)
            if missing:
                raise ConfigError(f"{where} ({a.key}): missing required setting(s) {missing}; "
                                  f"e.g. {{kind: {a.kind}, {missing[0]}: {_ATTACK_EX.get(missing[0], '...')}}}")
            if a.kind == "quantize":
                _check_bits(s["bits"], f"{where} ({a.key})")
                _check_group(s["group_size"], model, s.get("modules"), f"{where} ({a.key})")
            elif a.kind == "relearn":
                if s["protocol"] not in ("full", "half"):
                    raise ConfigError(f"{where} ({a.key}): protocol {s['protocol']!r} unknown; use 'full' or 'half'")
                if not (isinstance(s["steps"], int) and s["steps"] >= 1):
                    raise ConfigError(f"{where} ({a.key}): steps must be a positive integer, got {s['steps']!r}; e.g. steps: 100")
                if not (isinstance(s["lr"], (int, float)) and s["lr"] > 0):
                    raise ConfigError(f"{where} ({a.key}): lr must be > 0, got {s['lr']!r}; e.g. lr: 1.0e-5")
            elif a.kind == "gguf":
                from .gguf import SUPPORTED_TYPES, _check_type

                t = s["types"]
                try:
                    if isinstance(t, dict):
                        for k, v in t.items():
                            _check_type(v, f"types[{k!r}]")
                    elif t != "source":
                        _check_type(t)
                except ValueError as e:
                    raise ConfigError(f"{where} ({a.key}): {e}") from None
                if model is not None and t == "source" and getattr(model, "gguf_types", None) is None:
                    raise ConfigError(f"{where} ({a.key}): types 'source' needs a model loaded from a GGUF file "
                                      f"(model: smollm2); model {self.model!r} has no source types: give one "
                                      f"type for every matrix, e.g. types: Q4_1 ({', '.join(SUPPORTED_TYPES)})")
            elif a.kind == "noise":
                if not (isinstance(s["sigma"], (int, float)) and s["sigma"] >= 0):
                    raise ConfigError(f"{where} ({a.key}): sigma must be a number >= 0, got {s['sigma']!r}; e.g. sigma: 0.01")
        dg = self.diagnostics
        for b in dg.bits:
            _check_bits(b, "diagnostics.bits")
        _check_group(dg.group_size, model, None, "diagnostics")
        if model is not None:
            import re

            names = [n for n, _ in model.named_parameters()]
            for i, o in enumerate(self.optimizers):
                if o.params is not None and not any(re.search(o.params, n) for n in names):
                    raise ConfigError(f"optimizers[{i}] ({o.key}): params {o.params!r} matches no parameter of "
                                      f"model {self.model!r}; names look like {names[min(3, len(names) - 1)]!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be a positive integer or null (torch's default), got {self.threads!r}")
        for k, v in (("eval_retain", self.eval_retain), ("eval_general", self.eval_general)):
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"{k} must be a positive integer or null (all), got {v!r}")
        return self


_ATTACK_EX = {"sigma": 0.01}
_EX = {"objectives": "npo, graddiff", "seeds": "0, 1, 2", "eval_splits": "forget, retain"}


def _check_bits(b, where):
    if not (isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 8):
        raise ConfigError(f"{where}: bits={b!r} is outside 2..8; RTN supports 2 to 8 bits, e.g. bits: 4")


def _check_group(g, model, modules, where):
    if g is None:
        return
    if not (isinstance(g, int) and not isinstance(g, bool) and g >= 1):
        raise ConfigError(f"{where}: group_size={g!r} must be a positive integer or null (per output channel)")
    if model is not None:
        from .attacks import check_group_size

        try:
            check_group_size(model, g, modules)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def load_config(path) -> StudyConfig:
    """Read and parse a study YAML (not yet validated against a model)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"study config {str(p)!r} not found; pass a YAML file such as configs/demo.yaml")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: a study config must be a YAML mapping, got {type(d).__name__}")
    return StudyConfig.from_dict(d)
