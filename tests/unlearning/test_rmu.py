"""RMU (representation misdirection, Li et al. 2024) against hand computations and on the tiny model."""

import json
import math

import pytest
import torch

from optigrade import optimizers
from optigrade._select import trainable
from optigrade.unlearning import RMU, Reference, SyntheticFacts, make_objective, tiny_llama, unlearn
from optigrade.unlearning.config import ObjectiveSpec, UnlearnConfig
from optigrade.unlearning.objectives import hidden_at

IGN = -100


class Scale(torch.nn.Module):
    """A 'decoder layer' h -> w·h (w a scalar parameter)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))

    def forward(self, h, **kw):
        return (self.w * h,)  # a tuple, as older decoder layers return


class Toy(torch.nn.Module):
    """``model.model.layers`` over a fixed embedding table: the output of layer k is
    E[ids] · w_0 · … · w_k, computable by hand."""

    def __init__(self, table, ws):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed = torch.nn.Embedding.from_pretrained(torch.tensor(table, dtype=torch.float32))
        self.model.layers = torch.nn.ModuleList([Scale(w) for w in ws])
        self.calls = []

    def forward(self, input_ids=None, attention_mask=None):
        h = self.model.embed(input_ids)
        for i, layer in enumerate(self.model.layers):
            self.calls.append(i)
            h = layer(h)[0]
        return h


TABLE = [[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]]  # 3 tokens, hidden size 2


def toy_batch():
    return {"input_ids": torch.tensor([[0, 1, 2], [2, 1, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),  # the last token of row 2 is padding
            "labels": torch.tensor([[IGN, IGN, 2], [IGN, 1, IGN]]),
            "index": torch.tensor([0, 1])}


def by_hand(rows, target, positions):
    """mean over the given (b, t) positions of mean_d (rows[b][t][d] − target[d])²."""
    vals = [sum((rows[b][t][d] - target[d]) ** 2 for d in range(len(target))) / len(target) for b, t in positions]
    return sum(vals) / len(vals)


def test_forget_term_equals_hand_computation_all_tokens_and_answer_tokens():
    model = Toy(TABLE, [2.0, 3.0])
    b = toy_batch()
    rmu = RMU(layer=1, steering_coeff=2.0, seed=3, alpha=0.0)
    cu = rmu.control_vector(2).tolist()
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, generator=g)
    assert cu == pytest.approx((2.0 * u / u.norm()).tolist())  # c·u: uniform [0,1) entries, unit norm, seeded
    rows = [[[6.0 * x for x in TABLE[i]] for i in ids] for ids in b["input_ids"].tolist()]  # layer 1: E·2·3
    want_all = by_hand(rows, cu, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])  # every real token, padding out
    assert rmu.forget_term(model, b).item() == pytest.approx(want_all, rel=1e-6)
    # answer tokens: per-sequence mean, then the batch mean (one answer token per row here)
    ans = RMU(layer=1, steering_coeff=2.0, seed=3, alpha=0.0, tokens="answer")
    want_ans = (by_hand(rows, cu, [(0, 2)]) + by_hand(rows, cu, [(1, 1)])) / 2
    assert ans.forget_term(model, b).item() == pytest.approx(want_ans, rel=1e-6)
    # layer 0 reads E·2, and the forward stops there (layer 1 is not run)
    model.calls.clear()
    r0 = RMU(layer=0, steering_coeff=2.0, seed=3)
    rows0 = [[[2.0 * x for x in TABLE[i]] for i in ids] for ids in b["input_ids"].tolist()]
    assert r0.forget_term(model, b).item() == pytest.approx(
        by_hand(rows0, cu, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]), rel=1e-6)
    assert model.calls == [0]


def test_retain_term_equals_hand_computation_and_is_zero_at_the_reference():
    model = Toy(TABLE, [2.0, 3.0])
    ref = Reference(model)
    b = toy_batch()
    rmu = RMU(layer=1, alpha=5.0)
    assert rmu.retain_term(model, b, ref).item() == 0.0
    with torch.no_grad():
        model.model.layers[1].w.fill_(4.0)  # h_θ = 8E, h_ref = 6E
    rows = [[[8.0 * x for x in TABLE[i]] for i in ids] for ids in b["input_ids"].tolist()]
    refs = [[[6.0 * x for x in TABLE[i]] for i in ids] for ids in b["input_ids"].tolist()]
    pos = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    want = 5.0 * sum(sum((rows[bb][t][d] - refs[bb][t][d]) ** 2 for d in range(2)) / 2 for bb, t in pos) / len(pos)
    assert rmu.retain_term(model, b, ref).item() == pytest.approx(want, rel=1e-6)
    parts = rmu.parts(model, b, b, ref)
    assert set(parts) == {"forget", "retain"}
    assert rmu(model, b, b, ref).item() == pytest.approx((parts["forget"] + parts["retain"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs the frozen reference"):
        rmu.retain_term(model, b)


@pytest.fixture(scope="module")
def tiny():
    bench = SyntheticFacts(n_entities=20)
    return bench, tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer, seed=0)


def test_tiny_llama_hidden_states_are_the_layer_outputs(tiny):
    bench, model = tiny
    f = bench.encode_qa(bench.forget[:3])
    with torch.no_grad():
        out = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_hidden_states=True)
        h = hidden_at(model, f, 0)
    assert torch.allclose(h, out.hidden_states[1], atol=1e-6)  # hidden_states[k + 1]: the output of layer k


def test_gradient_flows_only_into_the_selected_down_proj(tiny):
    bench, base = tiny
    model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer, seed=0)
    rmu = RMU(layer=1, alpha=10.0)
    ref = Reference(model)
    assert rmu.default_params() == r"layers\.(0|1)\.mlp\.down_proj\."
    params = trainable(model, rmu.default_params())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    f, r = bench.encode_qa(bench.forget[:4]), bench.encode_qa(bench.retain[:4])
    rmu(model, f, r, ref).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in names)
    # with every weight trainable, nothing after layer ℓ (the final norm, the head) gets a gradient
    model2 = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer, seed=0)
    RMU(layer=0)(model2, f, r, Reference(model2)).backward()
    late = [n for n, p in model2.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
            and not n.startswith(("model.layers.0.", "model.embed_tokens"))]
    assert late == []


def test_layer_out_of_range_is_refused_naming_the_layer_count(tiny):
    bench, model = tiny
    opt = optimizers.make("adam", model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match=r"the model has 2 decoder layers \(0..1\); choose layer <= 1"):
        unlearn(model, RMU(layer=2), opt, bench, steps=1, progress=False, final_eval=False)
    with pytest.raises(Exception, match="the model has 2 decoder layers"):  # the config, before any model loads
        UnlearnConfig(objective="rmu", objective_kwargs={"layer": 5})
    with pytest.raises(Exception, match="layer must be an integer >= 0"):
        make_objective("rmu", layer=1.5)
    with pytest.raises(Exception, match="steering_coeff must be > 0"):
        make_objective("rmu", steering_coeff=0)


def test_config_default_params_and_user_pattern_wins():
    cfg = UnlearnConfig(objective="rmu", objective_kwargs={"layer": 1})
    assert cfg.params == r"layers\.(0|1)\.mlp\.down_proj\."
    assert UnlearnConfig(objective="rmu", objective_kwargs={"layer": 1}, params="mlp").params == "mlp"
    assert UnlearnConfig(objective="npo").params is None
    assert UnlearnConfig(**cfg.to_dict()) == cfg
    o = ObjectiveSpec.coerce({"name": "rmu", "layer": 1, "steering_coeff": 4.0})  # the study YAML form
    assert UnlearnConfig(**o.run_fields()).params == r"layers\.(0|1)\.mlp\.down_proj\."


def _forget_mse(model, rmu, bench):
    f = bench.encode_qa(bench.forget)
    with torch.no_grad():
        return rmu.forget_term(model, f).item()


@pytest.mark.parametrize("opt_name,kw,lr,steps,drop", [("adam", {}, 1e-2, 30, 0.9), ("adam+gru", {}, 1e-2, 30, 0.9),
                                                        ("sam", {}, 1e-2, 30, 0.9), ("zo-sgd", {"q": 4}, 1.0, 40, 0.95)])
def test_short_unlearn_moves_forget_states_toward_cu(tiny, opt_name, kw, lr, steps, drop):
    """Every grade moves h^ℓ(x_f) toward c·u: first order (Adam), GRU (retain-gradient rectified),
    SAM (parts()) and zeroth order (the loss closure only)."""
    bench, _ = tiny
    model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer, seed=0)
    rmu = RMU(layer=1, alpha=1.0, steering_coeff=6.5)
    ref = Reference(model)
    before = _forget_mse(model, rmu, bench)
    opt = optimizers.make(opt_name, trainable(model, rmu.default_params()), lr=lr, **kw)
    res = unlearn(model, rmu, opt, bench, steps=steps, eval_every=steps, batch_size=8,
                  reference=ref, progress=False, final_eval=False)
    assert res.stop_reason == "budget"
    after = _forget_mse(model, rmu, bench)
    assert after < drop * before, (opt_name, before, after)
    s = rmu.settings()
    assert s["control_vector"]["hidden_size"] == model.config.hidden_size and s["layer"] == 1


def test_reference_states_are_reused_within_a_step_and_recomputed_for_a_new_batch(tiny):
    bench, model = tiny
    rmu, ref = RMU(layer=1), Reference(model)
    r = bench.encode_qa(bench.retain[:4])
    calls = []
    h = ref.model.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            rmu.retain_term(model, r, ref)
            rmu.retain_term(model, r, ref)
            assert len(calls) == 1
            rmu.retain_term(model, bench.encode_qa(bench.retain[:4]), ref)  # new tensors: recomputed
            assert len(calls) == 2
    finally:
        h.remove()


def test_cli_unlearn_with_rmu(tmp_path, capsys):
    from optigrade.cli import main

    out = tmp_path / "rmu"
    code = main(["unlearn", "--objective", "rmu", "--objective-arg", "layer=1", "--objective-arg", "alpha=10",
                 "--optimizer", "adam", "--lr", "1e-3", "--steps", "2", "--target", "-1", "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["params"] == r"layers\.(0|1)\.mlp\.down_proj\."
    assert man["objective"]["name"] == "rmu" and man["objective"]["layer"] == 1
    assert man["objective"]["control_vector"]["seed"] == 0
    assert math.isfinite(man["metrics_after"]["forget_acc"])
