"""Name → optimizer table: ``make("zo-adam", params, lr=1e-5)``, ``available()``, ``info()``.

A pure table (:class:`optigrade._registry.Registry`) that imports no sibling module: every
implementation module decorates its own classes (``@register("zo-sgd")``, presets such as
``@register("zo-sgd-momentum", momentum=0.9)`` the same way) and ``optimizers/__init__``
imports those modules so that they register (lm-eval's pattern).  Wrappers derive names by a
*suffix rule*: ``gru.py`` registers ``"+gru"``, so ``"adam+gru"`` builds GRU around Adam; the
table only knows that a rule exists.

Capabilities are class attributes, declared by each class and read here (never sniffed from
signatures or names):

========================  =====================================================================
``grade``                 0 (loss values), 0.5 (compressed gradients), 1 (gradients), 2 (curvature)
``family``                a short label ("zeroth-order", "first-order", ...)
``requires_closure``      ``step()`` needs a closure (the loss is re-evaluated inside the step)
``needs_hvp``             the closure must provide ``loss_with_graph()`` for Hessian-vector products
``accepts_rectified_grad``  it steps on a gradient handed to it (so GRU can wrap it)
``zeroth_order``          its direction comes from a seeded random z and loss values / a scalar along z
``seeded``                it draws random numbers from a ``seed`` you can set
``seed_in``               where that seed goes: None = the ``seed=`` keyword, else that dict keyword
========================  =====================================================================

    >>> import torch
    >>> from optigrade import optimizers
    >>> optimizers.info("adam+gru")
    OptimizerInfo(name='adam+gru', grade=1.0, family='gru(first-order)')
    >>> optimizers.info("sophia-h").needs_hvp, optimizers.info("zo-sgd").seeded
    (True, True)
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, NamedTuple, Optional, Type

from torch.optim import Optimizer

from .._registry import Registry
from .._validate import ConfigError

__all__ = ["OptimizerInfo", "Capabilities", "register", "register_suffix", "available", "make",
           "info", "with_seed", "build"]

OPTIMIZERS: Registry = Registry("optimizer")


class Capabilities:
    """The declared capability attributes (table above) with their defaults.  Every optimizer
    class of the package inherits this and sets ``grade``, ``family`` and what differs."""

    requires_closure = False
    needs_hvp = False
    accepts_rectified_grad = False
    zeroth_order = False
    seeded = False
    seed_in: Optional[str] = None


# the value assumed for a (user) class that does not inherit Capabilities
CAPABILITIES = {k: v for k, v in vars(Capabilities).items() if not k.startswith("_")}


class _Suffix(NamedTuple):
    suffix: str       # "+gru"
    wrapper: type     # the wrapper class (GRU); grade and _FOLLOW_BASE capabilities are the base's
    build: Callable   # build(base_name, params, **hparams) -> Optimizer
    accepts: Callable[[type], bool]  # which base classes it can wrap
    bases: str        # the accepted bases in words, for the "unknown optimizer" message


_FOLLOW_BASE = ("needs_hvp", "seeded", "seed_in", "zeroth_order")


_SUFFIXES: Dict[str, _Suffix] = {}


class OptimizerInfo(NamedTuple):
    """``(name, grade, family)`` of a registered name; the class and its declared capabilities
    (:data:`CAPABILITIES`) are properties.  For ``"<base>+gru"`` the grade, ``needs_hvp`` and
    ``seeded`` follow the base, the rest is GRU's.

    >>> name, grade, family = info("signum")
    >>> (name, grade, family), info("signum").cls.__name__
    (('signum', 0.5, 'compressed-first-order'), 'Signum')
    """

    name: str
    grade: float
    family: str

    @property
    def cls(self) -> type:
        """The class ``make(name)`` builds (the wrapper for suffix names)."""
        rule, base = _split(self.name)
        return OPTIMIZERS.get(base) if rule is None else rule.wrapper

    def _capability(self, attr: str):
        rule, base = _split(self.name)
        cls = OPTIMIZERS.get(base)
        if rule is not None and attr not in _FOLLOW_BASE:
            cls = rule.wrapper
        return getattr(cls, attr, CAPABILITIES[attr])

    requires_closure = property(lambda self: bool(self._capability("requires_closure")))
    needs_hvp = property(lambda self: bool(self._capability("needs_hvp")))
    accepts_rectified_grad = property(lambda self: bool(self._capability("accepts_rectified_grad")))
    zeroth_order = property(lambda self: bool(self._capability("zeroth_order")))
    seeded = property(lambda self: bool(self._capability("seeded")))
    seed_in = property(lambda self: self._capability("seed_in"))


def register(name: str, cls: Optional[Type[Optimizer]] = None, *, grade: Optional[float] = None,
             family: Optional[str] = None, replace: bool = False, **presets):
    """Register ``cls`` under ``name`` with default keyword arguments ``presets``.

    ``grade``/``family`` default to the class attributes.  Usable as a decorator:
    ``@register("my-opt")``.  Binding a taken name to another class raises ``ValueError``
    unless ``replace=True``.

    >>> import torch
    >>> @register("doc-sgd", grade=1.0, family="doc", momentum=0.5)
    ... class DocSGD(torch.optim.SGD):
    ...     pass
    >>> make("doc-sgd", [torch.zeros(1, requires_grad=True)], lr=0.1).defaults["momentum"]
    0.5
    >>> OPTIMIZERS.unregister("doc-sgd")
    """
    key = Registry.key(name)
    for suffix in _SUFFIXES:
        if key.endswith(suffix):
            raise ValueError(f"name must not end in {suffix!r}, got {name!r}; '<base>{suffix}' "
                             "names are derived automatically, register the base only")

    def deco(c):
        g = getattr(c, "grade", None) if grade is None else grade
        f = getattr(c, "family", None) if family is None else family
        if g is None or f is None:
            raise ValueError(f"register({name!r}): the class has no grade/family attribute; pass "
                             "grade= and family=")
        OPTIMIZERS.register(key, c, replace=replace, grade=float(g), family=str(f),
                            presets=dict(presets))
        return c

    return deco if cls is None else deco(cls)


def register_suffix(suffix: str, wrapper: type, build: Callable, accepts: Callable[[type], bool],
                    bases: str = "accepted bases") -> None:
    """Derive ``"<base><suffix>"`` names: ``build(base, params, **hparams)`` makes the
    optimizer for any registered ``base`` whose class passes ``accepts`` (``bases`` says which
    in words, for error messages).  ``gru.py`` registers ``"+gru"`` this way."""
    key = Registry.key(suffix)
    _SUFFIXES[key] = _Suffix(key, wrapper, build, accepts, bases)


def _split(name: str):
    """(suffix rule or None, base key) for ``name``; raises for unknown names."""
    key = Registry.key(name)
    for suffix, rule in _SUFFIXES.items():
        if key.endswith(suffix):
            base = key[: -len(suffix)]
            if base not in OPTIMIZERS or not rule.accepts(OPTIMIZERS.get(base)):
                label = rule.wrapper.__name__
                raise ConfigError(f"unknown {label} base {base!r} in {name!r}; {label} wraps one "
                                  f"of {_accepted(rule)}")
            return rule, base
    if key not in OPTIMIZERS:
        names = [i.name for i in available()]
        hint = "".join(f" (and '<base>{r.suffix}' for {r.bases})" for r in _SUFFIXES.values())
        raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(names)}{hint}")
    return None, key


def _accepted(rule: _Suffix) -> List[str]:
    return sorted(n for n in OPTIMIZERS.names() if rule.accepts(OPTIMIZERS.get(n)))


def _info(key: str) -> OptimizerInfo:
    m = OPTIMIZERS.meta(key)
    return OptimizerInfo(key, m["grade"], m["family"])


def available(gru: bool = False) -> List[OptimizerInfo]:
    """Registered names as (name, grade, family), sorted by grade then name.

    ``gru=True`` also lists every name a suffix rule derives (``"<base>+gru"``).

    >>> [i.name for i in available() if i.grade == 2.0]
    ['adahessian', 'sophia-g', 'sophia-h', 'soul']
    >>> info("sgd") in available(), "sgd+gru" in {i.name for i in available(gru=True)}
    (True, True)
    """
    out = [_info(n) for n in OPTIMIZERS.names()]
    if gru:
        out += [info(n + rule.suffix) for rule in _SUFFIXES.values() for n in _accepted(rule)]
    return sorted(out, key=lambda i: (i.grade, i.name))


def info(name: str) -> OptimizerInfo:
    """The :class:`OptimizerInfo` of ``name`` (any name :func:`make` accepts).

    >>> info("ZO-SGD-Momentum")
    OptimizerInfo(name='zo-sgd-momentum', grade=0.0, family='zeroth-order')
    >>> info("soul+gru").grade, info("soul+gru").family
    (2.0, 'gru(second-order)')
    """
    rule, base = _split(name)
    i = _info(base)
    if rule is None:
        return i
    return OptimizerInfo(base + rule.suffix, i.grade, f"{rule.wrapper.family}({i.family})")


def make(name: str, params, **hparams) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` (tensors or groups).

    The registered presets are the defaults; ``hparams`` override them.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = make("zo-sgd-momentum", [w], lr=0.1)
    >>> type(opt).__name__, opt.defaults["momentum"], opt.grade
    ('ZOSGD', 0.9, 0.0)
    >>> make("adan", [w])
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown optimizer 'adan'; available: ...
    """
    rule, base = _split(name)
    if rule is not None:
        return rule.build(base, params, **hparams)
    presets = OPTIMIZERS.meta(base)["presets"]
    return OPTIMIZERS.get(base)(params, **{**presets, **hparams})


def build(base, params, who: str, **hparams) -> Optimizer:
    """An inner optimizer for a wrapper: ``base`` is a registered name (built by :func:`make`)
    or an ``Optimizer`` class (built with ``hparams`` only).  ``params`` is used as given.

    >>> import torch
    >>> type(build("adam", [torch.zeros(1, requires_grad=True)], "doc", lr=0.1)).__name__
    'Adam'
    """
    if isinstance(base, str):
        return make(base, params, **hparams)
    if isinstance(base, type) and issubclass(base, Optimizer):
        return base(params, **hparams)
    raise ValueError(f"{who}: base must be a registered optimizer name or an Optimizer class, got "
                     f"{base!r}; try base='adam'")


def with_seed(name: str, kwargs: Optional[dict], seed: int) -> dict:
    """A deep copy of ``kwargs`` with ``seed`` added where the optimizer ``name`` takes one
    (``info(name).seeded``; into ``kwargs[info(name).seed_in]`` when that is set, e.g. the
    hybrid's ``zo_hparams``).  A seed already present wins.

    >>> with_seed("zo-adam", {"lr": 1e-5}, 3), with_seed("adam", {}, 3)
    ({'lr': 1e-05, 'seed': 3}, {})
    >>> with_seed("hybrid", {"zo_hparams": {"q": 2}}, 3), with_seed("fo-rs", {"seed": 9}, 3)
    ({'zo_hparams': {'q': 2, 'seed': 3}}, {'seed': 9})
    """
    kw = copy.deepcopy(dict(kwargs or {}))
    i = info(name)
    if not i.seeded:
        return kw
    if i.seed_in is None:
        kw.setdefault("seed", seed)
    else:
        sub = dict(kw.get(i.seed_in) or {})
        sub.setdefault("seed", seed)
        kw[i.seed_in] = sub
    return kw

