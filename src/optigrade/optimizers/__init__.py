"""optigrade.optimizers: unlearning optimizers by grade.

grade 0 (zeroth-order, loss values only): ZOSGD, ZOAdam, AdaZO, ZOSign, ZOConservative,
    ForwardGrad; grade 0.5 (compressed first-order): SignSGD, Signum, SignAdam, Lion, and the
    FO/ZO hybrid HybridFOZO; grade 1 (first-order): SGD, Adam, AdamW and the smoothing
    references FORS, SAM; grade 2 (second-order): SophiaH, SophiaG, SOUL, AdaHessian.
GRU wraps any gradient-stepping optimizer.  Build by name::

    >>> import torch
    >>> from optigrade import optimizers
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = optimizers.make("zo-sgd", [w], lr=0.1)
    >>> c = optimizers.Closure(lambda: (w ** 2).sum(), [w])
    >>> float(opt.step(c)) > 0
    True

Every optimizer follows the closure contract in :mod:`optimizers.closure`.
"""

from .closure import Closure, capability
from .compressed import Lion, SignAdam, SignSGD, Signum, TransformOptimizer
from .first_order import FORS, SAM, SGD, Adam, AdamW
from .forward_grad import ForwardGrad, directional_derivative
from .gru import GRU, gru_project
from .hybrid import HybridFOZO, hybrid_steps
from .perturbation import DriftReport, measure_drift, perturbed
from .registry import OptimizerInfo, available, make, register
from .second_order import SOUL, AdaHessian, Sophia, SophiaG, SophiaH, hutchinson_diagonal
from .transforms import quantize_tensor
from .zeroth_order import (AdaZO, ZOAdam, ZOConservative, ZOEstimate, ZOOptimizer, ZOSGD, ZOSign,
                           zo_estimate)

__all__ = [
    # registry
    "make", "available", "register", "OptimizerInfo",
    # closure contract
    "Closure", "capability",
    # zeroth-order
    "ZOOptimizer", "ZOSGD", "ZOAdam", "AdaZO", "ZOSign", "ZOConservative", "ForwardGrad",
    "zo_estimate", "ZOEstimate", "directional_derivative",
    # perturbation
    "perturbed", "measure_drift", "DriftReport",
    # compressed first-order
    "TransformOptimizer", "SignSGD", "Signum", "SignAdam", "Lion", "quantize_tensor",
    # first-order
    "SGD", "Adam", "AdamW", "FORS", "SAM",
    # second-order
    "Sophia", "SophiaH", "SophiaG", "SOUL", "AdaHessian", "hutchinson_diagonal",
    # hybrid and GRU
    "HybridFOZO", "hybrid_steps", "GRU", "gru_project",
]
