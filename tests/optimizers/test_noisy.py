"""Control C3 (FO + noise during training): SGLD and noisy Adam.

References: torch's SGD / Adam (bit for bit at T = 0 / σ = 0), the noise vector rebuilt
independently from its documented stream (a CPU Generator seeded mix_seed(seed, t, j)), χ²
bounds on the sample variance of the displacement, and the closed forms of the matching helpers.
"""

import copy
import math

import pytest
import torch
from scipy.stats import chi2

from optigrade import optimizers
from optigrade._directions import mix_seed
from optigrade.optimizers import NoisyAdam, SGLD, noise_like, sigma_for_norm, temperature_for_norm
from optigrade.optimizers.noisy import FAMILY

from .conftest import TinyLM

NAMES = ("sgld", "noisy-adam")
P = 1e-6  # two-sided tail probability of each χ² bound


def _xi(shape, seed, step, j, dtype=torch.float64):
    """ξ of tensor j at step t, rebuilt from the documented stream (not through noise_like)."""
    gen = torch.Generator().manual_seed(mix_seed(seed, step, j))
    n = math.prod(shape)
    return torch.randn(n, generator=gen, dtype=torch.float32).to(dtype).view(shape)


def _chi2_ok(x: torch.Tensor, var: float) -> bool:
    """Σx²/var ~ χ²_n for x ~ N(0, var·I) (mean known to be 0): inside the central 1 − 2P."""
    n = x.numel()
    stat = float((x.double() ** 2).sum()) / var
    return chi2.ppf(P, n) <= stat <= chi2.ppf(1 - P, n)


def _flat_minimum(d=20_000, seed=0):
    """L = ½ Σ a_i (θ_i − c_i)² at θ = c in float64: the gradient is exactly 0."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(d, generator=g, dtype=torch.float64) + 0.5
    c = torch.randn(d, generator=g, dtype=torch.float64)
    w = torch.nn.Parameter(c.clone())
    return w, c, optimizers.Closure(lambda: 0.5 * (a * (w - c) ** 2).sum(), [w])


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _weights(m):
    return [p.detach().clone() for p in m.params()]


# ---------------------------------------------------------------- no noise = the base optimizer


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=3e-3, weight_decay=0.1)])
def test_zero_temperature_is_torch_sgd_bit_for_bit(kw):
    a, b = TinyLM(), TinyLM()
    oa = SGLD(a.params(), temperature=0.0, seed=3, **kw)
    ob = torch.optim.SGD(b.params(), **kw)
    ca, cb = a.closure(), b.closure()
    for _ in range(4):
        la, lb = oa.step(ca), ob.step(cb)
        assert float(la) == float(lb)
    assert _same(_weights(a), _weights(b))
    assert oa.noise_step == 4 and oa.last_noise_std == [0.0]


@pytest.mark.parametrize("kw", [dict(), dict(relative=True), dict(amsgrad=True, weight_decay=0.01)])
def test_zero_sigma_is_torch_adam_bit_for_bit(kw):
    a, b = TinyLM(), TinyLM()
    oa = NoisyAdam(a.params(), lr=1e-3, sigma=0.0, **kw)
    ob = torch.optim.Adam(b.params(), lr=1e-3, **{k: v for k, v in kw.items() if k != "relative"})
    ca, cb = a.closure(), b.closure()
    for _ in range(4):
        oa.step(ca), ob.step(cb)
    assert _same(_weights(a), _weights(b))


# ---------------------------------------------------------------- the injected noise


@pytest.mark.parametrize("name,kw,var", [("sgld", dict(lr=0.02, temperature=0.5), 2 * 0.02 * 0.5),
                                         ("noisy-adam", dict(lr=1e-3, sigma=0.03), 0.03 ** 2)])
def test_one_step_at_zero_gradient_adds_the_documented_noise(name, kw, var):
    w, c, closure = _flat_minimum()
    opt = optimizers.make(name, [w], seed=11, **kw)
    opt.step(closure)
    x = (w.detach() - c)
    # the displacement is s·ξ with ξ from the documented stream ...
    expected = math.sqrt(var) * _xi(tuple(w.shape), 11, 0, 0)
    assert torch.allclose(x, expected, rtol=0, atol=1e-15)
    # ... and its sample variance matches s² (χ²_d bound; d = 20 000, so ±4% here)
    assert _chi2_ok(x, var), float(x.var())
    assert abs(float(x.mean())) < 5 * math.sqrt(var / x.numel())
    assert opt.last_noise_std == [pytest.approx(math.sqrt(var), rel=1e-15)]


def test_sgld_noise_std_follows_the_scheduled_lr():
    w = torch.nn.Parameter(torch.zeros(10_000, dtype=torch.float64))
    opt = SGLD([w], lr=0.1, temperature=0.2, seed=1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.25 ** t)
    for step, lr in enumerate((0.1, 0.025)):
        before = w.detach().clone()
        w.grad = torch.zeros_like(w)
        opt.step(); sched.step()
        s = math.sqrt(2 * lr * 0.2)
        assert opt.last_noise_std == [pytest.approx(s, rel=1e-15)]
        assert torch.allclose(w.detach() - before, s * _xi((10_000,), 1, step, 0), rtol=0, atol=1e-15)


def test_relative_sigma_scales_with_the_steps_rms_update():
    """noisy-adam(relative) − Adam after one step = σ·rms(u)·ξ, u the Adam update (float64)."""
    g = torch.Generator().manual_seed(2)
    d = 5_000
    coef = torch.randn(d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64)
    w0 = torch.randn(d, generator=g, dtype=torch.float64)
    wn, wa = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    on = NoisyAdam([wn], lr=1e-2, sigma=0.5, relative=True, seed=4)
    oa = torch.optim.Adam([wa], lr=1e-2)
    for w, o in ((wn, on), (wa, oa)):
        w.grad = coef.clone()  # a linear loss: the same gradient for both
        o.step()
    u = wa.detach() - w0
    rms = float(u.pow(2).mean().sqrt())
    assert 0.5e-2 < rms < 1e-2  # Adam's first step: |u_i| = η|g|/(|g|+ε) ≈ η
    noise = wn.detach() - wa.detach()
    assert torch.allclose(noise, 0.5 * rms * _xi((d,), 4, 0, 0), rtol=0, atol=1e-15)
    assert on.last_noise_std == [pytest.approx(0.5 * rms, rel=1e-12)]
    assert _chi2_ok(noise, (0.5 * rms) ** 2)


def test_only_tensors_with_a_gradient_are_noised_and_each_has_its_own_stream():
    a = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = NoisyAdam([a, frozen, b], sigma=1.0, seed=7)
    for step in range(2):
        before = [p.detach().clone() for p in (a, frozen, b)]
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)  # frozen.grad stays None
        opt.step()
        da, dfrozen, db = (p.detach() - q for p, q in zip((a, frozen, b), before))
        assert torch.equal(da, _xi((3, 4), 7, step, 0)) and torch.equal(db, _xi((3, 4), 7, step, 2))
        assert not dfrozen.any()
    assert not torch.equal(da, db)


def test_noise_does_not_depend_on_the_dtype_and_leaves_the_global_rng():
    m = TinyLM()  # (its init seeds the global RNG: the test's own business, before the snapshot)
    state = torch.get_rng_state()
    z32 = noise_like(torch.zeros(1000), 9)
    z64 = noise_like(torch.zeros(1000, dtype=torch.float64), 9)
    assert torch.equal(z32.double(), z64) and torch.equal(state, torch.get_rng_state())
    for name in NAMES:
        opt = optimizers.make(name, m.params(), lr=1e-3)
        for _ in range(2):
            opt.step(m.closure())
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_the_cpu_numbers():
    out = []
    for dev in ("cpu", "cuda"):
        w = torch.nn.Parameter(torch.zeros(4096, device=dev))
        opt = SGLD([w], lr=0.5, temperature=1.0, seed=5)  # √(2·0.5·1) = 1: θ = ξ
        w.grad = torch.zeros_like(w)
        opt.step()
        out.append(w.detach().cpu())
    assert torch.equal(*out)


# ---------------------------------------------------------------- seeds and state


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trajectory_other_seed_other(name):
    def run(seed):
        m = TinyLM()
        kw = optimizers.with_seed(name, {"lr": 1e-3}, seed)  # how a study seeds every run
        opt = optimizers.make(name, m.params(), **kw)
        c = m.closure()
        for _ in range(3):
            opt.step(c)
        return _weights(m)

    assert optimizers.with_seed(name, {"lr": 1e-3}, 1) == {"lr": 1e-3, "seed": 1}
    assert optimizers.with_seed(name, {"seed": 9}, 1) == {"seed": 9}
    r0 = run(0)
    assert _same(r0, run(0))
    assert not any(torch.equal(x, y) for x, y in zip(r0, run(1)))


@pytest.mark.parametrize("name,kw", [("sgld", dict(temperature=1e-3, weight_decay=0.05)),
                                     ("noisy-adam", dict(sigma=0.1, relative=True, weight_decay=0.01))])
def test_state_dict_round_trip_continues_the_stream(name, kw):
    a = TinyLM()
    opt = optimizers.make(name, a.params(), lr=1e-3, seed=21, **kw)
    c = a.closure()
    for _ in range(2):
        opt.step(c)
    sd, mid = copy.deepcopy(opt.state_dict()), _weights(a)
    for _ in range(3):
        opt.step(c)
    b = TinyLM()
    with torch.no_grad():
        for p, s in zip(b.params(), mid):
            p.copy_(s)
    opt_b = optimizers.make(name, b.params(), lr=1e-3, seed=0, **kw)  # seed and step come from sd
    opt_b.load_state_dict(sd)
    assert opt_b.noise_step == 2
    cb = b.closure()
    for _ in range(3):
        opt_b.step(cb)
    assert _same(_weights(a), _weights(b))


@pytest.mark.parametrize("name", NAMES)
def test_step_hooks_run_once_per_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = optimizers.make(name, [w], lr=1e-3)
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(float(w.detach()[0])))
    for _ in range(3):
        w.grad = torch.ones_like(w)
        opt.step()
    assert len(calls) == 3 and calls[-1] == float(w.detach()[0])  # after the noise


# ---------------------------------------------------------------- validation


BAD = [
    ("sgld", dict(temperature=-1.0), ValueError, "temperature must be >= 0, got -1.0; the SGLD temperature"),
    ("sgld", dict(temperature=float("inf")), ValueError, "temperature must be >= 0, got inf"),
    ("sgld", dict(lr=0.0), ValueError, "lr must be > 0, got 0.0"),
    ("sgld", dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    ("sgld", dict(seed=-1), ValueError, "seed must be an integer in \\[0, 2\\*\\*63\\), got -1"),
    ("sgld", dict(seed=1.5), ValueError, "seed must be an integer"),
    ("sgld", dict(momentum=0.9), TypeError, "momentum"),
    ("noisy-adam", dict(sigma=-1e-3), ValueError, "sigma must be >= 0, got -0.001; the std of the Gaussian"),
    ("noisy-adam", dict(sigma="1e-3"), ValueError, "sigma must be >= 0, got '1e-3'"),
    ("noisy-adam", dict(relative="yes"), ValueError, "relative must be True or False, got 'yes'"),
    ("noisy-adam", dict(relative=1), ValueError, "relative must be True or False, got 1"),
    ("noisy-adam", dict(betas=(0.9, 1.0)), ValueError, "beta2 must be in \\[0, 1\\), got 1.0"),
    ("noisy-adam", dict(eps=0.0), ValueError, "eps must be > 0"),
    ("noisy-adam", dict(seed=2 ** 63), ValueError, "seed must be an integer in"),
    ("noisy-adam", dict(temperature=1.0), TypeError, "temperature"),
]


@pytest.mark.parametrize("name,kw,err,match", BAD, ids=[f"{n}-{list(k)[0]}-{i}" for i, (n, k, _, _) in enumerate(BAD)])
def test_bad_kwargs_refused_before_any_work(name, kw, err, match):
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(err, match=match) as e:
        optimizers.make(name, [w], **{"lr": 1e-3, **kw})
    if err is ValueError:
        assert "got" in str(e.value) and "try" in str(e.value), str(e.value)
    assert torch.equal(w.detach(), torch.ones(3))


def test_bad_param_group_value_refused():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="param_groups\\[1\\] temperature must be >= 0, got -2.0"):
        SGLD([{"params": [a]}, {"params": [b], "temperature": -2.0}], lr=1e-3)
    with pytest.raises(ValueError, match="param_groups\\[0\\] sigma must be >= 0"):
        NoisyAdam([{"params": [a], "sigma": float("nan")}, {"params": [b]}], lr=1e-3)


def test_per_group_noise():
    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    opt = SGLD([{"params": [a]}, {"params": [b], "temperature": 0.0, "lr": 0.5}], lr=0.5, temperature=1.0, seed=2)
    a.grad, b.grad = torch.zeros(4), torch.zeros(4)
    opt.step()
    assert opt.last_noise_std == [1.0, 0.0]
    assert torch.equal(a.detach(), _xi((4,), 2, 0, 0, torch.float32)) and not b.detach().any()


# ---------------------------------------------------------------- registry, CLI, study YAML


def test_registered_with_grade_one_and_their_own_family(capsys):
    infos = {i.name: i for i in optimizers.available()}
    for name, cls in (("sgld", SGLD), ("noisy-adam", NoisyAdam)):
        i = optimizers.info(name)
        assert infos[name] == i == (name, 1.0, FAMILY) and i.cls is cls
        assert i.seeded and i.seed_in is None and not i.zeroth_order and not i.requires_closure
        assert optimizers.make(name, [torch.nn.Parameter(torch.ones(2))]).grade == 1.0
    assert FAMILY == "first-order+noise" and FAMILY not in {i.family for i in infos.values()
                                                              if i.name not in NAMES}
    assert not any(n.startswith(NAMES) for n in (i.name for i in optimizers.available(gru=True))
                   if n.endswith("+gru"))
    grades = [i.grade for i in optimizers.available()]
    assert grades == sorted(grades)  # the by-grade order reports rely on

    from optigrade.cli import main
    assert main(["optimizers"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows["sgld"] == ["1.0", FAMILY] and rows["noisy-adam"] == ["1.0", FAMILY]


def test_study_yaml_entry_validates(tmp_path):
    from optigrade.analysis.config import StudyConfig, load_config

    path = tmp_path / "c3.yaml"
    path.write_text("name: c3\nobjectives: [graddiff]\noptimizers:\n"
                    "  - {name: noisy-adam, lr: 1.0e-3, steps: 50, optimizer_kwargs: {sigma: 1.0e-3}}\n"
                    "  - {name: sgld, lr: 1.0e-3, steps: 50, optimizer_kwargs: {temperature: 1.0e-4}}\n")
    cfg = load_config(path)
    assert [(o.name, o.optimizer_kwargs) for o in cfg.optimizers] == [
        ("noisy-adam", {"sigma": 1e-3}), ("sgld", {"temperature": 1e-4})]
    with pytest.raises(ValueError, match="optimizers\\[0\\] \\(noisy-adam\\): optimizer 'noisy-adam': sigma must "
                                         "be >= 0, got -0.001"):
        StudyConfig(optimizers=[{"name": "noisy-adam", "lr": 1e-3, "steps": 50,
                                 "optimizer_kwargs": {"sigma": -1e-3}}])


# ---------------------------------------------------------------- matching ‖Δ‖


def test_matching_helpers_closed_forms_and_a_zero_gradient_walk():
    assert temperature_for_norm(3.0, lr=0.01, steps=10, numel=50) == pytest.approx(9 / (2 * 0.01 * 10 * 50))
    assert sigma_for_norm(5.0, steps=4, numel=25, fo_norm=4.0) == pytest.approx(3 / 10)
    for bad, match in ((dict(norm=1.0, fo_norm=2.0), "fo_norm must be <= norm"),
                       (dict(norm=-1.0), "norm must be >= 0"), (dict(norm=1.0, steps=0), "steps must be an integer")):
        kw = {"steps": 10, **bad}
        with pytest.raises(ValueError, match=match):
            sigma_for_norm(kw.pop("norm"), numel=5, **kw)
    with pytest.raises(ValueError, match="lr must be > 0"):
        temperature_for_norm(1.0, lr=0.0, steps=1, numel=1)
    # N zero-gradient SGLD steps: Δ_i ~ N(0, 2ηTN), so ‖Δ‖²/(2ηTN) ~ χ²_d, E‖Δ‖² = target²
    w, c, closure = _flat_minimum(d=5_000, seed=3)
    t = temperature_for_norm(2.0, lr=1e-2, steps=20, numel=w.numel())
    opt = SGLD([w], lr=1e-2, temperature=t, seed=0)
    for _ in range(20):
        w.grad = torch.zeros_like(w)  # keep the gradient exactly 0 off the minimum too
        opt.step()
    delta = w.detach() - c
    assert _chi2_ok(delta, 2 * 1e-2 * t * 20)
    assert float(delta.norm()) == pytest.approx(2.0, rel=0.05)


# ---------------------------------------------------------------- a tiny unlearning run


def _unlearn_delta(name, **kw):
    from optigrade.unlearning import SyntheticFacts, TinyConfig, make_objective, tiny_llama, unlearn

    bench = _unlearn_delta.bench = getattr(_unlearn_delta, "bench", None) or SyntheticFacts(n_entities=40)
    cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = tiny_llama(len(bench.tokenizer), cfg, seed=0, tokenizer=bench.tokenizer)
    theta0 = [p.detach().clone() for p in model.parameters()]
    opt = optimizers.make(name, model.parameters(), lr=1e-3, seed=0, **kw)
    res = unlearn(model, make_objective("graddiff"), opt, bench, steps=6, eval_every=6, eval_retain=4,
                  progress=False, final_eval=False)
    assert res.steps == 6 and res.stop_reason == "budget"
    d = sum(p.numel() for p in theta0)
    return math.sqrt(sum(float(((p.detach() - q) ** 2).sum()) for p, q in zip(model.parameters(), theta0))), d


@pytest.mark.parametrize("name,key,values", [("sgld", "temperature", [0.0, 1e-4, 1e-3, 1e-2]),
                                             ("noisy-adam", "sigma", [0.0, 1e-3, 3e-3, 1e-2])])
def test_final_displacement_grows_with_the_noise(name, key, values):
    norms, d = zip(*[_unlearn_delta(name, **{key: v}) for v in values])
    assert all(a < b for a, b in zip(norms, norms[1:])), norms
    # the matching helpers' model: ‖Δ‖² ≈ ‖Δ_FO‖² + E‖noise walk‖² (6 steps, d weights)
    for v, n in zip(values[1:], norms[1:]):
        walk2 = (2 * 1e-3 * v if name == "sgld" else v * v) * 6 * d[0]
        assert n == pytest.approx(math.sqrt(norms[0] ** 2 + walk2), rel=0.05), (v, n, norms[0])
