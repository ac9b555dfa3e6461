"""TOFU's metrics, computed as TOFU defines them (Maini et al. 2024, "TOFU: A Task of Fictitious
Unlearning for LLMs"; reference code locuslab/tofu ``evaluate_util.py`` and
``aggregate_eval_stat.py``, and open-unlearning ``src/evals/metrics/memorization.py`` /
``utility.py``).  Every value is a **fraction in [0, 1]** (the papers' tables print forget
probability, ROUGE and model utility ×100); forget quality is a p-value.

For a question q and an answer a, tokenized as the benchmark trains on them
(:meth:`~optigrade.unlearning.benchmarks.Benchmark.encode_qa`, EOS included for TOFU), the
length-normalized probability is ``P̄(a|q) = P(a|q)^(1/|a|) = exp(mean token log-prob)``.

Per evaluation set (forget = ``forgetNN_perturbed``, retain = ``retain_perturbed``, and the
utility sets ``real_authors_perturbed`` / ``world_facts_perturbed``):

* **probability** ``<set>_prob``: forget / retain: mean over questions of P̄(a|q).  Real authors
  / world facts: mean of P̄(a|q) / (P̄(a|q) + Σ_j P̄(ã_j|q)) over the true and perturbed
  answers (TOFU's aggregate_eval_stat; open-unlearning's probability_w_options).
* **ROUGE** ``<set>_rouge``: mean ROUGE-L *recall* of the greedy answer (up to the benchmark's
  ``max_new_tokens`` = 200, stopping at EOS) against a (``rouge-score``, stemmer on: TOFU's
  eval_rouge_recall).
* **truth ratio**: per question ``R = (Π_j P̄(ã_j|q))^(1/m) / P̄(â|q)``, the geometric mean of
  the m perturbed answers' normalized probabilities (TOFU averages their per-token losses, then
  exponentiates the difference) over that of the base answer â: the paraphrased answer on
  forget / retain, the answer itself on real authors / world facts.  Reported
  ``forget_truth_ratio`` = mean min(R, 1/R) (TOFU: closer to 1 is better, "forget"), and for the
  other sets mean max(0, 1 − R) (true answer preferred).  The paper's formula writes the
  arithmetic mean over perturbations; the published numbers come from the code's geometric mean,
  which is used here.
* **model utility** = harmonic mean of the nine retain / real-authors / world-facts
  probability, ROUGE and truth-ratio values (0 when any is 0).
* **forget quality** = p-value of the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``)
  between the per-question forget truth ratios R of the model and of a reference model trained
  without the forget set (TOFU's retain model); only when ``reference_truth_ratios`` is given.
  TOFU's code tests 1/R; the KS statistic and p-value are the same for any strictly monotone map
  applied to both samples.

TOFU's own evaluation capped each set at its first 300 questions (``ds_size: 300``); ``limit``
does the same here.  Worked example of the aggregates (log-probs chosen by hand):

    >>> import numpy as np
    >>> R = truth_ratios(np.log([0.5]), np.array([1]), [np.log([0.25, 0.25])], [np.array([1, 1])])
    >>> R.tolist(), forget_truth_ratio(R), retain_truth_ratio(R)
    ([0.5], 0.5, 0.5)
    >>> model_utility([0.5, 1.0, 1.0])   # 3 / (2 + 1 + 1)
    0.75
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ._common import answer_logprobs, greedy_generate, rouge_l

__all__ = ["tofu_metrics", "truth_ratios", "forget_truth_ratio", "retain_truth_ratio", "normalized_prob",
           "option_prob", "model_utility", "forget_quality", "UTILITY_KEYS"]

#: the nine values whose harmonic mean is TOFU's model utility
UTILITY_KEYS = tuple(f"{s}_{m}" for s in ("retain", "real_authors", "world_facts")
                     for m in ("prob", "rouge", "truth_ratio"))


def normalized_prob(lp: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``exp(lp / n)``: the length-normalized probability of answers with summed log-prob ``lp``
    over ``n`` tokens.

        >>> normalized_prob(np.log([0.25]), np.array([2])).round(6).tolist()
        [0.5]
    """
    return np.exp(np.asarray(lp, dtype=np.float64) / np.maximum(np.asarray(n), 1))


def truth_ratios(base_lp, base_n, pert_lp: Sequence[np.ndarray], pert_n: Sequence[np.ndarray]) -> np.ndarray:
    """Per-question truth ratio ``R_i = exp(mean_j lp_ij/n_ij − lp_i/n_i)``: the geometric mean of
    the perturbed answers' normalized probabilities over the base answer's (see module doc)."""
    base = np.asarray(base_lp, dtype=np.float64) / np.maximum(np.asarray(base_n), 1)
    pert = np.array([float(np.mean(np.asarray(l, dtype=np.float64) / np.maximum(np.asarray(c), 1)))
                     for l, c in zip(pert_lp, pert_n)])
    return np.exp(pert - base)


def forget_truth_ratio(r: np.ndarray) -> float:
    """Mean ``min(R, 1/R)`` (forget set: 1 = true and false answers equally likely)."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(np.mean(np.minimum(r, 1.0 / r)))


def retain_truth_ratio(r: np.ndarray) -> float:
    """Mean ``max(0, 1 − R)`` (retain / real authors / world facts: the true answer preferred)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(r, dtype=np.float64))))


def option_prob(true_lp, true_n, pert_lp: Sequence[np.ndarray], pert_n: Sequence[np.ndarray]) -> np.ndarray:
    """Per question ``P̄(a) / (P̄(a) + Σ_j P̄(ã_j))`` (real authors / world facts probability).

        >>> option_prob(np.log([0.5]), np.array([1]), [np.log([0.25, 0.25])], [np.array([1, 1])]).tolist()
        [0.5]
    """
    t = normalized_prob(true_lp, true_n)
    w = np.array([float(np.sum(normalized_prob(l, c))) for l, c in zip(pert_lp, pert_n)])
    return t / (t + w)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of ``values`` (TOFU: scipy.stats.hmean of the nine utility numbers); 0 when
    any value is 0."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.any(v <= 0):
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def forget_quality(truth_ratios_model: Sequence[float], truth_ratios_reference: Sequence[float]) -> float:
    """KS-test p-value between the model's and the reference model's per-question forget truth
    ratios (``scipy.stats.ks_2samp``, two-sided).

        >>> forget_quality([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
        1.0
    """
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(truth_ratios_model, dtype=np.float64),
                          np.asarray(truth_ratios_reference, dtype=np.float64)).pvalue)


def _flat_logprobs(model, bench, prompts: List[str], answers: List[List[str]], batch_size: int):
    """Log-probs of several answers per prompt, returned as one array per prompt."""
    pairs = [(p, a) for p, al in zip(prompts, answers) for a in al]
    lp, n = answer_logprobs(model, bench, pairs, batch_size=batch_size)
    out_lp, out_n, i = [], [], 0
    for al in answers:
        out_lp.append(lp[i : i + len(al)])
        out_n.append(n[i : i + len(al)])
        i += len(al)
    return out_lp, out_n


def _set_metrics(model, bench, name: str, rows: List[dict], batch_size: int, max_new_tokens: int,
                 rouge: bool) -> Dict[str, np.ndarray]:
    prompts = [bench.prompt(r["question"]) for r in rows]
    lp, n = answer_logprobs(model, bench, list(zip(prompts, [r["answer"] for r in rows])), batch_size=batch_size)
    base_lp, base_n = answer_logprobs(model, bench, list(zip(prompts, [r["base"] for r in rows])),
                                      batch_size=batch_size)
    p_lp, p_n = _flat_logprobs(model, bench, prompts, [list(r["perturbed"]) for r in rows], batch_size)
    per = {"truth_ratio": truth_ratios(base_lp, base_n, p_lp, p_n)}
    if name in ("forget", "retain"):
        per["prob"] = normalized_prob(lp, n)
    else:
        per["prob"] = option_prob(lp, n, p_lp, p_n)
    if rouge:
        gen = greedy_generate(model, bench, prompts, max_new_tokens=max_new_tokens)
        per["rouge"] = np.array([s["recall"] for s in rouge_l(gen, [r["answer"] for r in rows])])
    return per


def tofu_metrics(model, bench, reference_truth_ratios: Optional[Sequence[float]] = None, limit: Optional[int] = None,
                 max_new_tokens: Optional[int] = None, batch_size: int = 16, rouge: bool = True,
                 per_example: Optional[Dict[str, List[float]]] = None) -> Dict[str, float]:
    """TOFU's metrics of ``model`` on the TOFU benchmark ``bench`` (see the module docstring):
    ``forget_prob``, ``forget_rouge``, ``forget_truth_ratio``, the nine utility components
    ``{retain,real_authors,world_facts}_{prob,rouge,truth_ratio}``, ``model_utility`` and, when
    ``reference_truth_ratios`` (the reference model's ``per_example["forget_truth_ratio_raw"]``) is
    given, ``forget_quality``.  All fractions.

    ``limit``: score the first N questions of each set (TOFU used 300).  ``max_new_tokens``:
    default the benchmark's (200).  ``rouge=False`` skips generation (ROUGE values and model
    utility are then left out).  With a dict ``per_example``, also each question's values in set
    order: ``<set>_prob``, ``<set>_rouge``, ``<set>_truth_ratio_raw`` (R), for a bootstrap.  The
    model is used in eval mode on its own device; the global RNG is not touched (greedy decoding).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer (questions per set), got {limit!r}")
    mnt = int(max_new_tokens if max_new_tokens is not None else getattr(bench, "max_new_tokens", 200))
    out: Dict[str, float] = {}
    for name in ("forget", "retain", "real_authors", "world_facts"):
        rows = bench.eval_sets[name][:limit] if limit else bench.eval_sets[name]
        per = _set_metrics(model, bench, name, rows, batch_size, mnt, rouge)
        out[f"{name}_prob"] = float(np.mean(per["prob"]))
        if rouge:
            out[f"{name}_rouge"] = float(np.mean(per["rouge"]))
        r = per["truth_ratio"]
        out[f"{name}_truth_ratio"] = forget_truth_ratio(r) if name == "forget" else retain_truth_ratio(r)
        if per_example is not None:
            per_example[f"{name}_prob"] = per["prob"].tolist()
            per_example[f"{name}_truth_ratio_raw"] = r.tolist()
            if rouge:
                per_example[f"{name}_rouge"] = per["rouge"].tolist()
        if name == "forget":
            forget_r = r
    if rouge:
        out["model_utility"] = model_utility([out[k] for k in UTILITY_KEYS])
    if reference_truth_ratios is not None:
        out["forget_quality"] = forget_quality(forget_r, reference_truth_ratios)
    return out
