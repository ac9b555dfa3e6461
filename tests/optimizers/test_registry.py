import pytest
import torch

from optigrade import optimizers
from optigrade.optimizers import available, make, register

REQUIRED = ["zo-sgd", "zo-sgd-momentum", "zo-adam", "adazo", "zo-sign", "zo-conservative",
            "forward-grad", "signsgd", "signum", "signadam", "lion", "sgd", "adam", "adamw",
            "fo-rs", "sam", "sophia-h", "sophia-g", "soul", "adahessian", "hybrid"]


def _w():
    return [torch.nn.Parameter(torch.ones(4))]


def test_required_names_registered():
    names = {i.name for i in available()}
    assert set(REQUIRED) <= names
    gru = {i.name for i in available(gru=True)} - names
    assert {"adam+gru", "signadam+gru", "sophia-h+gru", "sgd+gru"} <= gru
    assert not any(n.startswith(("zo-", "hybrid", "sam", "fo-rs")) for n in
                   (g[:-4] for g in gru))


@pytest.mark.parametrize("info", available(gru=True), ids=lambda i: i.name)
def test_attributes_and_defaults(info):
    opt = make(info.name, _w(), lr=1e-3)
    assert isinstance(opt, torch.optim.Optimizer)
    for attr in ("grade", "family", "requires_closure", "needs_hvp"):
        assert hasattr(opt, attr), (info.name, attr)
    assert opt.grade == info.grade
    assert opt.grade in (0.0, 0.5, 1.0, 2.0)
    name, grade, family = info  # a plain 3-tuple too
    assert isinstance(family, str)


def test_grades_ordered():
    g = {i.name: i.grade for i in available()}
    assert g["zo-sgd"] < g["signsgd"] < g["adam"] < g["sophia-h"]
    assert g["hybrid"] == 0.5


def test_capabilities():
    assert make("sophia-h", _w()).needs_hvp and make("adahessian", _w()).needs_hvp
    assert not make("sophia-g", _w()).needs_hvp
    assert make("zo-sgd", _w()).requires_closure and not make("adam", _w()).requires_closure
    assert make("adam+gru", _w()).grade == 1.0 and make("soul+gru", _w()).grade == 2.0


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown optimizer 'nope'.*zo-sgd.*adam"):
        make("nope", _w())
    with pytest.raises(ValueError, match="GRU wraps one of"):
        make("zo-sgd+gru", _w())


def test_names_case_insensitive_and_presets_overridable():
    assert make("ZO-SGD-Momentum", _w()).param_groups[0]["momentum"] == 0.9
    assert make("zo-sgd-momentum", _w(), momentum=0.5).param_groups[0]["momentum"] == 0.5


def test_gru_kwargs_split():
    opt = make("adam+gru", _w(), lr=1e-2, gamma=0.6, betas=(0.8, 0.9))
    assert opt.defaults["gamma"] == 0.6
    assert opt.inner["base"].param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.inner["base"].param_groups[0]["lr"] == 1e-2


def test_register_custom():
    @register("my-sgd", grade=1.0, family="test")
    class MySGD(torch.optim.SGD):
        pass

    try:
        assert ("my-sgd", 1.0, "test") in available()
        assert isinstance(make("my-sgd", _w(), lr=0.1), MySGD)
    finally:
        from optigrade.optimizers import registry
        registry.OPTIMIZERS.unregister("my-sgd")


def test_register_rejects_gru_suffix():
    with pytest.raises(ValueError, match="'\\+gru'"):
        register("x+gru", torch.optim.SGD, grade=1, family="x")


def test_public_api():
    for n in optimizers.__all__:
        assert hasattr(optimizers, n), n
    assert optimizers.Closure is optimizers.closure.Closure


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "adazo", "signum", "adam", "hybrid", "sophia-h"])
def test_unknown_keyword_is_an_error(name):
    with pytest.raises(TypeError):
        make(name, _w(), lr=1e-3, mommentum=0.9)
