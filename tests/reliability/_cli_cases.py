"""The CLI rows of RELIABILITY.md's appendix: ``(id, argv, expect, match, mark)``.

``argv`` tokens starting with ``@`` are rebuilt in the test's scratch directory:
``@out`` a fresh output path, ``@fx:KIND`` a checkpoint fixture (:mod:`._fixtures`),
``@yaml:NAME`` the study YAML ``STUDY_YAML[NAME]``, ``@dir:KIND`` a directory fixture
(see ``test_cli_cases.make_dir``).  ``expect``:

* ``"refuse"``: exit status 2, a line of stderr saying ``error:`` that matches ``match``, and no
  unlearning step, study run or reference run started (they are replaced by a guard that fails);
* ``"accept"``: the input is valid: validation passes and the work starts (the guard is reached);
* ``"check:NAME"``: a case that needs a real run; ``test_cli_cases.CHECKS[NAME]`` asserts it.

``mark``: None, or a pytest mark for the row (``slow``; a strict ``xfail`` naming the defect and
its owner while another engineer's fix is pending).
"""

import pytest

NPO = ["--objective", "npo", "--optimizer", "adam", "--lr", "1e-3", "--steps", "10"]
T = ["--target", "0.1"]


def U(*args):
    return ["unlearn", *args, "--out", "@out"]


UNLEARN_NAMES = [
    ("u-opt-unknown", U("--optimizer", "adamm"), "refuse", "unknown optimizer 'adamm'", None),
    ("u-obj-unknown", U("--objective", "npoo"), "refuse", "unknown objective 'npoo'", None),
    ("u-bench-unknown", U("--benchmark", "nosuch"), "refuse", "unknown benchmark 'nosuch'", None),
    ("u-lr-0", U("--lr", "0", "--steps", "10"), "refuse", "lr must be .*> 0, got 0.0", None),
    ("u-lr--1", U("--lr", "-1", "--steps", "10"), "refuse", "lr must be .*> 0, got -1.0", None),
    ("u-lr-nan", U("--lr", "nan", "--steps", "10"), "refuse", "lr must be .* got nan", None),
    ("u-lr-inf", U("--lr", "inf", "--steps", "10"), "refuse", "lr must be .* got inf", None),
    ("u-lr-abc", U("--lr", "abc", "--steps", "10"), "refuse", "invalid float value: 'abc'", None),
    ("u-steps-0", U("--steps", "0"), "refuse", "steps must be a positive integer, got 0", None),
    ("u-steps--1", U("--steps", "-1"), "refuse", "steps must be a positive integer, got -1", None),
    ("u-steps-1.5", U("--steps", "1.5"), "refuse", "invalid int value: '1.5'", None),
    ("u-target-1.5", U(*NPO, "--target", "1.5"), "refuse", "target=1.5", None),
    ("u-target--0.5", U(*NPO, "--target", "-0.5"), "refuse", "--target -0.5 .* -1", None),
    ("u-target-nan", U(*NPO, "--target", "nan"), "refuse", "target=nan", None),
    ("u-target-2", U(*NPO, "--target", "2"), "refuse", "target=2.0", None),
    ("u-evalevery-0", U(*NPO, *T, "--eval-every", "0"), "refuse", "eval_every must be a positive integer, got 0", None),
    ("u-evalevery-gt-steps", U(*NPO, *T, "--eval-every", "1000"), "refuse", "steps=10 < eval_every=1000", None),
    ("u-bs-0", U(*NPO, *T, "--batch-size", "0"), "refuse", "batch_size must be a positive integer, got 0", None),
    # a batch larger than the split is valid: every example is used once per step
    ("u-bs-huge", U(*NPO, *T, "--batch-size", "100000"), "accept", None, None),
    ("u-ff-1.5", U(*NPO, *T, "--forget-fraction", "1.5"), "refuse", r"forget_fraction must be in \(0, 1\), got 1.5", None),
    ("u-ff-0", U(*NPO, *T, "--forget-fraction", "0"), "refuse", r"forget_fraction must be in \(0, 1\), got 0.0", None),
    ("u-ff-0.001", U(*NPO, *T, "--forget-fraction", "0.001"), "refuse", "forget_fraction=0.001 .* empty split", None),
    # seeds are >= 0 everywhere (config, study seeds, the ZO direction seeds)
    ("u-seed-neg", U(*NPO, *T, "--seed", "-1"), "refuse", "seed must be .* got -1", None),
    ("u-seed-huge", U(*NPO, *T, "--seed", "99999999999999999999999"), "refuse",
     "seed must be .* got 99999999999999999999999", None),
    ("u-retainfloor-2", U(*NPO, *T, "--retain-floor", "2"), "refuse", r"retain_floor must be in \[0, 1\], got 2.0", None),
    ("u-params-nomatch", U(*NPO, *T, "--params", "nomatch_xyz"), "refuse", "'nomatch_xyz' matches no parameter", None),
    ("u-params-badregex", U(*NPO, *T, "--params", "["), "refuse", r"params='\[' is not a valid regular expression", None),
    ("u-optarg-unknown", U(*NPO, *T, "--opt-arg", "nosuch=1"), "refuse", "'nosuch'", None),
    ("u-optarg-noeq", U(*NPO, *T, "--opt-arg", "mu"), "refuse", "--opt-arg 'mu' must look like KEY=VALUE", None),
    ("u-optarg-betas-scalar", U(*NPO, *T, "--opt-arg", "betas=0.9"), "refuse", "betas must be a pair .* got 0.9", None),
    ("u-zo-mu-neg", U("--optimizer", "zo-sgd", "--steps", "10", "--opt-arg", "mu=-1"), "refuse", "mu must be > 0, got -1", None),
    ("u-zo-q0", U("--optimizer", "zo-sgd", "--steps", "10", "--opt-arg", "q=0"), "refuse", "q must be an integer >= 1, got 0", None),
    ("u-benchparg-unknown", U(*NPO, *T, "--bench-arg", "nosuch=1"), "refuse", r"\['nosuch'\] not accepted by benchmark", None),
    ("u-benchparg-nent-5", U(*NPO, *T, "--bench-arg", "n_entities=5"), "refuse", "n_entities must be an integer >= 20, got 5", None),
    ("u-lr-huge-diverge", ["unlearn", "--objective", "ga", "--optimizer", "sgd", "--lr", "1e12", "--steps", "10",
                           "--target", "-1", "--out", "@out"], "check:diverged", None, pytest.mark.slow),  # ~30 s
]

UNLEARN_OUT = [
    ("u-out-nonempty", ["unlearn", *NPO, *T, "--out", "@dir:nonempty"], "refuse", "exists and is not empty", None),
    ("u-out-file", ["unlearn", *NPO, *T, "--out", "@dir:file"], "refuse", "afile", None),
    ("u-out-file-overwrite", ["unlearn", *NPO, *T, "--out", "@dir:file", "--overwrite"], "refuse", "afile", None),
    ("u-out-ro-parent", ["unlearn", *NPO, *T, "--out", "@dir:ro-parent"], "refuse", "ro", None),
    ("u-out-ro-self", ["unlearn", *NPO, *T, "--out", "@dir:ro-self", "--overwrite"], "refuse", "ro", None),
    ("u-out-sys", ["unlearn", *NPO, *T, "--out", "/sys/optigrade_out"], "refuse", "/sys/optigrade_out", None),
    ("u-out-under-file", ["unlearn", *NPO, *T, "--out", "@dir:under-file"], "refuse", "afile", None),
    ("u-out-dot-overwrite", ["unlearn", *NPO, *T, "--out", ".", "--overwrite"], "refuse", "'\\.'", None),
]

CHECKPOINTS = [
    ("u-model-unknown", U("--model", "nosuchmodel"), "refuse", "model 'nosuchmodel': no such path", None),
    ("u-model-dir-noconfig", U(*NPO, *T, "--model", "@fx:noconfig"), "refuse", "no config.json", None),
    ("u-model-file", U(*NPO, *T, "--model", "@fx:file"), "refuse", "not a model checkpoint", None),
    ("u-model-trunc", U(*NPO, *T, "--model", "@fx:trunc"), "refuse", "model.safetensors", None),
    ("u-model-badconfigjson", U(*NPO, *T, "--model", "@fx:badconfigjson"), "refuse", "config.json", None),
    ("e-missing", ["evaluate", "@fx:missing"], "refuse", "no such path", None),
    ("e-noconfig", ["evaluate", "@fx:noconfig"], "refuse", "no config.json", None),
    ("e-file", ["evaluate", "@fx:file"], "refuse", "no config.json", None),
    ("e-trunc", ["evaluate", "@fx:trunc"], "refuse", "model.safetensors", None),
    ("e-zero", ["evaluate", "@fx:zero"], "refuse", "model.safetensors", None),
    ("e-badheader", ["evaluate", "@fx:badheader"], "refuse", "model.safetensors", None),
    ("e-flipped", ["evaluate", "@fx:flipped"], "refuse", "model.safetensors", None),
    ("e-nosafetensors", ["evaluate", "@fx:nosafetensors"], "refuse", "model.safetensors", None),
    ("e-badmanifest", ["evaluate", "@fx:badmanifest"], "refuse", "manifest.json", None),
    ("e-badconfigjson", ["evaluate", "@fx:badconfigjson"], "refuse", "config.json", None),
    ("e-manifest-unknown-bench", ["evaluate", "@fx:manifest-unknown-bench"], "refuse", "unknown benchmark 'nosuch'", None),
    ("e-bench-unknown", ["evaluate", "@fx:good", "--benchmark", "nosuch"], "refuse", "unknown benchmark 'nosuch'", None),
    ("e-zerotail", ["evaluate", "@fx:zerotail"], "refuse", "model.safetensors", None),
    ("u-cache-truncated", ["unlearn", "--steps", "5", "--bench-arg", "n_entities=40", "--target", "-1", "--out", "@out"],
     "check:cache-truncated", None, None),
]

OPT = {"name": "adam", "lr": 1.0e-3, "steps": 20}
BASE = {"name": "rt", "objectives": ["npo"], "seeds": [0], "target": 0.1, "eval_every": 5, "eval_retain": 20,
        "eval_general": 10, "optimizers": [OPT], "attacks": [{"kind": "quantize", "label": "rtn4", "bits": 4}]}


def Y(**over):
    return {**BASE, **over}


def O(**over):
    return Y(optimizers=[{**OPT, **over}])


def A(**attack):
    return Y(attacks=[attack])


#: study YAMLs by name: a dict (dumped) or raw text
STUDY_YAML = {
    "base": Y(),
    "attack_kind_bad": A(kind="quantise", bits=4),
    "betas_bad": O(optimizer_kwargs={"betas": [0.9, 1.5]}),
    "bits0": A(kind="quantize", label="rtn4", bits=0),
    "bits9": A(kind="quantize", label="rtn4", bits=9),
    "bs0": O(batch_size=0),
    "diag_bits9": Y(diagnostics={"bits": [9]}),
    "dup_attack_label": Y(attacks=[{"kind": "quantize", "bits": 4}, {"kind": "quantize", "bits": 8}]),
    "dup_objective": Y(objectives=["npo", "npo"]),
    "dup_opt": Y(optimizers=[OPT, OPT]),
    "dup_runid_sanitized": Y(optimizers=[{**OPT, "label": "adam 1"}, {**OPT, "label": "adam_1"}]),
    "empty": "",
    "eval_retain0": Y(eval_retain=0),
    "eval_split_bad": Y(eval_splits=["forgett", "retain"]),
    "eval_split_empty": Y(eval_splits=[]),
    "ff_tiny": Y(forget_fraction=0.001),
    "gguf_source_tiny": A(kind="gguf", types="source"),
    "group7": A(kind="quantize", bits=4, group_size=7),
    "list": "- a\n- b\n",
    "lr0": O(lr=0),
    "lr_1e-3_string": "name: rt\nobjectives: [npo]\noptimizers:\n  - {name: adam, lr: 1e-3, steps: 20}\n",
    "lr_nan": O(lr=float("nan")),
    "metric_bad": Y(metric="forget_accuracy"),
    "modules_nomatch": A(kind="quantize", bits=4, modules="nomatch_xyz"),
    "n_entities5": Y(n_entities=5),
    "name_traversal": Y(name="../../escape"),
    "noise_neg": A(kind="noise", sigma=-0.1),
    "notyaml": "name: rt\noptimizers: [{name: adam\n",
    "obj_unknown": Y(objectives=["npoo"]),
    "opt_empty": Y(optimizers=[]),
    "opt_unknown": O(name="adamm"),
    "params_badregex": O(params="["),
    "params_nomatch": O(params="nomatch_xyz"),
    "relearn_protocol_bad": A(kind="relearn", protocol="halves"),
    "relearn_split_bad": A(kind="relearn", split="nosuch"),
    "relearn_steps0": A(kind="relearn", steps=0),
    "retain_floor15": O(retain_floor=1.5),
    "seed_neg": Y(seeds=[-1]),
    "target15": Y(target=1.5),
    "threads0": Y(threads=0),
    "type_optimizers_map": Y(optimizers={"name": "adam", "lr": 0.001}),
    "type_seeds_str": Y(seeds="0"),
    "type_steps_str": O(steps="20"),
    "type_target_str": Y(target="0.1"),
    "typo_attack_bit": A(kind="quantize", bit=4),
    "typo_opt_lr": O(learning_rate=1e-3),
    "typo_optimisers": {**{k: v for k, v in BASE.items() if k != "optimizers"}, "optimisers": [OPT]},
    "typo_seed": Y(seed=0),
    "zo_mu_neg": Y(optimizers=[{"name": "zo-sgd", "lr": 1e-3, "steps": 20, "optimizer_kwargs": {"mu": -1}}]),
    "zo_q0": Y(optimizers=[{"name": "zo-sgd", "lr": 1e-3, "steps": 20, "optimizer_kwargs": {"q": 0}}]),
    "diverge": Y(optimizers=[{"name": "sgd", "lr": 1e9, "steps": 20}], attacks=[]),
}


def S(name, match, mark=None):
    return (f"s-{name}", ["study", f"@yaml:{name}", "--out", "@out"], "refuse", match, mark)


STUDY = [
    S("attack_kind_bad", "unknown attack kind 'quantise'"),
    S("betas_bad", "beta2 must be in .* got 1.5"),
    S("bits0", "bits=0 is outside 2..8"),
    S("bits9", "bits=9 is outside 2..8"),
    S("bs0", "batch_size must be a positive integer, got 0"),
    S("diag_bits9", "diagnostics.bits: bits=9"),
    S("dup_attack_label", "label 'quantize' is used twice"),
    S("dup_objective", "objective 'npo' listed twice"),
    S("dup_opt", "label 'adam' used twice"),
    S("dup_runid_sanitized", "'adam 1' and 'adam_1' give the same run id"),
    S("empty", "must be a YAML mapping, got NoneType"),
    S("eval_retain0", "eval_retain must be a positive integer.*got 0"),
    S("eval_split_bad", r"eval_splits .*\['forgett'\]"),
    S("eval_split_empty", r"eval_splits .*got \[\]"),
    S("ff_tiny", "forget_fraction=0.001 .* empty split"),
    S("gguf_source_tiny", "types 'source' needs a model loaded from a GGUF"),
    S("group7", "group_size=7 does not divide"),
    S("list", "must be a YAML mapping, got list"),
    S("lr0", "lr must be .* got 0"),
    S("lr_1e-3_string", "lr must be .* got '1e-3'"),
    S("lr_nan", "lr must be .* got nan"),
    S("metric_bad", "metric must be one of .* got 'forget_accuracy'"),
    S("modules_nomatch", "'nomatch_xyz'"),
    S("n_entities5", "n_entities must be an integer >= 20, got 5"),
    S("name_traversal", "name must be a plain file name, got '../../escape'"),
    S("noise_neg", "sigma must be .* got -0.1"),
    S("notyaml", "not valid YAML"),
    S("obj_unknown", "unknown objective 'npoo'"),
    S("opt_empty", "optimizers is empty"),
    S("opt_unknown", "unknown optimizer 'adamm'"),
    S("params_badregex", r"'\[' is not a valid regular expression"),
    S("params_nomatch", "'nomatch_xyz' matches no parameter"),
    S("relearn_protocol_bad", "protocol .*'halves'"),
    S("relearn_split_bad", "split must be one of .* got 'nosuch'"),
    S("relearn_steps0", "steps must be .* got 0"),
    S("retain_floor15", r"retain_floor must be in \[0, 1\], got 1.5"),
    S("seed_neg", r"seeds must be a non-empty list of integers >= 0, got \[-1\]"),
    S("target15", "target=1.5 is unreachable"),
    S("threads0", "threads must be a positive integer.*got 0"),
    S("type_optimizers_map", "optimizers must be a list"),
    S("type_seeds_str", "seeds must be a list, got '0'"),
    S("type_steps_str", "steps must be a positive integer, got '20'"),
    S("type_target_str", "target must be a number, got '0.1'"),
    S("typo_attack_bit", "'bit'"),
    S("typo_opt_lr", "'learning_rate'"),
    S("typo_optimisers", "'optimisers'"),
    S("typo_seed", "unknown setting 'seed'"),
    S("zo_mu_neg", "mu must be > 0, got -1"),
    S("zo_q0", "q must be an integer >= 1, got 0"),
    ("s-missing", ["study", "@out", "--out", "@out"], "refuse", "study config .* not found", None),
    ("s-threads0-flag", ["study", "@yaml:base", "--threads", "0", "--out", "@out"], "refuse",
     "--threads must be >= 1, got 0", None),
    ("s-out-file", ["study", "@yaml:base", "--out", "@dir:file"], "refuse", "afile", None),
    ("s-out-nonempty-nonstudy", ["study", "@yaml:base", "--out", "@dir:user-files"], "refuse", "user-files", None),
    ("s-resume-overwrite", ["study", "@yaml:base", "--resume", "--overwrite", "--out", "@out"], "refuse",
     "--resume and --overwrite", None),
    ("s-out-readonly-parent", ["study", "@yaml:base", "--out", "@dir:ro-parent"], "refuse", "ro", None),
    ("s-out-readonly-self", ["study", "@yaml:base", "--out", "@dir:ro-self"], "refuse", "ro", None),
    ("s-diverge-lr1e9", ["study", "@yaml:diverge", "--out", "@out"], "check:study-diverged", None, None),
    ("s-overwrite-then-invalid", ["study", "@yaml:lr0", "--out", "@dir:old-study", "--overwrite"],
     "check:overwrite-then-invalid", None, None),
]

REPORT_DEMO = [
    ("r-missing", ["report", "@fx:missing"], "refuse", "holds no results.parquet", None),
    ("r-empty-dir", ["report", "@dir:empty"], "refuse", "holds no results.parquet", None),
    ("r-corrupt-parquet", ["report", "@dir:corrupt-study"], "refuse", "results.parquet", None),
    ("r-objective-unknown", ["report", "@dir:toy-study", "--objective", "nosuch"], "refuse",
     r"--objective 'nosuch' .*\['npo'\]", None),
    ("d-out-nonempty", ["demo", "--quick", "--out", "@dir:user-files"], "refuse", "user-files", None),
    ("d-model-bad", ["demo", "--model", "gpt2"], "refuse", "invalid choice: 'gpt2'", None),
]

SECTIONS = {
    "CLI unlearn: names & numbers": UNLEARN_NAMES,
    "CLI unlearn --model / evaluate: checkpoints": CHECKPOINTS,
    "CLI unlearn: output directory": UNLEARN_OUT,
    "CLI study: YAML & flags": STUDY,
    "CLI report / demo": REPORT_DEMO,
}
