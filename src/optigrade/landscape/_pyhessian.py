"""Run pyhessian 0.1's routines on a Probe's model, data and parameter subset (cross-check).

pyhessian reads its gradient from ``p.grad`` after ``loss.backward(create_graph=True)`` and
never zeroes it first (a second ``hessian`` object on the same model would see doubled
curvature), draws from the *global* torch RNG, and uses every parameter with
``requires_grad``.  So for the duration of a call we: set every ``.grad`` to None (saving and
restoring them), freeze parameters outside the Probe's selection, fork the global RNG and seed
it, wrap the Probe's token-weighted loss as pyhessian's "model output", and count its HVPs.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .. import _weights
from .probe import Probe


def _import():
    try:  # the package's __init__ shadows the module name with the class: go via importlib
        import importlib
        ph = importlib.import_module("pyhessian.hessian")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('backend="pyhessian" needs the pyhessian package: '
                          'pip install pyhessian==0.1 (or optigrade[pyhessian])') from e
    return ph


class _LossModule(torch.nn.Module):
    """forward(_) = the Probe's loss L(θ) = Σ_b s_b / Σ_b c_b, with its autograd graph."""

    def __init__(self, probe: Probe):
        super().__init__()
        self.inner = probe.model
        object.__setattr__(self, "_probe", probe)

    def forward(self, _):
        p = self._probe
        return sum(p._batch_loss(b)[0] for b in p.batches) / p.total_count


@contextlib.contextmanager
def _session(probe: Probe, seed: int):
    ph = _import()
    chosen = {id(p) for p in probe.params}
    everything = list(probe.model.parameters())
    saved_grads = [p.grad for p in everything]
    saved_flags = [p.requires_grad for p in everything]
    calls = [0]
    original = ph.hessian_vector_product

    def counted(gradsH, params, v):
        calls[0] += 1
        return original(gradsH, params, v)

    try:
        for p in everything:
            p.grad = None
            p.requires_grad_(id(p) in chosen)
        ph.hessian_vector_product = counted
        with _weights.eval_mode(probe.model), torch.random.fork_rng(devices=[]), \
                torch.enable_grad():
            torch.manual_seed(seed)
            h = ph.hessian(_LossModule(probe), lambda out, _t: out,
                           data=(torch.zeros(1), torch.zeros(1)), cuda=False)
            yield h
    finally:
        ph.hessian_vector_product = original
        for p, g, f in zip(everything, saved_grads, saved_flags):
            p.grad = g
            p.requires_grad_(f)
        probe._spent["grad"] += 1
        probe._spent["hvp"] += calls[0]


def pyhessian_eigen(probe: Probe, k: int, max_iter: int, tol: float, seed: int):
    """pyhessian power iteration with deflation: k largest-|λ| eigenvalues and vectors."""
    with _session(probe, seed) as h:
        vals, vecs = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        flat = np.stack([torch.cat([x.detach().reshape(-1) for x in v]).double().numpy()
                         for v in vecs])
    return np.asarray(vals, dtype=float), flat


def pyhessian_trace(probe: Probe, max_iter: int, tol: float, seed: int):
    """pyhessian Hutchinson trace: the list of zᵀHz samples it drew before stopping."""
    with _session(probe, seed) as h:
        return list(h.trace(maxIter=max_iter, tol=tol))
