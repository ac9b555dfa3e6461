"""The embedded synthetic-facts benchmark: determinism, splits, tokenizer, metrics, registry."""

import json

import pytest
import torch

from optigrade.unlearning import SyntheticFacts
from optigrade.unlearning.benchmarks import ATTRIBUTES


def test_sizes_and_split_by_entity(bench):
    assert len(bench.entities) >= 200 and len(ATTRIBUTES) >= 4
    assert len(bench.forget) == 20 * len(ATTRIBUTES)  # 10% of 200 entities
    f = {x.group for x in bench.forget}
    r = {x.group for x in bench.retain}
    assert f.isdisjoint(r) and len(f) + len(r) == 200
    assert {x.group for x in bench.splits["forget_para"]} == f
    # paraphrases ask the same fact in other words
    for a, b in zip(bench.forget, bench.splits["forget_para"]):
        assert a.answer == b.answer and a.prompt != b.prompt
    # general text: 20% held out for perplexity, 80% for pretraining
    assert len(bench.general["test"]) == 300 and len(bench.general["train"]) == 1200


def test_deterministic_and_seed_dependent():
    a, b, c = SyntheticFacts(seed=0), SyntheticFacts(seed=0), SyntheticFacts(seed=1)
    assert a.splits == b.splits and a.fingerprint() == b.fingerprint()
    assert a.splits != c.splits


def test_tokenizer_is_real_and_round_trips(bench, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    assert isinstance(bench.tokenizer, PreTrainedTokenizerFast)
    bench.tokenizer.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = bench.forget[0].prompt + " " + bench.forget[0].answer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_labels_mask_the_prompt(bench):
    b = bench.encode_qa(bench.forget[:3])
    for i, qa in enumerate(bench.forget[:3]):
        answer_ids = bench.tokenizer(qa.answer, add_special_tokens=False)["input_ids"]
        got = b["labels"][i][b["labels"][i] != -100].tolist()
        assert got == answer_ids


def test_greedy_match_equals_generate(bench, pretrained):
    """The teacher-forced exact match is the greedy-decoding exact match (checked with
    model.generate on examples the model gets right and wrong)."""
    from optigrade.unlearning.benchmarks import answer_stats

    model = pretrained[0]
    tok = bench.tokenizer
    exs = bench.forget[:10] + bench.splits["forget_para"][:10]
    stats = answer_stats(model, bench.encode_qa(exs))["match"].tolist()
    for qa, m in zip(exs, stats):
        p = torch.tensor([[tok.bos_token_id] + tok(qa.prompt, add_special_tokens=False)["input_ids"]])
        n = len(tok(qa.answer, add_special_tokens=False)["input_ids"])
        out = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        gen = tok.decode(out[0, p.shape[1]:])
        assert (gen == qa.answer) == bool(m), (qa, gen)
    assert 0 < sum(stats) < len(stats)  # both outcomes were exercised


def test_pretrained_model_knows_the_facts(bench, pretrained):
    m = bench.evaluate(pretrained[0])
    assert m["forget_acc"] >= 0.99 and m["retain_acc"] >= 0.99
    assert 1.0 < m["general_ppl"] < 20.0


@pytest.mark.parametrize("kw,msg", [
    ({"forget_fraction": 0.0}, "forget_fraction must be in"),
    ({"forget_fraction": 1.0}, "forget_fraction must be in"),
    ({"forget_fraction": 0.001}, "leaves an empty split"),
    ({"n_entities": 5}, "n_entities must be"),
])
def test_bad_benchmark_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SyntheticFacts(**kw)


def test_registry_and_declared_kwargs():
    from optigrade.unlearning import BENCHMARKS, benchmark_kwargs
    from optigrade.unlearning.benchmarks import RealFacts

    assert BENCHMARKS.get("synthetic") is SyntheticFacts and BENCHMARKS.get("smollm2-facts") is RealFacts
    assert benchmark_kwargs("synthetic") == {"n_entities": 200, "forget_fraction": 0.1, "seed": 0, "n_general": 1500}
    real = benchmark_kwargs("smollm2-facts")
    assert {"n_forget", "n_retain", "per_topic", "forget_fraction", "seed"} <= set(real)
    assert not {"model", "tokenizer", "progress", "self"} & set(real)
    b = BENCHMARKS.get("synthetic")(**{**benchmark_kwargs("synthetic"), "n_entities": 20})
    assert b.n_entities == 20 and len(b.forget) == 2 * len(ATTRIBUTES)


def test_packaged_data_is_found():
    from optigrade.unlearning.benchmarks import real_facts

    assert len(json.loads(real_facts._data("real_facts.json"))["facts"]) >= 100
    assert len(json.loads(real_facts._data("general_text.json"))["sentences"]) >= 10


def test_batches_land_on_the_requested_device(bench):
    gen = torch.Generator().manual_seed(0)
    b = next(bench.batches("forget", 4, gen, device=torch.device("cpu")))
    assert {v.device.type for v in b.values()} == {"cpu"} and b["input_ids"].shape[0] == 4
    # the same generator state gives the same batch whatever the device argument
    a = next(bench.batches("forget", 4, torch.Generator().manual_seed(0)))
    b = next(bench.batches("forget", 4, torch.Generator().manual_seed(0), device="cpu"))
    assert all(torch.equal(a[k], b[k]) for k in a)
