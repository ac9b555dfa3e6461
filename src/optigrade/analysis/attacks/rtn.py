"""Round-to-nearest (RTN) weight quantization, dequantized back to float: the "quantization
undoes unlearning" attack (SPEC §3.2 / §6).

For a group of weights w (one output row, or ``group_size`` consecutive inputs of a row) with
b bits:

    symmetric:   s = max|w| / (2^(b-1) − 1),   Q(w) = s · clamp(round(w/s), −2^(b-1), 2^(b-1) − 1)
    asymmetric:  s = (max w − min w) / (2^b − 1),  z = round(−min w / s),
                 Q(w) = s · (clamp(round(w/s) + z, 0, 2^b − 1) − z)

An all-zero group keeps s = 1 (and stays zero).  Q is idempotent up to float rounding, and
|Q(w) − w| ≤ s/2 for every weight inside the clamp range.  ``modules`` selects ``nn.Linear``
weights by module name (:func:`optigrade._select.linear_weights`); embeddings and norms are
left alone unless ``include_embeddings`` / ``include_norms``.
"""

from __future__ import annotations

import copy
import re
from typing import List, Literal, Optional, Tuple

import torch

from optigrade._select import check_pattern, linear_weights, matcher

from ._spec import AttackSpec, register

__all__ = ["quant_step", "rtn_quantize", "quantize_rtn", "check_bits", "check_group_size", "QuantizeSpec"]


# ----------------------------------------------------------------------------- checks
def check_bits(bits) -> int:
    """``bits`` is an integer in 2..8 (else ``ValueError`` with the fix).

    >>> check_bits(4)
    4
    >>> check_bits(16)
    Traceback (most recent call last):
    ...
    ValueError: bits=16 is outside 2..8; RTN supports 2 to 8 bits, e.g. bits: 4
    """
    if not (isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= 8):
        raise ValueError(f"bits={bits!r} is outside 2..8; RTN supports 2 to 8 bits, e.g. bits: 4")
    return bits


def _check_group(group_size) -> Optional[int]:
    if group_size is not None and not (isinstance(group_size, int) and not isinstance(group_size, bool)
                                       and group_size >= 1):
        raise ValueError(f"group_size={group_size!r} must be a positive integer or null (per output channel)")
    return group_size


def _check_modules(modules) -> Optional[str]:
    return check_pattern(modules, "modules", "'mlp' (module names, searched)")


def check_group_size(model, group_size: Optional[int], modules: Optional[str] = None) -> None:
    """Raise ``ValueError`` when ``group_size`` is not a positive integer / None, or does not
    divide the row length of every selected weight.

    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 2))
    >>> check_group_size(net, 4)
    >>> check_group_size(net, 3)
    Traceback (most recent call last):
    ...
    ValueError: group_size=3 does not divide the row length 8 of 0.weight (in_features); choose a divisor such as [1] or null (per output channel)
    """
    if _check_group(group_size) is None:
        return
    for name, w in linear_weights(model, modules):
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
    (``z`` = 0 when symmetric).  Computed in float64.

    >>> s, z = quant_step(torch.tensor([[0.7, -0.35, 0.1, 0.0]]), bits=4)   # s = max|w| / 7
    >>> round(float(s), 6), float(z)
    (0.1, 0.0)
    """
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


def rtn_quantize(w: torch.Tensor, bits: int = 4, group_size: Optional[int] = None,
                 symmetric: bool = True, step: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 return_codes: bool = False):
    """RTN-quantize one weight tensor and dequantize it (see the module docstring).

    ``step`` = ``(s, z)`` from :func:`quant_step` reuses another tensor's grid.
    ``return_codes=True`` returns the *unclamped* bin indices round(w/s) + z instead (used by
    the bin-crossing diagnostic).

    A tensor already on its grid is unchanged, and the error is at most half a step:

    >>> w = torch.tensor([[0.875, -0.5, 0.125, 0.0]])         # s = 0.875 / 7 = 1/8, codes 7, -4, 1, 0
    >>> torch.equal(rtn_quantize(w, bits=4), w)
    True
    >>> x = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> s, _ = quant_step(x, bits=4)
    >>> bool(((rtn_quantize(x, bits=4) - x).abs() <= s / 2 + 1e-12).all())
    True
    >>> rtn_quantize(w, bits=4, return_codes=True).tolist()
    [[7.0, -4.0, 1.0, 0.0]]
    >>> rtn_quantize(torch.tensor([[1.0, 0.3, -0.2, 0.0]]), bits=2, group_size=2).tolist()   # s = 1, then 0.2
    [[1.0, 0.0, -0.2..., 0.0]]
    """
    check_bits(bits)
    s, z = step if step is not None else quant_step(w, bits, group_size, symmetric)
    g = _grouped(w.detach(), group_size).double()
    codes = torch.round(g / s) + z
    if return_codes:
        return codes.reshape(w.shape)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    deq = (codes.clamp(lo, hi) - z) * s
    return deq.reshape(w.shape).to(w.dtype)


@torch.no_grad()
def quantize_rtn(model, bits: int = 4, group_size: Optional[int] = None, symmetric: bool = True,
                 modules: Optional[str] = None, include_embeddings: bool = False,
                 include_norms: bool = False):
    """A copy of ``model`` whose selected weights are RTN-quantized (fake-quantized: stored
    dequantized in the original dtype).  ``model`` is not modified.

    Args:
        bits: 2..8.
        group_size: None = one scale per output channel (row of an [out, in] Linear weight),
            else one per ``group_size`` consecutive input weights (must divide
            ``in_features``; 32..128 is usual).
        symmetric: see the module docstring.
        modules: pattern over module names (:mod:`optigrade._select`; default: every
            ``nn.Linear``, lm_head included).

    Example (hand-computed, symmetric 4-bit, one row): w = [0.7, −0.35, 0.1, 0] →
    s = 0.7/7 = 0.1, codes [7, −4 (−3.5 rounds half to even), 1, 0] → [0.7, −0.4, 0.1, 0]:

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[0.7, -0.35, 0.1, 0.0]]))
    >>> [round(v, 6) for v in quantize_rtn(net, bits=4)[0].weight[0].tolist()]
    [0.7, -0.4, 0.1, 0.0]
    >>> net[0].weight[0, 1].item()          # the input is untouched
    -0.3499999940395355
    """
    check_bits(bits)
    check_group_size(model, group_size, modules)
    _check_selects(model, modules, include_embeddings, include_norms)  # a selector matching nothing: no attack
    out = copy.deepcopy(model)
    for _, w in linear_weights(out, modules, include_embeddings, include_norms):
        w.copy_(rtn_quantize(w, bits, group_size, symmetric))
    return out


# ----------------------------------------------------------------------------- spec
class QuantizeSpec(AttackSpec):
    """Settings of ``kind: quantize`` (:func:`quantize_rtn`).

    >>> QuantizeSpec(bits=8, group_size=32).resolved()
    {'bits': 8, 'group_size': 32, 'symmetric': True, 'modules': None, 'include_embeddings': False, 'include_norms': False}
    """

    kind: Literal["quantize"] = "quantize"
    bits: int = 4
    group_size: Optional[int] = None
    symmetric: bool = True
    modules: Optional[str] = None
    include_embeddings: bool = False
    include_norms: bool = False

    checks = {"bits": check_bits, "group_size": _check_group, "modules": _check_modules}

    def _check_model(self, model, model_name: str) -> None:
        """Group size against the model's row lengths; ``modules`` must select some weight."""
        check_group_size(model, self.group_size, self.modules)
        _check_selects(model, self.modules, self.include_embeddings, self.include_norms)


def _check_selects(model, modules, include_embeddings, include_norms) -> None:
    if not modules:
        return
    if next(linear_weights(model, modules, include_embeddings, include_norms), None) is None:
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        raise ValueError(f"modules={modules!r} selects no nn.Linear weight of the model; module names look "
                         f"like {names[min(2, len(names) - 1)]!r}" if names else
                         f"modules={modules!r}: the model has no nn.Linear module")


register("quantize", quantize_rtn, QuantizeSpec)
