"""WMDP: the local layout and its errors, lm-eval's prompt byte for byte, the letter
log-likelihood accuracy on a stub model whose letter preferences are set, end to end."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.unlearning.benchmarks import BENCHMARKS, WMDP, benchmark_kwargs
from optigrade.unlearning.benchmarks.muse import word_tokenizer
from optigrade.unlearning.config import UnlearnConfig
from optigrade.unlearning.metrics import wmdp as mw
from ._tiny_ckpt import break_layout, tiny_checkpoint

TOPIC_WORDS = ("virus protein gene vector culture sample strain toxin assay cell enzyme host "
               "sequence plasmid antibody receptor").split()


def _doc(i, n=40):
    return " ".join(TOPIC_WORDS[(i * 5 + j * 3) % len(TOPIC_WORDS)] for j in range(n))


def _questions(n, tag="bio"):
    return [{"question": f"Which {TOPIC_WORDS[i % 16]} is used in {tag} step {i}?",
             "choices": [f"the {TOPIC_WORDS[(i + k) % 16]}" for k in range(4)], "answer": i % 4} for i in range(n)]


def write_wmdp(d, mmlu=False, strings=False):
    """A small WMDP layout (bio): questions as a JSON array, corpora as JSON lines (records with
    text, title, abstract for the bio forget corpus; or JSON strings as the repository ships them)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "wmdp-bio.json").write_text(json.dumps(_questions(8)))
    forget = [{"title": f"paper {i}", "abstract": "short", "text": _doc(i), "doi": f"10/{i}"} for i in range(5)]
    (d / "bio-forget-corpus.jsonl").write_text("\n".join(json.dumps(r) for r in forget) + "\n")
    retain = [_doc(i + 7) for i in range(6)] + ["too short"]
    lines = [json.dumps(t) if strings else json.dumps({"text": t}) for t in retain]
    (d / "bio-retain-corpus.jsonl").write_text("\n".join(lines) + "\n")
    if mmlu:
        (d / "mmlu").mkdir(exist_ok=True)
        rows = [{**q, "subject": "college_biology"} for q in _questions(5, "mmlu")]
        (d / "mmlu" / "college_biology.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return d


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_wmdp(tmp_path_factory.mktemp("wmdp") / "wmdp", mmlu=True)


# ----------------------------------------------------------------------------- layout
def test_registered_and_splits(layout):
    assert BENCHMARKS.get("wmdp") is WMDP
    kw = benchmark_kwargs("wmdp")
    assert {"data_dir", "subset", "forget_fraction", "max_length", "mmlu", "min_chars"} <= set(kw)
    b = WMDP(layout, max_length=16, mmlu="college_biology")
    assert set(b.splits) == {"forget", "retain", "forget_para", "retain_para"}
    assert len(b.forget) == 5 and len(b.retain) == 6            # one chunk per document; 'too short' skipped
    assert all(q.prompt == "" for q in b.forget) and len(b.tokenizer(b.forget[0].answer)["input_ids"]) == 17
    fp = b.splits["forget_para"]
    assert len(fp) == 8 and fp[1].prompt.endswith("\nAnswer:") and fp[1].answer == " B"
    assert fp[0].prompt.startswith("The following are multiple choice questions (with answers) about biology.\n\n")
    rp = b.splits["retain_para"]
    assert len(rp) == 5 and "about college biology." in rp[0].prompt
    s = b.settings()
    assert s["subset"] == "bio" and s["mmlu"] == ["college_biology"] and s["retain_para"] == "mmlu"


def test_without_mmlu_retain_para_holds_out_retain_documents(tmp_path):
    d = write_wmdp(tmp_path / "w", strings=True)   # retain corpus as JSON strings (the repository's format)
    b = WMDP(d, max_length=16, max_forget=2)
    assert len(b.forget) == 2 and len(b.retain) == 5 and len(b.splits["retain_para"]) == 1
    assert b.splits["retain_para"][0].answer not in {q.answer for q in b.retain}
    assert b.settings()["retain_para"] == "held-out retain documents"


def test_prompt_is_lm_evals_byte_for_byte():
    """Render lm-eval's own wmdp_bio / mmlu task templates for one document and compare."""
    lm_eval = pytest.importorskip("lm_eval")
    import pathlib

    import yaml
    from lm_eval.utils import apply_template

    tasks = pathlib.Path(lm_eval.__file__).parent / "tasks"
    doc = {"question": "  Which agent is most stable in aerosol form? ",
           "choices": ["Agent one", "Agent two", "Agent three", "Agent four"], "answer": 2}
    tmpl = yaml.safe_load((tasks / "wmdp" / "_default_template_yaml").read_text())
    for subset, topic in mw.TOPICS.items():
        desc = yaml.safe_load((tasks / "wmdp" / f"wmdp_{subset}.yaml").read_text())["description"]
        assert desc + apply_template(tmpl["doc_to_text"], doc) == mw.mc_context(doc, topic)
        assert tmpl["doc_to_choice"] == list(mw.LETTERS)
    mmlu = yaml.safe_load((tasks / "mmlu" / "default" / "_default_template_yaml").read_text())
    desc = yaml.safe_load((tasks / "mmlu" / "default" / "mmlu_college_biology.yaml").read_text())["description"]
    assert desc + apply_template(mmlu["doc_to_text"], doc) == mw.mc_context(doc, "college biology")


class LetterStub(torch.nn.Module):
    """A 'model' whose next-token log-probs are set per call: uniform except ``prefs``
    (token id → logit), the same at every position."""

    def __init__(self, vocab, prefs):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.prefs = vocab, prefs

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for t, v in self.prefs.items():
            logits[..., t] = v
        return SimpleNamespace(logits=logits)


def test_accuracy_with_set_letter_likelihoods():
    docs = _questions(8)                                # answers 0,1,2,3,0,1,2,3
    tok = word_tokenizer([mw.mc_context(d, "biology") + " A B C D" for d in docs])
    ids = {x: tok(x, add_special_tokens=False)["input_ids"][0] for x in "ABCD"}
    stub = LetterStub(len(tok), {ids["B"]: 3.0, ids["C"]: 1.0})
    acc, correct, lp = mw.mc_accuracy(stub, tok, docs, "biology")
    assert acc == 0.25 and correct.tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    # log-softmax by hand: logits 3 (B), 1 (C), 0 elsewhere over V tokens
    z = np.log(math.exp(3) + math.exp(1) + (len(tok) - 2))
    assert np.allclose(lp[0], [-z, 3 - z, 1 - z, -z])
    # a tie goes to the first letter, as lm-eval's argmax
    acc, correct, _ = mw.mc_accuracy(LetterStub(len(tok), {}), tok, docs, "biology")
    assert acc == 0.25 and correct.tolist() == [1, 0, 0, 0, 1, 0, 0, 0]


def test_continuation_split_is_lm_evals(layout):
    """Context and continuation split as lm-eval's HFLM does (whole encoding split at the
    context's length; trailing context spaces moved to the continuation)."""
    b = WMDP(layout, max_length=16)
    ctx, cont = mw._encode_pair(b.tokenizer, "Answer: ", "B")
    assert ctx == b.tokenizer("Answer:")["input_ids"] and b.tokenizer.decode(cont) == "B"
    lp = mw.choice_logprobs(LetterStub(len(b.tokenizer), {}), b.tokenizer, ["x y"], continuations=[" A", " B C"])
    assert np.allclose(lp, [[-math.log(len(b.tokenizer)), -2 * math.log(len(b.tokenizer))]])


@pytest.mark.parametrize("breakage, kwargs, needle", [
    (None, {"subset": "nuclear"}, "unknown WMDP subset 'nuclear'"),
    (None, {"subset": "chem"}, "no chemistry corpora"),
    (None, {"subset": "cyber"}, "wmdp-cyber"),
    ("rm wmdp-bio.json", {}, "wmdp-bio"),
    ("rm bio-retain-corpus.jsonl", {}, "bio-retain-corpus"),
    ("empty bio-forget-corpus.jsonl", {}, "bio-forget-corpus.jsonl is empty"),
    ("rename wmdp-bio.json answer→label", {}, "no column 'answer'"),
    ("three wmdp-bio.json", {}, "list of 4 strings"),
    (None, {"mmlu": "virology"}, "virology"),
    (None, {"min_chars": -1}, "min_chars"),
])
def test_bad_layout_is_a_config_error(tmp_path, breakage, kwargs, needle):
    d = write_wmdp(tmp_path / "w")
    if breakage and breakage.startswith("three "):  # a question with three choices
        p = d / breakage.split(" ")[1]
        rows = json.loads(p.read_text())
        rows[3]["choices"] = rows[3]["choices"][:3]
        p.write_text(json.dumps(rows))
    else:
        break_layout(d, breakage)
    with pytest.raises(ConfigError) as e:
        UnlearnConfig(benchmark="wmdp", benchmark_kwargs={"data_dir": str(d), **kwargs})
    assert needle in str(e.value)


def test_hub_when_no_data_dir(monkeypatch, layout):
    """data_dir=None asks the hub for cais/wmdp, cais/wmdp-corpora, the gated bio forget corpus and
    cais/mmlu (a stand-in for _layout.hub_records serves the local files)."""
    from optigrade.unlearning.benchmarks import _layout
    from optigrade.unlearning.benchmarks.muse import read_table, read_texts

    asked = []
    files = {("cais/wmdp", "wmdp-bio"): "wmdp-bio.json", ("cais/wmdp-bio-forget-corpus", None): "bio-forget-corpus.jsonl",
             ("cais/wmdp-corpora", "bio-retain-corpus"): "bio-retain-corpus.jsonl",
             ("cais/mmlu", "college_biology"): "mmlu/college_biology.jsonl"}

    def fake(repo, config, split, columns, layout_name):
        asked.append((repo, config, split))
        path = layout / files[(repo, config)]
        return read_table(path, columns, "WMDP", "") if columns != ("text",) else \
            [{"text": t} for t in read_texts(path, "WMDP", "")]

    monkeypatch.setattr(_layout, "hub_records", fake)
    b = WMDP(max_length=16, mmlu="college_biology")
    assert sorted(asked) == sorted([(r, c, "test" if r in ("cais/wmdp", "cais/mmlu") else "train") for r, c in files])
    assert b.splits == WMDP(layout, max_length=16, mmlu="college_biology").splits


def test_hub_layout_and_answer_letters(tmp_path):
    """The hub's folders (wmdp-bio/test-00000-of-00001.parquet) and letter answers are read."""
    import pandas as pd

    d = write_wmdp(tmp_path / "w")
    rows = json.loads((d / "wmdp-bio.json").read_text())
    (d / "wmdp-bio.json").unlink()
    (d / "wmdp-bio").mkdir()
    pd.DataFrame([{**r, "answer": "ABCD"[r["answer"]]} for r in rows]).to_parquet(
        d / "wmdp-bio" / "test-00000-of-00001.parquet")
    b = WMDP(d)
    assert [q["answer"] for q in b.questions] == [r["answer"] for r in rows]
    assert b.questions[0]["choices"] == rows[0]["choices"]


def test_end_to_end_unlearn_then_accuracy(tmp_path, layout):
    from optigrade.unlearning.run import run_unlearn

    bench = WMDP(layout, max_length=16, mmlu=["college_biology"])
    model, ckpt = tiny_checkpoint(bench, tmp_path / "ckpt", max_position_embeddings=128)
    cfg = UnlearnConfig(benchmark="wmdp", benchmark_kwargs={"data_dir": str(layout), "max_length": 16,
                                                            "mmlu": "college_biology"},
                        model=str(ckpt), objective="graddiff", steps=2, eval_every=2, target=None)
    res = run_unlearn(cfg, tmp_path / "out", progress=False)
    assert res.steps == 2 and all(math.isfinite(v) for v in res.metrics.values())
    pe = {}
    m = bench.benchmark_metrics(res.model, per_example=pe)
    assert set(m) == {"wmdp_bio_acc", "mmlu_acc"} and all(0 <= v <= 1 for v in m.values())
    assert len(pe["wmdp_bio"]) == 8 and m["wmdp_bio_acc"] == pytest.approx(np.mean(pe["wmdp_bio"]))
    assert bench.benchmark_metrics(res.model, limit=3)["wmdp_bio_acc"] == pytest.approx(np.mean(pe["wmdp_bio"][:3]))
