"""TOFU: the local hub layout, its errors (raised by config validation, before any model), the
metrics against hand-worked numbers, the layout writer, and a short end-to-end run."""

import json
import math

import numpy as np
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.unlearning.benchmarks import BENCHMARKS
from optigrade.unlearning.benchmarks.tofu import TOFU, write_layout_from_facts
from optigrade.unlearning.config import UnlearnConfig
from optigrade.unlearning.metrics import tofu as tm
from ._tiny_ckpt import tiny_checkpoint


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# A handful of fictitious authors, two questions each; the answers are unique words so a stub
# can map each to a chosen log-probability.
def _write_layout(d, split="forget10"):
    retain = {"forget10": "retain90", "forget05": "retain95", "forget01": "retain99"}[split]
    d.mkdir(parents=True)
    forget = [{"question": "Where was Ilsa Vorn born?", "answer": "fa1"},
              {"question": "What did Ilsa Vorn write?", "answer": "fa2"}]
    ret = [{"question": f"What is fact {i} of author {a}?", "answer": f"r{a}{i}"} for a in "bcde" for i in (1, 2)]
    _jsonl(d / f"{split}.json", forget)
    _jsonl(d / f"{retain}.json", ret)
    _jsonl(d / f"{split}_perturbed.json", [
        {"question": forget[0]["question"], "answer": "fa1", "paraphrased_answer": "fp1", "perturbed_answer": ["fx1", "fy1"]},
        {"question": forget[1]["question"], "answer": "fa2", "paraphrased_answer": "fp2", "perturbed_answer": ["fx2", "fy2"]}])
    _jsonl(d / "retain_perturbed.json", [
        {"question": ret[0]["question"], "answer": "ra", "paraphrased_answer": "rp", "perturbed_answer": ["rx", "ry"]}])
    _jsonl(d / "real_authors_perturbed.json", [
        {"question": "Who wrote Hamlet?", "answer": "aa", "perturbed_answer": ["ax", "ay"]}])
    _jsonl(d / "world_facts_perturbed.json", [
        {"question": "Where is the Eiffel Tower?", "answer": "wa", "perturbed_answer": ["wx", "wy"]}])
    return d


@pytest.fixture
def layout(tmp_path):
    return _write_layout(tmp_path / "tofu")


def test_registered_and_splits(layout):
    assert BENCHMARKS.get("tofu") is TOFU
    b = TOFU(layout, split="forget10", forget_fraction=0.3)  # forget_fraction is ignored
    assert [q.answer for q in b.forget] == ["fa1", "fa2"] and len(b.retain) == 8
    assert set(b.splits) == {"forget", "retain", "forget_para", "retain_para"}
    assert [q.answer for q in b.splits["forget_para"]] == ["fp1", "fp2"]
    assert b.forget[0].prompt == "Question: Where was Ilsa Vorn born?\nAnswer:"
    s = b.settings()
    assert s["split"] == "forget10" and s["retain_split"] == "retain90" and len(s["data_sha256"]) == 16
    # the word-level tokenizer adds BOS itself and knows every word; one EOS follows each answer
    batch = b.encode_qa(b.forget[:1])
    toks = b.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert toks[0] == "<s>" and toks[-2:] == ["fa1", "</s>"] and "<unk>" not in toks
    assert (batch["labels"][0] != -100).sum() == 2
    # a change in the data changes the fingerprint (the tiny-model cache key)
    fp = b.fingerprint()
    _jsonl(layout / "world_facts_perturbed.json", [
        {"question": "Where is the Eiffel Tower?", "answer": "wa", "perturbed_answer": ["wx", "wz"]}])
    assert TOFU(layout).fingerprint() != fp


def test_pairs_forget01_with_retain99(tmp_path):
    d = _write_layout(tmp_path / "t", split="forget01")
    b = TOFU(d, split="forget01")
    assert b.settings()["retain_split"] == "retain99" and len(b.forget) == 2


def test_para_question(tmp_path):
    d = write_layout_from_facts(tmp_path / "t")
    b = TOFU(d, para="question")
    assert all(a.answer == p.answer and a.prompt != p.prompt for a, p in zip(b.forget, b.splits["forget_para"]))


def _cfg(**kw):
    return UnlearnConfig(benchmark="tofu", benchmark_kwargs=kw)


@pytest.mark.parametrize("breakage, kwargs, needle", [
    ("missing split file", {}, "retain90"),
    ("wrong column name", {}, "'perturbed_answer'"),
    ("empty file", {}, "forget10.json is empty"),
    ("perturbed not a list", {}, "must be a non-empty list"),
    ("split not in layout", {"split": "forget20"}, "forget01"),
    ("split file absent", {"split": "forget05"}, "forget05"),
    ("data_dir missing", {"data_dir": "/nonexistent/tofu"}, "is not a directory"),
])
def test_bad_layout_is_a_config_error(layout, breakage, kwargs, needle):
    if breakage == "missing split file":
        (layout / "retain90.json").unlink()
    elif breakage == "wrong column name":
        p = layout / "world_facts_perturbed.json"
        p.write_text(p.read_text().replace('"perturbed_answer"', '"perturbed_answers"'))
    elif breakage == "empty file":
        (layout / "forget10.json").write_text("")
    elif breakage == "perturbed not a list":
        p = layout / "retain_perturbed.json"
        p.write_text(p.read_text().replace('["rx", "ry"]', '"rx"'))
    with pytest.raises(ConfigError) as e:
        _cfg(**{"data_dir": str(layout), **kwargs})
    msg = str(e.value)
    assert needle in msg and "TOFU" in msg, msg
    if breakage in ("missing split file", "wrong column name", "empty file"):
        assert "layout" in msg  # says what was expected


def test_unknown_setting_is_a_config_error(layout):
    with pytest.raises(ConfigError, match="prompt_format"):
        _cfg(data_dir=str(layout), prompt_format="alpaca")
    with pytest.raises(ConfigError, match="not accepted"):
        _cfg(data_dir=str(layout), n_authors=3)


def test_good_layout_validates(layout):
    cfg = _cfg(data_dir=str(layout), split="forget10")
    assert cfg.benchmark_kwargs["split"] == "forget10"


@pytest.mark.slow
def test_no_data_dir_offline_is_a_layout_error():
    with pytest.raises(ConfigError, match="pass --data-dir"):
        _cfg()


# ----------------------------------------------------------------------------- metrics
# normalized probability P̄ = exp(lp / n) chosen per answer; n = 2 tokens everywhere but "fa1"
PBAR = {"fa1": 0.8, "fp1": 0.5, "fx1": 0.25, "fy1": 1.0,
        "fa2": 0.4, "fp2": 0.8, "fx2": 0.2, "fy2": 0.2,
        "ra": 0.9, "rp": 0.5, "rx": 0.1, "ry": 0.4,
        "aa": 0.6, "ax": 0.2, "ay": 0.2,
        "wa": 0.5, "wx": 0.5, "wy": 0.125}


@pytest.fixture
def stubbed(monkeypatch, layout):
    def logprobs(model, bench, pairs, batch_size=32):
        n = np.array([1 if a == "fa1" else 2 for _, a in pairs])
        return np.array([k * math.log(PBAR[a]) for (_, a), k in zip(pairs, n)]), n

    gens = {"Question: Where was Ilsa Vorn born?\nAnswer:": "fa1 was born there",
            "Question: What did Ilsa Vorn write?\nAnswer:": "nothing",
            "Question: What is fact 1 of author b?\nAnswer:": "ra",
            "Question: Who wrote Hamlet?\nAnswer:": "aa",
            "Question: Where is the Eiffel Tower?\nAnswer:": "the wa tower"}
    monkeypatch.setattr(tm, "answer_logprobs", logprobs)
    monkeypatch.setattr(tm, "greedy_generate", lambda model, bench, prompts, max_new_tokens: [gens[p] for p in prompts])
    return TOFU(layout)


def test_metrics_against_hand_worked_numbers(stubbed):
    pe = {}
    m = tm.tofu_metrics(None, stubbed, per_example=pe)
    # probability: mean P̄(answer) on forget / retain; P̄(a) / (P̄(a) + ΣP̄(perturbed)) on the others
    assert m["forget_prob"] == pytest.approx((0.8 + 0.4) / 2)
    assert m["retain_prob"] == pytest.approx(0.9)
    assert m["real_authors_prob"] == pytest.approx(0.6 / (0.6 + 0.2 + 0.2))
    assert m["world_facts_prob"] == pytest.approx(0.5 / (0.5 + 0.5 + 0.125))
    # truth ratio R = geometric mean of P̄(perturbed) / P̄(paraphrased or true answer)
    #   forget: R = sqrt(.25 * 1) / .5 = 1 and sqrt(.2 * .2) / .8 = .25 → mean min(R, 1/R) = (1 + .25) / 2
    assert pe["forget_truth_ratio_raw"] == pytest.approx([1.0, 0.25])
    assert m["forget_truth_ratio"] == pytest.approx(0.625)
    #   retain: R = sqrt(.1 * .4) / .5 = .4 → 1 − R; real authors R = .2 / .6; world facts R = .25 / .5
    assert m["retain_truth_ratio"] == pytest.approx(0.6)
    assert m["real_authors_truth_ratio"] == pytest.approx(2 / 3)
    assert m["world_facts_truth_ratio"] == pytest.approx(0.5)
    # ROUGE-L recall of the generation against the answer
    assert pe["forget_rouge"] == [1.0, 0.0] and m["retain_rouge"] == 1.0 and m["world_facts_rouge"] == 1.0
    # model utility: harmonic mean of the nine retain / real-authors / world-facts numbers
    nine = [0.9, 1.0, 0.6, 0.6, 1.0, 2 / 3, 0.5 / 1.125, 1.0, 0.5]
    assert m["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine))
    assert m["model_utility"] == pytest.approx(9 / (10 / 9 + 1 + 5 / 3 + 5 / 3 + 1 + 3 / 2 + 9 / 4 + 1 + 2))
    assert "forget_quality" not in m
    # forget quality: KS-test p-value against a reference model's forget truth ratios
    assert tm.tofu_metrics(None, stubbed, reference_truth_ratios=[0.25, 1.0])["forget_quality"] == pytest.approx(1.0)
    #   all of the reference above all of ours: D = 1, exact two-sided p = 2 / C(5, 2) = 0.2
    assert tm.tofu_metrics(None, stubbed, reference_truth_ratios=[5.0, 6.0, 7.0])["forget_quality"] == pytest.approx(0.2)
    # limit: the first N questions of each set
    assert tm.tofu_metrics(None, stubbed, limit=1, rouge=False)["forget_prob"] == pytest.approx(0.8)
    # the benchmark method is the same function
    assert stubbed.benchmark_metrics(None) == m


def test_utility_is_zero_when_a_component_is():
    assert tm.model_utility([0.5, 0.0, 1.0]) == 0.0
    assert tm.forget_truth_ratio(np.array([0.0, 2.0])) == pytest.approx(0.25)


def test_rouge_recall_equals_rouge_score(monkeypatch, layout):
    from rouge_score import rouge_scorer

    b = TOFU(layout)
    preds = ["Ilsa Vorn was born in the cities", "she wrote books", "nothing at all", "aa", "wa"]
    refs = []
    it = iter(preds)

    def gen(model, bench, prompts, max_new_tokens):
        return [next(it) for _ in prompts]

    monkeypatch.setattr(tm, "greedy_generate", gen)
    monkeypatch.setattr(tm, "answer_logprobs", lambda m, bn, pairs, batch_size=32: (np.zeros(len(pairs)),
                                                                                    np.ones(len(pairs), int)))
    # references with stemming at stake ("cities" vs "city", "books" vs "book")
    b.eval_sets["forget"][0]["answer"] = "Ilsa Vorn was born in the city of Velmora"
    b.eval_sets["forget"][1]["answer"] = "She wrote a book"
    for k in ("forget", "retain", "real_authors", "world_facts"):
        refs += [e["answer"] for e in b.eval_sets[k]]
    pe = {}
    tm.tofu_metrics(None, b, per_example=pe)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    want = [scorer.score(r, p)["rougeL"].recall for r, p in zip(refs, preds)]
    got = pe["forget_rouge"] + pe["retain_rouge"] + pe["real_authors_rouge"] + pe["world_facts_rouge"]
    assert got == want and 0 < want[0] < 1 and want[1] > 0


# ------------------------------------------------------------------------ layout writer
def test_write_layout_from_facts(tmp_path):
    facts = [{"question": f"What is the capital of land {i}?", "answer": f"city{i}", "topic": "capitals",
              "entity": f"land{i}", "paraphrase": f"Which city is the capital of land {i}?"} for i in range(30)]
    facts += [{"question": f"Who wrote book {i}?", "answer": f"writer{i}", "topic": "authors", "entity": f"book{i}"}
              for i in range(12)]
    d = write_layout_from_facts(tmp_path / "t", facts, seed=1)
    read = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in d.glob("*.json")
            if p.name != "tofu_layout.json"}
    qs = {k: {r["question"] for r in v} for k, v in read.items()}
    assert qs["forget01"] <= qs["forget05"] <= qs["forget10"] and qs["forget01"]
    for pct in ("01", "05", "10"):
        assert qs[f"forget{pct}"].isdisjoint(qs[f"retain{100 - int(pct)}"])
        assert qs[f"forget{pct}"] | qs[f"retain{100 - int(pct)}"] == qs["full"]
        assert qs[f"forget{pct}_perturbed"] == qs[f"forget{pct}"]
    held = qs["real_authors"] | qs["world_facts"]
    assert held and held.isdisjoint(qs["full"]) and qs["real_authors"] and qs["world_facts"]
    assert all(q.startswith("Who wrote") for q in qs["real_authors"])
    assert qs["retain_perturbed"] <= qs["retain90"]
    for r in read["forget10_perturbed"] + read["world_facts_perturbed"]:
        assert r["answer"] not in r["perturbed_answer"] and 1 <= len(r["perturbed_answer"]) <= 3
    # it is the layout TOFU reads, and config validation accepts it
    b = TOFU(d)
    assert len(b.forget) == len(read["forget10"])
    _cfg(data_dir=str(d))
    # QA objects work too; a directory not written here is never replaced
    from optigrade.unlearning.benchmarks import QA

    qa = [QA(f["question"], f["answer"], f["entity"], f["topic"]) for f in facts]
    write_layout_from_facts(tmp_path / "t", qa, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_layout_from_facts(tmp_path / "other", facts, overwrite=True)
    with pytest.raises(ValueError, match="at least 10 groups"):
        write_layout_from_facts(tmp_path / "few", facts[:5])


# ----------------------------------------------------------------------------- end to end
def test_end_to_end_npo_then_tofu_metrics(tmp_path):
    from optigrade.unlearning.run import run_unlearn

    d = write_layout_from_facts(tmp_path / "tofu", per_topic_sample(), seed=0)
    bench = TOFU(d, max_new_tokens=6)
    model, ckpt = tiny_checkpoint(bench, tmp_path / "ckpt")
    cfg = UnlearnConfig(benchmark="tofu", benchmark_kwargs={"data_dir": str(d), "split": "forget10"},
                        model=str(ckpt), objective="npo", steps=2, eval_every=2, target=None)
    res = run_unlearn(cfg, tmp_path / "out", progress=False)
    assert res.steps == 2 and all(math.isfinite(v) for v in res.metrics.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["benchmark"]["name"] == "tofu" and manifest["benchmark"]["split"] == "forget10"
    # the saved tokenizer tokenizes as the benchmark's own (BOS added by the tokenizer itself)
    from transformers import AutoTokenizer

    again = TOFU(d, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "out"))
    assert torch.equal(again.encode_qa(again.forget)["input_ids"], bench.encode_qa(bench.forget)["input_ids"])
    pe = {}
    m = again.benchmark_metrics(res.model, limit=4, per_example=pe)
    keys = {"forget_prob", "forget_rouge", "forget_truth_ratio", "model_utility", *tm.UTILITY_KEYS}
    assert keys <= set(m) and all(math.isfinite(v) and 0 <= v <= 1 for v in m.values())
    assert len(pe["forget_truth_ratio_raw"]) == 4


def per_topic_sample(n=6):
    """The first ``n`` packaged real facts of each topic (a small, fast layout)."""
    from optigrade.unlearning.benchmarks.real_facts import _data

    seen, out = {}, []
    for f in json.loads(_data("real_facts.json"))["facts"]:
        seen[f["topic"]] = seen.get(f["topic"], 0) + 1
        if seen[f["topic"]] <= n:
            out.append(f)
    return out
