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
``nn.Linear`` by default: :func:`optigrade._select.linear_weights`); blocks and layers come from
:func:`optigrade._select.block_of` / :func:`~optigrade._select.layer_of`.  :func:`diagnose`
returns rows of the one tidy schema (:mod:`optigrade._tables`).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import pandas as pd
import torch

from optigrade._select import block_of, layer_of, linear_weights
from optigrade._tables import rows_to_frame

from .attacks.rtn import check_bits, quant_step, rtn_quantize

__all__ = ["update_norms", "bin_crossing", "diagnose"]


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
    "update_norm[layer 0]": …}`` over every parameter, Δ = θ_model − θ_base.

    Identical models have norm 0; adding 1 to n weights gives ‖Δ‖ = √n:

    >>> import copy
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    >>> _ = torch.nn.init.constant_(net[0].weight, 0.5)                 # ‖θ_0‖ = 1
    >>> update_norms(net, copy.deepcopy(net))["update_norm"]
    0.0
    >>> moved = copy.deepcopy(net)
    >>> with torch.no_grad():
    ...     _ = moved[0].weight.add_(1.0)
    >>> update_norms(net, moved)
    {'update_norm': 2.0, 'update_norm_rel': 2.0, 'update_norm[other]': 2.0}
    """
    sq: Dict[str, float] = {}
    ref: Dict[str, float] = {}

    def add(key, d2, r2):
        sq[key] = sq.get(key, 0.0) + d2
        ref[key] = ref.get(key, 0.0) + r2

    for n, a, b in _pairs(base, model):
        d2, r2 = float((b - a).pow(2).sum()), float(a.pow(2).sum())
        add("all", d2, r2)
        add(block_of(n), d2, r2)
        layer = layer_of(n)
        if layer is not None:
            add(f"layer {layer}", d2, r2)
    out = {"update_norm": math.sqrt(sq["all"]), "update_norm_rel": math.sqrt(sq["all"] / max(ref["all"], 1e-300))}
    for k in sorted(sq):
        if k != "all":
            out[f"update_norm[{k}]"] = math.sqrt(sq[k])
    return out


@torch.no_grad()
def bin_crossing(base, model, bits: int = 4, group_size: Optional[int] = None, symmetric: bool = True,
                 modules: Optional[str] = None) -> Dict[str, float]:
    """Bin-crossing fraction and quantized-update norms for one quantizer (module docstring):
    ``bin_crossing``, ``quant_update_norm`` ‖Q(θ_u) − Q(θ_0)‖, ``linear_update_norm`` ‖θ_u − θ_0‖
    (over the quantized weights), ``kept`` (their ratio) and ``update_over_half_step``.

    A model against itself crosses nothing; moving every weight by one step s crosses every bin:

    >>> import copy
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> r = bin_crossing(net, copy.deepcopy(net), bits=4)
    >>> r["bin_crossing"], r["quant_update_norm"], r["linear_update_norm"]
    (0.0, 0.0, 0.0)
    >>> moved = copy.deepcopy(net)
    >>> s, _ = quant_step(net[0].weight, bits=4)
    >>> with torch.no_grad():
    ...     _ = moved[0].weight.add_(s.float())
    >>> r = bin_crossing(net, moved, bits=4)
    >>> r["bin_crossing"], round(r["update_over_half_step"], 4)
    (1.0, 2.0)
    """
    check_bits(bits)
    mb = dict(linear_weights(base, modules))
    crossed = total = 0
    dq2 = d2 = 0.0
    half_ratio_sum = 0.0
    for n, wu in linear_weights(model, modules):
        w0 = mb[n]
        s, z = quant_step(w0, bits, group_size, symmetric)
        c0 = rtn_quantize(w0, bits, group_size, symmetric, step=(s, z), return_codes=True)
        cu = rtn_quantize(wu, bits, group_size, symmetric, step=(s, z), return_codes=True)
        crossed += int((c0 != cu).sum())
        total += w0.numel()
        q0 = rtn_quantize(w0.double(), bits, group_size, symmetric)
        qu = rtn_quantize(wu.double(), bits, group_size, symmetric)
        dq2 += float((qu - q0).pow(2).sum())
        delta = (wu.double() - w0.double())
        d2 += float(delta.pow(2).sum())
        g = delta.reshape(s.shape[0], -1)
        half_ratio_sum += float((g.abs() / (s / 2)).sum())
    dn, dqn = math.sqrt(d2), math.sqrt(dq2)
    return {"bin_crossing": crossed / max(total, 1), "quant_update_norm": dqn, "linear_update_norm": dn,
            "kept": dqn / dn if dn > 0 else float("nan"), "update_over_half_step": half_ratio_sum / max(total, 1)}


_UNITS = {"update_norm_rel": "", "bin_crossing": "fraction", "kept": "", "update_over_half_step": "half steps"}


def _unit(name: str) -> str:
    return _UNITS.get(name.split("[")[0], "l2 weight norm")


def diagnose(base, model, bits: Iterable[int] = (4, 8), group_size: Optional[int] = None,
             symmetric: bool = True, subject: str = "unlearned", **context) -> pd.DataFrame:
    """Tidy rows (:mod:`optigrade._tables` schema) of the diagnostics of ``model`` against
    ``base``: the update norms (``setting_bits`` NaN) and, per bit width, the bin-crossing
    diagnostics (``setting_bits`` = b).  Quantities are named ``diag_<name>`` (``diag_update_norm``,
    ``diag_update_norm[mlp]``, ``diag_bin_crossing``, ...); ``data`` is "weights" (no data is
    scored); every row carries ``setting_group_size`` and ``setting_symmetric``, and costs 0
    loss / gradient / HVP passes.  ``context`` (``run_id``) is written on every row.

    >>> import copy
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> d = diagnose(net, copy.deepcopy(net), bits=(4,))
    >>> d[["data", "quantity", "value", "unit", "setting_bits"]].head(3)
          data                 quantity  value            unit  setting_bits
    0  weights         diag_update_norm    0.0  l2 weight norm           NaN
    1  weights     diag_update_norm_rel    0.0                           NaN
    2  weights  diag_update_norm[other]    0.0  l2 weight norm           NaN
    >>> float(d.loc[d["quantity"] == "diag_bin_crossing", "value"].iloc[0])
    0.0
    """
    rows: List[dict] = [{"quantity": f"diag_{k}", "value": v, "unit": _unit(k), "setting_bits": float("nan")}
                        for k, v in update_norms(base, model).items()]
    for b in bits:
        for k, v in bin_crossing(base, model, b, group_size, symmetric).items():
            rows.append({"quantity": f"diag_{k}", "value": v, "unit": _unit(k), "setting_bits": float(b)})
    return rows_to_frame(rows, {"group_size": group_size, "symmetric": symmetric},
                         {"loss": 0, "grad": 0, "hvp": 0}, subject=subject, data="weights", **context)
