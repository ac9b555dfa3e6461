"""Progress bars for long landscape measurements, and silencing transformers' own bars.

A :class:`~optigrade.landscape.probe.Probe` counts its passes in a dict of counters
(``loss``, ``grad``, ``hvp``; see ``Probe.cost``).  :func:`pass_bar` swaps that dict for a
:class:`TickingCounts` that forwards every *net* new pass to a tqdm bar:

    ticks = Σ_keys max(0, Δcount) − (passes taken back),

so a finite-difference HVP, counted as +1 HVP and then 2 gradients taken back and re-added,
ticks once, as ``Probe.cost`` reports it.  ETA = (total − n) / rate, shown when ``total``
is known.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

__all__ = ["TickingCounts", "pass_bar", "quiet_transformers"]


class TickingCounts(dict):
    """A counters dict that calls every listener with the number of new passes.

    A decrease (a pass re-labelled, e.g. two gradients folded into one HVP) is a debt paid
    by the next increases before any tick.

    >>> seen = []
    >>> c = TickingCounts({"loss": 0, "grad": 0, "hvp": 0}, [seen.append])
    >>> c["hvp"] += 1; c["grad"] -= 2; c["grad"] += 1; c["grad"] += 1; c["loss"] += 3
    >>> seen, dict(c)
    ([1, 3], {'loss': 3, 'grad': 0, 'hvp': 1})
    """

    def __init__(self, counts: dict, listeners: list[Callable[[int], object]]):
        super().__init__(counts)
        self.listeners = listeners
        self._debt = 0

    def __setitem__(self, key, value):
        delta = value - self.get(key, 0)
        super().__setitem__(key, value)
        if delta < 0:
            self._debt -= delta
            return
        paid = min(self._debt, delta)
        self._debt -= paid
        if delta > paid:
            for tick in list(self.listeners):
                tick(delta - paid)

    def reset(self) -> None:
        """All counters to zero without ticking (``Probe.reset_counters`` inside a bar)."""
        dict.update(self, {k: 0 for k in self})
        self._debt = 0


@contextlib.contextmanager
def pass_bar(probe, total: int | None, desc: str, enabled: bool = True) -> Iterator:
    """A tqdm bar on stderr ticking once per loss / gradient / HVP pass ``probe`` makes in
    the block (nested bars each tick); yields the bar (``bar.n`` = passes so far).  With
    ``enabled=False`` nothing is written and the counters are left as they are.

    Raises:
        ValueError: ``total`` not None or an integer >= 0 (before the bar opens).
    """
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"total must be None (unknown) or an integer >= 0 (the passes expected), "
                         f"got {total!r}")
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="pass", file=sys.stderr, disable=not enabled,
               dynamic_ncols=True)
    if not enabled:
        with bar:
            yield bar
        return
    counts = probe._spent
    installed = not isinstance(counts, TickingCounts)
    if installed:
        counts = TickingCounts(counts, [])
        probe._spent = counts
    counts.listeners.append(bar.update)
    try:
        with bar:
            yield bar
    finally:
        counts.listeners.remove(bar.update)
        if installed:
            probe._spent = dict(counts)


from .._quiet import quiet_transformers  # noqa: E402,F401 - the floor holds it (unlearning uses it too)
