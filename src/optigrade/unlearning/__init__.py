"""optigrade.unlearning: benchmarks, models, objectives and the unlearn loop.

    >>> from optigrade.unlearning import SyntheticFacts, pretrained_tiny, NPO, unlearn
    >>> from optigrade import optimizers
    >>> bench = SyntheticFacts()                       # the embedded default benchmark
    >>> model, _ = pretrained_tiny(bench)              # doctest: +SKIP (cached after first use)
    >>> opt = optimizers.make("adam", model.parameters(), lr=1e-3)  # doctest: +SKIP
    >>> res = unlearn(model, NPO(), opt, bench, steps=200, target=0.1)  # doctest: +SKIP
"""

from .benchmark import QA, Benchmark, token_nll
from .loop import UnlearnResult, trainable_parameters, unlearn
from .models import ModelLoadError, TinyConfig, PretrainConfig, load, pretrain, pretrained_tiny, tiny_llama
from .objectives import GA, NPO, OBJECTIVES, WGA, GradDiff, Objective, Reference, SimNPO, make_objective
from .run import ConfigError, UnlearnConfig, run_unlearn, save_checkpoint
from .synthetic import SyntheticFacts

__all__ = [
    "QA", "Benchmark", "SyntheticFacts", "token_nll",
    "TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load", "ModelLoadError",
    "Objective", "GA", "GradDiff", "NPO", "SimNPO", "WGA", "Reference", "make_objective", "OBJECTIVES",
    "unlearn", "UnlearnResult", "trainable_parameters",
    "UnlearnConfig", "ConfigError", "run_unlearn", "save_checkpoint",
]

from . import smollm2  # noqa: E402,F401  registers the 'smollm2' model and 'smollm2-facts' benchmark
