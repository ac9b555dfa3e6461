"""Probe: token weighting, HVP modes, subsets, restoration, errors."""

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape import Probe

from .conftest import MLP, lm_batches, mlp_batches, mlp_loss, tiny_llama


def test_token_weighted_loss_matches_hand_computation(llama_case):
    model, probe, _ = llama_case
    nll, count = 0.0, 0
    with torch.no_grad():
        for b in lm_batches():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            logp = torch.log_softmax(logits, -1)
            for r in range(b["input_ids"].shape[0]):
                for t in range(b["input_ids"].shape[1] - 1):
                    y = int(b["labels"][r, t + 1])
                    if y != -100:
                        nll -= float(logp[r, t, y])
                        count += 1
    assert probe.total_count == count
    assert probe.loss() == pytest.approx(nll / count, rel=1e-12)
    # not the per-batch mean of means (what the anchors compute)
    per_batch = [ls.causal_lm_loss(model, b) for b in lm_batches()]
    mean_of_means = np.mean([float(s.detach()) / c for s, c in per_batch])
    assert abs(mean_of_means - nll / count) > 1e-4


def test_hvp_modes_agree(llama_case):
    model, probe, H = llama_case
    v = torch.randn(probe.numel, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = H @ v
    rel = lambda x: float((x - ref).norm() / ref.norm())
    assert rel(probe.hvp(v)) < 1e-6
    assert rel(probe.hvp(v, mode="func")) < 1e-6
    kept = Probe(model, probe.batches, keep_graph=True)
    assert rel(kept.hvp(v)) < 1e-6 and rel(kept.hvp(v)) < 1e-6
    with kept.perturbed(v, 1e-3):  # weights change: the kept graph must be rebuilt
        moved = kept.hvp(v)
    assert float((moved - ref).norm() / ref.norm()) > 1e-8
    assert rel(kept.hvp(v)) < 1e-6
    # fp64 model with a float32 softmax inside eager attention: fd is limited to ~1e-2
    assert rel(probe.hvp(v, mode="fd")) < 2e-2


def test_hvp_modes_agree_mlp(mlp_case):
    _, probe, H = mlp_case
    v = torch.randn(probe.numel, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = H @ v
    for mode, tol in (("double", 1e-12), ("func", 1e-12), ("fd", 1e-7)):
        assert float((probe.hvp(v, mode=mode) - ref).norm() / ref.norm()) < tol, mode


def test_linear_operator_and_counters(mlp_case):
    _, probe, H = mlp_case
    op = probe.as_linear_operator()
    x = np.random.default_rng(0).standard_normal(probe.numel)
    before = probe.cost()
    y = op.matvec(x)
    assert y.dtype == np.float64 and np.allclose(y, H.numpy() @ x, rtol=1e-10, atol=1e-12)
    probe.loss()
    probe.grad()
    assert probe.cost() - before == ls.Cost(loss=1, grad=1, hvp=1)


def test_flat_roundtrip_and_grad(mlp_case):
    _, probe, _ = mlp_case
    theta = probe.flat_params()
    g = probe.grad()
    # directional derivative by central difference
    d = torch.randn(probe.numel, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with probe.perturbed(d, 1e-5):
        lp = probe.loss()
    with probe.perturbed(d, -1e-5):
        lm = probe.loss()
    assert (lp - lm) / 2e-5 == pytest.approx(float(g @ d), rel=1e-6)
    probe.set_flat(theta * 2)
    probe.set_flat(theta)
    assert torch.equal(probe.flat_params(), theta)


def test_subsets_by_pattern(llama_case):
    model, probe, _ = llama_case
    attn = probe.subset("attention")
    assert all("self_attn" in n for n in attn.names) and len(attn.names) == 4
    mlp = probe.subset("glob:*.mlp.*")
    assert all(".mlp." in n for n in mlp.names) and len(mlp.names) == 3
    layer = probe.subset(ls.layer_pattern(0))
    assert len(layer.names) == 9
    one = Probe(model, probe.batches, param_filter=r"q_proj")
    assert one.names == ["model.layers.0.self_attn.q_proj.weight"]
    ex = Probe(model, probe.batches, exclude="norms")
    assert not any("norm" in n for n in ex.names)
    # tied embedding / lm_head counted once
    assert sum("embed_tokens" in n or "lm_head" in n for n in probe.names) == 1


def test_lora_only_selection():
    model = MLP()
    model.l1.lora_A = torch.nn.Parameter(torch.zeros(2, 4, dtype=torch.float64))
    p = Probe(model, mlp_batches(), mlp_loss, param_filter="lora")
    assert p.names == ["l1.lora_A"]


def test_training_flag_restored_and_eval_used():
    model = MLP()
    model.train()
    seen = []
    p = Probe(model, mlp_batches(), lambda m, b: (seen.append(m.training), mlp_loss(m, b))[1])
    p.loss(), p.grad(), p.hvp(torch.ones(p.numel, dtype=torch.float64))
    assert model.training and not any(seen)


def test_sdpa_refused_with_fix_named():
    model = tiny_llama(attn="sdpa")
    p = Probe(model, lm_batches())
    p.loss()  # forward and gradients are fine
    with pytest.raises(RuntimeError, match='attn_implementation="eager"'):
        p.hvp(torch.ones(p.numel, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="set_attn_implementation"):
        ls.top_eigenvalues(p, 1)


def test_perturbed_restores_on_exception(mlp_case):
    _, probe, _ = mlp_case
    before = [p.detach().clone() for p in probe.params]
    with pytest.raises(KeyError):
        with probe.perturbed(torch.ones(probe.numel, dtype=torch.float64), 0.37):
            raise KeyError("boom")
    assert all(torch.equal(a, b) for a, b in zip(before, probe.params))


def test_grad_state_untouched(mlp_case):
    model, probe, _ = mlp_case
    assert all(p.grad is None for p in model.parameters())
    probe.hvp(torch.ones(probe.numel, dtype=torch.float64))
    assert all(p.grad is None for p in model.parameters())
