"""GGUF re-quantization and export on the real SmolLM2 file: bit-exact round trips, errors,
and a short unlearning run measured before/after re-export."""

import numpy as np
import pytest
import torch


def _same(a, b):
    pb = dict(b.named_parameters())
    return [n for n, p in a.named_parameters() if not torch.equal(p, pb[n])]


def test_requantize_to_source_types_is_bit_exact(smollm2):
    from optigrade.analysis.attacks.gguf import requantize_gguf

    model, _ = smollm2
    before = model.model.layers[0].mlp.down_proj.weight.clone()
    q = requantize_gguf(model, "source")
    assert q is not model and _same(model, q) == []  # every weight, bit for bit
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before)


def test_other_type_changes_weights_within_half_a_step(smollm2):
    from optigrade.analysis.attacks.gguf import quantize_weight

    w = smollm2[0].model.layers[0].mlp.down_proj.weight
    raw, deq = quantize_weight(w, "Q8_0")
    assert raw.dtype == np.uint8 and deq.shape == w.shape
    blocks = w.detach().reshape(-1, 32)
    step = blocks.abs().amax(1, keepdim=True) / 127  # Q8_0: d = max|x| / 127, stored in float16
    # round to nearest: |error| <= d/2, plus |q| <= 127 times d's float16 rounding (2^-11 relative)
    err = (deq.reshape(-1, 32) - blocks).abs()
    assert bool((err <= step * (0.5 + 127 * 2.0 ** -11) + 1e-8).all())
    assert float(err.max()) > 0


def test_unsupported_type_lists_supported_ones(smollm2):
    from optigrade.analysis.attacks.gguf import bin_crossing_gguf, export_gguf, requantize_gguf

    model, tok = smollm2
    for bad in ("Q4_K", "int4", "F32"):
        with pytest.raises(ValueError, match="supported: 'source', 'Q4_0', 'Q4_1'"):
            requantize_gguf(model, bad)
    with pytest.raises(ValueError, match="unsupported GGUF type"):
        bin_crossing_gguf(model, model, "Q3_K")
    with pytest.raises(ValueError, match="unsupported GGUF type"):
        export_gguf(model, tok, "/tmp/never-written.gguf", types="Q6_K")


def test_source_types_required_for_a_plain_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from optigrade.analysis.attacks.gguf import requantize_gguf

    m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ValueError, match="needs the source file's per-tensor types"):
        requantize_gguf(m, "source")
    q = requantize_gguf(m, "Q4_0")  # a named type works on any model whose rows are multiples of 32
    assert _same(m, q) and torch.equal(q.model.norm.weight, m.model.norm.weight)


def test_qk_permutation_inverts_transformers_loader():
    from optigrade.analysis.attacks.gguf import permute_qk, unpermute_qk

    w = np.arange(12 * 8, dtype=np.float32).reshape(12, 8)
    assert np.array_equal(unpermute_qk(permute_qk(w, 3), 3), w)
    assert not np.array_equal(permute_qk(w, 3), w)
    try:  # private in transformers; checked when present
        from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    except ImportError:
        return
    proc = LlamaTensorProcessor(config={"num_attention_heads": 6, "num_key_value_heads": 3})
    assert np.array_equal(proc._reverse_permute_weights(permute_qk(w, 3), 6, 3), w)


def test_export_round_trip_is_bit_exact(smollm2, tmp_path):
    """Exporting the unmodified model to source types reproduces the source file's tensor bytes,
    and transformers loads the export back to the same weights."""
    import gguf
    from transformers import AutoModelForCausalLM

    from optigrade.analysis.attacks.gguf import export_gguf
    from optigrade.unlearning.models.smollm2 import smollm2_gguf_path

    model, tok = smollm2
    path = export_gguf(model, tok, tmp_path / "smollm2-reexport.gguf")
    src, out = gguf.GGUFReader(str(smollm2_gguf_path())), gguf.GGUFReader(str(path))
    assert [t.name for t in src.tensors] == [t.name for t in out.tensors]
    for a, b in zip(src.tensors, out.tensors):
        assert a.tensor_type == b.tensor_type and np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name
    assert out.fields["tokenizer.chat_template"].contents() == src.fields["tokenizer.chat_template"].contents()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    assert _same(model, back) == []
    with pytest.raises(FileExistsError):
        export_gguf(model, tok, path)


def test_short_unlearning_then_gguf_reexport(fresh_smollm2, facts, smollm2):
    """Adam + GradDiff on 4 verified facts: forget match falls, retain stays within 10 points;
    then the GGUF re-export (source types) is measured (reported, not asserted: SPEC §4c saw the
    forgotten answers come back)."""
    from optigrade import optimizers
    from optigrade.analysis.attacks.gguf import bin_crossing_gguf, requantize_gguf
    from optigrade.unlearning import GradDiff, unlearn

    model, _ = fresh_smollm2
    before = facts.evaluate(model, splits=["forget", "retain"], general=False)
    opt = optimizers.make("adam", model.parameters(), lr=2e-5)
    # stop at the first step with half the forget facts gone (lr 3e-5 to 1/4 cost 4 of 16 retain facts)
    res = unlearn(model, GradDiff(), opt, facts, steps=12, target=0.5, eval_every=1, batch_size=4,
                  final_eval=False, progress=False)
    after = facts.evaluate(model, splits=["forget", "retain"], general=False)
    assert after["forget_acc"] < before["forget_acc"], res.log
    assert after["retain_acc"] >= before["retain_acc"] - 0.10, (before, after)
    bc = bin_crossing_gguf(smollm2[0], model)
    assert 0.0 < bc.fraction <= bc.changed_any <= 1.0
    rq = facts.evaluate(requantize_gguf(model), splits=["forget"], general=False)
    print(f"forget match {before['forget_acc']:.2f} -> {after['forget_acc']:.2f} after {res.steps} Adam steps; "
          f"after GGUF re-export {rq['forget_acc']:.2f}; bin crossing {bc.fraction:.3f}")
