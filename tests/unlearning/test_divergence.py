"""Divergence and the library entry's argument checks (issue 11, defect 1 and the smaller cases).

A non-finite loss or non-finite weights stop a run with ``stop_reason="diverged"``; such a model
is never scored as forgetting, never saved, and ``optigrade unlearn`` exits non-zero saying so.
``unlearn()`` refuses bad arguments before any step (``eval_every=0`` was a ZeroDivisionError,
``batch_size=-4`` looped forever in ``Benchmark.batches``).
"""

import copy
import math

import pytest
import torch

from optigrade import optimizers
from optigrade.unlearning import GA, SyntheticFacts, TinyConfig, UnlearnConfig, run_unlearn, tiny_llama, unlearn
from optigrade.unlearning.loop import RunDiverged, match_status


@pytest.fixture(scope="module")
def small_bench():
    return SyntheticFacts(n_entities=20)


@pytest.fixture
def small_model(small_bench):
    """A random-init tiny Llama: it knows no fact, so forget_acc is 0 <= any target at the first
    check (a NaN model would "reach the target" the same way)."""
    cfg = TinyConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return tiny_llama(len(small_bench.tokenizer), cfg, seed=0, tokenizer=small_bench.tokenizer)


class Poison(torch.optim.SGD):
    """SGD that writes NaN into the weights from step ``at`` on, while the closure's loss (taken
    before the update) is still finite; ``round_end`` plays the FO/ZO hybrid's ``at_round_end``."""

    def __init__(self, params, at: int, round_end=None):
        super().__init__(params, lr=1e-6)
        self.n, self.at, self.round_end = 0, at, round_end

    @property
    def at_round_end(self) -> bool:
        return True if self.round_end is None else self.n in self.round_end

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        self.n += 1
        super().step()
        if self.n >= self.at:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        p.fill_(math.nan)
        return loss


# ----------------------------------------------------------------------------- unlearn() arguments
BAD_ARGS = [  # (id, keyword arguments, what the message must name)
    ("steps-0", {"steps": 0}, "steps must be an integer >= 1, got 0"),
    ("steps-float", {"steps": 2.5}, "steps must be an integer >= 1, got 2.5"),
    ("eval_every-0", {"eval_every": 0}, "eval_every must be an integer >= 1, got 0"),
    ("eval_every-bool", {"eval_every": True}, "eval_every must be an integer >= 1, got True"),
    ("batch_size--4", {"batch_size": -4}, "batch_size must be an integer >= 1, got -4"),
    ("batch_size-0", {"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ("seed--1", {"seed": -1}, "seed must be an integer >= 0, got -1"),
    ("eval_retain-0", {"eval_retain": 0}, "eval_retain must be an integer >= 1, got 0"),
    ("target-1.5", {"target": 1.5}, "target must be a number in [0, 1] or None, got 1.5"),
    ("target--0.1", {"target": -0.1}, "target must be a number in [0, 1] or None, got -0.1"),
    ("target-nan", {"target": math.nan}, "target must be a number in [0, 1] or None, got nan"),
    ("retain_floor-2", {"retain_floor": 2}, "retain_floor must be a number in [0, 1] or None, got 2"),
    ("metric-unknown", {"metric": "forget_accuracy"}, "metric must be one of ['forget_acc', 'forget_para_acc'], got 'forget_accuracy'"),
    ("metric-retain", {"metric": "retain_acc"}, "metric must be one of"),
]


@pytest.mark.parametrize("kw,message", [(k, m) for _, k, m in BAD_ARGS], ids=[i for i, _, _ in BAD_ARGS])
def test_unlearn_refuses_bad_arguments_before_any_step(small_bench, small_model, kw, message):
    before = copy.deepcopy(small_model.state_dict())
    opt = optimizers.make("adam", small_model.parameters(), lr=1e-1)
    with pytest.raises(ValueError, match="e.g.") as e:
        unlearn(small_model, GA(), opt, small_bench, **{"steps": 4, "target": 0.1, **kw}, progress=False)
    assert message in str(e.value)
    assert not opt.state  # the optimizer never stepped
    assert all(torch.equal(v, small_model.state_dict()[k]) for k, v in before.items())


def test_metric_on_another_forget_split_is_evaluated(small_bench, small_model):
    """metric='forget_para_acc' was a KeyError after the work; now its split is scored at each check."""
    opt = optimizers.make("adam", small_model.parameters(), lr=1e-3)
    res = unlearn(small_model, GA(), opt, small_bench, steps=2, eval_every=2, target=0.0, metric="forget_para_acc",
                  progress=False, final_eval=False)
    assert res.stop_reason == "target" and "forget_para_acc" in res.log


# ----------------------------------------------------------------------------- divergence
def test_nan_loss_stops_the_run_as_diverged(bench, tiny_model):
    """The CLI reproducer (ga, sgd, lr 1e12): the loss turns NaN within a few steps."""
    opt = optimizers.make("sgd", tiny_model.parameters(), lr=1e12)
    res = unlearn(tiny_model, GA(), opt, bench, steps=10, target=None, progress=False)
    assert res.stop_reason == "diverged" and res.diverged and not res.reached_target
    assert res.steps < 10 and not math.isfinite(res.log["loss"].iloc[-1])
    assert res.note == f"loss nan at step {res.steps}"
    assert res.metrics == {}  # a NaN model is not scored (its forget_acc would read 0.0)
    assert match_status(res.stop_reason, res.metrics, {"retain_acc": 1.0})[:2] == (False, "diverged")


def test_nan_weights_are_caught_at_the_evaluation_not_counted_as_the_target(small_bench, small_model):
    """Finite loss, NaN weights after step 2: before the fix the check at step 2 scored the NaN
    model (forget_acc 0 <= target) and stopped with "target"."""
    opt = Poison(small_model.parameters(), at=2)
    res = unlearn(small_model, GA(), opt, small_bench, steps=10, target=0.0, eval_every=2, progress=False)
    assert res.stop_reason == "diverged" and res.steps == 2
    assert res.note.startswith("non-finite weights after step 2")
    assert math.isfinite(res.log["loss"].iloc[-1]) and "forget_acc" not in res.log  # never scored
    assert res.metrics == {}


def test_nan_weights_after_the_last_evaluation_are_caught_at_the_end(small_bench, small_model):
    """A hybrid-like optimizer meets the target at step 2 but ends its round at step 3, where
    the weights turn NaN: the end check catches it."""
    opt = Poison(small_model.parameters(), at=3, round_end={3})
    res = unlearn(small_model, GA(), opt, small_bench, steps=10, target=0.0, eval_every=2, progress=False)
    assert res.stop_reason == "diverged" and res.steps == 3
    assert res.note == "non-finite weights after step 3"


def test_run_unlearn_never_saves_a_diverged_model(bench, tiny_model, tmp_path):
    cfg = UnlearnConfig(objective="ga", optimizer="sgd", lr=1e12, steps=10, target=None)
    out = tmp_path / "ckpt"
    with pytest.raises(RunDiverged, match=r"diverged \(loss nan at step \d+\); nothing was written to .*lower the "
                                          r"learning rate \(lr=1e\+12\)") as e:
        run_unlearn(cfg, out=out, benchmark=bench, model=tiny_model, progress=False, evaluate_before=False)
    assert e.value.result.stop_reason == "diverged"
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary directory


@pytest.mark.slow
def test_cli_diverging_unlearn_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    from optigrade.cli import main

    out = tmp_path / "X"
    rc = main(["unlearn", "--objective", "ga", "--optimizer", "sgd", "--lr", "1e12", "--steps", "10", "--target", "-1",
               "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "optigrade unlearn:" in ln]  # (progress bars aside)
    assert rc == 1 and len(err) == 1
    assert "optigrade unlearn: error: the run diverged (loss nan at step " in err[0]
    assert err[0].rstrip().endswith("lower --lr (was 1e+12) or use a more stable optimizer")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_run_unlearn_reports_whether_the_run_is_matched(small_bench, small_model, tmp_path):
    """Scored before and after, a run says whether it is at matched forgetting (also in the
    manifest); a diverged run without ``out`` is returned, never matched."""
    import json

    cfg = UnlearnConfig(objective="ga", optimizer="adam", lr=1e-3, steps=4, eval_every=2, target=0.0)
    res = run_unlearn(cfg, out=tmp_path / "ok", benchmark=small_bench, model=small_model, progress=False)
    assert (res.stop_reason, res.matched, res.match_reason) == ("target", True, "target")
    man = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert man["matched"] is True and man["config"]["utility_max_ppl_ratio"] == 2.0
    bad = UnlearnConfig(objective="ga", optimizer="sgd", lr=1e12, steps=6, eval_every=2, target=0.0)
    res = run_unlearn(bad, benchmark=small_bench, model=small_model, progress=False)
    # finite loss, NaN weights at the step-2 check (which used to score forget_acc 0 and say "target")
    assert res.stop_reason == "diverged" and res.note.startswith("non-finite weights after step 2 (loss ")
    assert (res.matched, res.match_reason, res.metrics) == (False, "diverged", {})
