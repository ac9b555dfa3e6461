"""MUSE (muse-news / muse-books): the local layout and its errors, and the metrics against
rouge-score, hand-computed Min-K% scores, a constructed AUC and sklearn."""

import json
import math

import numpy as np
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.unlearning.benchmarks import BENCHMARKS, MUSE, MUSEBooks, benchmark_kwargs
from optigrade.unlearning.benchmarks.muse import AUC_RETRAIN, adds_bos, chunk_text, word_tokenizer
from optigrade.unlearning.config import UnlearnConfig
from optigrade.unlearning.metrics import muse as mm
from ._tiny_ckpt import break_layout, tiny_checkpoint

WORDS = ("river market storm bridge lamp forest village tower garden letter council minister court police "
         "school report station harbour museum festival").split()


def _article(i, n=60):
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] + ("." if j % 9 == 8 else "") for j in range(n))


def write_muse(d, fmt="json"):
    """A small MUSE layout: hub-style JSON records (fmt='json'), the GitHub repository's style
    (fmt='repo': raw .txt, privleak as JSON arrays of strings, retain2_qa names) or the hub's
    parquet shards (fmt='parquet')."""
    import pandas as pd

    d.mkdir(parents=True, exist_ok=True)
    for sub in ("raw", "verbmem", "knowmem", "privleak"):
        (d / sub).mkdir(exist_ok=True)
    raw = {"forget": [_article(i) for i in range(3)], "retain1": [_article(i + 10) for i in range(4)]}
    verb = [{"prompt": _article(i, 12), "gt": _article(i + 3, 20)} for i in range(3)]
    qa = {k: [{"question": f"what did the {WORDS[i]} see in the {k.split('_')[0]} story ?",
               "answer": f"the {WORDS[(i + 5) % len(WORDS)]}"} for i in range(n)]
          for k, n in (("forget_qa", 4), ("retain_qa", 4), ("forget_qa_icl", 2), ("retain_qa_icl", 2))}
    priv = {"forget": [_article(i, 30) for i in range(4)], "holdout": [_article(i + 20, 30) for i in range(4)]}

    def put(path, rows):
        if fmt == "parquet":
            pd.DataFrame(rows).to_parquet(path.with_name(path.name + "-00000-of-00001.parquet"))
        else:
            path.with_suffix(".json").write_text(json.dumps(rows))

    for k, texts in raw.items():
        if fmt == "repo":
            (d / "raw" / f"{k}.txt").write_text("\n\n".join(texts))
        else:
            put(d / "raw" / k, [{"text": t} for t in texts])
    put(d / "verbmem" / "forget", verb)
    for k, rows in qa.items():
        name = k.replace("retain_", "retain2_") if fmt == "repo" else k
        put(d / "knowmem" / name, rows)
    for k, texts in priv.items():
        if fmt == "repo":
            (d / "privleak" / f"{k}.json").write_text(json.dumps(texts))
        else:
            put(d / "privleak" / k, [{"text": t} for t in texts])
    return d


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_muse(tmp_path_factory.mktemp("muse") / "news")


# ----------------------------------------------------------------------------- layout
def test_registered_settings_and_splits(layout):
    assert BENCHMARKS.get("muse-news") is MUSE and BENCHMARKS.get("muse-books") is MUSEBooks
    kw = benchmark_kwargs("muse-news")
    assert {"data_dir", "forget_fraction", "max_length", "max_forget", "max_retain", "auc_retrain"} <= set(kw)
    assert "tokenizer" not in kw and "progress" not in kw
    b = MUSE(layout, max_length=16)
    assert set(b.splits) == {"forget", "retain", "forget_para", "retain_para"}
    assert all(q.prompt == "" for q in b.forget + b.retain)
    # 3 × 60-word forget articles in 16-token chunks: ceil(60 / 16) = 4 chunks each
    assert len(b.forget) == 12 and len(b.retain) == 16
    assert len(b.splits["forget_para"]) == 4 and b.splits["forget_para"][0].prompt.startswith("Question: ")
    assert b.splits["forget_para"][0].prompt.endswith("\nAnswer:") and b.splits["forget_para"][0].answer == " the " + WORDS[5]
    batch = b.encode_qa(b.forget[:2])
    assert (batch["input_ids"][:, 0] == b.tokenizer.bos_token_id).all()           # the word tokenizer adds BOS
    assert (batch["labels"][:, 1:17] != -100).all()                                # loss on every text token
    s = b.settings()
    assert s["corpus"] == "news" and s["auc_retrain"] == AUC_RETRAIN["news"] == 0.4772 and len(s["data_hash"]) == 16
    assert b.general["train"] and b.general["test"] and b.statements()
    assert MUSEBooks(layout).auc_retrain == 0.5393 and MUSE(layout, auc_retrain=0.5).auc_retrain == 0.5
    assert len(MUSE(layout, max_length=16, max_forget=5).forget) == 5


@pytest.mark.parametrize("fmt", ["repo", "parquet"])
def test_repository_and_hub_formats_read_the_same(tmp_path, layout, fmt):
    a = MUSE(layout, max_length=16)
    b = MUSE(write_muse(tmp_path / fmt, fmt), max_length=16, tokenizer=a.tokenizer)
    assert b.splits["forget_para"] == a.splits["forget_para"] and b.privleak == a.privleak
    assert b.verbmem == a.verbmem and len(b.forget) >= 12   # one .txt: chunks may span the joined articles


def test_chunks_follow_the_real_tokenizer_offsets():
    tok = word_tokenizer(["a b c d e f g"])
    assert chunk_text(tok, "  a b c d e f g ", 3) == ["a b c", "d e f", "g"]
    assert chunk_text(tok, "a b c d e f g", 3, max_chunks=2) == ["a b c", "d e f"]
    assert adds_bos(tok)


@pytest.mark.parametrize("breakage, kwargs, needle", [
    ("rm knowmem/retain_qa.json", {}, "retain_qa"),
    ("rm privleak/holdout.json", {}, "holdout"),
    ("empty verbmem/forget.json", {}, "verbmem/forget.json is empty"),
    ("rename knowmem/forget_qa.json answer→ans", {}, "no column 'answer'"),
    ("rename verbmem/forget.json gt→target", {}, "no column 'gt'"),
    (None, {"retain_split": "retain3"}, "retain_split"),
    (None, {"max_length": 0}, "max_length"),
    (None, {"auc_retrain": 2}, "auc_retrain"),
])
def test_bad_layout_is_a_config_error(tmp_path, breakage, kwargs, needle):
    d = write_muse(tmp_path / "news")
    break_layout(d, breakage)
    kw = {"data_dir": str(d), **kwargs}
    with pytest.raises(ConfigError) as e:
        UnlearnConfig(benchmark="muse-news", benchmark_kwargs=kw)
    assert needle in str(e.value)
    if "data_dir" not in kwargs and breakage:
        assert "MUSE" in str(e.value)   # errors name the layout


def test_hub_when_no_data_dir(monkeypatch, layout):
    """data_dir=None reads the hub's configs/splits through datasets (served here from the local
    layout by a stand-in for _layout.hub_records); offline, the error says to pass --data-dir."""
    from optigrade.unlearning.benchmarks import _layout
    from optigrade.unlearning.benchmarks.muse import read_table, read_texts

    asked = []

    def fake(repo, config, split, columns, layout_name):
        asked.append((repo, config, split))
        if split == "retain_qa":   # an older hub version: only retain2_qa
            raise _layout.LayoutError("no such split")
        name = split.replace("retain2_", "retain_")
        path = next((layout / config).glob(f"{name}.*"))
        rows = read_table(path, columns, "MUSE", "") if columns != ("text",) else \
            [{"text": t} for t in read_texts(path, "MUSE", "")]
        return rows

    monkeypatch.setattr(_layout, "hub_records", fake)
    b = MUSEBooks(max_length=16)
    assert ("muse-bench/MUSE-Books", "knowmem", "retain2_qa") in asked and ("muse-bench/MUSE-Books", "raw", "retain1") in asked
    assert b.knowmem == MUSE(layout, max_length=16).knowmem and b.settings()["data_dir"] == "muse-bench/MUSE-Books"

    def offline(repo, config, split, columns, layout_name):
        raise _layout.LayoutError(f"MUSE: could not read {repo} from the hub (OSError); pass --data-dir DIR")

    monkeypatch.setattr(_layout, "hub_records", offline)
    with pytest.raises(ConfigError, match="MUSE-News.*pass --data-dir"):
        UnlearnConfig(benchmark="muse-news", benchmark_kwargs={})


def test_good_layout_validates(layout):
    cfg = UnlearnConfig(benchmark="muse-books", benchmark_kwargs={"data_dir": str(layout), "max_length": 32})
    assert cfg.benchmark_kwargs["max_length"] == 32


# ----------------------------------------------------------------------------- metrics
def test_rouge_matches_rouge_score_without_stemming():
    from rouge_score import rouge_scorer

    preds = ["the cats were running home", "nothing alike", "", "Harry looked at the owls."]
    refs = ["the cat was running to the home", "completely different words", "a reference", "harry looked at owls"]
    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    want = [sc.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    assert mm.rouge_l_f1(preds, refs).tolist() == want
    # MUSE does not stem: "cats"/"cat" do not match (the TOFU ROUGE would)
    assert mm.rouge_l_f1(["cats"], ["cat"])[0] == 0.0


def test_min_k_against_a_hand_computation():
    lp = [-0.1, -2.0, -0.5, -3.0, -0.2, -1.0, -0.05, -4.0, -0.3, -0.7]
    # k = 40% of 10 tokens = the 4 lowest: -4.0, -3.0, -2.0, -1.0 → score 2.5
    assert mm.min_k_score(lp) == pytest.approx(2.5)
    assert mm.min_k_score(lp, k=0.2) == pytest.approx(3.5)
    assert mm.min_k_score([-1.5, -0.5]) == pytest.approx(1.5)      # ⌊0.8⌋ = 0 → the single lowest
    with pytest.raises(ValueError):
        mm.min_k_score([])


def test_privleak_on_a_constructed_auc():
    # forget texts look like members (low scores), holdout like non-members: AUC = P(h < f) = 0
    assert mm.mia_auc([1.0, 1.5], [3.0, 4.0]) == 0.0
    assert mm.mia_auc([3.0, 4.0], [1.0, 1.5]) == 1.0
    # f = {1, 3}, h = {2, 3}: pairs (1,2) no, (1,3) no, (3,2) yes, (3,3) tie → 1.5 / 4
    auc = mm.mia_auc([1.0, 3.0], [2.0, 3.0])
    assert auc == 0.375
    assert mm.privleak_score(auc, 0.4772) == pytest.approx((0.375 - 0.4772) / 0.4772 * 100)
    assert mm.privleak_score(0.4772, 0.4772) == 0.0


def test_auc_equals_musess_sklearn_sweep():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    f, h = rng.normal(2.0, 1.0, 40).round(1), rng.normal(2.5, 1.0, 35).round(1)   # rounded: ties occur
    y = np.array([0] * len(f) + [1] * len(h))
    fpr, tpr, _ = metrics.roc_curve(y, -np.concatenate([f, h]))
    assert mm.mia_auc(f, h) == pytest.approx(metrics.auc(fpr, tpr), abs=1e-12)


def test_knowmem_prompt_and_cut():
    p = mm.knowmem_prompt("Who won?", [("Where?", "Leeds"), ("When?", "2023")])
    assert p == "Question: Where?\nAnswer: Leeds\n\nQuestion: When?\nAnswer: 2023\n\nQuestion: Who won?\nAnswer: "
    assert mm.cut_answer("Wales\nQuestion: x") == "Wales" and mm.cut_answer("a Question: b") == "a "
    assert mm.cut_answer("one\n\ntwo") == "one"


def test_token_logprobs_and_reference_cut_follow_the_tokenizer(layout):
    from optigrade.unlearning.models.tiny import TinyConfig, tiny_llama

    b = MUSE(layout, max_length=16)
    model = tiny_llama(len(b.tokenizer), TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                    num_attention_heads=2), seed=0, tokenizer=b.tokenizer)
    text = b.privleak["forget"][0]
    ids = b.tokenizer(text)["input_ids"]
    (lp,) = mm.token_logprobs(model, b.tokenizer, [text])
    with torch.no_grad():
        want = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    assert np.allclose(lp, want.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy())
    assert len(mm.token_logprobs(model, b.tokenizer, [text], max_tokens=10)[0]) == 9
    # MUSE cuts the reference to 128 tokens counted *with* BOS: 127 text tokens remain
    ref = mm._truncate_reference(b.tokenizer, " ".join(["river"] * 200), 128)
    assert len(ref.split()) == 127


def test_metrics_end_to_end_after_unlearning(tmp_path, layout):
    """Pretrain a small tiny model on the layout, save it with its word-level tokenizer, unlearn
    2 NPO steps through the config (the benchmark gets the saved tokenizer from run.build), and
    score MUSE's metrics on the result."""
    from optigrade.unlearning.run import run_unlearn

    bench = MUSE(layout, max_length=16)
    model, ckpt = tiny_checkpoint(bench, tmp_path / "ckpt")
    cfg = UnlearnConfig(benchmark="muse-news", benchmark_kwargs={"data_dir": str(layout), "max_length": 16},
                        model=str(ckpt), objective="npo", steps=2, eval_every=2, target=None, metric="forget_para_acc")
    res = run_unlearn(cfg, tmp_path / "out", progress=False)
    assert res.steps == 2 and all(math.isfinite(v) for v in res.metrics.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["benchmark"]["name"] == "muse-news" and manifest["benchmark"]["data_hash"] == bench.settings()["data_hash"]
    pe = {}
    m = bench.benchmark_metrics(res.model, limit=3, per_example=pe, verbmem_max_new_tokens=8,
                                knowmem_max_new_tokens=4)
    assert set(m) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc"}
    assert all(math.isfinite(v) for v in m.values())
    assert all(0 <= m[k] <= 100 for k in ("verbmem_f", "knowmem_f", "knowmem_r")) and 0 <= m["privleak_auc"] <= 1
    assert len(pe["verbmem_f"]) == 3 and len(pe["privleak_forget"]) == 3 == len(pe["privleak_holdout"])
    # per-example arrays reproduce the aggregates (what a bootstrap resamples)
    assert m["verbmem_f"] == pytest.approx(100 * np.mean(pe["verbmem_f"]))
    assert m["privleak"] == pytest.approx(mm.privleak_score(mm.mia_auc(pe["privleak_forget"], pe["privleak_holdout"]),
                                                            0.4772))
