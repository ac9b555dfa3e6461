"""Shared fixtures: a convex quadratic and a tiny causal LM, both as optimizers.Closure."""

import pytest
import torch

from optigrade import optimizers


class Quadratic:
    """L(w) = L_f + L_r, L_f = ½Σ a_i (w_i − c_i)², L_r = ½Σ b_i (w_i − c_i)²; ∇L = (a+b)(w−c)."""

    def __init__(self, d=10, dtype=torch.float32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.rand(d, generator=g, dtype=dtype) + 0.5
        self.b = torch.rand(d, generator=g, dtype=dtype) * 0.5
        self.c = torch.randn(d, generator=g, dtype=dtype)
        self.w = torch.nn.Parameter(self.c + torch.randn(d, generator=g, dtype=dtype) + 1.0)

    def forget(self):
        return 0.5 * (self.a * (self.w - self.c) ** 2).sum()

    def retain(self):
        return 0.5 * (self.b * (self.w - self.c) ** 2).sum()

    def loss(self):
        return self.forget() + self.retain()

    def grad(self):
        return ((self.a + self.b) * (self.w.detach() - self.c))

    def closure(self):
        return optimizers.Closure(self.loss, [self.w], forget_fn=self.forget, retain_fn=self.retain,
                                  sampled_label_fn=lambda gen: self.forget())


class TinyLM:
    """LlamaForCausalLM (hidden 32, 2 layers, vocab 64, eager attention) on random tokens."""

    def __init__(self, seed=0, dtype=torch.float32, batch=4, seq=16):
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          attn_implementation="eager")
        torch.manual_seed(seed)  # tests only: model init uses the global RNG
        self.model = LlamaForCausalLM(cfg).to(dtype)
        self.model.eval()
        g = torch.Generator().manual_seed(seed + 1)
        self.forget_ids = torch.randint(0, 64, (batch, seq), generator=g)
        self.retain_ids = torch.randint(0, 64, (batch, seq), generator=g)

    def _nll(self, ids):
        return self.model(input_ids=ids, labels=ids).loss

    def forget(self):
        return self._nll(self.forget_ids)

    def retain(self):
        return self._nll(self.retain_ids)

    def loss(self):
        return self.forget() + self.retain()

    def sampled(self, gen):
        logits = self.model(input_ids=self.forget_ids).logits
        probs = torch.softmax(logits.detach().float(), -1).view(-1, logits.shape[-1])
        labels = torch.multinomial(probs, 1, generator=gen).view(self.forget_ids.shape)
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))

    def params(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def closure(self):
        return optimizers.Closure(self.loss, self.params(), forget_fn=self.forget,
                                  retain_fn=self.retain, sampled_label_fn=self.sampled)

    def eval_loss(self):
        with torch.no_grad():
            return float(self.loss())


@pytest.fixture
def quad():
    return Quadratic()


@pytest.fixture
def tiny():
    return TinyLM()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run ~100× faster on one thread when the 2 shared cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
