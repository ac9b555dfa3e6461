"""landscape: loss-landscape geometry around one checkpoint (SPEC §3.1, §3.3, §3.4, §4).

A :class:`Probe` holds a model, fixed batches and a token-weighted loss at the model's current
weights; every function here takes a Probe and returns a small frozen result with values,
settings, cost (loss / gradient / HVP passes), uncertainty, ``.to_frame()`` (tidy rows in the
one schema, :data:`optigrade._tables.SCHEMA`) and, where a picture helps, ``.plot()`` (a
figure Jupyter shows inline).  Which weights a Probe measures is chosen with the shared
pattern vocabulary of :mod:`optigrade._select` (regex, ``glob:``, :data:`PRESETS`, callable).

>>> import numpy as np
>>> from optigrade import landscape as ls
>>> from optigrade.landscape._examples import least_squares
>>> probe, H = least_squares()                       # Hessian known: H = AᵀA
>>> ev = ls.top_eigenvalues(probe, k=1)
>>> bool(abs(ev.eigenvalues[0] - np.linalg.eigvalsh(H).max()) < 1e-8)
True
>>> ev.to_frame(subject="unlearned", data="forget").columns[:4].tolist()
['run_id', 'subject', 'data', 'quantity']

Leaf package: imports torch, numpy, scipy, pandas, matplotlib (and pyhessian lazily, only for
``backend="pyhessian"``).
"""

from .certify import (CertifiedRadius, certified_radius, clopper_pearson, cohen_certify,
                      cohen_radius, radius_ceiling, radius_from_outcomes)
from .._select import PRESETS, layer_pattern
from .loss_change import loss_change
from .probe import Cost, Probe, causal_lm_loss
from .results import LossChange
from .sharpness import (SharpnessResult, average_sharpness, pac_bayes_flatness, sam_sharpness,
                        worst_case_sharpness)
from .slices import (Slice1D, Slice2D, interpolate, mode_connectivity, random_direction,
                     slice_1d, slice_2d)
from .spectra import (BlockSpectra, Density, EigenResult, TraceResult, block_spectra,
                      eigen_memory_bytes, hutchinson_trace, hutchpp_trace, lanczos, spectral_density,
                      top_eigenvalues)
from .theory import (quantization_loss_check, relearn_step_check, smoothing_gap_check,
                     zo_gradient_check)

__all__ = [
    # the measuring instrument
    "Probe", "Cost", "causal_lm_loss", "PRESETS", "layer_pattern",
    # spectra
    "top_eigenvalues", "hutchinson_trace", "hutchpp_trace", "spectral_density",
    "block_spectra", "lanczos", "eigen_memory_bytes", "EigenResult", "TraceResult", "Density", "BlockSpectra",
    # sharpness
    "worst_case_sharpness", "average_sharpness", "sam_sharpness", "pac_bayes_flatness",
    "SharpnessResult",
    # certified radius
    "certified_radius", "radius_from_outcomes", "clopper_pearson", "cohen_radius",
    "cohen_certify", "radius_ceiling", "CertifiedRadius",
    # slices
    "slice_1d", "interpolate", "slice_2d", "mode_connectivity", "random_direction",
    "Slice1D", "Slice2D",
    # a weight change read against the local geometry
    "loss_change", "LossChange",
    # theory checks (SPEC §3.1, §3.2, §3.4), tidy tables
    "zo_gradient_check", "smoothing_gap_check", "quantization_loss_check", "relearn_step_check",
]
