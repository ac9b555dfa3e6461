"""lm-eval on a loaded model (optigrade.analysis.harness): a local multiple-choice task scored
through lm-eval equals our own argmax of the choices' log-likelihoods; bad tasks and unreadable
data are refused before the model is touched."""

import json
import os

import pandas as pd
import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis import harness
from optigrade.analysis.harness import check_lm_eval, lm_eval_available, run_lm_eval

needs_lm_eval = pytest.mark.skipif(not lm_eval_available(), reason="lm-eval is not installed "
                                   "(pip install optigrade[lmeval])")

TASK = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small tiny-Llama checkpoint saved with its tokenizer, and a local task over its facts."""
    from optigrade.unlearning import SyntheticFacts, TinyConfig, tiny_llama

    root = tmp_path_factory.mktemp("lmeval")
    bench = SyntheticFacts(n_entities=20)
    small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = tiny_llama(len(bench.tokenizer), small, seed=1, tokenizer=bench.tokenizer)
    path = root / "model"
    model.save_pretrained(path)
    bench.tokenizer.save_pretrained(path)
    answers = sorted({q.answer for q in bench.forget + bench.retain})
    docs = []
    for i, q in enumerate((bench.forget + bench.retain)[:24]):
        wrong = [w for w in answers if w != q.answer][(7 * i) % 20: (7 * i) % 20 + 3]
        choices = list(wrong)
        choices.insert(i % 4, q.answer)  # the right answer at every position
        docs.append({"question": q.prompt, "choices": choices, "answer": i % 4})
    tasks = root / "tasks"
    tasks.mkdir()
    data = tasks / "toy.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "toy.yaml").write_text(TASK.format(data=data))
    return path, tasks, docs


def own_accuracy(model, tok, docs):
    """argmax over choices of Σ log p(continuation | context), the continuation ' ' + choice
    tokenised as the rest of the whole string (lm-eval's multiple_choice with its default
    target delimiter), no special tokens."""
    right = []
    for d in docs:
        ctx = tok(d["question"], add_special_tokens=False)["input_ids"]
        lls = []
        for c in d["choices"]:
            whole = tok(d["question"] + " " + c, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx):]
            ids = torch.tensor([whole[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            lls.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
        right.append(max(range(len(lls)), key=lambda k: (lls[k], -k)) == d["answer"])
    return sum(right) / len(right), right


class Untouchable:
    """A 'model' that fails the test if anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was touched ({name}) before the tasks were checked")


@needs_lm_eval
def test_local_task_accuracy_equals_own_computation(ckpt):
    from optigrade.unlearning.models import load

    path, tasks, docs = ckpt
    model, tok = load(path)
    table = run_lm_eval(model, tok, ["toy_mc"], include_path=tasks, batch_size=4)
    assert list(table.columns) == ["task", "metric", "value", "stderr", "n"]
    acc = table[(table.task == "toy_mc") & (table.metric == "acc")].iloc[0]
    want, right = own_accuracy(model, tok, docs)
    assert 0 < sum(right) < len(right)  # not a degenerate all-right / all-wrong case
    assert acc.value == pytest.approx(want) and acc.n == len(docs)
    assert acc.stderr == pytest.approx((want * (1 - want) / (len(docs) - 1)) ** 0.5)  # lm-eval's sample stderr
    limited = run_lm_eval(model, tok, "toy_mc", include_path=tasks, limit=5)
    row = limited[limited.metric == "acc"].iloc[0]
    assert row.n == 5 and row.value == pytest.approx(sum(right[:5]) / 5)


@needs_lm_eval
def test_cli_evaluate_lm_eval_prints_and_writes_the_table(ckpt, tmp_path, capsys):
    from optigrade.cli import main

    path, tasks, docs = ckpt
    out = tmp_path / "t.csv"
    code = main(["evaluate", str(path), "--lm-eval", "toy_mc", "--lm-eval-include", str(tasks),
                 "--lm-eval-limit", "6", "--lm-eval-fewshot", "0", "--lm-eval-out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "toy_mc" in printed and "acc" in printed
    t = pd.read_csv(out)
    assert set(t.task) == {"toy_mc"} and int(t[t.metric == "acc"].n.iloc[0]) == 6


@needs_lm_eval
def test_unknown_task_is_refused_before_the_model_is_touched(ckpt):
    _, tasks, _ = ckpt
    with pytest.raises(ConfigError, match=r"unknown lm-eval task 'toy_mq'.*close matches: toy_mc"):
        run_lm_eval(Untouchable(), Untouchable(), ["toy_mq"], include_path=tasks, include_defaults=False)
    with pytest.raises(ConfigError, match="is not a directory"):
        run_lm_eval(Untouchable(), Untouchable(), ["toy_mc"], include_path=tasks / "nope")
    with pytest.raises(ConfigError, match="limit must be a positive number"):
        run_lm_eval(Untouchable(), Untouchable(), ["toy_mc"], include_path=tasks, limit=0)


@needs_lm_eval
def test_cli_unknown_task_refused_before_loading(ckpt, capsys, monkeypatch):
    """With lm-eval's built-in index: a misspelt WMDP task is named with its close matches."""
    import optigrade.unlearning.models as models
    from optigrade.cli import main

    path, _, _ = ckpt
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded before the task check"))
    code = main(["evaluate", str(path), "--lm-eval", "wmdp_bioo"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown lm-eval task 'wmdp_bioo'" in err and "wmdp_bio" in err


@needs_lm_eval
def test_hub_only_task_offline_names_the_dataset_and_the_fix(monkeypatch):
    """wmdp_bio's own YAML (from lm-eval's tasks) with the hub unreachable."""
    import lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    wmdp = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "wmdp")
    with pytest.raises(ConfigError) as e:
        run_lm_eval(Untouchable(), Untouchable(), ["wmdp_bio"], include_path=wmdp)
    msg = str(e.value)
    assert "'wmdp_bio' needs the dataset 'cais/wmdp' (config 'wmdp-bio')" in msg
    assert "HF_DATASETS_OFFLINE" in msg and "dataset_path: json" in msg and "--lm-eval-include" in msg


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setattr(harness, "lm_eval_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install optigrade\[lmeval\]"):
        run_lm_eval(Untouchable(), Untouchable(), ["wmdp_bio"])
    with pytest.raises(ConfigError, match=r"pip install optigrade\[lmeval\]"):
        check_lm_eval("wmdp_bio")
