"""One registry pattern for every room (private): optimizers, objectives, benchmarks, models,
attacks and, to come, geometry quantities.

A :class:`Registry` is a pure table from a lower-case name to an object (a class or a
function) plus free-form metadata.  It imports nothing: implementations register themselves
(``@OBJECTIVES.register("npo")``) and the room's ``__init__`` imports the modules that hold
them, so the table never imports what it lists (lm-eval's pattern).  An entry may also be a
lazy ``"package.module:attr"`` string, imported on first :meth:`Registry.get` (for entries
behind an optional dependency).

    >>> COLORS = Registry("colour")
    >>> @COLORS.register("red", hex="#f00")
    ... class Red:
    ...     pass
    >>> COLORS.get("RED") is Red, COLORS.meta("red")
    (True, {'hex': '#f00'})
    >>> "red" in COLORS, COLORS.names()
    (True, ['red'])
    >>> COLORS.get("blue")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown colour 'blue'; choose one of: red
    >>> COLORS.register("red", object)
    Traceback (most recent call last):
    ...
    ValueError: colour 'red' is already registered (to ...Red); pass replace=True to rebind it or pick another name
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Generic, Iterator, List, Optional, Tuple, TypeVar

from ._validate import unknown

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object table with metadata; see the module docstring.

    Args:
        kind: what the entries are, used in messages ("optimizer", "benchmark", ...).
        hint: appended to the "unknown name" message (e.g. how to derive more names).
    """

    def __init__(self, kind: str, hint: Optional[str] = None):
        self.kind = kind
        self.hint = hint
        self._items: Dict[str, Any] = {}
        self._meta: Dict[str, dict] = {}

    @staticmethod
    def key(name: str) -> str:
        return str(name).strip().lower()

    def register(self, name: str, obj: Optional[T] = None, *, replace: bool = False, **meta):
        """Bind ``name`` to ``obj`` (or use as a decorator); ``meta`` is stored with it.

        Rebinding a name to a different object raises ``ValueError`` unless ``replace=True``
        (re-registering the same object, e.g. on a module reload, is allowed).
        """
        key = self.key(name)

        def deco(o):
            old = self._items.get(key)
            if old is not None and old is not o and not replace:
                raise ValueError(f"{self.kind} {key!r} is already registered (to {_label(old)}); pass "
                                 "replace=True to rebind it or pick another name")
            self._items[key] = o
            self._meta[key] = dict(meta)
            return o

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        key = self.key(name)
        self._items.pop(key, None)
        self._meta.pop(key, None)

    def get(self, name: str) -> T:
        """The object registered as ``name`` (lazy entries are imported now)."""
        key = self.key(name)
        if key not in self._items:
            unknown(self.kind, name, self._items, self.hint)
        obj = self._items[key]
        if isinstance(obj, str):  # lazy "module:attr"
            mod, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(mod), attr)
            self._items[key] = obj
        return obj

    def meta(self, name: str) -> dict:
        key = self.key(name)
        if key not in self._items:
            unknown(self.kind, name, self._items, self.hint)
        return dict(self._meta[key])

    def names(self) -> List[str]:
        return sorted(self._items)

    def items(self) -> List[Tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self.key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _label(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
