"""optigrade: why LLM unlearning survives or fails under attack.

One import name; the rooms are its subpackages, loaded on first use (nothing heavy happens at
``import optigrade``):

* :mod:`optigrade.optimizers`: every optimizer grade (zeroth-order, sign/compressed,
  first-order, second-order, the FO/ZO hybrid, GRU) as a ``torch.optim.Optimizer``;
* :mod:`optigrade.landscape`: geometry around one checkpoint (Hessian spectra, traces,
  sharpness, certified radii, loss slices);
* :mod:`optigrade.unlearning`: benchmarks, models, objectives and the unlearn loop;
* :mod:`optigrade.analysis`: attacks, the grade × objective × attack study, reports;
* :mod:`optigrade.figures`: figures from result tables.

    >>> import torch
    >>> import optigrade as og
    >>> og.optimizers.make("adam", [torch.nn.Parameter(torch.zeros(2))], lr=1e-3).grade
    1.0
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_ROOMS = ("optimizers", "landscape", "unlearning", "analysis", "figures", "cli", "demo")

__all__ = ["__version__", *_ROOMS]


def __getattr__(name: str):
    if name in _ROOMS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'optigrade' has no attribute {name!r}; the rooms are: {', '.join(_ROOMS)}")


def __dir__():
    return sorted(list(globals()) + list(_ROOMS))
