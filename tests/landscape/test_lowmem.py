"""Low-memory (thick-restart) Lanczos against dense eigvalsh, the full-basis solver and the
memory formula :func:`eigen_memory_bytes` (checked against a measured RSS peak)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape._examples import least_squares
from optigrade.landscape.spectra import eigen_memory_bytes, low_memory_window


class Quadratic(torch.nn.Module):
    """L(θ) = ½ θᵀAθ: a Probe whose HVP is the matvec A v, so H = A exactly."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(A.shape[0], dtype=A.dtype))
        self.register_buffer("A", A)


def quad_loss(model, _batch):
    return 0.5 * model.theta @ (model.A @ model.theta), 1


def known_spectrum(n=300, seed=0):
    """A = U diag(λ) Uᵀ, U a random orthogonal matrix, λ spread over [−3, 10] with a cluster."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 9.0, 8.5, -3.0, -2.5]),
                     torch.linspace(-2.0, 7.0, n - 5, dtype=torch.float64)]).double()
    A = U @ torch.diag(lam) @ U.T
    return ls.Probe(Quadratic((A + A.T) / 2), [0], quad_loss), np.sort(lam.numpy())


@pytest.fixture(scope="module")
def quad():
    return known_spectrum()


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_least_squares_low_matches_dense(which):
    probe, H = least_squares()
    lam = np.linalg.eigvalsh(H)
    ref = {"LA": lam[::-1], "SA": lam, "LM": lam[np.argsort(-np.abs(lam))]}[which]
    r = ls.top_eigenvalues(probe, 2, which, tol=1e-10, memory="low")
    np.testing.assert_allclose(r.eigenvalues, ref[:2], rtol=1e-6)
    assert r.converged.all() and r.cost.hvp == r.settings["lanczos_steps"]


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_known_spectrum_with_restarts(quad, which):
    probe, lam = quad
    ref = {"LA": lam[::-1], "SA": lam, "LM": lam[np.argsort(-np.abs(lam))]}[which]
    r = ls.top_eigenvalues(probe, 3, which, tol=1e-10, max_iter=2000, memory="low")
    np.testing.assert_allclose(r.eigenvalues, ref[:3], rtol=1e-6)
    assert r.settings["restarts"] > 0 and r.settings["window"] == low_memory_window(3, 2000)
    assert r.converged.all() and r.cost.hvp == r.settings["lanczos_steps"]
    A = probe.model.A
    for lam_i, y, res in zip(r.eigenvalues, r.eigenvectors, r.residuals):
        y = torch.from_numpy(y)
        assert float(y.norm()) == pytest.approx(1.0, abs=1e-8)
        assert float((A @ y - lam_i * y).norm()) <= max(10 * res, 1e-9)


def test_tiny_llama_low_matches_dense_and_full(llama_case):
    _, probe, H = llama_case
    evals = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    low = ls.top_eigenvalues(probe, 3, "LA", tol=1e-10, memory="low")
    full = ls.top_eigenvalues(probe, 3, "LA", tol=1e-10)
    np.testing.assert_allclose(low.eigenvalues, evals[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(low.eigenvalues, full.eigenvalues, rtol=1e-6)
    assert low.cost.hvp == low.settings["lanczos_steps"] and low.cost.loss == low.cost.grad == 0


def test_within_one_window_low_is_full_lanczos(quad):
    probe, _ = quad
    w = low_memory_window(2, 300)
    low = ls.top_eigenvalues(probe, 2, tol=1e-300, max_iter=w, memory="low")
    full = ls.top_eigenvalues(probe, 2, tol=1e-300, max_iter=w)
    assert low.settings["restarts"] == 0 and low.cost == full.cost
    np.testing.assert_allclose(low.eigenvalues, full.eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(low.residuals, full.residuals, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("memory", ["full", "low"])
def test_rtol_rule_reaches_its_accuracy_with_fewer_hvps(quad, memory):
    probe, lam = quad
    strict = ls.top_eigenvalues(probe, 1, tol=1e-10, max_iter=2000, memory=memory)
    loose = ls.top_eigenvalues(probe, 1, rtol=1e-4, max_iter=2000, memory=memory)
    assert abs(loose.eigenvalues[0] - lam[-1]) <= 1e-4 * abs(lam[-1])
    assert loose.converged.all() and loose.cost.hvp < strict.cost.hvp
    assert loose.settings["rtol"] == 1e-4 and loose.settings["memory"] == memory


def test_full_mode_settings_unchanged():
    probe, _ = least_squares()
    assert "memory" not in ls.top_eigenvalues(probe, 1).settings


def test_memory_formula():
    n, k, m = 1000, 2, 30
    assert eigen_memory_bytes(n, k, m) == (m + 4) * n * 8
    assert eigen_memory_bytes(n, k, m, "low") == (low_memory_window(k, m) + k + 4) * n * 8
    assert eigen_memory_bytes(n, 5, 3, "low", dtype_bytes=4) == (3 + 5 + 4) * n * 4
    assert eigen_memory_bytes(5, 1, 300) == (5 + 4) * 5 * 8  # the basis never exceeds n rows


@pytest.mark.parametrize("kwargs, match", [
    (dict(memory="medium"), "memory must be one of"),
    (dict(rtol=-1.0), "rtol must be None or a finite number > 0"),
    (dict(rtol=float("nan")), "rtol must be None"),
    (dict(memory="low", method="eigsh"), 'memory="low" and rtol apply'),
    (dict(rtol=1e-3, backend="pyhessian", which="LM"), 'memory="low" and rtol apply'),
])
def test_bad_inputs(kwargs, match):
    probe, _ = least_squares()
    with pytest.raises(ValueError, match=match):
        ls.top_eigenvalues(probe, 1, **kwargs)
    assert probe.cost().hvp == 0  # raised before any work


@pytest.mark.parametrize("args, match", [
    ((0, 1, 10), "n_params must be an integer >= 1"),
    ((10, 0, 10), "k must be"),
    ((10, 1, 0), "max_iter must be"),
    ((10, 1, 10, "disk"), "memory must be one of"),
    ((10, 1, 10, "low", 0), "dtype_bytes must be"),
])
def test_memory_formula_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        eigen_memory_bytes(*args)


_CHILD = r'''
import json, re, sys
import torch
from optigrade import landscape as ls

def status(field):
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

class Diag(torch.nn.Module):
    def __init__(s, n):
        super().__init__()
        s.theta = torch.nn.Parameter(torch.linspace(-1, 1, n))
        s.register_buffer("d", torch.linspace(0.1, 10.0, n))

torch.set_num_threads(1)
n, k, m, memory = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
probe = ls.Probe(Diag(n), [0], lambda mod, _: 0.5 * (mod.d * mod.theta * mod.theta).sum())
probe.hvp(torch.ones(n, dtype=torch.float64))

def peak(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak RSS) to the current RSS
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before

hvp = peak(lambda: probe.hvp(torch.ones(n, dtype=torch.float64)))
solver = peak(lambda: ls.top_eigenvalues(probe, k, tol=1e-300, max_iter=m, memory=memory))
print(json.dumps(dict(hvp=hvp, solver=solver)))
'''


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize("memory", ["full", "low"])
def test_measured_peak_memory_matches_formula(memory):
    """Fresh process, 200k float32 parameters, k=2, 30 steps: RSS peak growth during
    top_eigenvalues minus one HVP's own peak (the model side) is within 20% of the formula.
    MALLOC_MMAP_THRESHOLD_ makes glibc return every freed buffer ≥ 64 KiB to the OS, so RSS
    tracks the live buffers."""
    n, k, m = 200_000, 2, 30
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(k), str(m), memory],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    formula = eigen_memory_bytes(n, k, m, memory)
    assert abs(got["solver"] - got["hvp"] - formula) <= 0.2 * formula, (got, formula)
