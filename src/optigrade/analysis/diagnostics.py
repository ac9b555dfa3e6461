"""Mechanism diagnostics: how far unlearning moved the weights, and whether the move survives
quantization (SPEC §3.2).

* :func:`update_norms` — ‖θ_u − θ_0‖₂ globally and per block (per layer, attention / mlp /
  embeddings / norms / lm_head), with the relative size ‖Δ‖/‖θ_0‖.
* :func:`bin_crossing` — for an RTN quantizer (bits, group size, symmetric), the *bin-crossing
  fraction*

      BCF = mean_i 1[ round(θ_u,i / s_i) ≠ round(θ_0,i / s_i) ]

  where s_i is the step of θ_0's quantizer (the original model's grid, codes unclamped): the
  share of weights whose unlearning update moved them into another quantization bin.  It is
  0 for identical models and 1 when every weight moved by a full step.  Also reported:
  ‖Q(θ_u) − Q(θ_0)‖₂ with each model quantized by its *own* quantizer (what the attack really
  leaves of the update) next to ‖θ_u − θ_0‖₂, their ratio ``kept``, and the mean |Δ|/(s/2)
  (updates below 1 are typically erased).

Everything is computed in float64 over the same weights the attack quantizes (every
``nn.Linear`` by default).
"""

from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Optional

import pandas as pd
import torch

from .attacks import _check_bits, quant_step, quantize_tensor, target_weights

__all__ = ["update_norms", "bin_crossing", "diagnose", "block_of"]

_LAYER = re.compile(r"layers\.(\d+)\.")


def block_of(name: str) -> str:
    """Coarse block of a parameter name: "embeddings", "attention", "mlp", "norm", "lm_head"."""
    if "embed" in name:
        return "embeddings"
    if "lm_head" in name:
        return "lm_head"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name:
        return "mlp"
    if "norm" in name:
        return "norm"
    return "other"


def _pairs(base, model):
    pb = dict(base.named_parameters())
    for n, p in model.named_parameters():
        if n not in pb:
            raise ValueError(f"parameter {n!r} of the unlearned model is missing from the original; "
                             "compare checkpoints of the same architecture")
        if pb[n].shape != p.shape:
            raise ValueError(f"parameter {n!r}: shape {tuple(p.shape)} vs original {tuple(pb[n].shape)}")
        yield n, pb[n].detach().double(), p.detach().double()


@torch.no_grad()
def update_norms(base, model) -> Dict[str, float]:
    """``{"update_norm": ‖Δ‖, "update_norm_rel": ‖Δ‖/‖θ_0‖, "update_norm[attention]": …,
    "update_norm[layer 0]": …}`` over every parameter."""
    sq: Dict[str, float] = {}
    ref: Dict[str, float] = {}

    def add(key, d2, r2):
        sq[key] = sq.get(key, 0.0) + d2
        ref[key] = ref.get(key, 0.0) + r2

    for n, a, b in _pairs(base, model):
        d2, r2 = float((b - a).pow(2).sum()), float(a.pow(2).sum())
        add("all", d2, r2)
        add(block_of(n), d2, r2)
        m = _LAYER.search(n)
        if m:
            add(f"layer {m.group(1)}", d2, r2)
    out = {"update_norm": math.sqrt(sq["all"]), "update_norm_rel": math.sqrt(sq["all"] / max(ref["all"], 1e-300))}
    for k in sorted(sq):
        if k != "all":
            out[f"update_norm[{k}]"] = math.sqrt(sq[k])
    return out


@torch.no_grad()
def bin_crossing(base, model, bits: int = 4, group_size: Optional[int] = None, symmetric: bool = True,
                 modules: Optional[str] = None) -> Dict[str, float]:
    """Bin-crossing fraction and quantized-update norms for one quantizer (module docstring)."""
    _check_bits(bits)
    mb = dict(target_weights(base, modules))
    crossed = total = 0
    dq2 = d2 = 0.0
    half_ratio_sum = 0.0
    for n, wu in target_weights(model, modules):
        w0 = mb[n]
        s, z = quant_step(w0, bits, group_size, symmetric)
        c0 = quantize_tensor(w0, bits, group_size, symmetric, step=(s, z), return_codes=True)
        cu = quantize_tensor(wu, bits, group_size, symmetric, step=(s, z), return_codes=True)
        crossed += int((c0 != cu).sum())
        total += w0.numel()
        q0 = quantize_tensor(w0.double(), bits, group_size, symmetric)
        qu = quantize_tensor(wu.double(), bits, group_size, symmetric)
        dq2 += float((qu - q0).pow(2).sum())
        delta = (wu.double() - w0.double())
        d2 += float(delta.pow(2).sum())
        g = delta.reshape(s.shape[0], -1)
        half_ratio_sum += float((g.abs() / (s / 2)).sum())
    dn, dqn = math.sqrt(d2), math.sqrt(dq2)
    return {"bin_crossing": crossed / max(total, 1), "quant_update_norm": dqn, "linear_update_norm": dn,
            "kept": dqn / dn if dn > 0 else float("nan"), "update_over_half_step": half_ratio_sum / max(total, 1)}


def diagnose(base, model, bits: Iterable[int] = (4, 8), group_size: Optional[int] = None,
             symmetric: bool = True) -> pd.DataFrame:
    """Tidy rows ``(metric, value, bits)``: update norms (bits = NaN) and, per bit width,
    the bin-crossing diagnostics (metric names prefixed ``diag_``)."""
    rows: List[dict] = [{"metric": f"diag_{k}", "value": v, "bits": float("nan")}
                        for k, v in update_norms(base, model).items()]
    for b in bits:
        for k, v in bin_crossing(base, model, b, group_size, symmetric).items():
            rows.append({"metric": f"diag_{k}", "value": v, "bits": float(b)})
    return pd.DataFrame(rows)
