"""ONE test: after every probe-using function, every parameter is bit-identical."""

import importlib.util

import torch

from optigrade import landscape as ls
from optigrade.landscape import Probe

from .conftest import lm_batches, tiny_llama


def test_every_function_restores_every_parameter_bit_for_bit():
    model = tiny_llama(seed=7).float()  # fp32: where arithmetic restores would drift
    model.train()
    probe = Probe(model, lm_batches(), keep_graph=False)
    before = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    other = {n: (t.detach() + 0.01) for n, t in model.named_parameters()}
    traj = [{n: t.detach() + 0.01 * i for n, t in model.named_parameters()} for i in range(4)]
    calls = [
        lambda: probe.loss(), lambda: probe.grad(),
        lambda: probe.hvp(torch.ones(probe.numel)),
        lambda: probe.hvp(torch.ones(probe.numel), mode="fd"),
        lambda: probe.hvp(torch.ones(probe.numel), mode="func"),
        lambda: ls.top_eigenvalues(probe, 2, max_iter=10),
        lambda: ls.top_eigenvalues(probe, 1, method="eigsh", tol=1e-2),
        lambda: ls.hutchinson_trace(probe, 3), lambda: ls.hutchpp_trace(probe, 6),
        lambda: ls.spectral_density(probe, m=5, n_v=2),
        lambda: ls.block_spectra(probe, ["attention"], n_trace=2, tol=1e-2),
        lambda: ls.worst_case_sharpness(probe, 0.1, steps=3),
        lambda: ls.worst_case_sharpness(probe, 0.1, steps=3, norm="linf", adaptive=True),
        lambda: ls.average_sharpness(probe, 0.01, n=3, adaptive=True),
        lambda: ls.sam_sharpness(probe, 0.05),
        lambda: ls.pac_bayes_flatness(probe, 0.05, n=2, iters=3),
        lambda: ls.certified_radius(probe, 0.01, n=5, loss_threshold=1.0),
        lambda: ls.slice_1d(probe, points=3),
        lambda: ls.interpolate(probe, model, other, alphas=[0.0, 0.5]),
        lambda: ls.mode_connectivity(probe, model, other, points=3),
        lambda: ls.slice_2d(probe, points=(2, 2)),
        lambda: ls.slice_2d(probe, trajectory=traj, points=(2, 2)),
        lambda: ls.slice_2d(probe, checkpoints=traj[:3], points=(2, 2)),
    ]
    if importlib.util.find_spec("pyhessian") is not None:
        calls += [lambda: ls.top_eigenvalues(probe, 1, "LM", backend="pyhessian", pyhessian_max_iter=3),
                  lambda: ls.hutchinson_trace(probe, 3, backend="pyhessian")]
    for i, call in enumerate(calls):
        call()
        after = model.state_dict(keep_vars=True)
        for n, t in before.items():
            assert torch.equal(t, after[n].detach()), (i, n)
        assert all(p.grad is None for p in model.parameters()), i
        assert model.training, i
