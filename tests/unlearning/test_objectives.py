"""Objectives against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from optigrade.unlearning import GA, NPO, WGA, GradDiff, SimNPO, make_objective
from optigrade._lm import IGNORE


class FixedLogits(torch.nn.Module):
    """A 'model' returning given logits (a parameter, so objectives can take gradients)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids=None, attention_mask=None):
        class Out:
            pass

        o = Out()
        o.logits = self.logits
        return o


# vocab 2; logits at positions 0,1 predict labels at positions 1,2
LOGITS = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]],
                       [[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 0.0]]])
# seq 0 answers two tokens (labels at positions 1 and 2), seq 1 one token (position 1)
LABELS = torch.tensor([[IGNORE, 0, 0], [IGNORE, 1, IGNORE]])
# token NLLs: seq0: pos1 via logits[0,0]=[0,0] -> -log(1/2); pos2 via logits[0,1] -> -log(3/4)
#             seq1: pos1 via logits[1,0]=[0,log3] -> label 1 -> -log(3/4)
L2, L34 = math.log(2.0), -math.log(0.75)
SEQ_NLL = [L2 + L34, L34]
LENS = [2, 1]
MEAN = (L2 + 2 * L34) / 3


def batch(idx=(0, 1)):
    return {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3),
            "labels": LABELS.clone(), "index": torch.tensor(idx)}


class Ref:
    def __init__(self, logp):
        self.logp = torch.tensor(logp)

    def seq_logprob(self, b):
        return self.logp


def test_ga_is_negative_token_mean():
    m = FixedLogits(LOGITS)
    assert GA()(m, batch()).item() == pytest.approx(-MEAN, rel=1e-6)


def test_graddiff_weights():
    m = FixedLogits(LOGITS)
    val = GradDiff(gamma=2.0, alpha=0.5)(m, batch(), batch())
    assert val.item() == pytest.approx(-2.0 * MEAN + 0.5 * MEAN, rel=1e-6)


def test_npo_matches_hand_formula():
    m, beta = FixedLogits(LOGITS), 0.1
    ref = [-0.3, -0.9]
    got = NPO(beta=beta, alpha=0.0)(m, batch(), None, Ref(ref)).item()
    ratios = [-SEQ_NLL[i] - ref[i] for i in range(2)]
    want = -(2 / beta) * sum(math.log(1 / (1 + math.exp(beta * r))) for r in ratios) / 2
    assert got == pytest.approx(want, rel=1e-6)
    # at the reference (log ratio 0) NPO is (2/β)·log 2
    at_ref = NPO(beta=beta, alpha=0.0)(m, batch(), None, Ref([-s for s in SEQ_NLL])).item()
    assert at_ref == pytest.approx((2 / beta) * math.log(2), rel=1e-6)


def test_simnpo_matches_hand_formula():
    m = FixedLogits(LOGITS)
    beta, delta, gamma = 4.5, 0.2, 0.125
    got = SimNPO(beta=beta, delta=delta, gamma=gamma, alpha=0.0)(m, batch()).item()
    xs = [beta * (SEQ_NLL[i] / LENS[i] - delta) for i in range(2)]
    want = gamma * (2 / beta) * sum(-math.log(1 / (1 + math.exp(-x))) for x in xs) / 2
    assert got == pytest.approx(want, rel=1e-6)


def test_wga_weights_by_confidence():
    m = FixedLogits(LOGITS)
    toks = [L2, L34, L34]
    want = -sum(math.exp(-t) * t for t in toks) / 3
    assert WGA(alpha=0.0)(m, batch()).item() == pytest.approx(want, rel=1e-6)


def test_parts_sum_to_total_and_gradients_flow():
    m = FixedLogits(LOGITS)
    obj = GradDiff()
    p = obj.parts(m, batch(), batch())
    assert (p["forget"] + p["retain"]).item() == pytest.approx(obj(m, batch(), batch()).item())
    obj(m, batch(), batch()).backward()
    assert m.logits.grad is not None


@pytest.mark.parametrize("name,kw,msg", [
    ("nope", {}, "unknown objective"),
    ("npo", {"beta": 0}, "beta must be > 0"),
    ("graddiff", {"alpha": -1}, "alpha must be >= 0"),
    ("simnpo", {"gamma": -0.1}, "gamma must be > 0"),
    ("npo", {"bogus": 1}, r"objective 'npo' takes alpha, beta; got unknown 'bogus'"),
    ("simnpo", {"detla": 1}, r"takes alpha, beta, delta, gamma; got unknown 'detla' \(did you mean 'delta'\?\)"),
    ("simnpo", {"delta": float("nan")}, "delta must be a finite number"),
    ("wga", {"beta": True}, "beta must be > 0"),
])
def test_bad_objective_settings(name, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_objective(name, **kw)


def test_unknown_keys_and_bad_values_are_config_errors():
    from optigrade._validate import ConfigError

    for name, kw in [("dpo", {}), ("npo", {"betta": 0.1}), ("npo", {"beta": -1})]:
        with pytest.raises(ConfigError):
            make_objective(name, **kw)


@pytest.mark.parametrize("name", ["ga", "graddiff", "npo", "simnpo", "wga"])
def test_every_hyperparameter_is_reachable_by_name(name):
    """objective_hyperparameters lists exactly the constructor's fields; each one set through
    make_objective lands on the object and in its settings (the manifest)."""
    from optigrade.unlearning import OBJECTIVES, objective_hyperparameters

    hp = objective_hyperparameters(name)
    assert "alpha" in hp and hp == {k: getattr(OBJECTIVES.get(name)(), k) for k in hp}
    over = {k: v * 2 + 0.5 for k, v in hp.items()}
    obj = make_objective(name, **over)
    s = obj.settings()
    assert all(getattr(obj, k) == v == s[k] for k, v in over.items())
    assert s["name"] == name and set(s) == set(hp) | {"name", "needs_reference", "needs_retain"}


def test_registry_and_capabilities():
    from optigrade.unlearning import OBJECTIVES

    assert OBJECTIVES.names() == ["ga", "graddiff", "npo", "rmu", "simnpo", "wga"]
    assert OBJECTIVES.get("NPO") is NPO and NPO.needs_reference and not GA.needs_retain
    assert NPO(beta=0.3).name == "npo"
