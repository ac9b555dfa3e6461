"""Configs users can type: one pydantic model per config, shared by the CLI, the study YAML and
the library.

A run is a :class:`Setup` (model, benchmark, matched-forgetting protocol, device) plus the
optimizer, the objective and a seed; :class:`UnlearnConfig` is exactly that, flat, so that
``optigrade unlearn --lr 1e-3`` (one flag per field), ``UnlearnConfig(lr=1e-3)`` and a study
YAML (``analysis.StudyConfig`` extends :class:`Setup` and lists :class:`OptimizerSpec` /
:class:`ObjectiveSpec` entries that fill the remaining fields) all mean the same thing.

Bad input raises :class:`~optigrade.ConfigError` on construction, before any work, naming the
field, the value received, the allowed values and an example:

    >>> cfg = UnlearnConfig(objective="npo", objective_kwargs={"beta": 0.1}, lr=1e-3)
    >>> cfg.optimizer, cfg.steps, cfg.objective_kwargs
    ('adam', 200, {'beta': 0.1})
    >>> UnlearnConfig(lr=0)
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: lr must be > 0, got 0; the learning rate, e.g. 1e-3
    >>> UnlearnConfig(forget_fraction=1.5)
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: forget_fraction must be in (0, 1), got 1.5; the fraction of entities to forget, e.g. 0.1
    >>> UnlearnConfig(optimizer="adamz")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown optimizer 'adamz'; choose one of: ...
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Dict, List, Literal, Optional, Union, get_args, get_origin



from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from .._select import check_pattern
from .._validate import ConfigError

__all__ = ["Spec", "Setup", "UnlearnConfig", "OptimizerSpec", "ObjectiveSpec", "format_errors",
           "DEVICES", "DTYPES", "SPLITS", "OPTIONAL_SPLITS", "METRICS"]

DEVICES = ("cpu", "cuda", "mps", "auto")
DTYPES = ("float32", "bfloat16", "float16")
#: the evaluation splits every registered benchmark has, and the forget metrics a target can apply to
SPLITS = ("forget", "forget_para", "retain", "retain_para")
#: splits some benchmarks add (RealFacts ``n_heldout``: facts no objective trains on)
OPTIONAL_SPLITS = ("heldout", "heldout_para")
METRICS = ("forget_acc", "forget_para_acc")


# ----------------------------------------------------------------------------- error style
def _loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _interval(field) -> Optional[str]:
    """The allowed range of a constrained field as the house style writes it."""
    lo = hi = None
    lo_open = hi_open = False
    for m in getattr(field, "metadata", []):
        for attr, is_lo, is_open in (("gt", True, True), ("ge", True, False), ("lt", False, True),
                                     ("le", False, False)):
            v = getattr(m, attr, None)
            if v is not None:
                if is_lo:
                    lo, lo_open = v, is_open
                else:
                    hi, hi_open = v, is_open
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        if lo == 1 and not lo_open and field.annotation in (int, Optional[int]):
            return "a positive integer"
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return None


_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "dict": "a mapping", "list": "a list", "finite_number": "a finite number"}


def format_errors(err: ValidationError, model: type) -> str:
    """The house-style message of a pydantic ``ValidationError`` raised for ``model``:
    ``<field> must be <rule>, got <value>; <meaning>, e.g. <example>`` (the first problem, then
    how many more).

    >>> try:
    ...     UnlearnConfig.model_validate({"steps": 3, "batch_size": 0})
    ... except ValidationError as e:
    ...     print(format_errors(e, UnlearnConfig))
    batch_size must be a positive integer, got 0; forget / retain examples per step, e.g. 16
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        typ = e["type"]
        field, owner = None, model
        for part in loc:  # walk nested models to the field's own description and example
            if isinstance(part, str) and isinstance(owner, type) and issubclass(owner, BaseModel):
                field = owner.model_fields.get(part)
                ann = getattr(field, "annotation", None)
                owner = _inner_model(ann)
        where = _loc(loc)
        got = e.get("input")
        if typ == "extra_forbidden":
            parent = _owner_of(model, loc[:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            where_p = _loc(loc[:-1])
            lines.append(f"{where_p + ': ' if where_p else ''}unknown setting {loc[-1]!r}; allowed: {allowed}")
            continue
        if typ == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            lines.append(f"{where}: {msg}" if loc and isinstance(loc[-1], int) else msg)
            continue
        if typ == "missing":
            lines.append(f"{where} is required{_meaning(field)}")
            continue
        rule = None
        if field is not None and typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            rule = _interval(field)
        if rule is None:
            base = typ.split("_")[0] if typ.endswith(("_type", "_parsing", "_from_float")) else typ
            rule = _TYPES.get(base, e["msg"].lower().replace("input should be ", ""))
        lines.append(f"{where} must be {rule}, got {got!r}{_meaning(field)}")
    head = lines[0]
    return head if len(lines) == 1 else head + f" (and {len(lines) - 1} more: " + "; ".join(lines[1:]) + ")"


def _meaning(field) -> str:
    if field is None:
        return ""
    desc = field.description or ""
    ex = (field.json_schema_extra or {}).get("example") if isinstance(field.json_schema_extra, dict) else None
    if desc and ex is not None:
        return f"; {desc}, e.g. {ex}"
    if desc:
        return f"; {desc}"
    return f"; e.g. {ex}" if ex is not None else ""


def _number_kinds(ann) -> set:
    """The types of ``ann`` (``int``, ``Optional[float]``, ...) when it is a number field, else empty
    (``List[int]`` is a list, not a number)."""
    args = set(get_args(ann)) if get_origin(ann) in (Union, UnionType) else {ann}
    return args if args & {int, float} else set()


def _inner_model(ann):
    """The BaseModel inside ``ann`` (``X``, ``Optional[X]``, ``List[X]``), else None."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        m = _inner_model(a)
        if m is not None:
            return m
    return None


def _owner_of(model, loc):
    owner = model
    for part in loc:
        if isinstance(part, str):
            f = owner.model_fields.get(part) if owner is not None else None
            owner = _inner_model(getattr(f, "annotation", None))
    return owner


def F(default=..., meaning: str = "", example: Any = None, **kw):
    """A field with its meaning and an example (both appear in error messages and ``--help``)."""
    extra = {"example": example} if example is not None else None
    return Field(default, description=meaning or None, json_schema_extra=extra, **kw)


class Spec(BaseModel):
    """Base of every config: unknown keys refused, validated on construction and assignment,
    errors raised as :class:`~optigrade.ConfigError` in the house style.

    >>> class Toy(Spec):
    ...     lr: float = F(1e-3, "the learning rate", "1e-3", gt=0)
    >>> Toy(lr=0.1).to_dict(), Toy.from_dict({"lr": 0.5}).lr
    ({'lr': 0.1}, 0.5)
    >>> Toy(lr=0.1, colour="red")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown setting 'colour'; allowed: ['lr']
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


    @model_validator(mode="before")
    @classmethod
    def _numbers_stay_numbers(cls, data):
        """A bool or a string is refused where a number is expected (pydantic's lax mode would
        read ``steps: true`` as 1 and ``seed: "0"`` as 0)."""
        if not isinstance(data, dict):
            return data
        for name, v in data.items():
            f = cls.model_fields.get(name)
            if f is None or not isinstance(v, (bool, str)) or any(isinstance(m, BeforeValidator) for m in f.metadata):
                continue  # (a field with its own before-validator, e.g. steps, words its own message)
            kinds = _number_kinds(f.annotation)
            if not kinds or type(v) in kinds:
                continue
            what = "an integer" if float not in kinds else "a number"
            raise ValueError(f"{name} must be {what}, got {v!r}{_meaning(f)}")
        return data

    def __init__(self, **data):
        data = self._translate_legacy(data)
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(format_errors(e, type(self))) from None

    @classmethod
    def _translate_legacy(cls, data: dict) -> dict:
        return data

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise ConfigError(format_errors(e, type(self))) from None

    @classmethod
    def from_dict(cls, d) -> "Spec":
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} must be built from a mapping, got {d!r}")
        return cls(**d)

    def to_dict(self) -> dict:
        return self.model_dump(mode="python")

    def validate(self, *a, **k):  # noqa: D401  (construction already validated; kept for callers)
        """Everything is checked on construction; returns ``self`` (for chaining)."""
        return self


# ----------------------------------------------------------------------------- checks by name
def check_optimizer(name: str, lr: float = 1e-3, kwargs: Optional[dict] = None) -> None:
    """The optimizer is registered and accepts ``kwargs`` (its own ``__init__`` validates them:
    built once on a dummy tensor)."""
    import torch

    from .. import optimizers

    names = {i.name for i in optimizers.available(gru=True)}
    if name not in names:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(names))} "
                         "(choose from `optigrade optimizers`)")
    try:
        optimizers.make(name, [torch.nn.Parameter(torch.zeros(2))], lr=lr, **(kwargs or {}))
    except (ValueError, TypeError) as e:
        raise ValueError(f"optimizer {name!r}: {e}") from None


def check_objective(name: str, kwargs: Optional[dict] = None) -> None:
    from .objectives import OBJECTIVES, make_objective

    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from: {', '.join(sorted(OBJECTIVES))}")
    try:
        make_objective(name, **(kwargs or {}))
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith("objective ") else f"objective {name!r}: {msg}") from None


def _positive_steps(v):
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        raise ValueError(f"steps must be a positive integer, got {v!r}; e.g. steps: 200")
    return v


def _regex(v):
    return check_pattern(v, "params")


#: a step cap (checked with the house message) and a parameter-name regex
Steps = Annotated[int, BeforeValidator(_positive_steps)]
ParamsRegex = Annotated[Optional[str], AfterValidator(_regex)]


# ----------------------------------------------------------------------------- the configs
class Setup(Spec):
    """What every run of a study shares: the model, the benchmark, the matched-forgetting
    protocol (target metric, evaluation interval, retain guard, utility floors) and where it runs.

    A run is at *matched forgetting* when it stopped on the target and its utility stayed above
    the floors, relative to the base model (:func:`optigrade.unlearning.loop.match_status`):
    ``retain_acc >= utility_floor_retain × base`` and ``general_ppl <= utility_max_ppl_ratio ×
    base``.  The floors judge the final metrics; they never stop or change a run (the
    ``retain_floor`` guard does stop it).

    >>> s = Setup(benchmark_kwargs={"n_entities": 40}, target=0.2, device="cpu")
    >>> s.model, s.benchmark, s.forget_fraction, s.dtype
    ('tiny', 'synthetic', 0.1, None)
    >>> Setup(target=1.5)
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: target=1.5 is unreachable: forget_acc lies in [0, 1]; choose e.g. target: 0.1
    """

    model: str = F("tiny", "the starting model: 'tiny' (pretrained, cached), a named model or a checkpoint dir",
                   "tiny")
    benchmark: str = F("synthetic", "the benchmark (forget / retain data and its evaluation)", "synthetic")
    benchmark_kwargs: Dict[str, Any] = F({}, "extra benchmark arguments", "{n_forget: 8, n_retain: 16}")
    forget_fraction: float = F(0.1, "the fraction of entities to forget", 0.1, gt=0, lt=1)
    target: Optional[float] = F(0.1, "stop when the forget metric <= target (matched forgetting); null: "
                                "run every step", 0.1)
    metric: str = F("forget_acc", "the forget metric the target applies to", "forget_acc")
    eval_every: int = F(5, "evaluate (and check the target) every N steps", 5, ge=1)
    batch_size: int = F(16, "forget / retain examples per step", 16, ge=1)
    retain_floor: Optional[float] = F(None, "stop a run whose retain accuracy falls below this "
                                      "(stop_reason 'retain-guard'; not matched forgetting)", 0.75, ge=0, le=1)
    utility_floor_retain: Optional[float] = F(
        0.5, "matched forgetting also needs retain_acc >= this fraction of the base model's (0.5: a run "
        "keeping under half the base retain accuracy is not matched); null: no retain floor", 0.5, ge=0, le=1,
        allow_inf_nan=False)
    utility_max_ppl_ratio: Optional[float] = F(
        2.0, "matched forgetting also needs general-text perplexity <= this multiple of the base model's "
        "(2.0: base 4.8 allows up to 9.6); null: no perplexity floor", 2.0, ge=1, allow_inf_nan=False)
    device: str = F("cpu", f"where the model runs: {', '.join(DEVICES)}", "cpu")
    dtype: Optional[Literal[DTYPES]] = F(None, f"the model's dtype: {', '.join(DTYPES)}; null keeps the checkpoint's",
                             "float32")

    @classmethod
    def _translate_legacy(cls, data: dict) -> dict:
        data = dict(data)
        bench = data.get("benchmark")
        if isinstance(bench, dict):  # a `benchmark:` section: {name: tofu, data_dir: DIR, split: forget10}
            section = dict(bench)
            if "name" not in section:
                raise ConfigError(f"benchmark: a benchmark section needs a name, got {bench!r}; e.g. benchmark: "
                                  "{name: tofu, data_dir: data/TOFU, split: forget10}")
            data["benchmark"] = section.pop("name")
            given = data.get("benchmark_kwargs") or {}
            if not isinstance(given, dict):
                raise ConfigError(f"benchmark_kwargs must be a mapping, got {given!r}")
            both = sorted(set(section) & set(given))
            if both:
                raise ConfigError(f"benchmark arguments {both} are given both in the benchmark section and in "
                                  "benchmark_kwargs; give each once")
            data["benchmark_kwargs"] = {**section, **given}
        if "n_entities" in data:
            warnings.warn("`n_entities` is now a benchmark argument: write benchmark_kwargs: {n_entities: N} "
                          "(the old key is accepted for one release)", DeprecationWarning, stacklevel=4)
            n = data.pop("n_entities")
            bk = data.get("benchmark_kwargs")
            if isinstance(bk, dict):
                data["benchmark_kwargs"] = {"n_entities": n, **bk}
            elif bk is None:
                data["benchmark_kwargs"] = {"n_entities": n}
        return data

    @field_validator("forget_fraction", "retain_floor", "benchmark_kwargs", mode="before")
    @classmethod
    def _house_messages(cls, v, info):
        name = info.field_name
        if name == "benchmark_kwargs" and not isinstance(v, dict):
            raise ValueError(f"benchmark_kwargs must be a mapping, got {v!r}; e.g. {{n_forget: 8, n_retain: 16}}")
        if name == "forget_fraction" and _num(v) and not 0 < v < 1:
            raise ValueError(f"forget_fraction must be in (0, 1), got {v!r}; the fraction of entities to "
                             "forget, e.g. 0.1")
        if name == "retain_floor" and _num(v) and not 0 <= v <= 1:
            raise ValueError(f"retain_floor must be in [0, 1], got {v!r}; e.g. 0.75 stops a run whose retain "
                             "accuracy falls below 75%")
        return v

    @field_validator("metric", "device")
    @classmethod
    def _choices(cls, v, info):
        if info.field_name == "metric" and v not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {v!r}; the forget accuracy the target "
                             "applies to (lower = more forgotten), e.g. metric: forget_acc")
        if info.field_name == "device" and v not in DEVICES and not re.fullmatch(r"cuda:\d+", str(v)):
            raise ValueError(f"device must be one of {list(DEVICES)} (or cuda:N), got {v!r}; e.g. --device cpu")
        return v


    @model_validator(mode="after")
    def _setup_checks(self):
        if self.target is not None and self.metric.endswith("_acc") and not 0.0 <= self.target <= 1.0:
            raise ValueError(f"target={self.target!r} is unreachable: {self.metric} lies in [0, 1]; "
                             "choose e.g. target: 0.1")
        _check_benchmark(self.benchmark, self.benchmark_kwargs)
        _check_model(self.model)
        return self

    def setup(self) -> "Setup":
        """Just the shared part (e.g. to build the benchmark and the base model once)."""
        return Setup(**{k: getattr(self, k) for k in Setup.model_fields})


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_benchmark(name: str, kw: dict) -> None:
    from .benchmarks import BENCHMARKS, benchmark_kwargs

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(sorted(BENCHMARKS))}")
    allowed = sorted(benchmark_kwargs(name))
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"benchmark_kwargs: {bad} not accepted by benchmark {name!r}; allowed: {allowed}")
    BENCHMARKS.get(name).check_kwargs(dict(kw))  # e.g. a local data directory's layout, before any model is loaded


def _check_model(name: str) -> None:
    from .models import MODELS

    if name in MODELS:
        return
    p = Path(name).expanduser()
    if not p.exists():
        raise ValueError(f"model {name!r}: no such path; give 'tiny', a named model "
                         f"({', '.join(n for n in MODELS.names() if n != 'tiny') or 'none installed'}) "
                         "or a checkpoint directory")
    if not (p / "config.json").exists():
        raise ValueError(f"model path {name!r} is not a model checkpoint (no config.json inside)")


class UnlearnConfig(Setup):
    """Everything that defines one unlearning run (saved in its manifest): the :class:`Setup`
    plus the optimizer, the objective and the seed.  Maps 1:1 onto ``optigrade unlearn`` flags.

    >>> cfg = UnlearnConfig(optimizer="zo-sgd", lr=1e-3, optimizer_kwargs={"q": 4}, objective="npo")
    >>> cfg.steps, cfg.setup().model, UnlearnConfig(**cfg.to_dict()) == cfg
    (200, 'tiny', True)
    >>> UnlearnConfig(optimizer="zo-sgd", optimizer_kwargs={"q": 0})
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: optimizer 'zo-sgd': q must be ...
    """

    objective: str = F("graddiff", "the unlearning objective: ga, graddiff, npo, simnpo, wga, rmu", "npo")
    objective_kwargs: Dict[str, Any] = F({}, "objective hyperparameters", "{beta: 0.1}")
    optimizer: str = F("adam", "a registered optimizer (see `optigrade optimizers`)", "adam")
    lr: float = F(1e-3, "the learning rate", "1e-3", gt=0, allow_inf_nan=False)
    steps: Steps = F(200, "the step budget (a cap when target is set)", 200)
    params: ParamsRegex = F(None, "regex over parameter names: the weights to update (null: the objective's "
                            "default: all, RMU mlp.down_proj of layers ℓ−2..ℓ)",
                              "'mlp\\.down_proj'")
    optimizer_kwargs: Dict[str, Any] = F({}, "optimizer hyperparameters", "{mu: 1.0e-3}")
    seed: int = F(0, "the run's seed (data order, ZO directions)", 0, ge=0)
    prefix_cache: bool = F(False, "run the step's loss evaluations from a cached frozen prefix when every moved "
                           "weight sits in decoder layers >= 1 of a Llama model (same numbers, less time; a "
                           "warning and the full model otherwise)", "true")

    @field_validator("seed")
    @classmethod
    def _seed_fits(cls, v):
        if v >= 2**63:  # torch's generators take a signed 64-bit seed
            raise ValueError(f"seed must be < 2**63, got {v}; the run's seed (data order, ZO directions), e.g. 0")
        return v

    @model_validator(mode="before")
    @classmethod
    def _objective_default_params(cls, data):
        """``params`` left null takes the objective's ``default_params()`` (RMU: ``mlp.down_proj`` of
        layers ℓ−2..ℓ, as the reference trains); a pattern the user gives always wins."""
        if isinstance(data, dict) and data.get("params") is None:
            pattern = _objective_default_params(data.get("objective", cls.model_fields["objective"].default),
                                                data.get("objective_kwargs"))
            if pattern is not None:
                data = {**data, "params": pattern}
        return data

    @model_validator(mode="after")
    def _run_checks(self):
        if self.target is not None and self.steps < self.eval_every:
            raise ValueError(f"steps={self.steps} < eval_every={self.eval_every}: the target {self.target} is "
                             f"checked only at the last step; raise steps to >= {self.eval_every} or lower "
                             "eval_every (as a study requires)")
        check_objective(self.objective, self.objective_kwargs)
        _check_objective_layers(self.objective, self.objective_kwargs, self.model)
        check_optimizer(self.optimizer, self.lr, self.optimizer_kwargs)
        return self


def _objective_default_params(name, kwargs) -> Optional[str]:
    """The objective's default parameter pattern (None for a bad name or arguments: those are
    refused, with their own message, by :func:`check_objective`)."""
    from .objectives import make_objective

    try:
        return make_objective(name, **(kwargs if isinstance(kwargs, dict) else {})).default_params()
    except (ValueError, TypeError, KeyError):
        return None


def _num_layers(model: str) -> Optional[int]:
    """The decoder-layer count of ``model`` when it is known without loading it: the tiny model's
    config, a checkpoint's config.json; else None (the loop checks the loaded model)."""
    import json

    if model == "tiny":
        from .models.tiny import TinyConfig

        return TinyConfig().num_hidden_layers
    cfg = Path(model).expanduser() / "config.json"
    try:
        n = json.loads(cfg.read_text()).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _check_objective_layers(name: str, kwargs: dict, model: str) -> None:
    """An objective reading one decoder layer (RMU) names a layer the model has, checked before any
    model loads when the layer count is known."""
    from .objectives import make_objective

    obj = make_objective(name, **kwargs)
    check = getattr(obj, "check_num_layers", None)
    n = _num_layers(model) if check is not None else None
    if n is not None:
        check(n)


#: UnlearnConfig field -> OptimizerSpec field, where the names differ
_OPT_FIELDS = {"optimizer": "name", "lr": "lr", "steps": "steps", "params": "params",
               "optimizer_kwargs": "optimizer_kwargs", "prefix_cache": "prefix_cache"}
#: per-optimizer overrides of a Setup field (None: the study's value)
_OVERRIDES = ("eval_every", "retain_floor", "batch_size")


class OptimizerSpec(Spec):
    """One optimizer entry of a study: a registered ``name``, its ``lr``, step cap ``steps``,
    extra ``optimizer_kwargs``; ``label`` names it in tables (default: name); ``params`` (a
    regex) restricts the weights it moves; ``eval_every`` / ``retain_floor`` / ``batch_size``
    override the study's value for this optimizer.

    >>> o = OptimizerSpec(name="zo-sgd", label="zo (mlp)", lr=1e-3, params="mlp", eval_every=10)
    >>> o.key, o.steps, o.run_fields(Setup())["eval_every"], o.run_fields(Setup())["batch_size"]
    ('zo (mlp)', 200, 10, 16)
    """

    name: str = F(..., "a registered optimizer", "adam")
    lr: float = F(..., "the learning rate", "1.0e-3", gt=0, allow_inf_nan=False)
    steps: Steps = F(UnlearnConfig.model_fields["steps"].default, "the step cap", 200)
    label: Optional[str] = F(None, "the name in tables (default: name)", "adam (down_proj)")
    params: ParamsRegex = F(None, "regex over parameter names: the weights this optimizer moves (null: all)",
                            "'mlp\\.down_proj'")
    optimizer_kwargs: Dict[str, Any] = F({}, "optimizer hyperparameters", "{mu: 1.0e-3}")
    eval_every: Optional[int] = F(None, "this optimizer's evaluation interval (null: the study's)", 5, ge=1)
    retain_floor: Optional[float] = F(None, "this optimizer's retain guard (null: the study's)", 0.75, ge=0, le=1)
    batch_size: Optional[int] = F(None, "this optimizer's batch size (null: the study's)", 16, ge=1)
    prefix_cache: bool = F(False, "run this optimizer's loss evaluations from a cached frozen prefix (its params "
                           "must sit in decoder layers >= 1 of a Llama model; same numbers, less time)", "true")

    @classmethod
    def from_dict(cls, d, i: int = 0) -> "OptimizerSpec":
        if not isinstance(d, dict) or "name" not in d or "lr" not in d:
            raise ConfigError(f"optimizers[{i}] needs at least name and lr, e.g. {{name: adam, lr: 1.0e-3}}; got {d!r}")
        return cls(**d)

    @property
    def key(self) -> str:
        return self.label or self.name

    def run_fields(self, setup: Setup) -> dict:
        """The UnlearnConfig fields this entry sets (overrides applied over ``setup``)."""
        out = {uf: getattr(self, of) for uf, of in _OPT_FIELDS.items()}
        for k in _OVERRIDES:
            v = getattr(self, k)
            out[k] = getattr(setup, k) if v is None else v
        return out


class ObjectiveSpec(Spec):
    """One objective of a study: ``npo`` or ``{name: npo, beta: 0.1}`` in YAML (hyperparameters
    flattened next to the name, or under ``kwargs``).

    >>> o = ObjectiveSpec.coerce({"name": "npo", "beta": 0.1})
    >>> o.key, o.run_fields(), ObjectiveSpec.coerce("graddiff").to_yaml()
    ('npo(beta=0.1)', {'objective': 'npo', 'objective_kwargs': {'beta': 0.1}}, 'graddiff')
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = F(..., "a registered objective", "npo")
    kwargs: Dict[str, Any] = F({}, "the objective's hyperparameters", "{beta: 0.1}")

    @classmethod
    def coerce(cls, v, i: int = 0) -> "ObjectiveSpec":
        if isinstance(v, ObjectiveSpec):
            return v
        if isinstance(v, str):
            return cls(name=v)
        if isinstance(v, dict):
            v = dict(v)
            if "name" not in v:
                raise ConfigError(f"objectives[{i}] needs a name, e.g. {{name: npo, beta: 0.1}}; got {v!r}")
            name = v.pop("name")
            kwargs = {**(v.pop("kwargs", None) or {}), **v}
            return cls(name=name, kwargs=kwargs)
        raise ConfigError(f"objectives[{i}] must be a name or a mapping like {{name: npo, beta: 0.1}}, got {v!r}")

    @model_validator(mode="after")
    def _check(self):
        check_objective(self.name, self.kwargs)
        return self

    @property
    def key(self) -> str:
        """The objective's name in tables: ``npo`` or ``npo(beta=0.1)``."""
        if not self.kwargs:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items())) + ")"

    def run_fields(self) -> dict:
        return {"objective": self.name, "objective_kwargs": dict(self.kwargs)}

    def to_yaml(self):
        return self.name if not self.kwargs else {"name": self.name, **self.kwargs}
