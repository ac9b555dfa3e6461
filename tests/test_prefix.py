r"""The prefix cache (optigrade._prefix) against the full model: logits, Probe losses, gradients
and HVPs from the cached prefix equal the full forward's (bitwise with head="all", where the same
operations run; with the default counted head to float tolerance; float64 HVPs to 1e-10), padding
included; a changed prefix weight or batch is recomputed;
a subset that leaves no frozen prefix is refused naming the parameter; a ZO unlearning run with
prefix_cache=True takes the same steps as without."""

import copy
import re
import warnings

import pytest
import torch

from optigrade import landscape as ls
from optigrade import optimizers
from optigrade._prefix import PrefixCache, check_architecture, first_layer_of
from optigrade.unlearning import NPO, SyntheticFacts, TinyConfig, tiny_llama, unlearn

LATE = r"layers\.[23]\.mlp\.down_proj"   # the last two of four layers
CFG = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2)


@pytest.fixture(scope="module")
def small_bench():
    return SyntheticFacts(n_entities=20)


@pytest.fixture
def model(small_bench):
    return tiny_llama(len(small_bench.tokenizer), CFG, seed=0, tokenizer=small_bench.tokenizer)


@pytest.fixture(scope="module")
def batches(small_bench):
    """A padded QA batch (right padding, answer-only labels) and a left-padded text batch."""
    qa = small_bench.encode_qa(small_bench.forget[:2] + small_bench.retain[:2])
    assert (qa["attention_mask"] == 0).any()  # padding present
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, len(small_bench.tokenizer), (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    ids[mask == 0] = small_bench.tokenizer.pad_token_id
    labels = ids.masked_fill(mask == 0, -100)
    return [qa, dict(input_ids=ids, attention_mask=mask, labels=labels)]


def _logits(m, b):
    with torch.no_grad():
        return m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_cached_logits_are_the_full_models_bit_for_bit(model, batches, impl):
    model.set_attn_implementation(impl)
    for first in (1, 2, 3, 4):  # 4: every layer cached, only norm and head run
        cache = PrefixCache(model, first)
        for b in batches:
            want = _logits(model, b)
            assert torch.equal(_logits(cache, b), want)
            assert torch.equal(cache.forward_from_prefix(b), want)  # the second call: a hit
        assert cache.stats["misses"] == 2 and cache.stats["hits"] == 2
        with torch.no_grad():  # without the forward's key/value cache as well
            b = batches[1]
            kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
            assert torch.equal(cache(**kw).logits, model(**kw).logits)


def _pair(model, batches, **kw):
    return (ls.Probe(model, batches, param_filter=LATE, **kw),
            ls.Probe(model, batches, param_filter=LATE, prefix_cache=True, **kw))


def test_probe_loss_grad_hvp_equal_the_full_path_float32(model, batches):
    full, cached = _pair(model, batches)
    assert "prefix from layer 2" in repr(cached)
    assert cached.loss() == full.loss()
    g_full, l_full = full.grad(return_loss=True)
    g_cached, l_cached = cached.grad(return_loss=True)
    assert l_cached == l_full and torch.equal(g_cached, g_full)
    v = torch.randn(full.numel, generator=torch.Generator().manual_seed(1))
    for mode in ("double", "func", "fd"):
        h_full, h_cached = full.hvp(v, mode=mode), cached.hvp(v, mode=mode)
        rel = float((h_cached - h_full).norm() / h_full.norm()) if mode != "func" else \
            float((h_cached - h_full).detach().norm() / h_full.detach().norm())
        assert rel <= 1e-5, (mode, rel)  # the head / last MLP over the counted rows only: float tolerance
    kept = ls.Probe(model, batches, param_filter=LATE, prefix_cache=True, keep_graph=True)
    h_kept, h_full = kept.hvp(v), full.hvp(v)
    assert float((h_kept - h_full).norm() / h_full.norm()) <= 1e-5  # the counted head: float tolerance
    assert cached.subset(r"layers\.3\.").prefix_cache


def test_probe_float64_hvp_within_1e_10(model, batches):
    model = model.double()
    # the right-padded QA batch only: transformers' eager attention in float64 turns left-padded
    # rows into NaN (fully masked query rows), in the full model as much as in the cached one
    full, cached = _pair(model, batches[:1])
    assert abs(cached.loss() - full.loss()) <= 1e-12
    v = torch.randn(full.numel, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for mode in ("double", "func"):
        h_full, h_cached = full.hvp(v, mode=mode), cached.hvp(v, mode=mode)
        assert float((h_cached - h_full).detach().norm() / h_full.detach().norm()) <= 1e-10, mode
    # and both are the Hessian: a central difference of gradients agrees (to 1e-3 only: eager
    # attention rounds its softmax to float32 even in a float64 model, so smaller steps get noisier)
    eps = 1e-2 / float(v.norm())
    with cached.perturbed(v, eps):
        gp = full.grad()
    with cached.perturbed(v, -eps):
        gm = full.grad()
    fd = (gp - gm) / (2 * eps)
    assert float((cached.hvp(v) - fd).norm() / fd.norm()) <= 1e-3


def test_changed_prefix_weight_or_batch_is_recomputed(model, batches):
    b = batches[0]
    cache = PrefixCache(model, 2)
    _logits(cache, b)
    with torch.no_grad():  # an in-place write to a prefix weight (layer 1)
        model.model.layers[1].mlp.up_proj.weight.mul_(1.5)
    assert torch.equal(_logits(cache, b), _logits(model, b))
    assert cache.stats["invalidations"] == 1 and cache.stats["misses"] == 2
    emb = model.model.embed_tokens
    emb.weight = torch.nn.Parameter(emb.weight.detach() * 0.5)  # a new tensor (data_ptr changes)
    assert torch.equal(_logits(cache, b), _logits(model, b))
    assert cache.stats["invalidations"] == 2
    with torch.no_grad():  # a suffix weight moving keeps the prefix (that is the point)
        model.model.layers[3].mlp.down_proj.weight.add_(0.01)
    assert torch.equal(_logits(cache, b), _logits(model, b))
    assert cache.stats["invalidations"] == 2 and cache.stats["hits"] == 1
    ids = b["input_ids"].clone()
    c = dict(b, input_ids=ids)
    _logits(cache, c)
    ids[0, 1] = 5  # the batch edited in place: its version changed, recomputed
    assert torch.equal(_logits(cache, c), _logits(model, c))
    assert cache.stats["misses"] == 5


def test_subsets_without_a_frozen_prefix_are_refused(model, batches, small_bench):
    with pytest.raises(ValueError, match=r"prefix_cache=True: model\.layers\.0\.mlp\.down_proj\.weight sits "
                                         r"in layer 0"):
        ls.Probe(model, batches, param_filter=r"layers\.[03]\.mlp\.down_proj", prefix_cache=True)
    with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight sits before layer 0"):
        ls.Probe(model, batches, param_filter=r"embed_tokens|layers\.3\.", prefix_cache=True)
    # an untied head lies after every layer: everything is cached
    assert first_layer_of(["lm_head.weight"], model) == 4
    assert first_layer_of([model.model.layers[2].mlp.down_proj.weight], model) == 2
    tied = copy.deepcopy(model)
    tied.config.tie_word_embeddings = True
    tied.lm_head.weight = tied.model.embed_tokens.weight
    with pytest.raises(ValueError, match=r"lm_head\.weight is tied to model\.embed_tokens\.weight"):
        first_layer_of(["lm_head.weight", "model.layers.3.mlp.down_proj.weight"], tied)
    with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight sits before layer 0"):
        ls.Probe(tied, batches, param_filter=r"embed|layers\.3\.", prefix_cache=True)
    with pytest.raises(ValueError, match="without model= it is taken to sit before layer 0"):
        first_layer_of(["lm_head.weight"])
    with pytest.raises(ValueError, match=r"first_layer must be an integer in \[1, 4\]"):
        PrefixCache(model, 0)
    with pytest.raises(ValueError, match="has no model.embed_tokens, model.layers, model.norm, model.rotary_emb, "
                                         "lm_head"):
        check_architecture(torch.nn.Linear(2, 2))
    other = copy.deepcopy(model)
    other.config.model_type = "gemma2"
    with pytest.raises(ValueError, match="model_type 'gemma2' is not supported"):
        PrefixCache(other, 2)
    with pytest.raises(ValueError, match="prefix_cache must be True or False"):
        ls.Probe(model, batches, param_filter=LATE, prefix_cache="yes")


def _zo_run(model, bench, prefix_cache, pattern=LATE):
    params = [p for n, p in model.named_parameters() if re.search(pattern, n)]
    opt = optimizers.make("zo-sgd", params, lr=1e-2, q=2, mu=1e-3, seed=7)
    return unlearn(model, NPO(), opt, bench, steps=4, eval_every=2, batch_size=4, seed=1, params=params,
                   final_eval=False, progress=False, prefix_cache=prefix_cache)


def test_zo_run_with_prefix_cache_takes_the_same_steps(model, small_bench, monkeypatch):
    import optigrade.unlearning.loop as loop

    made = []

    class Spy(PrefixCache):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ra = _zo_run(a, small_bench, False)
    monkeypatch.setattr(loop, "PrefixCache", Spy)
    rb = _zo_run(b, small_bench, True)
    (cache,) = made
    assert cache.first_layer == 2
    # 4 steps × (forget + retain) prefixes; every further ZO query of a step is a hit
    assert cache.stats["misses"] == 8 and cache.stats["hits"] >= 8 * 3 and cache.stats["invalidations"] == 0
    assert list(ra.log["loss"]) == list(rb.log["loss"])
    assert list(ra.log["n_loss"]) == list(rb.log["n_loss"])
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), n  # bit-identical weights
    assert not torch.equal(a.model.layers[3].mlp.down_proj.weight, model.model.layers[3].mlp.down_proj.weight)


def test_zo_run_falls_back_with_a_warning_when_no_prefix_is_frozen(model, small_bench):
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    with pytest.warns(UserWarning, match=r"prefix_cache ignored, the full model runs: model\.layers\.0\..* sits "
                                         r"in layer 0"):
        rb = _zo_run(b, small_bench, True, pattern=r"layers\.[03]\.mlp\.down_proj")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ra = _zo_run(a, small_bench, False, pattern=r"layers\.[03]\.mlp\.down_proj")
    assert list(ra.log["loss"]) == list(rb.log["loss"])
    with pytest.raises(ValueError, match="prefix_cache must be True or False"):
        _zo_run(a, small_bench, 1)


def test_counted_head_equals_the_full_head_where_a_label_is_counted(model, batches):
    """head="counted": logits only at positions whose next label is counted, zeros elsewhere;
    the losses every caller computes from them equal the full model's."""
    from optigrade._lm import lm_logits, mean_nll, seq_nll, summed_nll

    cache = PrefixCache(model, 2)
    assert cache.sparse_head and not PrefixCache(model, 2, head="all").sparse_head
    for b in batches:
        with torch.no_grad():
            full = _logits(model, b)
            sparse = lm_logits(cache, b)
        counted = torch.zeros_like(b["labels"], dtype=torch.bool)
        counted[:, :-1] = b["labels"][:, 1:] != -100
        assert counted.any() and (~counted).any()
        assert torch.allclose(sparse[counted], full[counted], rtol=1e-6, atol=1e-6)
        assert not sparse[~counted].any()  # exactly zero where no loss reads them
        for first in (1, 3, 4):  # the last layer's MLP on the counted rows; 4: no layer, only the head
            with torch.no_grad():
                other = lm_logits(PrefixCache(model, first), b)
            assert torch.allclose(other[counted], full[counted], rtol=1e-6, atol=1e-6), first
        for fn in (mean_nll, seq_nll, summed_nll):
            a, b_ = fn(sparse, b["labels"]), fn(full, b["labels"])
            a, b_ = (a[0], b_[0]) if isinstance(a, tuple) else (a, b_)
            assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b_), rtol=1e-6, atol=0), fn.__name__
        # head="all" ignores logits_at: bit-identical to the full model at every position
        allh = PrefixCache(model, 2, head="all")
        with torch.no_grad():
            assert torch.equal(lm_logits(allh, b), full)
    # gradients flow through the counted rows only, as through the full head
    w = model.model.layers[3].mlp.down_proj.weight
    b = batches[0]
    g_full = torch.autograd.grad(mean_nll(lm_logits(model, b), b["labels"]), w)[0]
    g_sparse = torch.autograd.grad(mean_nll(lm_logits(cache, b), b["labels"]), w)[0]
    assert torch.allclose(g_sparse, g_full, rtol=1e-5, atol=1e-7)


def test_counted_head_refuses_bad_input(model, batches):
    cache = PrefixCache(model, 2)
    b = batches[0]
    with pytest.raises(ValueError, match=r"logits_at must be a labels tensor shaped like input_ids"):
        cache(input_ids=b["input_ids"], attention_mask=b["attention_mask"], logits_at=b["labels"][:, 1:])
    with pytest.raises(ValueError, match=r"head must be 'counted'.*got 'some'"):
        PrefixCache(model, 2, head="some")


def test_token_nll_on_counted_rows_equals_the_full_log_softmax():
    """token_nll / summed_nll take the log-softmax on counted rows only: the same values as the
    textbook formula over every row, zeros (not NaN) where a row is not counted even if its
    logits are not finite."""
    from optigrade._lm import summed_nll, token_nll

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :4] = -100
    labels[2, 5:] = -100
    logits[0, 1] = float("inf")  # predicts labels[0, 2], which is not counted
    nll, mask = token_nll(logits, labels)
    ref = -torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(nll[mask], ref[mask])
    assert torch.equal(nll[~mask], torch.zeros(int((~mask).sum())))
    s, c = summed_nll(logits, labels)
    assert c == int(mask.sum()) and torch.allclose(s, ref[mask].sum(), rtol=1e-6)
