"""The attack table (private): :data:`ATTACKS`, the settings model every kind derives from, and
the three calls a study makes: :func:`attack_spec` (one YAML mapping → a validated spec),
:func:`resolved` (every setting, defaults filled) and :func:`apply_attack`.

Each attack module registers its function next to its spec with :func:`register`; this module
imports none of them (the registry is a table, not an importer).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, ValidationError, field_validator

from optigrade._registry import Registry
from optigrade._validate import ConfigError

ATTACKS: Registry = Registry("attack kind")
_KINDS: List[str] = []  # registration order: the order messages list the kinds in

#: an int or a float, kept as given (a YAML ``lr: 1`` stays 1, so settings round-trip exactly)
Number = Union[StrictInt, StrictFloat]


class AttackSpec(BaseModel):
    """Settings of one attack: ``kind``, a ``label`` naming it in tables (default: the kind)
    and the attack function's keyword arguments as typed fields (flattened in YAML).

    Subclasses (one per kind: :class:`QuantizeSpec`, :class:`RelearnSpec`,
    :class:`NoiseSpec`, :class:`GGUFSpec`) declare the fields; values are kept exactly as
    given (strict types, no coercion), so :meth:`resolved` and the run hashes derived from it
    do not depend on how a spec was built.

    >>> from optigrade.analysis.attacks import QuantizeSpec
    >>> s = QuantizeSpec(label="rtn8", bits=8)
    >>> s.key, s.settings, s.to_dict()
    ('rtn8', {'bits': 8}, {'kind': 'quantize', 'label': 'rtn8', 'bits': 8})
    >>> s.resolved() == attack_spec(s.to_dict()).resolved()
    True
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: str
    label: Optional[str] = None

    #: example values for "missing required setting" messages
    examples: ClassVar[Dict[str, Any]] = {}
    #: field -> check(value) returning the value unchanged or raising ValueError with the message;
    #: run on the value as given, before pydantic's type check
    checks: ClassVar[Dict[str, Callable[[Any], Any]]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def run_checks(cls, v, info):
        check = cls.checks.get(info.field_name)
        return v if check is None else check(v)

    @property
    def key(self) -> str:
        """The name in tables: ``label`` or, when unset, ``kind``."""
        return self.label or self.kind

    @property
    def settings(self) -> Dict[str, Any]:
        """The settings given explicitly (what the YAML mapping held), without kind / label."""
        return self.model_dump(exclude_unset=True, exclude={"kind", "label"})

    def resolved(self) -> Dict[str, Any]:
        """Every setting of the attack function, defaults filled in (see :func:`resolved`)."""
        return self.model_dump(exclude={"kind", "label"})

    def to_dict(self) -> Dict[str, Any]:
        """The YAML mapping: ``{kind, label, **settings given}``."""
        return {"kind": self.kind, "label": self.label, **self.settings}

    def check_model(self, model, where: str = "attacks[0]", model_name: Optional[str] = None) -> "AttackSpec":
        """Checks that need the model (group sizes vs row lengths, GGUF source types); raises
        :class:`~optigrade._validate.ConfigError` naming ``where``, the label and the fix
        (``model_name``: how the config calls the model).  Returns ``self``."""
        try:
            self._check_model(model, model_name if model_name is not None else type(model).__name__)
        except ValueError as e:
            raise ConfigError(f"{where} ({self.key}): {e}") from None
        return self

    def _check_model(self, model, model_name: str) -> None:
        """Raise ValueError when ``model`` cannot take this attack (subclasses; none here)."""


def register(kind: str, fn: Callable, spec: type, *, benchmark: bool = False, seed: bool = False) -> Callable:
    """Register attack ``kind``: ``fn(model, [benchmark,] **settings, [seed=])`` with its settings
    model ``spec``; ``benchmark`` / ``seed``: whether :func:`apply_attack` passes the study's
    benchmark (second positional argument) and run seed (keyword ``seed``)."""
    ATTACKS.register(kind, fn, spec=spec, benchmark=benchmark, seed=seed)
    if kind not in _KINDS:
        _KINDS.append(kind)
    return fn


def kinds() -> tuple:
    """Registered attack kinds in registration order."""
    return tuple(_KINDS)


def setting_names(spec: type) -> List[str]:
    """The settings fields of a spec class (in the attack function's argument order)."""
    return [n for n in spec.model_fields if n not in ("kind", "label")]


def _yaml(v) -> str:
    return {True: "true", False: "false", None: "null"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)


def _message(e: ValidationError, spec: type) -> str:
    """Today's message for the first error: a check's own ValueError text, or field, value
    received, what pydantic expected and an example."""
    err = e.errors()[0]
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    field = err["loc"][0] if err["loc"] else "?"
    f = spec.model_fields.get(field)
    example = "" if f is None or f.default is None else f"; e.g. {field}: {_yaml(f.default)}"
    return f"{field}={err.get('input')!r} is not valid ({err['msg'][0].lower()}{err['msg'][1:]}){example}"


def attack_spec(d, where: str = "attacks[0]") -> AttackSpec:
    """Validate one YAML attack mapping (``kind``, ``label``, the settings flattened or under
    ``settings:``) into its kind's spec.

    Raises:
        ConfigError: not a mapping, unknown kind, unknown or missing settings, or a bad value;
            the message names ``where``, the label, the value and the fix.

    >>> s = attack_spec({"kind": "quantize", "label": "rtn4", "bits": 4})
    >>> type(s).__name__, s.key, s.settings, s.resolved()["group_size"]
    ('QuantizeSpec', 'rtn4', {'bits': 4}, None)
    >>> attack_spec({"kind": "quantize", "bits": 16})
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: attacks[0] (quantize): bits=16 is outside 2..8; RTN supports 2 to 8 bits, e.g. bits: 4
    >>> attack_spec({"kind": "prune"}, where="attacks[2]")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: attacks[2]: unknown attack kind 'prune'; choose from: quantize, relearn, noise, gguf
    """
    if isinstance(d, AttackSpec):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping like {{kind: quantize, bits: 4}}, got {d!r}")
    d = dict(d)
    kind = d.pop("kind", None)
    label = d.pop("label", None)
    nested = d.pop("settings", {}) or {}
    if not isinstance(nested, dict):
        raise ConfigError(f"{where}: settings must be a mapping, got {nested!r}; or write the settings flat, "
                          "e.g. {kind: quantize, bits: 4}")
    settings = {**nested, **d}
    if kind not in ATTACKS:
        raise ConfigError(f"{where}: unknown attack kind {kind!r}; choose from: {', '.join(kinds())}")
    kind = ATTACKS.key(kind)
    spec = ATTACKS.meta(kind)["spec"]
    allowed = setting_names(spec)
    bad = sorted(set(settings) - set(allowed))
    if bad:
        raise ConfigError(f"{where} ({kind}): unknown setting(s) {bad}; allowed: {sorted(allowed)}")
    missing = sorted(n for n in allowed if spec.model_fields[n].is_required() and n not in settings)
    if missing:
        key = label or kind
        raise ConfigError(f"{where} ({key}): missing required setting(s) {missing}; "
                          f"e.g. {{kind: {kind}, {missing[0]}: {spec.examples.get(missing[0], '...')}}}")
    fields = {"kind": kind, **({} if label is None else {"label": label}), **settings}
    try:
        return spec.model_validate(fields)
    except ValidationError as e:
        raise ConfigError(f"{where} ({label or kind}): {_message(e, spec)}") from None


def resolved(spec: AttackSpec) -> Dict[str, Any]:
    """Every setting of ``spec``'s attack function, defaults filled in, in argument order (the
    source of the study's ``attack_*`` columns and run hashes).

    >>> resolved(attack_spec({"kind": "noise", "sigma": 0.01}))
    {'sigma': 0.01, 'relative': False, 'modules': None, 'include_embeddings': False, 'include_norms': False}
    """
    return spec.resolved()


def apply_attack(spec: AttackSpec, model, benchmark=None, seed: int = 0):
    """Run the attack ``spec`` on ``model`` (never modified) and return the attacked copy.

    ``benchmark`` and ``seed`` are passed to the kinds registered with them (relearning takes
    both, noise takes the seed).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> out = apply_attack(attack_spec({"kind": "noise", "sigma": 0.0}), net, seed=1)
    >>> out is not net and torch.equal(out[0].weight, net[0].weight)
    True
    """
    spec = attack_spec(spec)
    meta = ATTACKS.meta(spec.kind)
    fn = ATTACKS.get(spec.kind)
    args = (model, benchmark) if meta["benchmark"] else (model,)
    kw = spec.resolved()
    if meta["seed"]:
        kw["seed"] = seed
    return fn(*args, **kw)

