"""Benchmarks: forget / retain / held-out facts, their tokenizer and ``evaluate(model)``.

:data:`BENCHMARKS` maps a name to its :class:`Benchmark` class; each implementation registers
itself, and importing this package imports them all:

* ``"synthetic"``: :class:`SyntheticFacts`, the embedded default (fictitious people);
* ``"smollm2-facts"``: :class:`RealFacts`, real facts verified against SmolLM2-135M-Instruct;
* ``"tofu"``, ``"muse-news"``, ``"muse-books"``, ``"wmdp"``: the field's benchmarks read from a
  local copy of their public layouts (``data_dir``; see each module), with their published metrics
  (:meth:`Benchmark.benchmark_metrics`).

    >>> from optigrade.unlearning.benchmarks import BENCHMARKS, benchmark_kwargs
    >>> BENCHMARKS.names()
    ['muse-books', 'muse-news', 'smollm2-facts', 'synthetic', 'tofu', 'wmdp']
    >>> bench = BENCHMARKS.get("synthetic")(n_entities=20, forget_fraction=0.1)
    >>> len(bench.forget), len(bench.retain)         # 2 of 20 people × 5 attributes
    (10, 90)
    >>> "n_forget" in benchmark_kwargs("smollm2-facts")
    True
"""

from .base import BENCHMARKS, QA, Benchmark, answer_stats, benchmark_kwargs
from .real_facts import RealFacts, TooFewFactsError, check_reply
from .synthetic import ATTRIBUTES, SyntheticFacts
from .tofu import TOFU, write_layout_from_facts
from .muse import MUSE, MUSEBooks
from .wmdp import WMDP

__all__ = ["BENCHMARKS", "Benchmark", "QA", "benchmark_kwargs", "answer_stats",
           "SyntheticFacts", "ATTRIBUTES", "RealFacts", "TooFewFactsError", "check_reply"]
