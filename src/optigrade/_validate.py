"""The one validator of optigrade (private): error types and the message style.

Every check raises ``ValueError`` (or its subclass :class:`ConfigError` at the user-input
boundary) naming the argument, the value received, the allowed range, what the argument means
and a value to try, e.g.::

    mu must be > 0, got -1.0; the smoothing radius of the ZO estimator, try 1e-3

Unknown names get the registered ones: :func:`unknown`.

    >>> positive("mu", 1e-3, "the smoothing radius", 1e-3)
    0.001
    >>> positive("mu", -1.0, "the smoothing radius of the ZO estimator", "1e-3")
    Traceback (most recent call last):
    ...
    ValueError: mu must be > 0, got -1.0; the smoothing radius of the ZO estimator, try 1e-3
    >>> unknown("optimizer", "adan", ["adam", "sgd"])
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown optimizer 'adan'; choose one of: adam, sgd
"""

from __future__ import annotations

import math
from typing import Iterable, NoReturn, Optional, Sequence


class ConfigError(ValueError):
    """Bad user input (a config, a flag, a name), reported before any work starts.  A
    ``ValueError``, so code that catches ValueError keeps working.

    >>> isinstance(ConfigError("lr must be > 0, got 0"), ValueError)
    True
    """


class ModelLoadError(ValueError):
    """A checkpoint path or model name that cannot be loaded.

    >>> from optigrade.unlearning.models import load
    >>> load("/no/such/checkpoint")
    Traceback (most recent call last):
    ...
    optigrade._validate.ModelLoadError: model '/no/such/checkpoint': no such path; ...
    """


def unknown(kind: str, value, allowed: Iterable[str], hint: Optional[str] = None) -> NoReturn:
    """Raise :class:`ConfigError` for a name that is not one of ``allowed``."""
    names = ", ".join(sorted(str(a) for a in allowed)) or "none registered"
    extra = f" ({hint})" if hint else ""
    raise ConfigError(f"unknown {kind} {value!r}; choose one of: {names}{extra}")


def _fail(name, value, rule, meaning, fix):
    raise ValueError(f"{name} must be {rule}, got {value!r}; {meaning}, try {fix}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def positive(name: str, value, meaning: str, fix) -> float:
    if not _is_number(value) or value <= 0:
        _fail(name, value, "> 0", meaning, fix)
    return float(value)


def lr(value, fix="1e-5") -> float:
    return positive("lr", value, "the learning rate (step size)", fix)


def non_negative(name: str, value, meaning: str, fix) -> float:
    if not _is_number(value) or value < 0:
        _fail(name, value, ">= 0", meaning, fix)
    return float(value)


def unit_open(name: str, value, meaning: str, fix) -> float:
    """0 <= value < 1 (EMA coefficients, Adam betas)."""
    if not _is_number(value) or not 0 <= value < 1:
        _fail(name, value, "in [0, 1)", meaning, fix)
    return float(value)


def betas(value, fix=(0.9, 0.999), names=("beta1", "beta2")) -> tuple:
    if not isinstance(value, Sequence) or len(value) != 2:
        _fail("betas", value, "a pair (beta1, beta2) each in [0, 1)", "the EMA coefficients", fix)
    b1 = unit_open(names[0], value[0], "the first-moment EMA coefficient (betas[0])", fix[0])
    b2 = unit_open(names[1], value[1], "the second-moment EMA coefficient (betas[1])", fix[1])
    return (b1, b2)


def int_at_least(name: str, value, low: int, meaning: str, fix) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(name, value, f"an integer >= {low}", meaning, fix)
    return int(value)


def choice(name: str, value, allowed: Iterable[str], meaning: str) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {allowed}, got {value!r}; {meaning}, try {allowed[0]!r}"
        )
    return value


def seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        _fail("seed", value, "an integer in [0, 2**63)", "the base seed of the direction RNG", 0)
    return int(value)
