"""GRU's projection against hand-computed cases and a property test; the wrapper's EMA."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optigrade import optimizers
from optigrade.optimizers import GRU, gru_project


def T(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_hand_computed_conflict():
    g, info = gru_project([T(1.0, -1.0)], [T(0.0, 1.0)])
    assert g[0].tolist() == [1.0, 0.0] and info["projected"] and info["dot"] == -1.0
    g, _ = gru_project([T(3.0, -1.0)], [T(1.0, 1.0)])  # dot 2 ≥ 0: unchanged
    assert g[0].tolist() == [3.0, -1.0]
    g, _ = gru_project([T(-2.0, 0.0)], [T(1.0, 1.0)])  # dot −2, ‖r‖² 2: g − (−1)·r
    assert g[0].tolist() == [-1.0, 1.0]


def test_one_global_dot_product_not_per_layer():
    # layer 1 agrees (+1), layer 2 conflicts (−3): global dot −2, ‖r‖² 2, coefficient −1
    g, info = gru_project([T(1.0), T(-3.0)], [T(1.0), T(1.0)])
    assert info["dot"] == -2.0
    assert [x.item() for x in g] == [2.0, -2.0]  # per layer would have given [1, 0]


def test_float64_inside_dtype_preserved():
    gu = [torch.tensor([1e4, -1e-4], dtype=torch.float32)]
    gr = [torch.tensor([-1.0, 1e8], dtype=torch.float32)]
    g, _ = gru_project(gu, gr)
    assert g[0].dtype == torch.float32
    ref, _ = gru_project([x.double() for x in gu], [x.double() for x in gr])
    assert torch.allclose(g[0].double(), ref[0], rtol=1e-6)


def test_cos_clip():
    gu, gr = [T(-1.0, 0.0)], [T(1.0, 0.0)]  # cos = −1
    full, _ = gru_project(gu, gr)
    assert full[0].tolist() == [0.0, 0.0]
    clipped, info = gru_project(gu, gr, cos_clip=-0.5)
    assert info["cos"] == -1.0 and clipped[0].tolist() == [-0.5, 0.0]
    mild, _ = gru_project([T(1.0, -1.0)], [T(0.0, 1.0)], cos_clip=-0.9)  # cos −0.707 > −0.9
    assert mild[0].tolist() == [1.0, 0.0]


vec = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(vec, vec, st.integers(1, 3))
def test_property_no_negative_component_and_unchanged_without_conflict(a, b, split):
    n = min(len(a), len(b))
    u, r = torch.tensor(a[:n], dtype=torch.float64), torch.tensor(b[:n], dtype=torch.float64)
    k = min(split, n - 1)
    gu, gr = [u[:k], u[k:]], [r[:k], r[k:]]
    g, info = gru_project(gu, gr)
    out = torch.cat(g)
    dot = float(u @ r)
    scale = float(u.norm() * r.norm()) + 1e-300
    assert float(out @ r) >= -1e-9 * scale
    if dot >= 0 or float(r @ r) == 0:
        assert torch.equal(out, u)
    else:
        # the closest such vector: moved by exactly |⟨u, r⟩| / ‖r‖ along r
        assert float((out - u).norm()) == pytest.approx(abs(dot) / float(r.norm()), rel=1e-9, abs=1e-12)
        assert float(out @ r) == pytest.approx(0.0, abs=1e-9 * scale)


def _conflict_problem():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    retain_grads = [torch.tensor([0.0, 1.0], dtype=torch.float64),
                    torch.tensor([1.0, 1.0], dtype=torch.float64)]
    calls = {"n": 0}

    def retain():
        g = retain_grads[min(calls["n"], 1)]
        calls["n"] += 1
        return (g * w).sum()

    full = lambda: (torch.tensor([-1.0, -1.0], dtype=torch.float64) * w).sum() * -1 - 2 * w[1]
    return w, optimizers.Closure(full, [w], retain_loss_fn=retain)


def test_wrapper_ema_and_rectified_step():
    w, c = _conflict_problem()  # ∇L = [1, −1]
    opt = GRU([w], base="sgd", gamma=0.8, lr=1.0)
    w0 = w.detach().clone()
    opt.step(c)  # ĝ_r = [0, 1] (first g_r), g̃ = [1, 0]
    assert torch.allclose(w.detach(), w0 - torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert opt.last_info["projected"]
    opt.step(c)  # ĝ_r = 0.8·[1, 1] + 0.2·[0, 1] = [0.8, 1.0]
    assert torch.allclose(opt.state[w]["retain_ema"], torch.tensor([0.8, 1.0], dtype=torch.float64))
    assert opt.last_info["dot"] == pytest.approx(0.8 - 1.0)


def test_rectify_forget_adds_retain_after_projection():
    w = torch.nn.Parameter(torch.tensor([0.0, 0.0], dtype=torch.float64))
    f = lambda: (torch.tensor([1.0, -1.0], dtype=torch.float64) * w).sum()
    r = lambda: (torch.tensor([0.0, 1.0], dtype=torch.float64) * w).sum()
    c = optimizers.Closure(lambda: f() + r(), [w], forget_fn=f, retain_fn=r)
    opt = GRU([w], base="sgd", lr=1.0, rectify="forget")
    opt.step(c)  # g_u = [1, −1] → [1, 0]; + ∇L_r = [0, 1] → [1, 1]
    assert w.detach().tolist() == [-1.0, -1.0]


def test_gru_needs_retain_loss():
    w = torch.nn.Parameter(torch.ones(2))
    opt = optimizers.make("adam+gru", [w], lr=1e-3)
    with pytest.raises(ValueError, match="retain_loss"):
        opt.step(optimizers.Closure(lambda: (w ** 2).sum(), [w]))


def test_gru_refuses_zeroth_order_base():
    with pytest.raises(ValueError, match="GRU cannot wrap"):
        GRU([torch.nn.Parameter(torch.ones(2))], base="zo-sgd", lr=1e-3)
