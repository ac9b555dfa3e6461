"""In-place perturbations: bit-exact restores in exact mode; drift measured in fp32 and bf16."""

import pytest
import torch

from optigrade import optimizers
from optigrade.optimizers import measure_drift, perturbed, zo_estimate
from optigrade._directions import mix_seed
from conftest import TinyLM


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
