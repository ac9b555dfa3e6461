"""Causal-LM token NLL with the −100 ignore mask (private): the one definition shared by the
unlearning objectives, :meth:`Benchmark.evaluate`, the unlearn loop and the landscape Probe.

Position t of ``logits`` [B, T, V] predicts token t+1, so the loss pairs ``logits[:, :-1]`` with
``labels[:, 1:]``; a label of ``IGNORE`` (−100: prompt tokens, padding) takes no loss.  For the
counted positions M = {(b, t) : y_{b,t+1} ≠ −100}

    ℓ_{b,t} = −log softmax(logits_{b,t})[y_{b,t+1}]        (token_nll, 0 outside M)
    ℓ       = Σ_M ℓ_{b,t} / max(|M|, 1)                    (mean_nll, token-weighted)
    NLL_b   = Σ_t ℓ_{b,t},  |y_b| = #{t : (b, t) ∈ M}      (seq_nll)

Half-precision logits (float16 / bfloat16) are upcast to float32 first; float32 and float64 are
kept as they are.

Uniform logits over V = 4 tokens give ℓ = log 4 at every counted position:

    >>> import math, torch
    >>> logits = torch.zeros(1, 3, 4)
    >>> labels = torch.tensor([[IGNORE, 1, 2]])           # the first token is the prompt
    >>> nll, mask = token_nll(logits, labels)
    >>> nll.shape, mask.tolist()
    (torch.Size([1, 2]), [[True, True]])
    >>> math.isclose(mean_nll(logits, labels).item(), math.log(4), rel_tol=1e-6)
    True
    >>> total, count = seq_nll(logits, labels)
    >>> math.isclose(total.item(), 2 * math.log(4), rel_tol=1e-6), count.tolist()
    (True, [2])
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["IGNORE", "lm_logits", "shifted", "token_nll", "mean_nll", "seq_nll", "summed_nll"]

#: label value that takes no loss (prompt tokens, padding); the transformers convention
IGNORE = -100


def lm_logits(model, batch: dict) -> torch.Tensor:
    """``model(input_ids, attention_mask).logits`` [B, T, V] of a tokenized batch.

    A model with ``sparse_head = True`` (a :class:`optigrade._prefix.PrefixCache`) is also given
    the batch's ``labels`` as ``logits_at``: it computes the head only at the counted positions
    M (the only rows :func:`token_nll` reads) and returns zeros elsewhere."""
    if getattr(model, "sparse_head", False) and batch.get("labels") is not None:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     logits_at=batch["labels"]).logits
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits[:, :-1] (upcast), labels[:, 1:], mask)``: next-token pairs and the counted
    positions (``mask = labels[:, 1:] != IGNORE``)."""
    shift_labels = labels[:, 1:]
    return _upcast(logits[:, :-1, :]), shift_labels, shift_labels != IGNORE


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL ℓ_{b,t} of next-token prediction.

    Args:
        logits: [B, T, V]; position t predicts token t+1.
        labels: [B, T] long, ``IGNORE`` where no loss is taken.

    Returns:
        ``(nll [B, T-1], mask [B, T-1])`` with nll = 0 where masked.
    """
    shift_logits, shift_labels, mask = shifted(logits, labels)
    at = mask.nonzero(as_tuple=True)  # the log-softmax runs on the counted rows only
    logp = torch.log_softmax(shift_logits[at], dim=-1)
    picked = -logp.gather(-1, shift_labels[at].unsqueeze(-1)).squeeze(-1)
    nll = torch.zeros(mask.shape, dtype=shift_logits.dtype, device=shift_logits.device)
    return nll.index_put(at, picked), mask


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ℓ: token-weighted mean NLL over every counted token of the batch (a scalar)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp_min(1)


def seq_nll(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(NLL_seq [B], |y| [B])``: summed answer-token NLL and answer length per sequence."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(1), mask.sum(1)


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``(Σ_M ℓ_{b,t}, |M|)`` through one fused ``F.cross_entropy(reduction="sum")`` (the Probe's
    token-weighted loss: the sum over its batches divided by the total count).

    Same quantity as ``token_nll(...)[0].sum()``, computed by a different kernel, so the two may
    differ in the last bits.

        >>> import math, torch
        >>> s, c = summed_nll(torch.zeros(2, 3, 5), torch.tensor([[1, 2, IGNORE], [0, 3, 4]]))
        >>> c, math.isclose(s.item(), 3 * math.log(5), rel_tol=1e-6)
        (3, True)
    """
    shift_logits, shift_labels, mask = shifted(logits, labels)
    s = F.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="sum")  # counted rows only
    return s, int(mask.sum())
