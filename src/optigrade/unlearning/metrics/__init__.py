"""The field's benchmark metrics, computed as the benchmarks define them: TOFU (forget
probability, ROUGE-L recall, truth ratio, model utility, forget quality), MUSE (VerbMem,
KnowMem, PrivLeak) and WMDP (zero-shot multiple-choice accuracy)."""

from ._common import answer_logprobs, greedy_generate, rouge_l
from .tofu import tofu_metrics
from .muse import muse_metrics
from .wmdp import mc_accuracy

__all__ = ["answer_logprobs", "greedy_generate", "rouge_l"]
