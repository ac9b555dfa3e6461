"""Private: the adapter for optimizers that wrap other optimizers (FO-RS, SAM, GRU, hybrid).

A wrapper receives its inner optimizers *already built* (a wrapper's constructor turns a name
into an optimizer through the registry's public :func:`~optigrade.optimizers.registry.build`
before it gets here), so this module imports nothing from the registry.  The wrapper owns its
param groups (an LR scheduler on the wrapper works: ``lr`` is copied into the inner optimizer
before each step) and nests the inner ``state_dict`` under ``"inner"`` (a dict of name -> inner
state dict).
"""

from __future__ import annotations

from typing import Dict

from torch.optim import Optimizer

__all__ = ["WrappedOptimizer", "param_list"]


def param_list(params) -> list:
    """A fresh list from ``params`` (tensors or group dicts, each group copied) that can be
    handed to one more optimizer without sharing group dicts."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [dict(g, params=list(g["params"])) for g in params]
    return params


class WrappedOptimizer(Optimizer):
    """Base for wrappers: ``inner`` maps names to built inner optimizers."""

    def __init__(self, params: list, defaults: dict, inner: Dict[str, Optimizer]):
        super().__init__(param_list(params), defaults)
        self.inner = inner

    def _sync(self, name: str, key: str = "lr", src: str = "lr") -> None:
        for own, g in zip(self.param_groups, self.inner[name].param_groups):
            g[key] = own[src]

    def state_dict(self):
        sd = super().state_dict()
        sd["inner"] = {k: o.state_dict() for k, o in self.inner.items()}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        inner = state_dict.pop("inner", None)
        if inner is None:
            raise ValueError(f"{type(self).__name__}.load_state_dict: no 'inner' entry; this state "
                             "dict was not saved by this wrapper")
        for k, o in self.inner.items():
            o.load_state_dict(inner[k])
        super().load_state_dict(state_dict)
