"""Attacks: RTN against hand-computed values, idempotence, and no attack edits its input."""


import pytest
import torch

from optigrade.analysis.attacks import quantize_rtn, quantize_tensor, relearn, weight_noise, forget_halves


class Lin(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        self.emb = torch.nn.Embedding(3, w.shape[1], dtype=w.dtype)
        with torch.no_grad():
            self.fc.weight.copy_(w)


def test_rtn_hand_example_per_channel():
    # 4 bits symmetric: qmax = 7, one step per output row (no ties to break)
    # row 0: s = 0.7/7 = 0.1; codes [7, -3.6 -> -4, 1, 0]          -> [0.7, -0.4, 0.1, 0]
    # row 1: s = 1.4/7 = 0.2; codes [1.25 -> 1, -7, 2.75 -> 3, 0.25 -> 0] -> [0.2, -1.4, 0.6, 0]
    w = torch.tensor([[0.7, -0.36, 0.1, 0.0], [0.25, -1.4, 0.55, 0.05]], dtype=torch.float64)
    m = Lin(w)
    q = quantize_rtn(m, bits=4).fc.weight
    want = torch.tensor([[0.7, -0.4, 0.1, 0.0], [0.2, -1.4, 0.6, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(q, want, rtol=0, atol=1e-12)


def test_rtn_hand_example_groups_and_asymmetric():
    w = torch.tensor([[1.0, 0.5, 0.3, -0.2]])
    # group_size 2, 2 bits symmetric: qmax = 1. group [1, .5]: s=1 -> [1, 0] (0.5 -> 0, half to even)
    # group [.3, -.2]: s=.3 -> [.3, -.3] (-0.667 -> -1)
    got = quantize_tensor(w, bits=2, group_size=2)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0, 0.3, -0.3]]), rtol=0, atol=1e-6)
    # asymmetric 2 bits per row, w = [1, .5, .3, -.3]: s = 1.3/3, z = round(.3/s = .69) = 1,
    # codes round(w/s) + z = [2, 1, 1, -1] + 1 = [3, 2, 2, 0] -> (codes - z)·s = [2s, s, s, -s]
    w = torch.tensor([[1.0, 0.5, 0.3, -0.3]])
    s = 1.3 / 3
    got = quantize_tensor(w, bits=2, symmetric=False)
    torch.testing.assert_close(got, torch.tensor([[2 * s, s, s, -s]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits,group,sym", [(4, None, True), (8, None, True), (3, 2, True), (4, None, False), (2, 4, False)])
def test_rtn_idempotent(bits, group, sym):
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    m = Lin(w)
    q1 = quantize_rtn(m, bits, group, sym)
    q2 = quantize_rtn(q1, bits, group, sym)
    torch.testing.assert_close(q2.fc.weight, q1.fc.weight, rtol=0, atol=1e-12)
    assert len(torch.unique(q1.fc.weight[0, : group or 8])) <= 2 ** bits


def test_rtn_leaves_embeddings_and_input_alone():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    m = Lin(w)
    before = {n: p.clone() for n, p in m.named_parameters()}
    q = quantize_rtn(m, bits=2)
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(q.emb.weight, m.emb.weight)
    assert not torch.equal(q.fc.weight, m.fc.weight)
    assert torch.equal(quantize_rtn(m, bits=2, include_embeddings=True).emb.weight,
                       quantize_tensor(m.emb.weight, 2))


def test_rtn_bad_inputs():
    m = Lin(torch.randn(4, 8))
    with pytest.raises(ValueError, match="bits"):
        quantize_rtn(m, bits=9)
    with pytest.raises(ValueError, match="does not divide the row length 8"):
        quantize_rtn(m, bits=4, group_size=3)


def test_noise_and_relearn_never_modify_input(small_bench, small_model, snapshot):
    before = snapshot(small_model)
    g_state = torch.random.get_rng_state()
    n1 = weight_noise(small_model, 0.05, seed=3)
    n2 = weight_noise(small_model, 0.05, seed=3)
    nr = weight_noise(small_model, 0.1, relative=True, seed=3)
    r1 = relearn(small_model, small_bench, steps=2, lr=1e-3, batch_size=4, seed=1)
    r2 = relearn(small_model, small_bench, steps=2, lr=1e-3, batch_size=4, seed=1, protocol="half", n_samples=6)
    assert torch.equal(torch.random.get_rng_state(), g_state), "the global RNG was touched"
    for n, p in small_model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None
    w = dict(n1.named_parameters())
    assert torch.equal(w["lm_head.weight"], dict(n2.named_parameters())["lm_head.weight"])  # seeded
    assert not torch.equal(w["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(w["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # Linear only
    d = dict(nr.named_parameters())["lm_head.weight"] - before["lm_head.weight"]
    assert float((d.abs() <= 1.0 * before["lm_head.weight"].abs() + 1e-12).float().mean()) > 0.99
    for r in (r1, r2):
        assert any(not torch.equal(p, before[n]) for n, p in r.named_parameters())


def test_relearn_is_deterministic_and_half_split(small_bench, small_model):
    a = relearn(small_model, small_bench, steps=2, lr=1e-3, seed=5, protocol="half")
    b = relearn(small_model, small_bench, steps=2, lr=1e-3, seed=5, protocol="half")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    A, B = forget_halves(small_bench, 5)
    assert set(A).isdisjoint(B) and len(A) + len(B) == len({x.group for x in small_bench.forget})


def test_relearn_reduces_forget_loss(small_bench, small_model):
    m0 = small_bench.evaluate(small_model, splits=["forget"], general=False)["forget_nll"]
    r = relearn(small_model, small_bench, steps=6, lr=3e-3, seed=0)
    m1 = small_bench.evaluate(r, splits=["forget"], general=False)["forget_nll"]
    assert m1 < m0
