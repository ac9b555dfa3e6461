"""Beyond the appendix: neighbours of its cases found while fixing them (non-finite numbers the
landscape accepted, selectors that select nothing through the library, YAML coercions).  Same
contract: refused with a ValueError / ConfigError naming the value, or accepted when valid."""

import re

import pytest
import torch

NAN, INF = float("nan"), float("inf")


def _P():
    from tests.landscape.conftest import MLP, mlp_batches, mlp_loss

    from optigrade.landscape import Probe

    return Probe(MLP(), mlp_batches(), mlp_loss)


def _ls():
    from optigrade import landscape

    return landscape


def _flat(P, v):
    return torch.full((P.numel,), v, dtype=torch.float64)


def _net():
    return torch.nn.Sequential(torch.nn.Linear(8, 2))


def _cfg(cls, **kw):
    def call(P):
        from optigrade.analysis.config import StudyConfig
        from optigrade.unlearning.config import UnlearnConfig

        if cls == "study":
            kw.setdefault("optimizers", [{"name": "adam", "lr": 1e-3, "steps": 20}])
            return StudyConfig(**kw)
        return UnlearnConfig(**kw)
    return call


ROWS = [
    # landscape: every float setting must be finite, every direction / checkpoint vector too
    ("worst-eta-nan", lambda P: _ls().worst_case_sharpness(P, 0.1, steps=2, adaptive=True, eta=NAN), "eta .* nan"),
    ("average-eta-inf", lambda P: _ls().average_sharpness(P, 0.1, n=2, adaptive=True, eta=INF), "eta .* inf"),
    ("sam-eta-nan", lambda P: _ls().sam_sharpness(P, 0.1, adaptive=True, eta=NAN), "eta .* nan"),
    ("eig-pyhessian-tol-nan", lambda P: _ls().top_eigenvalues(P, 1, "LM", backend="pyhessian", pyhessian_tol=NAN),
     "pyhessian_tol .* nan"),
    ("hutch-pyhessian-tol-inf", lambda P: _ls().hutchinson_trace(P, 3, backend="pyhessian", pyhessian_tol=INF),
     "pyhessian_tol .* inf"),
    ("density-width-inf", lambda P: _ls().spectral_density(P, m=5, n_v=1, width=INF), "width .* inf"),
    ("slice-span-inf", lambda P: _ls().slice_1d(P, span=(-1.0, INF), points=3), r"span .* \(-1.0, inf\)"),
    ("interp-alphas-nan", lambda P: _ls().interpolate(P, P.flat_params(), P.flat_params(), alphas=[0.0, NAN]),
     "alphas .* nan"),
    ("probe-fd-eps-inf", lambda P: _ls().Probe(P.model, P.batches, P.loss_fn, hvp_mode="fd", fd_eps=INF), "fd_eps .* inf"),
    ("perturbed-scale-nan", lambda P: P.perturbed(_flat(P, 1.0), NAN).__enter__(), "scale .* nan"),
    ("hvp-direction-nan", lambda P: P.hvp(_flat(P, NAN)), "non-finite"),
    ("slice-direction-inf", lambda P: _ls().slice_1d(P, _flat(P, INF), points=3), "non-finite"),
    ("mode-connectivity-nan", lambda P: _ls().mode_connectivity(P, P.flat_params(), _flat(P, NAN), points=3), "non-finite"),
    ("cert-metric-fn-nan", lambda P: _ls().certified_radius(lambda g: NAN, 0.1, n=5), r"\[0, 1\], got nan"),
    ("cert-threshold-inf", lambda P: _ls().certified_radius(P, 0.1, n=5, loss_threshold=INF), "loss_threshold .* inf"),
    ("eig-tol-inf", lambda P: _ls().top_eigenvalues(P, 1, tol=INF), "tol .* inf"),
    ("eig-max-iter-float", lambda P: _ls().top_eigenvalues(P, 1, max_iter=2.5), "max_iter .* 2.5"),
    # attacks: a selector that selects nothing is refused by the library functions too
    ("quantize-modules-nomatch", lambda P: __import__("optigrade.analysis.attacks", fromlist=["x"]).quantize_rtn(
        _net(), bits=4, modules="nomatch_xyz"), "modules='nomatch_xyz' selects no"),
    ("noise-modules-nomatch", lambda P: __import__("optigrade.analysis.attacks", fromlist=["x"]).weight_noise(
        _net(), 0.1, modules="nomatch_xyz"), "modules='nomatch_xyz' selects no"),
    ("relearn-split-spec", lambda P: __import__("optigrade.analysis.attacks", fromlist=["x"]).attack_spec(
        {"kind": "relearn", "split": "forgett"}), "split must be one of .* got 'forgett'"),
    ("optimizer-hessian-power-bool", lambda P: __import__("optigrade").optimizers.make(
        "adahessian", [torch.nn.Parameter(torch.zeros(2))], lr=0.1, hessian_power=True), "hessian_power .* True"),
    # configs: numbers stay numbers, names stay names
    ("cfg-target-bool", _cfg("unlearn", target=True), "target must be a number, got True"),
    ("cfg-batch-size-str", _cfg("unlearn", batch_size="16"), "batch_size must be an integer, got '16'"),
    ("cfg-eval-every-gt-steps-no-target", _cfg("unlearn", steps=4, eval_every=5, target=None), None),
    ("cfg-lr-int", _cfg("unlearn", lr=1), None),
    ("cfg-metric-para", _cfg("unlearn", metric="forget_para_acc"), None),
    ("study-eval-splits-no-forget", _cfg("study", eval_splits=["retain"]), "eval_splits must include 'forget'"),
    ("study-eval-splits-dup", _cfg("study", eval_splits=["forget", "forget"]), "duplicates"),
    ("study-name-dot", _cfg("study", name=".."), "name must be a plain file name, got '..'"),
    ("study-name-ok", _cfg("study", name="rt-1.2_b"), None),
    ("study-objective-labels-distinct", _cfg("study", objectives=["npo", {"name": "npo", "beta": 0.2}]), None),
    ("study-eval-retain-str", _cfg("study", eval_retain="20"), "eval_retain must be .* got '20'"),
]


@pytest.mark.parametrize("case,call,match", ROWS, ids=[r[0] for r in ROWS])
def test_extra_case(case, call, match):
    from optigrade._validate import ConfigError

    P = _P()
    if match is None:
        call(P)
        return
    cost = P.cost()
    with pytest.raises((ValueError, ConfigError)) as err:
        call(P)
    assert re.search(match, str(err.value)), f"{case}: {err.value}"
    assert P.cost() == cost


def test_run_ids_follow_file_safe():
    """The collision check and the run files use one rule (analysis.config.file_safe)."""
    from optigrade.analysis.config import OptimizerSpec, file_safe
    from optigrade.analysis.study import run_id

    opt = OptimizerSpec(name="adam", label="adam 1/x", lr=1e-3)
    assert run_id("npo", opt, 3) == file_safe("npo__adam 1/x__s3") == "npo__adam_1_x__s3"


def test_bad_yaml_is_one_line(tmp_path):
    from optigrade.analysis.config import load_config
    from optigrade._validate import ConfigError

    p = tmp_path / "bad.yaml"
    p.write_text("name: rt\noptimizers: [{name: adam\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "not valid YAML" in str(err.value) and "\n" not in str(err.value)
