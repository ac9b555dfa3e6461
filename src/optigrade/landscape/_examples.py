"""A Probe with a known Hessian, for the docstring examples (closed-form checks).

Least squares with a bias, L(w, b) = ½ Σ_i (x_iᵀw + b − y_i)², has the same Hessian at every θ:

    H = AᵀA,  A = [X, 1]   (flat parameter order: the d weights, then the bias),

so every curvature routine can be checked against ``numpy.linalg.eigvalsh(H)`` and
``numpy.trace(H)``, and every loss rise is exactly quadratic: L(θ + δ) − L(θ) = gᵀδ + ½δᵀHδ.
"""

from __future__ import annotations

import numpy as np
import torch

from .probe import Probe


def half_sse(model: torch.nn.Module, batch) -> tuple[torch.Tensor, int]:
    """(½ Σ_i (model(x_i) − y_i)², 1): a summed loss with count 1, so L is the sum itself."""
    X, y = batch
    r = model(X).squeeze(-1) - y
    return 0.5 * (r * r).sum(), 1


def least_squares(n: int = 8, d: int = 3, seed: int = 0,
                  at_minimum: bool = False) -> tuple[Probe, np.ndarray]:
    """``(probe, H)``: a float64 Probe of L(w, b) on n random points in d dimensions and its
    dense Hessian H = AᵀA.  Weights are random (``seed``), or the least-squares solution with
    ``at_minimum`` (then ∇L = 0).  Draws only from ``torch.Generator(seed)``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    A = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    theta = (torch.linalg.lstsq(A, y.unsqueeze(1)).solution.squeeze(1) if at_minimum else
             torch.randn(d + 1, generator=g, dtype=torch.float64))
    model = torch.nn.utils.skip_init(torch.nn.Linear, d, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(theta[:d].view(1, d))
        model.bias.copy_(theta[d:])
    return Probe(model, [(X, y)], half_sse), (A.T @ A).numpy()
