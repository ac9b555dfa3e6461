"""optigrade.optimizers: unlearning optimizers by grade.

grade 0 (zeroth-order, loss values only): ZOSGD, ZOAdam, AdaZO, ZOSign, ZOConservative,
    ForwardGrad; grade 0.5 (compressed first-order): SignSGD, Signum, SignAdam, Lion, and the
    FO/ZO hybrid HybridFOZO; grade 1 (first-order): SGD, Adam, AdamW, the smoothing
    references FORS, SAM and the noise controls SGLD, NoisyAdam (family first-order+noise);
    grade 2 (second-order): SophiaH, SophiaG, SOUL, AdaHessian.
GRU wraps any gradient-stepping optimizer ("<base>+gru").  Build by name::

    >>> import torch
    >>> from optigrade import optimizers
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = optimizers.make("zo-sgd", [w], lr=0.1)
    >>> c = optimizers.Closure(lambda: (w ** 2).sum(), [w])
    >>> float(opt.step(c)) > 0
    True

Every optimizer follows the closure contract in :mod:`optigrade.optimizers.closure`.  Each
module below registers its own classes in :mod:`~optigrade.optimizers.registry` when imported;
this file imports them all.
"""

from .._weights import DriftReport, measure_drift, perturbed
from .closure import Closure, capability
from .registry import OptimizerInfo, available, info, make, register, with_seed
from .compressed import Lion, SignAdam, SignSGD, Signum, TransformOptimizer
from .first_order import SGD, Adam, AdamW
from .smoothing import FORS, SAM
from .noisy import SGLD, NoisyAdam, noise_like, sigma_for_norm, temperature_for_norm
from .zeroth_order import AdaZO, ZOAdam, ZOConservative, ZOEstimate, ZOOptimizer, ZOSGD, ZOSign, zo_estimate
from .forward_grad import ForwardGrad, directional_derivative
from .second_order import SOUL, AdaHessian, Sophia, SophiaG, SophiaH, hutchinson_diagonal
from .hybrid import HybridFOZO, hybrid_steps
from .gru import GRU, gru_project
from .transforms import quantize_direction

__all__ = [
    # registry
    "make", "available", "info", "with_seed", "register", "OptimizerInfo",
    # closure contract
    "Closure", "capability",
    # zeroth-order
    "ZOOptimizer", "ZOSGD", "ZOAdam", "AdaZO", "ZOSign", "ZOConservative", "ForwardGrad",
    "zo_estimate", "ZOEstimate", "directional_derivative",
    # perturbation (from optigrade._weights)
    "perturbed", "measure_drift", "DriftReport",
    # compressed first-order
    "TransformOptimizer", "SignSGD", "Signum", "SignAdam", "Lion", "quantize_direction",
    # first-order and smoothing
    "SGD", "Adam", "AdamW", "FORS", "SAM",
    # first-order + noise (control C3)
    "SGLD", "NoisyAdam", "noise_like", "temperature_for_norm", "sigma_for_norm",
    # second-order
    "Sophia", "SophiaH", "SophiaG", "SOUL", "AdaHessian", "hutchinson_diagonal",
    # hybrid and GRU
    "HybridFOZO", "hybrid_steps", "GRU", "gru_project",
]
