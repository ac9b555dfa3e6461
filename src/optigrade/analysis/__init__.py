"""optigrade.analysis: attacks, mechanism diagnostics, the grade × objective × attack study,
reports and the ``optigrade`` CLI.

    >>> from optigrade.analysis import quantize_rtn, relearn, weight_noise, bin_crossing
    >>> from optigrade.analysis import StudyConfig, run_study, load_config    # doctest: +SKIP
    >>> res = run_study(load_config("configs/demo.yaml"), "runs/demo")  # doctest: +SKIP
"""

from .attacks import (ATTACKS, AttackSpec, apply_attack, attack_spec, forget_halves, half_view, quantize_rtn,
                      relearn, rtn_quantize, weight_noise)
from .config import DiagnosticsSpec, ObjectiveSpec, OptimizerSpec, StudyConfig, load_config
from .diagnostics import bin_crossing, diagnose, update_norms
from .report import claim_sentences, load_study, markdown_summary, summarize
from .study import StudyResult, run_study

__all__ = [
    "ATTACKS", "attack_spec", "apply_attack",
    "quantize_rtn", "rtn_quantize", "relearn", "weight_noise", "forget_halves", "half_view",
    "update_norms", "bin_crossing", "diagnose",
    "StudyConfig", "OptimizerSpec", "ObjectiveSpec", "AttackSpec", "DiagnosticsSpec", "load_config",
    "run_study", "StudyResult", "summarize", "markdown_summary", "claim_sentences", "load_study",
]
