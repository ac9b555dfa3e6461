import copy
import inspect

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


# ---------------------------------------------------------------- declared capabilities


@pytest.mark.parametrize("name", [i.name for i in available(gru=True)])
def test_capabilities_declared_not_defaulted(name):
    from optigrade.optimizers.registry import CAPABILITIES
    cls = optimizers.info(name).cls
    for attr in ("grade", "family", *CAPABILITIES):
        assert any(attr in vars(k) for k in cls.__mro__), (name, attr)


def test_info_matches_built_instances():
    for i in available(gru=True):
        opt = make(i.name, _w(), lr=1e-3)
        assert optimizers.info(i.name) == i
        assert (i.requires_closure, i.needs_hvp) == (opt.requires_closure, opt.needs_hvp), i.name
        assert i.cls is type(opt)
    assert optimizers.info("zo-sgd").zeroth_order and optimizers.info("forward-grad").zeroth_order
    assert not optimizers.info("hybrid").zeroth_order and optimizers.info("hybrid").seed_in == "zo_hparams"
    assert optimizers.info("sophia-h+gru").needs_hvp and optimizers.info("adahessian+gru").seeded
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        optimizers.info("nope")


def _sniffed_kwargs(name, kw, seed):
    """analysis/study.py's ``_optimizer_kwargs`` before it called ``with_seed`` (commit 46e566b),
    verbatim but for the table lookup: it read the ``__init__`` signatures along the MRO."""
    from optigrade.optimizers.registry import OPTIMIZERS

    kw = copy.deepcopy(kw)
    base = name[: -len("+gru")] if name.endswith("+gru") else name
    if base not in OPTIMIZERS:
        return kw
    names = set()
    for c in OPTIMIZERS.get(base).__mro__:
        if "__init__" in c.__dict__ and c is not object:
            names |= set(inspect.signature(c.__init__).parameters)
    if "seed" in names:
        kw.setdefault("seed", seed)
    elif "zo_hparams" in names:
        zo = dict(kw.get("zo_hparams") or {})
        zo.setdefault("seed", seed)
        kw["zo_hparams"] = zo
    return kw


KWARGS = [{}, {"lr": 1e-3}, {"seed": 9}, {"zo_hparams": {"q": 2}}, {"zo_hparams": {"seed": 4}},
          {"zo_hparams": None}, {"fo_hparams": {"betas": [0.8, 0.9]}, "n_fo": 2}]


@pytest.mark.parametrize("name", [i.name for i in available(gru=True)])
def test_with_seed_equals_the_signature_sniffing_it_replaces(name):
    for kw in KWARGS:
        before = {k: (dict(v) if isinstance(v, dict) else v) for k, v in kw.items()}
        assert optimizers.with_seed(name, kw, 7) == _sniffed_kwargs(name, kw, 7), (name, kw)
        assert kw == before  # the caller's dict is not modified


def test_with_seed_cases():
    assert optimizers.with_seed("zo-sgd", {}, 3) == {"seed": 3}
    assert optimizers.with_seed("sgd+gru", {"lr": 1.0}, 3) == {"lr": 1.0}
    assert optimizers.with_seed("soul+gru", {}, 3) == {"seed": 3}
    assert optimizers.with_seed("hybrid", None, 3) == {"zo_hparams": {"seed": 3}}
    nested = {"zo_hparams": {"q": 2}}
    out = optimizers.with_seed("hybrid", nested, 5)
    assert out == {"zo_hparams": {"q": 2, "seed": 5}} and nested == {"zo_hparams": {"q": 2}}
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.with_seed("nope", {}, 0)


# ---------------------------------------------------------------- table and suffix rule


def test_registry_is_a_table_with_collision_error():
    from optigrade.optimizers.registry import OPTIMIZERS
    assert "adam" in OPTIMIZERS and OPTIMIZERS.get("adam") is optimizers.Adam
    with pytest.raises(ValueError, match="already registered"):
        register("adam", torch.optim.SGD, grade=1, family="x")
    assert make("adam", _w()).__class__ is optimizers.Adam


def test_suffix_rule_builds_wrapper_around_base():
    opt = make("Sophia-H+GRU", _w(), lr=1e-3, gamma=0.5, k=3)
    assert isinstance(opt, optimizers.GRU) and isinstance(opt.inner["base"], optimizers.SophiaH)
    assert opt.inner["base"].k == 3 and opt.defaults["gamma"] == 0.5 and opt.grade == 2.0
    assert make("zo-sgd-momentum", _w()).defaults["momentum"] == 0.9


def test_wrappers_take_a_class_or_a_name():
    g = optimizers.GRU(_w(), base=optimizers.SGD, lr=0.1)
    assert type(g.inner["base"]) is optimizers.SGD
    h = optimizers.HybridFOZO(_w(), fo=optimizers.Adam, zo=optimizers.ZOSign)
    assert type(h.inner["zo"]) is optimizers.ZOSign
    with pytest.raises(ValueError, match="base must be a registered optimizer name or an Optimizer class"):
        optimizers.SAM(_w(), base=3)


@pytest.mark.parametrize("key", ["mu", "difference", "exact", "sphere_scale"])
def test_forward_grad_refuses_finite_difference_settings(key):
    value = {"mu": 1e-3, "difference": "forward", "exact": True, "sphere_scale": False}[key]
    with pytest.raises(TypeError, match=f"ForwardGrad does not take {key}: .*; remove it"):
        make("forward-grad", _w(), **{key: value})
