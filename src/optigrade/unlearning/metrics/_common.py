"""What the field's benchmark metrics share (private): greedy generation, answer
log-probabilities and ROUGE-L through ``rouge-score``.

All three take a :class:`~optigrade.unlearning.benchmarks.Benchmark` for its tokenization
conventions (BOS, how a prompt and an answer are joined: :meth:`Benchmark.encode_qa`), so a
metric scores exactly the tokens the unlearning objectives trained on.

    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts(n_entities=20)
    >>> model = tiny_llama(len(bench.tokenizer), seed=0, tokenizer=bench.tokenizer)
    >>> lp, n = answer_logprobs(model, bench, [("where was brenna born ?", "velmora")])
    >>> n.tolist(), bool(lp[0] < 0)
    ([1], True)
    >>> [round(s["recall"], 3) for s in rouge_l(["the cat sat"], ["the cat sat down"])]
    [0.75]
    >>> len(greedy_generate(model, bench, ["question : where was"], max_new_tokens=3)[0].split()) <= 3
    True
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..._device import model_device
from ..._lm import seq_nll, lm_logits
from ..._weights import eval_mode
from ..benchmarks.base import QA

__all__ = ["greedy_generate", "answer_logprobs", "rouge_l", "right_padded"]


def right_padded(seqs: Sequence[Sequence[int]], pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` [B, T] of token lists padded on the right with ``pad``.

        >>> ids, att = right_padded([[5, 6, 7], [8]], pad=0)
        >>> ids.tolist(), att.tolist()
        ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        att[j, : len(s)] = 1
    return ids, att


@torch.no_grad()
def answer_logprobs(model, bench, pairs: Sequence[Tuple[str, str]], batch_size: int = 32
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """``(log P(answer | prompt) summed over answer tokens, answer token counts)`` for each
    ``(prompt, answer)`` pair, as :meth:`Benchmark.encode_qa` tokenizes them (float64 arrays;
    ``exp(lp / n)`` is the length-normalized probability TOFU reports)."""
    if not pairs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    dev = model_device(model)
    lps: List[float] = []
    counts: List[int] = []
    with eval_mode(model):
        for i in range(0, len(pairs), batch_size):
            qa = [QA(p, a, "") for p, a in pairs[i : i + batch_size]]
            b = bench.encode_qa(qa, device=dev)
            nll, cnt = seq_nll(lm_logits(model, b), b["labels"])
            lps += [-float(x) for x in nll.double().tolist()]
            counts += [int(c) for c in cnt.tolist()]
    return np.asarray(lps, dtype=np.float64), np.asarray(counts, dtype=np.int64)


@torch.no_grad()
def greedy_generate(model, bench, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16,
                    stop_at_eos: bool = True) -> List[str]:
    """Greedy continuations of ``prompts`` (left-padded batches; the prompt is tokenized as
    :meth:`Benchmark.encode_qa` does, BOS included), decoded without special tokens and with
    leading/trailing whitespace stripped."""
    tok = bench.tokenizer
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    bos = [tok.bos_token_id] if bench._use_bos() else []
    dev = model_device(model)
    out: List[str] = []
    with eval_mode(model):
        for i in range(0, len(prompts), batch_size):
            ids = [bos + bench._ids(p) for p in prompts[i : i + batch_size]]
            T = max(map(len, ids))
            inp = torch.tensor([[pad] * (T - len(x)) + x for x in ids], device=dev)
            att = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], device=dev)
            gen = model.generate(input_ids=inp, attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=eos if stop_at_eos else None,
                                 num_beams=1, top_p=None, top_k=None, temperature=None)[:, T:]
            for row in gen.tolist():
                if stop_at_eos and eos in row:
                    row = row[: row.index(eos)]
                out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> List[Dict[str, float]]:
    """ROUGE-L (longest common subsequence) of each prediction against its reference, by
    ``rouge-score`` (``RougeScorer(["rougeL"], use_stemmer=True)``, as TOFU and MUSE score):
    ``{"recall", "precision", "f1"}`` per pair."""
    if len(predictions) != len(references):
        raise ValueError(f"rouge_l got {len(predictions)} predictions and {len(references)} references; "
                         "give one reference per prediction")
    try:
        from rouge_score import rouge_scorer
    except ImportError:  # a core dependency; only a broken install lacks it
        raise ImportError("ROUGE needs the `rouge-score` package: pip install rouge-score") from None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out = []
    for p, r in zip(predictions, references):
        s = scorer.score(r, p)["rougeL"]  # score(target, prediction)
        out.append({"recall": s.recall, "precision": s.precision, "f1": s.fmeasure})
    return out
