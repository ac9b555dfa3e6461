"""In-place perturbations: bit-exact restores in exact mode; drift measured in fp32 and bf16."""

import pytest
import torch

from optigrade import optimizers
from optigrade.optimizers import measure_drift, perturbed, zo_estimate
from optigrade._directions import mix_seed
from .conftest import TinyLM


def _snap(params):
    return [p.detach().clone() for p in params]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_mode_is_bit_identical(dtype):
    m = TinyLM(dtype=dtype)
    params = m.params()
    before = _snap(params)
    est = zo_estimate(params, m.closure(), [1, 2, 3], mu=1e-3, exact=True)
    assert _same(before, params)
    with perturbed(params, seed=9, mu=1e-2, dist="rademacher", exact=True):
        assert not _same(before, params)
    assert _same(before, params)
    assert est.n_evals == 6


def test_drift_fp32_and_bf16_is_measured():
    m32, m16 = TinyLM(), TinyLM(dtype=torch.bfloat16)
    before = _snap(m16.params())
    r32 = measure_drift(m32.params(), cycles=20, mu=1e-3)
    r16 = measure_drift(m16.params(), cycles=20, mu=1e-3)
    e16 = measure_drift(m16.params(), cycles=20, mu=1e-3, exact=True)
    print("\nfp32:", r32, "\nbf16:", r16, "\nbf16 exact:", e16)
    assert _same(before, m16.params())  # measuring leaves the weights untouched
    assert r32.dtype == "float32" and r16.dtype == "bfloat16"
    assert r32.rel_l2 < 1e-5  # fp32 round trips drift at rounding level
    assert r16.frac_changed > 0.1 and r16.rel_l2 > 100 * r32.rel_l2  # bf16 does not restore
    assert e16.max_abs == 0 and e16.frac_changed == 0  # exact mode does


def test_bf16_arithmetic_round_trip_is_not_exact():
    m = TinyLM(dtype=torch.bfloat16)
    before = _snap(m.params())
    zo_estimate(m.params(), m.closure(), [mix_seed(0, 1)], mu=1e-3, exact=False)
    assert not _same(before, m.params())


@pytest.mark.parametrize("exact", [True, False])
def test_restores_on_exception(exact):
    w = torch.nn.Parameter(torch.randn(100, dtype=torch.float64))
    before = w.detach().clone()
    calls = []

    def loss():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return (w ** 2).sum()

    with pytest.raises(RuntimeError, match="boom"):
        zo_estimate([w], loss, [1], mu=1e-2, exact=exact)
    assert torch.allclose(w.detach(), before, atol=1e-14, rtol=0)
    with pytest.raises(KeyError):
        with perturbed([w], seed=1, mu=0.1, exact=exact):
            raise KeyError("x")
    assert torch.allclose(w.detach(), before, atol=1e-14, rtol=0)


def test_zo_optimizer_exact_mode_in_bf16_makes_progress():
    m = TinyLM(dtype=torch.bfloat16)
    opt = optimizers.make("zo-sgd", m.params(), lr=1e-2, exact=True)
    l0 = m.eval_loss()
    for _ in range(5):
        opt.step(m.closure())
    assert m.eval_loss() < l0


# ---------------------------------------------------------------- optigrade._weights, the one home


from optigrade import _weights as W
from optigrade._directions import Seeded


def test_every_public_name_has_a_runnable_example():
    import inspect
    missing = [n for n in optimizers.__all__ if ">>>" not in (inspect.getdoc(getattr(optimizers, n)) or "")]
    assert not missing, missing


@pytest.mark.parametrize("exact", [True, False])
def test_tensor_direction_on_a_model_restores(exact):
    m = TinyLM()
    params = list(m.model.parameters())
    before = _snap(params)
    deltas = [torch.randn_like(p) for p in params]
    with W.perturbed(m.model, deltas, 1e-2, exact=exact) as s:
        assert s == 1e-2
        assert all(torch.allclose(p, b + 1e-2 * d) for p, b, d in zip(params, before, deltas))
    if exact:
        assert _same(before, params)
    else:
        assert all(torch.allclose(p, b, atol=1e-6) for p, b in zip(params, before))


def test_seeded_direction_equals_its_materialized_tensors():
    a, b = torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)
    z = Seeded(11, "rademacher")
    with W.perturbed([a], z, 0.5, exact=True):
        with W.perturbed([b], z.tensors([b]), 0.5, exact=True):
            assert torch.equal(a, b) and set(a.abs().unique().tolist()) == {0.5}


def test_seed_mu_form_matches_the_old_optimizers_perturbed():
    # the MeZO form: mu along the unit direction; the sphere's yielded scale is mu/‖z‖
    w = torch.zeros(50, dtype=torch.float64)
    with W.perturbed([w], seed=3, mu=0.2, dist="sphere", exact=True) as s:
        assert w.norm().item() == pytest.approx(0.2)
        assert s == pytest.approx(0.2 / Seeded(3, "sphere").tensors([w])[0].norm().item())


def test_moving_computes_each_point_from_the_origin_and_restores_on_errors():
    w = torch.tensor([1.0, 2.0])
    d1, d2 = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]
    with pytest.raises(RuntimeError):
        with W.moving([w], [d1, d2]) as move:
            move(1.0, 0.0); move(0.0, 3.0)
            assert w.tolist() == [1.0, 5.0]  # not [2.0, 5.0]: fresh from θ0
            raise RuntimeError
    assert w.tolist() == [1.0, 2.0]
    with W.moving([w], [d1], origin=[torch.zeros(2)]) as move:
        move(2.0)
        assert w.tolist() == [2.0, 0.0]
        with pytest.raises(ValueError, match="move needs 1 coefficients, got 2"):
            move(1.0, 1.0)
    assert w.tolist() == [1.0, 2.0]


def test_eval_mode_restores_every_flag_even_on_errors():
    net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Sequential(torch.nn.Linear(1, 1)))
    net[1].eval()
    flags = [m.training for m in net.modules()]
    with pytest.raises(KeyError):
        with W.eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise KeyError
    assert [m.training for m in net.modules()] == flags
    with W.eval_mode(None):
        pass


def test_snapshot_restore_is_bit_exact_in_bf16():
    w = torch.randn(100).to(torch.bfloat16)
    s = W.snapshot([w])
    W.perturb_([w], Seeded(1), 1e-3)
    W.perturb_([w], Seeded(1), -1e-3)
    W.restore([w], s)
    assert torch.equal(w, s[0])


@pytest.mark.parametrize("bad,err,match", [
    (dict(direction=3), TypeError, "direction must be a list of tensors"),
    (dict(direction=[torch.ones(2)]), ValueError, "direction has 1 tensors but there are 2"),
    (dict(direction=[torch.ones(2), torch.ones(3)]), ValueError, r"direction\[1\] has shape \(3,\)"),
    (dict(direction=Seeded(0, "cauchy")), ValueError, "dist must be one of"),
    (dict(direction=None), TypeError, "perturbed needs a direction"),
    (dict(seed=0, mu=-1.0), ValueError, "mu must be > 0"),
    (dict(direction=[torch.ones(2), torch.ones(2)], scale="big"), TypeError, "scale must be a number"),
])
def test_bad_arguments_are_refused_before_moving(bad, err, match):
    params = [torch.zeros(2), torch.zeros(2)]
    with pytest.raises(err, match=match):
        with W.perturbed(params, **bad):
            pass
    assert all(p.abs().sum() == 0 for p in params)
    with pytest.raises(TypeError, match="wrap it in a list"):
        W.as_params(torch.zeros(2))
