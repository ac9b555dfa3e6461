"""Attacks: RTN against hand-computed values, idempotence, no attack edits its input, and the
attack table (specs validate like the study YAML, resolve to the function's defaults, apply)."""

import inspect

import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis.attacks import (ATTACK_KINDS, ATTACKS, apply_attack, attack_spec, forget_halves,
                                        quantize_rtn, relearn, resolved, rtn_quantize, weight_noise)


class Lin(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        self.emb = torch.nn.Embedding(3, w.shape[1], dtype=w.dtype)
        with torch.no_grad():
            self.fc.weight.copy_(w)


def test_rtn_hand_example_per_channel():
    # 4 bits symmetric: qmax = 7, one step per output row (no ties to break)
    # row 0: s = 0.7/7 = 0.1; codes [7, -3.6 -> -4, 1, 0]          -> [0.7, -0.4, 0.1, 0]
    # row 1: s = 1.4/7 = 0.2; codes [1.25 -> 1, -7, 2.75 -> 3, 0.25 -> 0] -> [0.2, -1.4, 0.6, 0]
    w = torch.tensor([[0.7, -0.36, 0.1, 0.0], [0.25, -1.4, 0.55, 0.05]], dtype=torch.float64)
    m = Lin(w)
    q = quantize_rtn(m, bits=4).fc.weight
    want = torch.tensor([[0.7, -0.4, 0.1, 0.0], [0.2, -1.4, 0.6, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(q, want, rtol=0, atol=1e-12)


def test_rtn_hand_example_groups_and_asymmetric():
    w = torch.tensor([[1.0, 0.5, 0.3, -0.2]])
    # group_size 2, 2 bits symmetric: qmax = 1. group [1, .5]: s=1 -> [1, 0] (0.5 -> 0, half to even)
    # group [.3, -.2]: s=.3 -> [.3, -.3] (-0.667 -> -1)
    got = rtn_quantize(w, bits=2, group_size=2)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0, 0.3, -0.3]]), rtol=0, atol=1e-6)
    # asymmetric 2 bits per row, w = [1, .5, .3, -.3]: s = 1.3/3, z = round(.3/s = .69) = 1,
    # codes round(w/s) + z = [2, 1, 1, -1] + 1 = [3, 2, 2, 0] -> (codes - z)·s = [2s, s, s, -s]
    w = torch.tensor([[1.0, 0.5, 0.3, -0.3]])
    s = 1.3 / 3
    got = rtn_quantize(w, bits=2, symmetric=False)
    torch.testing.assert_close(got, torch.tensor([[2 * s, s, s, -s]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits,group,sym", [(4, None, True), (8, None, True), (3, 2, True), (4, None, False), (2, 4, False)])
def test_rtn_idempotent(bits, group, sym):
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    m = Lin(w)
    q1 = quantize_rtn(m, bits, group, sym)
    q2 = quantize_rtn(q1, bits, group, sym)
    torch.testing.assert_close(q2.fc.weight, q1.fc.weight, rtol=0, atol=1e-12)
    assert len(torch.unique(q1.fc.weight[0, : group or 8])) <= 2 ** bits


def test_rtn_leaves_embeddings_and_input_alone():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    m = Lin(w)
    before = {n: p.clone() for n, p in m.named_parameters()}
    q = quantize_rtn(m, bits=2)
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(q.emb.weight, m.emb.weight)
    assert not torch.equal(q.fc.weight, m.fc.weight)
    assert torch.equal(quantize_rtn(m, bits=2, include_embeddings=True).emb.weight,
                       rtn_quantize(m.emb.weight, 2))


def test_rtn_bad_inputs():
    m = Lin(torch.randn(4, 8))
    with pytest.raises(ValueError, match="bits"):
        quantize_rtn(m, bits=9)
    with pytest.raises(ValueError, match="does not divide the row length 8"):
        quantize_rtn(m, bits=4, group_size=3)


def test_noise_and_relearn_never_modify_input(small_bench, small_model, snapshot):
    before = snapshot(small_model)
    g_state = torch.random.get_rng_state()
    n1 = weight_noise(small_model, 0.05, seed=3)
    n2 = weight_noise(small_model, 0.05, seed=3)
    nr = weight_noise(small_model, 0.1, relative=True, seed=3)
    r1 = relearn(small_model, small_bench, steps=2, lr=1e-3, batch_size=4, seed=1)
    r2 = relearn(small_model, small_bench, steps=2, lr=1e-3, batch_size=4, seed=1, protocol="half", n_samples=6)
    assert torch.equal(torch.random.get_rng_state(), g_state), "the global RNG was touched"
    for n, p in small_model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None
    w = dict(n1.named_parameters())
    assert torch.equal(w["lm_head.weight"], dict(n2.named_parameters())["lm_head.weight"])  # seeded
    assert not torch.equal(w["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(w["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # Linear only
    d = dict(nr.named_parameters())["lm_head.weight"] - before["lm_head.weight"]
    assert float((d.abs() <= 1.0 * before["lm_head.weight"].abs() + 1e-12).float().mean()) > 0.99
    for r in (r1, r2):
        assert any(not torch.equal(p, before[n]) for n, p in r.named_parameters())


def test_relearn_is_deterministic_and_half_split(small_bench, small_model):
    a = relearn(small_model, small_bench, steps=2, lr=1e-3, seed=5, protocol="half")
    b = relearn(small_model, small_bench, steps=2, lr=1e-3, seed=5, protocol="half")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    A, B = forget_halves(small_bench, 5)
    assert set(A).isdisjoint(B) and len(A) + len(B) == len({x.group for x in small_bench.forget})


def test_relearn_reduces_forget_loss(small_bench, small_model):
    m0 = small_bench.evaluate(small_model, splits=["forget"], general=False)["forget_nll"]
    r = relearn(small_model, small_bench, steps=6, lr=3e-3, seed=0)
    m1 = small_bench.evaluate(r, splits=["forget"], general=False)["forget_nll"]
    assert m1 < m0


# ----------------------------------------------------------------------------- the attack table
# what the function takes besides its settings (passed by apply_attack, never by the YAML)
_CALL_ARGS = {"quantize": {"model"}, "relearn": {"model", "benchmark", "seed", "progress"},
              "noise": {"model", "seed"}, "gguf": {"model", "source_types"}}


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_spec_fields_are_the_function_settings(kind):
    """resolved() of an empty spec is the function's signature defaults, in argument order (the
    study's attack_* columns and run hashes derive from it)."""
    fn, spec = ATTACKS.get(kind), ATTACKS.meta(kind)["spec"]
    sig = inspect.signature(fn).parameters
    want = {k: p.default for k, p in sig.items() if k not in _CALL_ARGS[kind]}
    got = {n: f.default for n, f in spec.model_fields.items() if n not in ("kind", "label")}
    assert list(got) == list(want)
    required = [k for k, v in want.items() if v is inspect.Parameter.empty]
    assert {k: v for k, v in got.items() if k not in required} == {k: v for k, v in want.items() if k not in required}
    assert all(spec.model_fields[k].is_required() for k in required)
    meta = ATTACKS.meta(kind)
    assert meta["benchmark"] == ("benchmark" in sig) and meta["seed"] == ("seed" in sig)


def test_attack_spec_round_trip_keeps_values_as_given():
    d = {"kind": "relearn", "label": "rl", "steps": 30, "lr": 1, "protocol": "half"}
    s = attack_spec(d)
    assert s.to_dict() == {"kind": "relearn", "label": "rl", "steps": 30, "lr": 1, "protocol": "half"}
    assert resolved(s)["lr"] == 1 and isinstance(resolved(s)["lr"], int)  # no float coercion
    assert list(resolved(s)) == ["steps", "lr", "n_samples", "batch_size", "split", "protocol", "weight_decay",
                                 "warmup"]
    nested = attack_spec({"kind": "quantize", "settings": {"bits": 8}, "group_size": 32})
    assert nested.settings == {"bits": 8, "group_size": 32} and nested.key == "quantize"
    assert attack_spec(s) is s


BAD_SPECS = [
    ({"kind": "prune"}, ["attacks[0]: unknown attack kind 'prune'", "choose from: quantize, relearn, noise, gguf"]),
    ([1, 2], ["attacks[0] must be a mapping like {kind: quantize, bits: 4}"]),
    ({"kind": "quantize", "bitz": 4}, ["attacks[0] (quantize): unknown setting(s) ['bitz']; allowed: ['bits',"]),
    ({"kind": "noise", "label": "n"}, ["attacks[0] (n): missing required setting(s) ['sigma']",
                                       "{kind: noise, sigma: 0.01}"]),
    ({"kind": "quantize", "bits": 1}, ["bits=1 is outside 2..8"]),
    ({"kind": "quantize", "bits": True}, ["bits=True is outside 2..8"]),
    ({"kind": "quantize", "group_size": 0}, ["group_size=0 must be a positive integer or null"]),
    ({"kind": "quantize", "modules": "mlp[("}, ["modules='mlp[(' is not a valid regular expression"]),
    ({"kind": "quantize", "symmetric": 1}, ["symmetric=1 is not valid (input should be a valid boolean)",
                                            "e.g. symmetric: true"]),
    ({"kind": "relearn", "protocol": "thirds"}, ["protocol must be one of ['full', 'half'], got 'thirds'"]),
    ({"kind": "relearn", "lr": -1.0}, ["lr must be > 0, got -1.0"]),
    ({"kind": "relearn", "steps": 0}, ["steps must be an integer >= 1, got 0"]),
    ({"kind": "relearn", "n_samples": 0}, ["n_samples must be an integer >= 1, got 0"]),
    ({"kind": "relearn", "batch_size": 2.5}, ["batch_size must be an integer >= 1, got 2.5"]),
    ({"kind": "noise", "sigma": -0.1}, ["sigma must be >= 0, got -0.1"]),
    ({"kind": "noise", "sigma": float("inf")}, ["sigma must be >= 0, got inf"]),
    ({"kind": "gguf", "types": "Q4_K"}, ["unsupported GGUF type 'Q4_K'", "K-quants"]),
    ({"kind": "gguf", "types": "F32"}, ["'F32' as a whole-model type"]),
    ({"kind": "gguf", "types": {"w": "Q3"}}, ["unsupported GGUF type 'Q3' in types['w']"]),
    ({"kind": "quantize", "label": 3}, ["label=3 is not valid"]),
]


@pytest.mark.parametrize("d,words", BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))])
def test_bad_attack_spec_named(d, words):
    with pytest.raises(ConfigError) as e:
        attack_spec(d)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_check_model(small_model):
    attack_spec({"kind": "quantize", "group_size": 16}).check_model(small_model)
    with pytest.raises(ConfigError, match=r"attacks\[1\] \(q\): group_size=24 does not divide the row length"):
        attack_spec({"kind": "quantize", "label": "q", "group_size": 24}).check_model(small_model, "attacks[1]")
    with pytest.raises(ConfigError, match="modules='no_such' selects no nn.Linear weight"):
        attack_spec({"kind": "noise", "sigma": 0.1, "modules": "no_such"}).check_model(small_model)
    with pytest.raises(ConfigError, match="types 'source' needs a model loaded from a GGUF file.*model 'tiny'"):
        attack_spec({"kind": "gguf"}).check_model(small_model, model_name="tiny")
    attack_spec({"kind": "gguf", "types": "Q8_0"}).check_model(small_model)


def test_apply_attack_matches_direct_calls(small_bench, small_model):
    cases = [({"kind": "quantize", "bits": 3, "group_size": 16}, lambda: quantize_rtn(small_model, 3, 16)),
             ({"kind": "noise", "sigma": 0.05}, lambda: weight_noise(small_model, 0.05, seed=7)),
             ({"kind": "relearn", "steps": 2, "lr": 1e-3, "protocol": "half"},
              lambda: relearn(small_model, small_bench, steps=2, lr=1e-3, protocol="half", seed=7))]
    for d, direct in cases:
        a, b = apply_attack(attack_spec(d), small_model, small_bench, seed=7), direct()
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(p, q), (d["kind"], n)
