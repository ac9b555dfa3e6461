"""optigrade.unlearning: benchmarks, models, objectives and the unlearn loop.

Three registries name what a config can ask for; each implementation registers itself:

    >>> from optigrade.unlearning import BENCHMARKS, MODELS, OBJECTIVES
    >>> BENCHMARKS.names(), MODELS.names(), OBJECTIVES.names()
    (['muse-books', 'muse-news', 'smollm2-facts', 'synthetic', 'tofu', 'wmdp'], ['smollm2', 'tiny'], ['ga', 'graddiff', 'npo', 'rmu', 'simnpo', 'wga'])

A run on the embedded default (``pretrained_tiny`` loads the tiny base shipped with the package,
sha256-checked; other settings are pretrained on first use and cached)::

    >>> from optigrade.unlearning import SyntheticFacts, pretrained_tiny, NPO, unlearn
    >>> from optigrade import optimizers
    >>> bench = SyntheticFacts()                       # the embedded default benchmark
    >>> model, _ = pretrained_tiny(bench)              # doctest: +SKIP
    >>> opt = optimizers.make("adam", model.parameters(), lr=1e-3)  # doctest: +SKIP
    >>> res = unlearn(model, NPO(), opt, bench, steps=200, target=0.1)  # doctest: +SKIP
    >>> res.save_pretrained("runs/npo-adam")          # doctest: +SKIP
"""

from .._validate import ModelLoadError
from .benchmarks import BENCHMARKS, QA, Benchmark, SyntheticFacts, benchmark_kwargs
from .loop import UnlearnResult, unlearn
from .models import MODELS, PretrainConfig, TinyConfig, pretrain, pretrained_tiny, tiny_llama
from .models import load as load_model
from .objectives import (GA, NPO, OBJECTIVES, RMU, WGA, GradDiff, Objective, Reference, SimNPO, make_objective,
                         objective_hyperparameters)
from .config import ObjectiveSpec, OptimizerSpec, Setup
from .run import ConfigError, UnlearnConfig, run_unlearn
from .schedules import cosine_schedule

__all__ = [
    "QA", "Benchmark", "SyntheticFacts", "BENCHMARKS", "benchmark_kwargs",
    "TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load_model", "MODELS",
    "ModelLoadError",
    "Objective", "GA", "GradDiff", "NPO", "SimNPO", "WGA", "RMU", "Reference", "make_objective",
    "objective_hyperparameters", "OBJECTIVES",
    "unlearn", "UnlearnResult", "cosine_schedule",
    "UnlearnConfig", "Setup", "OptimizerSpec", "ObjectiveSpec", "ConfigError", "run_unlearn",
]
