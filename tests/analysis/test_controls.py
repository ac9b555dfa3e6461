"""Controls C1, C2/C7 and C4 (analysis.controls, SCIENCE.md §3): each reproduces its definition
from the saved updates of the runs it refers to, and flows through the study like a run."""

import math

import pytest
import torch

from optigrade._validate import ConfigError
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.controls import ControlSpec, build_control, update_norms_per_tensor
from optigrade.analysis.deltas import load_delta
from optigrade.analysis.study import run_study

from .conftest import small_study_dict

CONTROLS = [{"kind": "noise", "label": "noise-like-sgd", "match": "sgd"},
            {"kind": "fo_noise", "label": "adam+noise", "source": "adam", "match": "sgd"},
            {"kind": "fo_noise", "label": "adam+halfstep", "source": "adam", "sigma_half_steps": 0.5},
            {"kind": "scale", "label": "adam x3", "source": "adam", "scale": 3.0},
            {"kind": "scale", "label": "adam-matched", "source": "adam", "match": "sgd"}]


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_bench, small_model):
    out = tmp_path_factory.mktemp("ctrl")
    cfg = StudyConfig(**small_study_dict(
        optimizers=[{"name": "adam", "lr": 1.0e-2, "steps": 2}, {"name": "sgd", "lr": 1.0, "steps": 2}],
        controls=CONTROLS, attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}]))
    res = run_study(cfg, out, progress=False, base=small_model, benchmark=small_bench)
    return cfg, res, out


def _theta(out, rid, base):
    return load_delta(out / "runs" / f"{rid}.delta.safetensors").apply(base)


def test_controls_reproduce_their_definitions(study, small_model):
    cfg, res, out = study
    base = small_model
    sgd, adam = _theta(out, "graddiff__sgd__s0", base), _theta(out, "graddiff__adam__s0", base)
    want = update_norms_per_tensor(base, sgd)
    # C1: θ₀ + n with each tensor's ‖n_t‖ = the matched run's ‖Δ_t‖, on exactly those tensors
    got = update_norms_per_tensor(base, _theta(out, "graddiff__noise-like-sgd__s0", base))
    assert set(got) == set(want)
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-5)
    # C2: θ_adam + n, ‖n_t‖ = the matched run's ‖Δ_t‖
    c2 = _theta(out, "graddiff__adam+noise__s0", base)
    pa, pc = dict(adam.named_parameters()), dict(c2.named_parameters())
    for n in want:
        assert float((pc[n].detach().double() - pa[n].detach().double()).norm()) == pytest.approx(want[n], rel=1e-4)
    # C4: θ₀ + 3·Δ_adam exactly (up to the float32 rounding of the sum)
    c4 = dict(_theta(out, "graddiff__adam_x3__s0", base).named_parameters())
    for n, p0 in base.named_parameters():
        d = pa[n].double() - p0.double()
        assert torch.allclose(c4[n].double() - p0.double(), 3 * d, atol=1e-6)
    # C4 matched: Adam's direction moved exactly as far as the SGD run (global ‖Δ‖)
    m = update_norms_per_tensor(base, _theta(out, "graddiff__adam-matched__s0", base))
    total = lambda d: sum(v * v for v in d.values()) ** 0.5  # noqa: E731
    assert total(m) == pytest.approx(total(want), rel=1e-5)
    a = update_norms_per_tensor(base, adam)
    assert {n: v / a[n] for n, v in m.items()} == pytest.approx({n: total(want) / total(a) for n in a}, rel=1e-4)


def test_half_step_noise_has_the_stated_std(small_model):
    from optigrade.analysis.controls import _half_steps

    spec = ControlSpec(kind="fo_noise", label="h", source="x", sigma_half_steps=0.5)
    c, info = build_control(spec, small_model, 0, source=small_model, grid=(4, None, True))
    half = _half_steps(small_model, [n for n, _ in small_model.named_parameters()], 4, None, True)
    pc, pb = dict(c.named_parameters()), dict(small_model.named_parameters())
    z = torch.cat([((pc[n].detach().double() - pb[n].detach().double()) / (0.5 * h)).reshape(-1) for n, h in half.items()])
    assert z.numel() > 10_000 and abs(float(z.std()) - 1.0) < 0.02 and abs(float(z.mean())) < 0.02
    untouched = [n for n in pb if n not in half]
    assert untouched and all(torch.equal(pc[n], pb[n]) for n in untouched)  # norms, embeddings: no grid
    assert info["ctrl_tensors"] == len(half)


def test_controls_flow_through_the_study(study, small_bench, small_model):
    cfg, res, out = study
    r = res.results
    ctrl = r[r["family"] == "control"]
    assert set(ctrl["optimizer"]) == {c["label"] for c in CONTROLS}
    for label in ctrl["optimizer"].unique():
        c = ctrl[ctrl["optimizer"] == label]
        assert {"unlearned", "attacked:rtn4"} <= set(c["subject"])
        assert (c["quantity"] == "geo_lambda_max").any() and (c["quantity"] == "diag_level_change").any()
        assert c["grade"].isna().all() and c["steps"].eq(0).all()
        acc = c[(c["quantity"] == "forget_acc") & (c["subject"] == "unlearned") & (c["data"] == "all")]["value"]
        assert bool(c["reached_target"].iloc[0]) == bool(acc.iloc[0] <= cfg.target)
        assert c["match_reason"].iloc[0] in ("target", "not-reached", "ppl-floor", "retain-floor")
    # the report puts every grade and control side by side, with displacement in half-steps
    from optigrade.analysis.report import grade_or_magnitude_table

    t = grade_or_magnitude_table(res.summary, "graddiff")
    assert list(t["optimizer"])[-len(CONTROLS):] == sorted(c["label"] for c in CONTROLS)
    assert {"‖Δ‖", "half-steps rtn4", "forget none", "forget rtn4", "matched"} <= set(t.columns)
    assert t["kind"].iloc[-1] == "control" and "(grade 1)" in t.loc[t["optimizer"] == "adam", "kind"].iloc[0]
    report = (out / "report.md").read_text()
    assert "grade or magnitude?" in report and "grade or magnitude? the reading" in report
    from optigrade.analysis.magnitude import VERDICTS, control_kinds, magnitude_verdicts

    kinds = control_kinds(r)
    assert kinds["adam+noise"] == ("fo_noise", "adam", "sgd") and kinds["adam x3"] == ("scale", "adam", "")
    v = magnitude_verdicts(res.summary, kinds, "graddiff", target=cfg.target)
    assert set(v["control"]) == set(kinds) and set(v["verdict"]) <= set(VERDICTS)
    # deterministic: the same study again gives the same control weights
    again = run_study(cfg, out, resume=True, progress=False, base=small_model, benchmark=small_bench)
    assert "graddiff__adam_x3__s0" in again.skipped


@pytest.mark.parametrize("control, match", [
    ({"kind": "noise", "label": "n", "match": "nope"}, "match 'nope' names no optimizer entry"),
    ({"kind": "scale", "label": "adam", "source": "adam", "scale": 2}, "already used"),
    ({"kind": "scale", "label": "s", "source": "adam"}, "scale is missing"),
    ({"kind": "scale", "label": "s", "source": "adam", "scale": 2, "match": "sgd"}, "scale or match, not both"),
    ({"kind": "noise", "label": "n"}, "give exactly one of match"),
    ({"kind": "noise", "label": "n", "match": "adam", "norm": 1.0}, "give exactly one of match"),
    ({"kind": "fo_noise", "label": "n", "norm": 1.0}, "source is missing"),
    ({"kind": "smooth", "label": "n"}, "kind"),
])
def test_bad_controls_are_refused(control, match):
    with pytest.raises(ConfigError, match=match):
        StudyConfig(**small_study_dict(controls=[control]))


@pytest.mark.parametrize("name", ["smollm2_controls.yaml", "smollm2_controls_quick.yaml"])
def test_packaged_smollm2_controls_configs_are_valid(name):
    """The budgeted controls studies parse and validate without the model: C1, C2 and the matched
    C4 next to ZO and Adam on the same weights, utility out of sample, the lattice export and an
    off-lattice one."""
    from optigrade.analysis.config import load_config
    from optigrade.demo import config_path

    cfg = load_config(config_path(name))
    assert {(c.kind, c.match) for c in cfg.controls} >= {("noise", "zo-sgd"), ("fo_noise", "zo-sgd")}
    assert len({o.params for o in cfg.optimizers}) == 1 and "heldout" in cfg.eval_splits
    assert cfg.benchmark_kwargs["n_heldout"] >= 64 and cfg.benchmark_kwargs["general_test"] == "heldout"
    types = {a.resolved().get("types") for a in cfg.attacks if a.kind == "gguf"}
    assert "source" in types
    if name == "smollm2_controls.yaml":  # the full study: C4 matched to ZO and an off-lattice export
        assert ("scale", "zo-sgd") in {(c.kind, c.match) for c in cfg.controls} and types & {"Q4_0", "Q8_0"}
    assert any(a.kind == "relearn" and a.resolved()["protocol"] == "half" for a in cfg.attacks)


def test_packaged_smollm2_extended_controls_config_is_valid():
    """smollm2_controls_extended.yaml (C1–C7 and the off-lattice exports on SmolLM2) parses and
    validates without the model: every control names an optimizer entry, every label is distinct."""
    from optigrade.analysis.config import load_config
    from optigrade.demo import config_path

    cfg = load_config(config_path("smollm2_controls_extended.yaml"))
    kinds = {c.kind for c in cfg.controls}
    assert kinds == {"noise", "fo_noise", "scale"}
    assert {o.name for o in cfg.optimizers} >= {"zo-sgd", "adam", "noisy-adam", "sgld", "fo-rs"}
    assert {a.resolved().get("types") for a in cfg.attacks if a.kind == "gguf"} >= {"source", "Q4_0", "Q5_1", "Q8_0"}
