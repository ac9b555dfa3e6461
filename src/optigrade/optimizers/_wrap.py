"""Private: the adapter for optimizers that wrap another optimizer (FO-RS, SAM, GRU, hybrid).

The wrapper owns its param groups (so an LR scheduler on the wrapper works: ``lr`` is copied
into the inner optimizer before each step) and nests the inner ``state_dict`` under
``"inner"`` (a dict of name -> inner state dict).
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch.optim import Optimizer

from .. import _validate as V


def param_list(params) -> list:
    """A list from ``params`` (tensors or group dicts) that can be handed to several optimizers."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [dict(g, params=list(g["params"])) for g in params]
    return params


def fresh(params: list) -> list:
    return [dict(g, params=list(g["params"])) for g in params] if params and isinstance(params[0], dict) else list(params)


def build(base, params, hparams: dict, who: str) -> Optimizer:
    """``base`` is a registered name or an Optimizer class."""
    if isinstance(base, str):
        from .registry import make
        return make(base, fresh(params), **hparams)
    if isinstance(base, type) and issubclass(base, Optimizer):
        return base(fresh(params), **hparams)
    raise ValueError(f"{who}: base must be a registered optimizer name or an Optimizer class, got "
                     f"{base!r}; try base='adam'")


def grad_params(opt: Optimizer) -> List[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"] if p.requires_grad]


class WrappedOptimizer(Optimizer):
    """Base for wrappers: ``self.inner`` maps names to inner optimizers."""

    def __init__(self, params: list, defaults: dict, inner: Dict[str, Optimizer]):
        super().__init__(fresh(params), defaults)
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


def check_lr(lr, fix="1e-5"):
    return V.lr(lr, fix)
