"""Spectra against dense float64 Hessians (tiny MLP and tiny LlamaForCausalLM)."""

import importlib.util

import numpy as np
import pytest
import torch

from optigrade import landscape as ls


_EIG = {}


@pytest.fixture(params=["mlp", "llama"])
def case(request, mlp_case, llama_case):
    _, probe, H = mlp_case if request.param == "mlp" else llama_case
    if request.param not in _EIG:  # dense eigendecomposition once per model (torch, 1 thread)
        Hs = (H + H.T) / 2
        _EIG[request.param] = (Hs, torch.linalg.eigvalsh(Hs).numpy())
    Hs, ev = _EIG[request.param]
    return probe, Hs, ev


def test_top5_and_bottom_eigenvalues_match_dense(case):
    probe, _, evals = case
    top = ls.top_eigenvalues(probe, 5, "LA", tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, evals[::-1][:5], rtol=1e-6)
    assert top.converged.all() and top.cost.hvp == top.settings["lanczos_steps"]
    bot = ls.top_eigenvalues(probe, 3, "SA", tol=1e-10)
    np.testing.assert_allclose(bot.eigenvalues, evals[:3], rtol=1e-6, atol=1e-9 * abs(evals).max())
    lm = ls.top_eigenvalues(probe, 2, "LM", tol=1e-10)
    ref = evals[np.argsort(-np.abs(evals))][:2]
    np.testing.assert_allclose(lm.eigenvalues, ref, rtol=1e-6)


def test_eigenvectors_and_residuals(case):
    probe, H, _ = case
    r = ls.top_eigenvalues(probe, 3, tol=1e-10)
    for lam, y, res in zip(r.eigenvalues, r.eigenvectors, r.residuals):
        y = torch.from_numpy(y)
        assert float(y.norm()) == pytest.approx(1.0, abs=1e-8)
        assert float((H @ y - lam * y).norm()) <= max(10 * res, 1e-6 * abs(lam))
    df = r.to_frame()
    assert list(df.quantity.unique()) == ["eigenvalue_LA"] and len(df) == 3


def test_eigsh_method_agrees(mlp_case):
    _, probe, H = mlp_case
    ev = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    r = ls.top_eigenvalues(probe, 2, method="eigsh", tol=1e-12)
    np.testing.assert_allclose(r.eigenvalues, ev[::-1][:2], rtol=1e-8)


def test_traces_within_three_standard_errors(case):
    probe, H, _ = case
    tr = float(torch.trace(H))
    h = ls.hutchinson_trace(probe, 60, seed=1)
    assert abs(h.estimate - tr) <= 3 * h.std_error
    hpp = ls.hutchpp_trace(probe, 60, seed=1)
    assert abs(hpp.estimate - tr) <= 3 * hpp.std_error + 1e-8 * abs(tr)
    assert h.cost.hvp == 60 and hpp.cost.hvp == 60


def test_hutchinson_variance_formula(mlp_case):
    _, probe, H = mlp_case
    h = ls.hutchinson_trace(probe, 400, seed=2)
    var = 2 * (float((H ** 2).sum()) - float((torch.diagonal(H) ** 2).sum()))
    assert h.samples.var(ddof=1) == pytest.approx(var, rel=0.3)


def test_slq_density_integrates_to_one_and_first_moment_is_trace(case):
    probe, H, evals = case
    d = ls.spectral_density(probe, m=min(60, probe.numel), n_v=8, seed=3)
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    assert np.allclose(d.weights.sum(1), 1.0)
    mean = np.trapezoid(d.grid * d.density, d.grid)
    assert mean * probe.numel == pytest.approx(d.trace_estimate, rel=1e-3, abs=1e-6)
    tr = float(torch.trace(H))
    assert abs(d.trace_estimate - tr) <= 3 * d.trace_std_error
    assert d.nodes.max() == pytest.approx(evals.max(), rel=1e-3)  # extreme Ritz values converge first
    fig = d.plot()
    assert fig.axes and d.to_frame().quantity.tolist()[0] == "slq_trace"


def test_block_spectra_are_diagonal_blocks(llama_case):
    _, probe, H = llama_case
    res = ls.block_spectra(probe, {"attn": "attention", "mlp": "mlp"}, n_trace=20, tol=1e-8)
    df = res.to_frame()
    for name, pat in (("attn", "attention"), ("mlp", "mlp")):
        sub = probe.subset(pat)
        idx = torch.cat([torch.arange(o, o + p.numel()) for o, p in _offsets(probe, sub)])
        Hb = H[idx][:, idx]
        lam = float(torch.linalg.eigvalsh((Hb + Hb.T) / 2).max())
        row = df[(df.block == name) & (df.quantity == "lambda_max")]
        assert float(row.value.iloc[0]) == pytest.approx(lam, rel=1e-6)
        tr = df[(df.block == name) & (df.quantity == "trace")].iloc[0]
        assert tr.uncertainty_kind == "sem"
        assert abs(tr.value - float(torch.trace(Hb))) <= 3 * tr.uncertainty
    assert res.plot() is not None


def _offsets(probe, sub):
    offs, o = {}, 0
    for p in probe.params:
        offs[id(p)] = o
        o += p.numel()
    return [(offs[id(p)], p) for p in sub.params]


needs_pyhessian = pytest.mark.skipif(importlib.util.find_spec("pyhessian") is None,
                                     reason="pyhessian not importable: pip install pyhessian==0.1")


@needs_pyhessian
def test_pyhessian_agrees_by_magnitude_and_trace(llama_case):
    model, probe, H = llama_case
    evals = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    lm = evals[np.argmax(np.abs(evals))]
    ours = ls.top_eigenvalues(probe, 1, "LM", tol=1e-10)
    theirs = ls.top_eigenvalues(probe, 1, "LM", backend="pyhessian", seed=0)
    assert ours.eigenvalues[0] == pytest.approx(lm, rel=1e-6)
    # power iteration with tol 1e-3 relative change: a few percent at best
    assert abs(theirs.eigenvalues[0]) == pytest.approx(abs(lm), rel=5e-2)
    # it runs twice with the same answer: .grad state is zeroed and restored, not accumulated
    again = ls.top_eigenvalues(probe, 1, "LM", backend="pyhessian", seed=0)
    assert again.eigenvalues[0] == pytest.approx(theirs.eigenvalues[0], rel=1e-9)
    tr = float(torch.trace(H))
    pt = ls.hutchinson_trace(probe, 200, backend="pyhessian", pyhessian_tol=1e-6, seed=0)
    assert abs(pt.estimate - tr) <= 3 * pt.std_error
    assert all(p.grad is None for p in model.parameters())
