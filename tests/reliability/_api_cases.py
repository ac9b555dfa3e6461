"""The API rows of RELIABILITY.md's appendix: ``(id, call, match, mark)``.

``call`` builds its inputs itself (a small model, a Probe, a benchmark) from the shared objects
passed in ``ctx``; ``match`` is a regex the ``ValueError`` / ``ConfigError`` message must contain
(it names the bad value); ``match=None`` means the input is valid and must be accepted; ``mark``
is None or a pytest mark for the row (a strict ``xfail`` naming the defect while its fix is pending).
"""

import torch

NAN, INF = float("nan"), float("inf")


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def _make(name, params=None, **kw):
    def call(ctx):
        from optigrade import optimizers

        return optimizers.make(name, _params() if params is None else params, **kw)
    return call


OPTIMIZERS_MAKE = [
    ("make-unknown", _make("adamm", lr=1e-3), "unknown optimizer 'adamm'", None),
    ("make-lr-neg", _make("adam", lr=-1), "lr must be > 0, got -1", None),
    ("make-lr-nan", _make("adam", lr=NAN), "lr must be > 0, got nan", None),
    ("make-lr-str", _make("adam", lr="1e-3"), "lr must be > 0, got '1e-3'", None),
    ("make-betas-b2-1", _make("adam", lr=1e-3, betas=(0.9, 1.0)), r"beta2 must be in \[0, 1\), got 1.0", None),
    ("make-betas-b1-1.5", _make("adam", lr=1e-3, betas=(1.5, 0.999)), "beta1 .* got 1.5", None),
    ("make-betas-len1", _make("adam", lr=1e-3, betas=(0.9,)), r"betas must be a pair .* got \(0.9,\)", None),
    ("make-betas-neg", _make("adam", lr=1e-3, betas=(-0.1, 0.999)), "beta1 .* got -0.1", None),
    ("make-lion-betas-1", _make("lion", lr=1e-4, betas=(1.0, 0.99)), "beta1 .* got 1.0", None),
    ("make-eps-0", _make("adam", lr=1e-3, eps=0), "eps must be > 0, got 0", None),
    ("make-eps-nan-signadam", _make("signadam", lr=1e-3, eps=NAN), "eps must be > 0, got nan", None),
    ("make-wd-neg", _make("adam", lr=1e-3, weight_decay=-1), "weight_decay must be >= 0, got -1", None),
    ("make-zo-mu-neg", _make("zo-sgd", lr=1e-3, mu=-1), "mu must be > 0, got -1", None),
    ("make-zo-mu-0", _make("zo-sgd", lr=1e-3, mu=0), "mu must be > 0, got 0", None),
    ("make-zo-q-0", _make("zo-sgd", lr=1e-3, q=0), "q must be an integer >= 1, got 0", None),
    ("make-zo-q-2.5", _make("zo-sgd", lr=1e-3, q=2.5), "q must be an integer >= 1, got 2.5", None),
    ("make-zo-seed-neg", _make("zo-sgd", lr=1e-3, seed=-1), "seed must be .* got -1", None),
    ("make-zo-dist-bad", _make("zo-sgd", lr=1e-3, dist="cauchy"), "dist must be one of .* got 'cauchy'", None),
    ("make-sgd-momentum-1.5", _make("sgd", lr=1e-3, momentum=1.5), "momentum must be .* got 1.5", None),
    ("make-gru-gamma-neg", _make("adam+gru", lr=1e-3, gamma=-1), r"gamma must be in \(0, 1\], got -1", None),
    ("make-gru-unknown-base", _make("zo-sgd+gru", lr=1e-3), "unknown GRU base 'zo-sgd'", None),
    ("make-sophia-rho-0", _make("sophia-g", lr=1e-4, rho=0), "rho must be > 0, got 0", None),
    ("make-sophia-k-0", _make("sophia-g", lr=1e-4, k=0), "k must be an integer >= 1, got 0", None),
    ("make-adahessian-power-str", _make("adahessian", lr=1e-3, hessian_power="abc"),
     "hessian_power must be .* got 'abc'", None),
    ("make-hybrid-nfo-0", _make("hybrid", lr=1e-3, n_fo=0), "n_fo must be an integer >= 1, got 0", None),
    ("make-hybrid-fo-is-zo", _make("hybrid", lr=1e-3, fo="zo-sgd", zo="zo-sgd"), "fo='zo-sgd'", None),
    ("make-fors-n0", _make("fo-rs", lr=1e-3, n_samples=0), "n_samples must be an integer >= 1, got 0", None),
    ("make-sam-rho-neg", _make("sam", lr=1e-3, rho=-1), "rho must be > 0, got -1", None),
    ("make-empty-params", _make("adam", lr=1e-3, params=[]), "empty parameter list", None),
    ("make-empty-params-zo", _make("zo-sgd", lr=1e-3, params=[]), "empty parameter list", None),
    ("make-unknown-kwarg", _make("adam", lr=1e-3, nosuch=1), "'nosuch'", None),
    ("make-unknown-kwarg-zo", _make("zo-sgd", lr=1e-3, nosuch=1), "'nosuch'", None),
    ("make-lr-bool", _make("adam", lr=True), "lr must be > 0, got True", None),
    ("make-lr-inf-sgd", _make("sgd", lr=INF), "lr must be > 0, got inf", None),
]
# ----------------------------------------------------------------------------- landscape
def _ls():
    from optigrade import landscape

    return landscape


def _mlp_probe(**kw):
    from tests.landscape.conftest import MLP, mlp_batches, mlp_loss

    return _ls().Probe(MLP(), mlp_batches(), mlp_loss, **kw)


def _lm_probe(batches, model=None):
    from tests.landscape.conftest import tiny_llama

    return _ls().Probe(model if model is not None else tiny_llama(), batches)


def _lm_batch(rows=2, cols=6, labels=True, ignore_all=False):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 16, (rows, cols), generator=g)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if labels:
        b["labels"] = torch.full_like(ids, -100) if ignore_all else ids.clone()
    return b


def _nan_model():
    from tests.landscape.conftest import MLP

    m = MLP()
    with torch.no_grad():
        m.l1.weight[0, 0] = NAN
    return m


def _nan_unused_row_llama():
    """A NaN in an embedding row no batch token uses (the loss stays finite only if NaN never mixes in)."""
    from tests.landscape.conftest import tiny_llama

    m = tiny_llama()
    with torch.no_grad():
        m.model.embed_tokens.weight[15] = NAN   # tied: also the output row of token 15 (a NaN logit)
    return m


def _metric_two(probe):
    return 2.0


LANDSCAPE = [
    ("probe-empty-list", lambda c: _lm_probe([]), "batches is empty", None),
    ("probe-none", lambda c: _lm_probe(None), "batches is empty", None),
    ("probe-all-labels-ignored", lambda c: _lm_probe([_lm_batch(ignore_all=True)]), "count no tokens", None),
    ("probe-zero-row-batch", lambda c: _lm_probe([_lm_batch(rows=0)]), "(no rows|no tokens|empty)", None),
    ("probe-batch-no-input-ids", lambda c: _lm_probe([{"labels": torch.zeros(1, 3, dtype=torch.long)}]),
     "input_ids", None),
    ("probe-empty-dict-batch", lambda c: _lm_probe([{}]), "input_ids", None),
    ("probe-nan-weights", lambda c: _ls().Probe(_nan_model(), c["mlp_batches"], c["mlp_loss"]), r"not finite \(nan\)", None),
    ("probe-nan-weight-unused-row-eig",
     lambda c: _ls().top_eigenvalues(_lm_probe([_lm_batch()], _nan_unused_row_llama()), 1), "not finite", None),
    ("probe-param-filter-nomatch", lambda c: _mlp_probe(param_filter="nomatch_xyz"), "param_filter='nomatch_xyz'", None),
    ("probe-hvp-mode-bad", lambda c: _mlp_probe(hvp_mode="exact"), "hvp_mode must be one of .* got 'exact'", None),
    ("eig-k-0", lambda c: _ls().top_eigenvalues(c["P"], 0), "k must be an integer in .* got 0", None),
    ("eig-k-gt-n", lambda c: _ls().top_eigenvalues(c["P"], c["P"].numel + 1), "k must be an integer in", None),
    ("eig-k-float", lambda c: _ls().top_eigenvalues(c["P"], 1.5), "k must be an integer in .* got 1.5", None),
    ("eig-which-bad", lambda c: _ls().top_eigenvalues(c["P"], 1, "XX"), "which must be one of .* got 'XX'", None),
    ("eig-tol-nan", lambda c: _ls().top_eigenvalues(c["P"], 1, tol=NAN), "tol must be .* got nan", None),
    ("eig-maxiter-0", lambda c: _ls().top_eigenvalues(c["P"], 1, max_iter=0), "max_iter must be .* got 0", None),
    ("eig-maxiter-neg", lambda c: _ls().top_eigenvalues(c["P"], 1, max_iter=-1), "max_iter must be .* got -1", None),
    ("hutch-n-0", lambda c: _ls().hutchinson_trace(c["P"], 0), "n must be a positive integer, got 0", None),
    ("hutchpp-n-4", lambda c: _ls().hutchpp_trace(c["P"], 4), r"n % 3 == 0 .* got 4", None),
    ("density-m-0", lambda c: _ls().spectral_density(c["P"], m=0), "m must be a positive integer, got 0", None),
    ("density-nv-0", lambda c: _ls().spectral_density(c["P"], n_v=0), "n_v must be a positive integer, got 0", None),
    ("density-width-neg", lambda c: _ls().spectral_density(c["P"], width=-1.0), "width .* got -1.0", None),
    ("sharp-rho-0", lambda c: _ls().worst_case_sharpness(c["P"], 0), "rho must be a finite number > 0, got 0", None),
    ("sharp-rho-neg", lambda c: _ls().worst_case_sharpness(c["P"], -1), "rho must be .* got -1", None),
    ("sharp-rho-nan", lambda c: _ls().worst_case_sharpness(c["P"], NAN), "rho must be .* got nan", None),
    ("sharp-rho-inf", lambda c: _ls().worst_case_sharpness(c["P"], INF), "rho must be .* got inf", None),
    ("sharp-rho-str", lambda c: _ls().worst_case_sharpness(c["P"], "0.1"), "rho must be .* got '0.1'", None),
    ("sharp-steps-0", lambda c: _ls().worst_case_sharpness(c["P"], 0.1, steps=0), "steps must be a positive integer, got 0", None),
    ("sharp-avg-n-1", lambda c: _ls().average_sharpness(c["P"], 0.1, n=1), "n must be an integer >= 2 .* got 1", None),
    ("sharp-eta-neg", lambda c: _ls().average_sharpness(c["P"], 0.1, adaptive=True, eta=-1.0), "eta must be .*>= 0, got -1.0", None),
    ("pacbayes-target-0", lambda c: _ls().pac_bayes_flatness(c["P"], 0), "target must be a finite number > 0, got 0", None),
    ("pacbayes-range-rev", lambda c: _ls().pac_bayes_flatness(c["P"], 0.1, sigma_range=(1.0, 1e-6)), "low < high", None),
    ("cert-sigma-0", lambda c: _ls().certified_radius(c["P"], 0, loss_threshold=1.0), "sigma must be .* got 0", None),
    ("cert-sigma-neg", lambda c: _ls().certified_radius(c["P"], -1, loss_threshold=1.0), "sigma must be .* got -1", None),
    ("cert-sigma-nan", lambda c: _ls().certified_radius(c["P"], NAN, loss_threshold=1.0), "sigma must be .* got nan", None),
    ("cert-alpha-1", lambda c: _ls().certified_radius(c["P"], 0.1, alpha=1.0, loss_threshold=1.0), r"alpha must be in \(0, 1\), got 1.0", None),
    ("cert-alpha-1.5", lambda c: _ls().certified_radius(c["P"], 0.1, alpha=1.5, loss_threshold=1.0), "alpha .* got 1.5", None),
    ("cert-alpha-0", lambda c: _ls().certified_radius(c["P"], 0.1, alpha=0.0, loss_threshold=1.0), "alpha .* got 0.0", None),
    ("cert-alpha-nan", lambda c: _ls().certified_radius(c["P"], 0.1, alpha=NAN, loss_threshold=1.0), "alpha .* got nan", None),
    ("cert-n-0", lambda c: _ls().certified_radius(c["P"], 0.1, n=0, loss_threshold=1.0), "n must be a positive integer, got 0", None),
    ("cert-tau-1", lambda c: _ls().certified_radius(c["P"], 0.1, tau=1.0, loss_threshold=1.0), r"tau must be in \(0, 1\), got 1.0", None),
    ("cert-no-threshold", lambda c: _ls().certified_radius(c["P"], 0.1), "loss_threshold", None),
    ("cert-threshold-nan", lambda c: _ls().certified_radius(c["P"], 0.1, n=10, loss_threshold=NAN),
     "loss_threshold must be a finite number, got nan", None),
    ("cert-metric-out-of-range", lambda c: _ls().certified_radius(c["P"], 0.1, n=10, metric=_metric_two),
     r"metric\(probe\) must return a value in \[0, 1\], got 2.0", None),
    ("radius-outcomes-empty", lambda c: _ls().radius_from_outcomes([], 0.1), "n must be a positive integer, got 0", None),
    ("radius-outcomes-2", lambda c: _ls().radius_from_outcomes([0, 2], 0.1), r"\[0, 1\]", None),
    ("cohen-na-gt-n", lambda c: _ls().cohen_radius(20, 10, 0.1), r"k must be in \[0, n=10\], got 20", None),
    ("slice-points-1", lambda c: _ls().slice_1d(c["P"], points=1), "points must be an integer >= 2, got 1", None),
    ("slice-span-rev", lambda c: _ls().slice_1d(c["P"], span=(1.0, -1.0)), r"low < high, got \(1.0, -1.0\)", None),
    ("interp-alphas-empty", lambda c: _ls().interpolate(c["P"], c["theta"], c["theta"], alphas=[]), "alphas must be a non-empty", None),
    ("interp-wrong-shape", lambda c: _ls().interpolate(c["P"], torch.ones(3), torch.ones(3)), r"shape \(3,\)", None),
]


# ----------------------------------------------------------------------------- unlearning
def _unlearn_call(**kw):
    """loop.unlearn on the tiny pretrained model with NPO / Adam (the library entry point)."""
    def call(c):
        import copy

        from optigrade import optimizers
        from optigrade.unlearning import unlearn
        from optigrade.unlearning.objectives import make_objective

        model = copy.deepcopy(c["tiny"])
        args = dict(steps=5, eval_every=5, batch_size=4, seed=0, progress=False, final_eval=False)
        args.update(kw)
        opt = optimizers.make("adam", list(model.parameters()), lr=1e-3)
        return unlearn(model, make_objective("npo"), opt, c["bench"], **args)
    return call


def _cfg(**kw):
    from optigrade.unlearning.config import UnlearnConfig

    return lambda c: UnlearnConfig(**kw)


def _run_cfg(**kw):
    """run_unlearn with the model build refused (must fail on the config first)."""
    def call(c):
        from optigrade.unlearning.config import UnlearnConfig
        from optigrade.unlearning.run import run_unlearn

        return run_unlearn(UnlearnConfig(**kw), progress=False)
    return call


def _synth(**kw):
    from optigrade.unlearning import SyntheticFacts

    return lambda c: SyntheticFacts(**kw)


def _objective(name, **kw):
    from optigrade.unlearning.objectives import make_objective

    return lambda c: make_objective(name, **kw)


def _load(which):
    def call(c):
        from optigrade.unlearning.models import load

        return load(c["ckpt"](which))
    return call


def _save_nonempty(c):
    d = c["tmp"] / "nonempty"
    d.mkdir()
    (d / "keep.txt").write_text("keep")
    c["result"].save_pretrained(d)


UNLEARNING = [
    ("unlearn-steps-0", _unlearn_call(steps=0), "steps must be .* got 0", None),
    ("unlearn-eval-every-0", _unlearn_call(eval_every=0), "eval_every must be .* got 0", None),
    ("unlearn-batch-size-0", _unlearn_call(batch_size=0), "batch_size must be .* got 0", None),
    ("unlearn-batch-size-neg", _unlearn_call(batch_size=-4), "batch_size must be .* got -4", None),
    ("unlearn-target-5", _unlearn_call(target=5.0), "target .* got 5.0", None),
    ("unlearn-metric-bad", _unlearn_call(metric="forget_accuracy", target=0.1), "'forget_accuracy'", None),
    ("unlearn-retain-floor-2", _unlearn_call(retain_floor=2.0), "retain_floor .* got 2.0", None),
    ("unlearn-seed-str", _unlearn_call(seed="0"), "seed .* got '0'", None),
    ("unlearn-steps-float", _unlearn_call(steps=5.5), "steps .* got 5.5", None),
    ("synth-n-entities-5", _synth(n_entities=5), "n_entities must be an integer >= 20, got 5", None),
    ("synth-ff-0", _synth(forget_fraction=0), r"forget_fraction must be in \(0, 1\), got 0", None),
    ("cfg-steps-bool", _cfg(steps=True), "steps must be a positive integer, got True", None),
    ("cfg-lr-bool", _cfg(lr=True), "lr must be .* got True", None),
    ("cfg-lr-str", _cfg(lr="1e-3"), "lr must be .* got '1e-3'", None),
    ("cfg-seed-str", _cfg(seed="0"), "seed must be an integer.* got '0'", None),
    ("cfg-seed-neg", _cfg(seed=-1), "seed must be .* got -1", None),
    ("cfg-metric-bad", _cfg(metric="nosuch"), "metric must be one of .* got 'nosuch'", None),
    ("cfg-metric-bad-run", _run_cfg(metric="nosuch", steps=5), "metric must be one of .* got 'nosuch'", None),
    ("cfg-target-neg", _cfg(target=-0.5), "target=-0.5", None),
    ("cfg-ff-str", _cfg(forget_fraction="abc"), "forget_fraction must be .* got 'abc'", None),
    ("cfg-n-entities-5", _cfg(benchmark_kwargs={"n_entities": 5}), None, None),   # valid config; refused when built:
    ("cfg-n-entities-5-run", _run_cfg(benchmark_kwargs={"n_entities": 5}), "n_entities must be an integer >= 20, got 5", None),
    ("cfg-params-badregex", _cfg(params="["), r"params='\[' is not a valid regular expression", None),
    ("cfg-from-dict-unknown", lambda c: __import__("optigrade.unlearning.config", fromlist=["x"]).UnlearnConfig.from_dict(
        {"lrr": 1e-3}), "unknown setting 'lrr'", None),
    ("cfg-objective-kwargs-bad", _cfg(objective="npo", objective_kwargs={"beta": -1}), "beta must be > 0, got -1", None),
    ("objective-npo-beta-0", _objective("npo", beta=0), "beta must be > 0, got 0", None),
    ("objective-npo-beta-nan", _objective("npo", beta=NAN), "beta must be > 0, got nan", None),
    ("objective-unknown-kw", _objective("npo", nosuch=1), "'nosuch'", None),
    ("load-missing", lambda c: __import__("optigrade.unlearning.models", fromlist=["x"]).load(str(c["tmp"] / "missing")),
     "no such path", None),
    ("load-trunc", _load("trunc"), "model.safetensors", None),
    ("load-flipped", _load("flipped"), "model.safetensors", None),
    ("save-ckpt-nonempty", _save_nonempty, "exists and is not empty", None),
]


# ----------------------------------------------------------------------------- attacks
def _quant(**kw):
    from optigrade.analysis.attacks import quantize_rtn

    return lambda c: quantize_rtn(c["net"], **kw)


def _relearn(**kw):
    from optigrade.analysis.attacks import relearn

    return lambda c: relearn(c["tiny"], c["bench"], **kw)


ATTACKS = [
    ("rtn-bits-0", _quant(bits=0), "bits=0 is outside 2..8", None),
    ("rtn-bits-9", _quant(bits=9), "bits=9 is outside 2..8", None),
    ("rtn-bits-1", _quant(bits=1), "bits=1 is outside 2..8", None),
    ("rtn-group-7", _quant(bits=4, group_size=7), "group_size=7 does not divide the row length 128", None),
    ("noise-sigma-neg", lambda c: __import__("optigrade.analysis.attacks", fromlist=["x"]).weight_noise(c["net"], sigma=-1),
     "sigma must be .*>= 0, got -1", None),
    ("relearn-steps-0", _relearn(steps=0), "steps must be .* got 0", None),
    ("relearn-lr-nan", _relearn(lr=NAN), "lr must be > 0, got nan", None),
    ("relearn-nsamples-0", _relearn(n_samples=0), "n_samples must be .* got 0", None),
]


# ----------------------------------------------------------------------------- StudyConfig
OPT = {"name": "adam", "lr": 1e-3, "steps": 20}


def _study(**kw):
    from optigrade.analysis.config import StudyConfig

    d = {"optimizers": [OPT], "objectives": ["npo"]}
    d.update(kw)
    return lambda c: StudyConfig.from_dict(d)


STUDY_CONFIG = [
    ("study-from-dict-typo", _study(seed=0), "unknown setting 'seed'", None),
    ("study-empty-opts", _study(optimizers=[]), "optimizers is empty", None),
    ("study-dup-objective", _study(objectives=["npo", "npo"]), "objective 'npo' listed twice", None),
    ("study-dup-runid", _study(optimizers=[{**OPT, "label": "adam 1"}, {**OPT, "label": "adam_1"}]),
     "'adam 1' and 'adam_1'", None),
    ("study-eval-splits-bad", _study(eval_splits=["forgett", "retain"]), "eval_splits .*'forgett'", None),
    ("study-metric-bad", _study(metric="forget_accuracy"), "metric must be one of .* got 'forget_accuracy'", None),
    ("study-name-slash", _study(name="../../escape"), "name must be a plain file name, got '../../escape'", None),
    ("study-target-nan", _study(target=NAN), "target=nan", None),
    ("study-attack-none", _study(attacks=[{"kind": None}]), "unknown attack kind None", None),
    ("study-diag-not-map", _study(diagnostics=[4, 8]), r"diagnostics.* mapping, got \[4, 8\]", None),
]

SECTIONS = {
    "API optimizers.make": OPTIMIZERS_MAKE,
    "API landscape": LANDSCAPE,
    "API unlearning (unlearn/UnlearnConfig/load)": UNLEARNING,
    "API attacks": ATTACKS,
    "API StudyConfig": STUDY_CONFIG,
}
