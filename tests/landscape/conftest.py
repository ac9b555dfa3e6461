"""Shared tiny models and dense float64 references for the landscape tests."""

import pytest
import torch
from torch.func import functional_call

from optigrade.landscape import Probe


def tiny_llama(seed=0, hidden=8, vocab=16, inter=16, layers=1, attn="eager"):
    import transformers as t
    torch.manual_seed(seed)  # model init only; library code never touches the global RNG
    cfg = t.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                        tie_word_embeddings=True, max_position_embeddings=64)
    return t.LlamaForCausalLM._from_config(cfg, attn_implementation=attn).double()


def lm_batches(vocab=16, seed=1):
    """Two batches of different lengths and row counts, with ignored (-100) labels."""
    g = torch.Generator().manual_seed(seed)
    ids1 = torch.randint(0, vocab, (2, 6), generator=g)
    lab1 = ids1.clone()
    lab1[0, :3] = -100
    ids2 = torch.randint(0, vocab, (3, 9), generator=g)
    mask2 = torch.ones_like(ids2)
    mask2[2, 6:] = 0
    lab2 = ids2.clone()
    lab2[2, 6:] = -100
    return [dict(input_ids=ids1, attention_mask=torch.ones_like(ids1), labels=lab1),
            dict(input_ids=ids2, attention_mask=mask2, labels=lab2)]


class MLP(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = torch.nn.Linear(4, 6)
        self.l2 = torch.nn.Linear(6, 3)
        self.double()

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def mlp_loss(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)


def mlp_batches(seed=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 4, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (n,), generator=g)) for n in (5, 8)]


def dense_hessian(probe: Probe) -> torch.Tensor:
    """torch.autograd.functional.hessian of the Probe's loss as a function of its flat params."""
    names, shapes = probe.names, probe.shapes
    theta = probe.flat_params().detach()

    def f(flat):
        pd, i = {}, 0
        for n, s in zip(names, shapes):
            pd[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        tot = 0.0
        for b in probe.batches:
            if probe.loss_fn is None:
                logits = functional_call(probe.model, pd, (), {k: v for k, v in b.items() if k != "labels"}).logits
                tot = tot + torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1),
                    ignore_index=-100, reduction="sum")
            else:
                class V(torch.nn.Module):
                    def forward(self_, x):
                        return functional_call(probe.model, pd, (x,))
                tot = tot + probe.loss_fn(V(), b)[0]
        return tot / probe.total_count

    probe.model.eval()
    return torch.autograd.functional.hessian(f, theta, vectorize=True)


@pytest.fixture(scope="session")
def llama_case():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model = tiny_llama()
    probe = Probe(model, lm_batches())
    H = dense_hessian(probe)
    torch.set_num_threads(n)
    return model, probe, H


@pytest.fixture(scope="session")
def mlp_case():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model = MLP()
    probe = Probe(model, mlp_batches(), mlp_loss)
    H = dense_hessian(probe)
    torch.set_num_threads(n)
    return model, probe, H


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~50x faster than two
    threads spinning against other processes.  Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
