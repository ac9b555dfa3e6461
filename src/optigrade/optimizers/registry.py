"""Name → optimizer registry: ``make("zo-adam", params, lr=1e-5)``, ``available()``, ``register``.

Every optimizer of every grade is registered here; ``"<base>+gru"`` wraps any registered
optimizer whose class has ``accepts_rectified_grad`` in :class:`optimizers.GRU` (GRU's own
keyword arguments ``gamma``, ``cos_clip``, ``rectify`` are split off, the rest go to the base).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Type

from torch.optim import Optimizer

__all__ = ["OptimizerInfo", "register", "available", "make"]


class OptimizerInfo(NamedTuple):
    name: str
    grade: float
    family: str


class _Entry(NamedTuple):
    cls: Type[Optimizer]
    grade: float
    family: str
    presets: dict


_REGISTRY: Dict[str, _Entry] = {}
_GRU_KEYS = ("gamma", "cos_clip", "rectify")


def register(name: str, cls: Optional[Type[Optimizer]] = None, *, grade: Optional[float] = None,
             family: Optional[str] = None, **presets):
    """Register ``cls`` under ``name`` with default keyword arguments ``presets``.

    ``grade``/``family`` default to the class attributes.  Usable as a decorator:
    ``@register("my-opt")``.  Re-registering a name replaces it.
    """
    key = name.lower()
    if key.endswith("+gru"):
        raise ValueError(f"name must not end in '+gru', got {name!r}; '<base>+gru' names are "
                         "derived automatically, register the base only")

    def deco(c):
        g = getattr(c, "grade", None) if grade is None else grade
        f = getattr(c, "family", None) if family is None else family
        if g is None or f is None:
            raise ValueError(f"register({name!r}): the class has no grade/family attribute; pass "
                             "grade= and family=")
        _REGISTRY[key] = _Entry(c, float(g), str(f), dict(presets))
        return c

    return deco if cls is None else deco(cls)


def _gru_ok(entry: _Entry) -> bool:
    return bool(getattr(entry.cls, "accepts_rectified_grad", False))


def available(gru: bool = False) -> List[OptimizerInfo]:
    """Registered names as (name, grade, family), sorted by grade then name.

    ``gru=True`` also lists every accepted ``"<base>+gru"`` name.
    """
    out = [OptimizerInfo(n, e.grade, e.family) for n, e in _REGISTRY.items()]
    if gru:
        out += [OptimizerInfo(n + "+gru", e.grade, f"gru({e.family})")
                for n, e in _REGISTRY.items() if _gru_ok(e)]
    return sorted(out, key=lambda i: (i.grade, i.name))


def make(name: str, params, **hparams) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` (tensors or groups)."""
    key = str(name).lower().strip()
    if key.endswith("+gru"):
        base = key[: -len("+gru")]
        entry = _REGISTRY.get(base)
        if entry is None or not _gru_ok(entry):
            ok = sorted(n for n, e in _REGISTRY.items() if _gru_ok(e))
            raise ValueError(f"unknown GRU base {base!r} in {name!r}; GRU wraps one of {ok}")
        from .gru import GRU
        gru_kw = {k: hparams.pop(k) for k in _GRU_KEYS if k in hparams}
        return GRU(params, base=base, **gru_kw, **hparams)
    entry = _REGISTRY.get(key)
    if entry is None:
        names = [i.name for i in available()]
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(names)} "
                         "(and '<base>+gru' for first-order, compressed and second-order bases)")
    return entry.cls(params, **{**entry.presets, **hparams})


def _register_builtins() -> None:
    from .compressed import Lion, SignAdam, SignSGD, Signum
    from .first_order import FORS, SAM, SGD, Adam, AdamW
    from .forward_grad import ForwardGrad
    from .hybrid import HybridFOZO
    from .second_order import SOUL, AdaHessian, SophiaG, SophiaH
    from .zeroth_order import AdaZO, ZOAdam, ZOConservative, ZOSign, ZOSGD

    register("zo-sgd", ZOSGD)
    register("zo-sgd-momentum", ZOSGD, momentum=0.9)
    register("zo-adam", ZOAdam)
    register("adazo", AdaZO)
    register("zo-sign", ZOSign)
    register("zo-conservative", ZOConservative)
    register("forward-grad", ForwardGrad)
    register("signsgd", SignSGD)
    register("signum", Signum)
    register("signadam", SignAdam)
    register("lion", Lion)
    register("sgd", SGD)
    register("adam", Adam)
    register("adamw", AdamW)
    register("fo-rs", FORS)
    register("sam", SAM)
    register("sophia-h", SophiaH)
    register("sophia-g", SophiaG)
    register("soul", SOUL)
    register("adahessian", AdaHessian)
    register("hybrid", HybridFOZO)


_register_builtins()
