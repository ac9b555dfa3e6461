"""Attacks on unlearned models: each maps a model to a NEW model and never edits its input.

* :func:`quantize_rtn` — round-to-nearest weight quantization, dequantized back to float
  (the "quantization undoes unlearning" attack, SPEC §3.2 / §6).  For a group of weights w
  (one output row, or ``group_size`` consecutive inputs of a row) with b bits:

      symmetric:   s = max|w| / (2^(b-1) − 1),   Q(w) = s · clamp(round(w/s), −2^(b-1), 2^(b-1) − 1)
      asymmetric:  s = (max w − min w) / (2^b − 1),  z = round(−min w / s),
                   Q(w) = s · (clamp(round(w/s) + z, 0, 2^b − 1) − z)

  An all-zero group keeps s = 1 (and stays zero).  Q is idempotent up to float rounding.
* :func:`relearn` — AdamW fine-tuning on forget data (cosine schedule), optionally on one half
  of the forget *entities* only (``protocol="half"``), the other half being held out for
  measurement (:func:`forget_halves`, :func:`half_view`).
* :func:`weight_noise` — θ + σ·ε (or θ + σ·|θ|·ε with ``relative=True``), ε ~ N(0, I).

All randomness comes from a local ``torch.Generator`` seeded by ``seed``; the global RNG is
never touched.  ``modules`` is a regex over *module* names selecting ``nn.Linear`` weights
(embeddings and norms are left alone unless ``include_embeddings`` / ``include_norms``).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Iterator, List, Optional, Tuple

import torch

__all__ = ["quantize_rtn", "quantize_tensor", "quantize_bnb", "relearn", "weight_noise",
           "target_weights", "forget_halves", "half_view", "quant_step", "check_group_size"]


# ----------------------------------------------------------------------------- selection
def target_weights(model, modules: Optional[str] = None, include_embeddings: bool = False,
                   include_norms: bool = False) -> Iterator[Tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every ``nn.Linear`` whose module name matches the regex
    ``modules`` (all when None), plus embeddings / norm weights when asked.  Tied weights are
    yielded once."""
    rx = re.compile(modules) if modules else None
    seen = set()
    for name, mod in model.named_modules():
        is_lin = isinstance(mod, torch.nn.Linear)
        is_emb = isinstance(mod, torch.nn.Embedding) and include_embeddings
        is_norm = include_norms and "norm" in type(mod).__name__.lower() and hasattr(mod, "weight")
        if not (is_lin or is_emb or is_norm):
            continue
        if rx is not None and not rx.search(name):
            continue
        w = mod.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        yield f"{name}.weight", w


def check_group_size(model, group_size: Optional[int], modules: Optional[str] = None) -> None:
    """Raise ``ValueError`` when ``group_size`` does not divide every selected row length."""
    if group_size is None:
        return
    if not (isinstance(group_size, int) and group_size >= 1):
        raise ValueError(f"group_size must be a positive integer or None (per output channel), got {group_size!r}")
    for name, w in target_weights(model, modules):
        if w.shape[-1] % group_size:
            raise ValueError(
                f"group_size={group_size} does not divide the row length {w.shape[-1]} of {name} "
                f"(in_features); choose a divisor such as {_divisors(w.shape[-1])} or null (per output channel)")


def _divisors(n: int) -> List[int]:
    return [d for d in (16, 32, 64, 128) if n % d == 0] or [1]


# ----------------------------------------------------------------------------- RTN
def _grouped(w: torch.Tensor, group_size: Optional[int]) -> torch.Tensor:
    w2 = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    if group_size is None:
        return w2
    if w2.shape[1] % group_size:
        raise ValueError(f"group_size={group_size} does not divide the row length {w2.shape[1]}")
    return w2.reshape(-1, group_size)


def quant_step(w: torch.Tensor, bits: int = 4, group_size: Optional[int] = None,
               symmetric: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """The quantizer's step ``s`` and zero point ``z`` per group, shapes ``[n_groups, 1]``
    (``z`` = 0 when symmetric).  Computed in float64."""
    g = _grouped(w.detach(), group_size).double()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s = g.abs().amax(1, keepdim=True) / qmax
        s = torch.where(s > 0, s, torch.ones_like(s))
        return s, torch.zeros_like(s)
    lo = g.amin(1, keepdim=True).clamp(max=0.0)
    hi = g.amax(1, keepdim=True).clamp(min=0.0)
    s = (hi - lo) / (2 ** bits - 1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s, torch.round(-lo / s)


def quantize_tensor(w: torch.Tensor, bits: int = 4, group_size: Optional[int] = None,
                    symmetric: bool = True, step: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                    return_codes: bool = False):
    """RTN-quantize one weight tensor and dequantize it (see the module docstring).

    ``step`` = ``(s, z)`` from :func:`quant_step` reuses another tensor's grid.
    ``return_codes=True`` returns the *unclamped* bin indices round(w/s) + z instead (used by
    the bin-crossing diagnostic)."""
    _check_bits(bits)
    s, z = step if step is not None else quant_step(w, bits, group_size, symmetric)
    g = _grouped(w.detach(), group_size).double()
    codes = torch.round(g / s) + z
    if return_codes:
        return codes.reshape(w.shape)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    deq = (codes.clamp(lo, hi) - z) * s
    return deq.reshape(w.shape).to(w.dtype)


def _check_bits(bits) -> None:
    if not (isinstance(bits, int) and 2 <= bits <= 8):
        raise ValueError(f"bits must be an integer in 2..8, got {bits!r}; e.g. 4 or 8")


@torch.no_grad()
def quantize_rtn(model, bits: int = 4, group_size: Optional[int] = None, symmetric: bool = True,
                 modules: Optional[str] = None, include_embeddings: bool = False,
                 include_norms: bool = False):
    """A copy of ``model`` whose selected weights are RTN-quantized (fake-quantized: stored
    dequantized in the original dtype).

    Args:
        bits: 2..8.  group_size: None = one scale per output channel (row of an [out, in]
            Linear weight), else one per ``group_size`` consecutive input weights (must divide
            ``in_features``; 32..128 is usual).  symmetric: see the module docstring.
        modules: regex over module names (default: every ``nn.Linear``, lm_head included).

    Example (hand-computed, symmetric 4-bit, one row): w = [0.7, −0.35, 0.1, 0] →
    s = 0.7/7 = 0.1, codes [7, −4 (−3.5 rounds half to even), 1, 0] → [0.7, −0.4, 0.1, 0].
    """
    _check_bits(bits)
    check_group_size(model, group_size, modules)
    out = copy.deepcopy(model)
    for _, w in target_weights(out, modules, include_embeddings, include_norms):
        w.copy_(quantize_tensor(w, bits, group_size, symmetric))
    return out


def quantize_bnb(model, bits: int = 4):  # pragma: no cover - needs CUDA + bitsandbytes
    """bitsandbytes round trip (NF4 for 4 bits, int8 absmax for 8) on CUDA, dequantized back
    into a CPU float copy.  Raises ``RuntimeError`` when CUDA or bitsandbytes is missing."""
    if not torch.cuda.is_available():
        raise RuntimeError("quantize_bnb needs CUDA; use quantize_rtn on CPU")
    try:
        import bitsandbytes.functional as bnbf
    except ImportError as e:
        raise RuntimeError("quantize_bnb needs `pip install bitsandbytes`") from e
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, w in target_weights(out):
            wc = w.detach().cuda().half()
            if bits == 4:
                q, st = bnbf.quantize_4bit(wc, quant_type="nf4")
                d = bnbf.dequantize_4bit(q, st)
            elif bits == 8:
                q, st = bnbf.quantize_blockwise(wc)
                d = bnbf.dequantize_blockwise(q, st)
            else:
                raise ValueError(f"bitsandbytes supports bits 4 or 8, got {bits}")
            w.copy_(d.float().cpu().to(w.dtype))
    return out


# ----------------------------------------------------------------------------- noise
@torch.no_grad()
def weight_noise(model, sigma: float, relative: bool = False, seed: int = 0,
                 modules: Optional[str] = None, include_embeddings: bool = False,
                 include_norms: bool = False):
    """A copy of ``model`` with θ ← θ + σ·ε (``relative``: θ + σ·|θ|·ε), ε ~ N(0, I) drawn
    from ``torch.Generator().manual_seed(seed)`` in module order."""
    if not (isinstance(sigma, (int, float)) and sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}; e.g. 0.01")
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(int(seed))
    for _, w in target_weights(out, modules, include_embeddings, include_norms):
        eps = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.dtype)
        w.add_(eps * (sigma * w.abs() if relative else sigma))
    return out


# ----------------------------------------------------------------------------- relearning
def forget_halves(benchmark, seed: int = 0) -> Tuple[List[str], List[str]]:
    """Split the forget *groups* (entities) into two halves (A: fine-tune, B: measure),
    deterministically from ``seed``."""
    groups = sorted({x.group for x in benchmark.splits["forget"]})
    if len(groups) < 2:
        raise ValueError(f"protocol='half' needs at least 2 forget groups, the benchmark has {len(groups)}")
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(int(seed))).tolist()
    k = len(groups) // 2
    return sorted(groups[i] for i in perm[:k]), sorted(groups[i] for i in perm[k:])


def half_view(benchmark, groups: List[str]):
    """A shallow copy of ``benchmark`` whose forget splits keep only ``groups``."""
    keep = set(groups)
    view = copy.copy(benchmark)
    view.splits = dict(benchmark.splits)
    for s in ("forget", "forget_para"):
        if s in view.splits:
            view.splits[s] = [x for x in benchmark.splits[s] if x.group in keep]
    return view


def relearn(model, benchmark, steps: int = 100, lr: float = 1e-5, n_samples: Optional[int] = None,
            batch_size: int = 4, seed: int = 0, split: str = "forget", protocol: str = "full",
            weight_decay: float = 0.0, warmup: int = 0, progress: bool = False):
    """The relearning attack: a copy of ``model`` fine-tuned with AdamW on ``split`` data
    (answer-token NLL), cosine learning-rate schedule from ``lr`` to 0 over ``steps``.

    Args:
        n_samples: use only the first ``n_samples`` examples of a seeded permutation of the
            training pool (None: all).
        protocol: "full" fine-tunes on the whole forget split; "half" fine-tunes only on half A
            of the forget entities (:func:`forget_halves` with ``seed``), so the attack can be
            measured on the untouched half B (``half_view(benchmark, B)``).

    Returns the new model (eval mode).
    """
    from optigrade.unlearning.benchmark import _to
    from optigrade.unlearning.objectives import _logits, mean_nll

    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}; e.g. 100 (Relearn100)")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}; e.g. 1e-5")
    if protocol not in ("full", "half"):
        raise ValueError(f"protocol must be 'full' or 'half', got {protocol!r}")
    if split not in benchmark.splits:
        raise ValueError(f"split {split!r} not in the benchmark; choose one of {sorted(benchmark.splits)}")
    pool = list(benchmark.splits[split])
    if protocol == "half":
        a, _ = forget_halves(benchmark, seed)
        keep = set(a)
        pool = [x for x in pool if x.group in keep]
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(pool), generator=gen).tolist()
    if n_samples is not None:
        if not (isinstance(n_samples, int) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer or None, got {n_samples!r}")
        perm = perm[:n_samples]
    pool = [pool[i] for i in perm]
    out = copy.deepcopy(model)
    out.eval()  # no dropout; gradients still flow
    params = list(out.parameters())  # the attacker fine-tunes the whole model, frozen or not
    for p in out.parameters():
        p.requires_grad_(True)
        p.grad = None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def sched(t):
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))

    lrs = torch.optim.lr_scheduler.LambdaLR(opt, sched)
    bs = min(batch_size, len(pool))
    order: List[int] = []
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="relearn", disable=not progress, leave=False):
        if len(order) < bs:
            order += torch.randperm(len(pool), generator=gen).tolist()
        idx, order = order[:bs], order[bs:]
        batch = _to(benchmark.encode_qa([pool[i] for i in idx]), out)
        loss = mean_nll(_logits(out, batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lrs.step()
    for p in out.parameters():
        p.grad = None
    out.eval()
    return out
