"""optigrade._select: the one "which weights" vocabulary, checked against the helpers it
replaces (unlearning.loop.trainable_parameters, analysis.attacks.target_weights,
analysis.diagnostics.block_of/_LAYER) on a tiny Llama, tied and untied."""

import importlib

import pytest
import torch

from optigrade import _select


def _old(module, name):
    """The pre-merge helper while it still exists (other rooms switch to _select, then delete)."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


OLD_TRAINABLE = _old("optigrade.unlearning.loop", "trainable_parameters")
OLD_TARGET = _old("optigrade.analysis.attacks", "target_weights")
OLD_BLOCK = _old("optigrade.analysis.diagnostics", "block_of")
OLD_LAYER = _old("optigrade.analysis.diagnostics", "_LAYER")


def tiny(tied: bool):
    import transformers as t
    cfg = t.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied,
                        max_position_embeddings=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return t.LlamaForCausalLM._from_config(cfg, attn_implementation="eager")


@pytest.fixture(params=[False, True], ids=["untied", "tied"])
def llama(request):
    return tiny(request.param)


def _flags(model):
    return {n: p.requires_grad for n, p in model.named_parameters()}


PATTERNS = [None, "mlp", r"layers\.1\.", "down_proj", r"model\.layers\.(0|1)\.self_attn\.[qk]_proj",
            "norm", "embed_tokens"]


def _chosen_names(model, chosen):
    ids = {id(p) for p in chosen}
    return [n for n, p in model.named_parameters() if id(p) in ids]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_trainable_matches_loop(llama, pattern):
    names = _chosen_names(llama, _select.trainable(llama, pattern))
    if pattern is None:
        assert names == [n for n, _ in llama.named_parameters()] and all(_flags(llama).values())
    else:
        assert names and all(_select.matcher(pattern)(n, None) for n in names)
        assert _flags(llama) == {n: n in names for n, _ in llama.named_parameters()}
    if OLD_TRAINABLE is not None:
        old_model = tiny(llama.config.tie_word_embeddings)
        assert _chosen_names(old_model, OLD_TRAINABLE(old_model, pattern)) == names
        assert _flags(old_model) == _flags(llama)


def test_trainable_refuses_empty_match(llama):
    with pytest.raises(ValueError, match="'no_such_block' matches no parameter; names look like"):
        _select.trainable(llama, "no_such_block")
    assert all(_flags(llama).values()), "nothing frozen when the pattern matches nothing"


@pytest.mark.parametrize("modules", [None, "", "mlp", r"layers\.0\.", "lm_head", "q_proj|v_proj"])
@pytest.mark.parametrize("emb,norms", [(False, False), (True, False), (False, True), (True, True)])
def test_linear_weights_matches_attacks(llama, modules, emb, norms):
    new = list(_select.linear_weights(llama, modules, emb, norms))
    names = [n for n, _ in new]
    assert len({id(w) for _, w in new}) == len(new), "tied weights once"
    assert not any(n.endswith("bias") for n in names)
    if OLD_TARGET is not None:
        old = list(OLD_TARGET(llama, modules, emb, norms))
        assert [(n, id(w)) for n, w in old] == [(n, id(w)) for n, w in new]


def test_linear_weights_tied_lm_head():
    model = tiny(True)
    names = [n for n, _ in _select.linear_weights(model)]
    assert names[-1] == "lm_head.weight" and "model.embed_tokens.weight" not in names
    names = [n for n, _ in _select.linear_weights(model, include_embeddings=True)]
    assert names[0] == "model.embed_tokens.weight" and "lm_head.weight" not in names


def test_block_and_layer_match_diagnostics(llama):
    names = [n for n, _ in llama.named_parameters()] + ["lm_head.weight", "x.attention.y", "z"]
    for n in names:
        m = _select.LAYER.search(n)
        assert _select.layer_of(n) == (int(m.group(1)) if m else None)
        if OLD_BLOCK is not None:
            assert _select.block_of(n) == OLD_BLOCK(n)
        if OLD_LAYER is not None:
            old = OLD_LAYER.search(n)
            assert (old.group(1) if old else None) == (m.group(1) if m else None)
    assert {_select.block_of(n) for n in names} == {"embeddings", "attention", "mlp", "norm",
                                                   "lm_head", "other"}


def test_select_patterns(llama):
    sel = lambda **kw: [n for n, _ in _select.select(llama, **kw)]
    assert sel(param_filter="glob:*.mlp.*") == sel(param_filter="mlp")
    assert sel(param_filter=_select.layer_pattern(1)) == [n for n, _ in llama.named_parameters()
                                                          if ".layers.1." in n]
    assert sel(param_filter=lambda n, p: p.dim() == 1) == [n for n, p in llama.named_parameters()
                                                            if p.dim() == 1]
    with pytest.raises(TypeError, match="non-empty str or a callable"):
        sel(param_filter=3)
