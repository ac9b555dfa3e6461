"""Slices: normalization rules, fresh grid points, curvature cross-check, planes, barrier."""

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape import Probe
from optigrade.landscape.slices import _flat_of

from .conftest import MLP, lm_batches, mlp_batches, mlp_loss, tiny_llama


class Conv1D(torch.nn.Module):  # same name and [in, out] layout as transformers' GPT-2 Conv1D
    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.randn(nf, dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight + self.bias


class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(5, 4).double()
        self.lin = torch.nn.Linear(4, 3).double()
        self.c1d = Conv1D(3, 4)

    def forward(self, x):
        h = self.emb(x)
        return self.lin(h).sum() + self.c1d(h).sum()


def test_filter_normalization_rules():
    m = Mixed()
    p = Probe(m, [torch.tensor([0, 1, 2])], lambda mod, b: mod(b))
    parts = dict(zip(p.names, torch.split(ls.random_direction(p, seed=1), [s.numel() for s in p.shapes])))
    w = dict(m.named_parameters())
    d = {n: parts[n].view(w[n].shape) for n in p.names}
    assert torch.allclose(d["emb.weight"].norm(dim=1), w["emb.weight"].detach().norm(dim=1))
    assert torch.allclose(d["lin.weight"].norm(dim=1), w["lin.weight"].detach().norm(dim=1))
    assert torch.allclose(d["c1d.weight"].norm(dim=0), w["c1d.weight"].detach().norm(dim=0))
    assert torch.count_nonzero(d["lin.bias"]) == 0 and torch.count_nonzero(d["c1d.bias"]) == 0
    keep = ls.random_direction(p, seed=1, one_d="keep")
    kb = keep[-3:]  # c1d.bias is last
    assert float(kb.norm()) == pytest.approx(float(w["c1d.bias"].norm()))


def test_slice_curvature_equals_dHd_and_grid_is_fresh(mlp_case):
    _, probe, H = mlp_case
    d = ls.random_direction(probe, seed=2)
    r = ls.slice_1d(probe, d, span=(-1e-3, 1e-3), points=5)
    dHd = float(d @ H @ d)
    assert r.extras["dHd"] == pytest.approx(dHd, rel=1e-8)
    assert r.extras["second_difference"] == pytest.approx(dHd, rel=1e-4)
    with probe.perturbed(d, r.alphas[3]):
        assert probe.loss() == r.losses[3]
    assert r.plot() is not None and (r.to_frame().quantity == "loss").sum() == 5


def test_interpolation_endpoints_and_barrier():
    model = tiny_llama(seed=3)
    other = tiny_llama(seed=4)
    probe = Probe(model, lm_batches())
    la = probe.loss()
    pb = Probe(other, lm_batches())
    lb = pb.loss()
    r = ls.interpolate(probe, model, other)
    assert r.alphas[0] == -0.5 and r.alphas[-1] == 1.5 and len(r.alphas) == 41
    assert r.losses[10] == pytest.approx(la, rel=1e-12) and r.losses[30] == pytest.approx(lb, rel=1e-10)
    mc = ls.mode_connectivity(probe, model.state_dict(), other.state_dict(), points=11)
    mid = mc.losses[5]
    assert mc.extras["barrier"] >= mid - 0.5 * (la + lb) - 1e-12
    gap = mc.losses - (np.linspace(1, 0, 11) * mc.losses[0] + np.linspace(0, 1, 11) * mc.losses[-1])
    assert mc.extras["barrier"] == pytest.approx(gap.max())
    assert "barrier" in set(mc.to_frame().quantity)


def test_slice_2d_random_plane(mlp_case):
    _, probe, _ = mlp_case
    s = ls.slice_2d(probe, points=(5, 4), span=((-1, 1), (-0.5, 0.5)), seed=5)
    assert s.losses.shape == (4, 5) and s.cost.loss == 20
    d1 = ls.random_direction(probe, seed=5)
    d2 = ls.random_direction(probe, seed=6)
    b = d2 - (d1 @ d2) / (d1 @ d1) * d1
    d2o = b * d2.norm() / b.norm()
    with probe.moving([d1, d2o]) as move:
        move(s.xs[1], s.ys[2])
        assert probe.loss() == pytest.approx(s.losses[2, 1], rel=1e-12)
    fig = s.plot()
    assert len(fig.axes) >= 2 and len(s.to_frame()) == 20


def test_plane_through_checkpoints_and_pca():
    m = MLP()
    probe = Probe(m, mlp_batches(), mlp_loss)
    base = {n: p.detach().clone() for n, p in m.named_parameters()}
    g = torch.Generator().manual_seed(0)
    t1 = {n: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for n, v in base.items()}
    t2 = {n: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for n, v in base.items()}
    s = ls.slice_2d(probe, checkpoints=(base, t1, t2), span=((0, 1), (0, 1)), points=(2, 2))
    assert s.points["θ1"] == (1.0, 0.0)
    assert s.losses[0, 0] == pytest.approx(probe.loss(), rel=1e-12)
    with probe.perturbed(_flat_of(probe, t1) - probe.flat_params()):
        assert s.losses[0, 1] == pytest.approx(probe.loss(), rel=1e-10)
    traj = [base, t1, t2, {n: v + 0.05 for n, v in base.items()}]
    pca = ls.slice_2d(probe, trajectory=traj, points=(3, 3))
    assert 0 < pca.settings["explained_variance"] <= 1 + 1e-12 and pca.points["t3"] == (0.0, 0.0)
