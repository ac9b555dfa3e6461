"""Honest quantization diagnostics (SCIENCE.md §2): what of an unlearning update Δ = θ_u − θ_0
a quantizer / export E keeps, measured on the *original* model's lattice.

The "GGUF bin crossing" of :func:`~optigrade.analysis.attacks.gguf.bin_crossing_gguf` counts
dequantized values that differ: under Q4_1 any move of a block's min or max refits its d and m
and changes all 32 values, so it saturates.  These quantities replace it (they are added next to
the old rows, which stay as they are).  For every weight i of a quantized tensor, with s_i the
step of θ_0's grid (RTN: :func:`~optigrade.analysis.attacks.rtn.quant_step` of θ_0; GGUF: the
block scale d of θ_0's own block, float16 as stored) and c(x) = round((x − m_i)/s_i) the
*unclamped* code on that grid (m_i: RTN's zero point, GGUF's block minimum for Q*_1, 0 else):

* ``diag_level_change``  = mean_i 1[c(θ_u,i) ≠ c(θ_0,i)]                     (unit "fraction")
  — the share of weights that moved to another level of θ_0's grid (θ_u's codes on θ_0's scales).
* ``diag_surviving_update`` = ‖E(θ_u) − θ_0‖ / ‖θ_u − θ_0‖                   (unit "ratio")
* ``diag_surviving_cos`` = ⟨E(θ_u) − θ_0, θ_u − θ_0⟩ / (‖E(θ_u) − θ_0‖ ‖θ_u − θ_0‖)  ("cosine")
  — E(θ_u) is compared with θ_0 itself: what a user of the exported model runs, against the
  model before unlearning.  When θ_0 is not on its own lattice, E(θ_u) − θ_0 also holds θ_0's own
  rounding error, so ``diag_base_export_error`` = ‖E(θ_0) − θ_0‖ ("l2 weight norm") is reported:
  0 means the base sits on its lattice (a model loaded from a GGUF, re-exported to its types).
* ``diag_half_steps_mean`` / ``diag_half_steps_max`` = mean / max over *moved* weights
  (θ_u,i ≠ θ_0,i) of |θ_u,i − θ_0,i| / (s_i/2)                               ("half-steps")
  — below 1 a move cannot leave its bin (up to ties: round half to even).

Each is given for all the weights E quantizes (quantity without brackets) and per block
(``diag_level_change[mlp]``; blocks from :func:`optigrade._select.block_of`: attention, mlp,
embeddings, lm_head, norm, other); for GGUF also per storage type (``[type Q4_1]``).  Blocks
combine as sums: the total fraction is Σ changed / Σ n, the total ratio √(Σ‖·‖² / Σ‖Δ‖²).
Values are NaN where undefined (no weight moved, no quantized weight).  RTN covers the weights
the RTN attack quantizes (every ``nn.Linear``, :func:`optigrade._select.linear_weights`) with
E = :func:`~optigrade.analysis.attacks.rtn.rtn_quantize` in the parameter's dtype; GGUF covers
every parameter with E = :func:`~optigrade.analysis.attacks.gguf.quantize_weight` per type, F32
tensors (norms) kept exactly by E: they count in the surviving ratio and cosine (there E(θ_u) =
θ_u, ratio 1) but have no lattice, so none in level change or half-steps.  An all-constant group
/ block (step 0) keeps step 1, as RTN does.  Computed in float64.

Closed forms (RTN, 4 bits, one row on its grid: s = 0.875/7 = 1/8, codes 7, −4, 1, 0):

>>> import copy
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.tensor([[0.875, -0.5, 0.125, 0.0]]))
>>> def moved(i, by):
...     m = copy.deepcopy(net)
...     with torch.no_grad():
...         m[0].weight[0, i] += by
...     return rtn_quant_diagnostics(net, m, bits=4)
>>> r = moved(2, 1 / 32)                    # a quarter step: RTN erases it
>>> r["level_change"], r["surviving_update"], r["half_steps_mean"], r["base_export_error"]
(0.0, 0.0, 0.5, 0.0)
>>> r = moved(3, 1 / 8)                     # one full step: code 0 → 1, kept whole
>>> r["level_change"], r["surviving_update"], r["surviving_cos"], r["half_steps_max"]
(0.25, 1.0, 1.0, 2.0)
>>> moved(2, 1 / 16)["level_change"], moved(3, 1 / 16)["level_change"]   # one half-step: 1.5 → 2, 0.5 → 0
(0.25, 0.0)
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np
import pandas as pd
import torch

from optigrade._select import block_of, linear_weights
from optigrade._tables import rows_to_frame

from .attacks.rtn import check_bits, quant_step, rtn_quantize

__all__ = ["rtn_quant_diagnostics", "gguf_quant_diagnostics", "quant_diagnose"]

_FIELDS = ("n", "changed", "moved", "half_sum", "half_max", "num2", "den2", "dot", "base2")
_UNITS = {"level_change": "fraction", "surviving_update": "ratio", "surviving_cos": "cosine",
          "half_steps_mean": "half-steps", "half_steps_max": "half-steps", "base_export_error": "l2 weight norm"}


class _Acc:
    """Sums per key ("all", a block, "type Q4_1") from which the quantities are formed."""

    def __init__(self):
        self.s: Dict[str, Dict[str, float]] = {}

    def add(self, keys: Iterable[str], w0, wu, e0, eu, codes0=None, codesu=None, step=None):
        """One tensor: θ_0, θ_u, E(θ_0), E(θ_u) (float64, same shape); codes and per-weight steps
        (shaped like the weights) when the tensor has a lattice.  ``eu`` None: the tensor did not
        move (E(θ_u) = E(θ_0), no code changes; only the base's rounding error counts)."""
        if eu is None:
            e2 = float((e0 - w0).pow(2).sum())
            v = {"num2": e2, "den2": 0.0, "dot": 0.0, "base2": e2, "n": w0.numel() if codes0 is not None else 0,
                 "changed": 0, "moved": 0, "half_sum": 0.0, "half_max": float("-inf")}
            self._merge(keys, v)
            return
        delta = wu - w0
        kept = eu - w0
        v = {"num2": float(kept.pow(2).sum()), "den2": float(delta.pow(2).sum()),
             "dot": float((kept * delta).sum()), "base2": float((e0 - w0).pow(2).sum()),
             "n": 0, "changed": 0, "moved": 0, "half_sum": 0.0, "half_max": float("-inf")}
        if codes0 is not None:
            half = delta.abs().div_(step).mul_(2.0)  # 0 where the weight did not move
            moved = int(torch.count_nonzero(delta))
            v.update(n=w0.numel(), changed=int(torch.count_nonzero(codes0 != codesu)), moved=moved,
                     half_sum=float(half.sum()), half_max=float(half.max()) if moved else float("-inf"))
        self._merge(keys, v)

    def _merge(self, keys, v):
        for k in keys:
            a = self.s.setdefault(k, {f: (float("-inf") if f == "half_max" else 0) for f in _FIELDS})
            for f in _FIELDS:
                a[f] = max(a[f], v[f]) if f == "half_max" else a[f] + v[f]

    def values(self) -> Dict[str, float]:
        nan = float("nan")
        out: Dict[str, float] = {}
        for k in ["all"] + sorted(k for k in self.s if k != "all"):
            if k not in self.s:
                continue
            a = self.s[k]
            sfx = "" if k == "all" else f"[{k}]"
            nn, dd = math.sqrt(a["num2"]), math.sqrt(a["den2"])
            out[f"level_change{sfx}"] = a["changed"] / a["n"] if a["n"] else nan
            out[f"surviving_update{sfx}"] = nn / dd if dd > 0 else nan
            out[f"surviving_cos{sfx}"] = a["dot"] / (nn * dd) if nn > 0 and dd > 0 else nan
            out[f"half_steps_mean{sfx}"] = a["half_sum"] / a["moved"] if a["moved"] else nan
            out[f"half_steps_max{sfx}"] = a["half_max"] if a["moved"] else nan
            out[f"base_export_error{sfx}"] = math.sqrt(a["base2"])
        return out


@torch.no_grad()
def rtn_quant_diagnostics(base, model, bits: int = 4, group_size: Optional[int] = None, symmetric: bool = True,
                          modules: Optional[str] = None) -> Dict[str, float]:
    """The quantities of the module docstring for RTN at ``bits`` (the diagnose / attack
    settings), as ``{"level_change": …, "level_change[mlp]": …, …}``."""
    check_bits(bits)
    mb = dict(linear_weights(base, modules))
    acc = _Acc()
    for n, wu in linear_weights(model, modules):
        if n not in mb or mb[n].shape != wu.shape:
            raise ValueError(f"weight {n!r} differs between the models; compare checkpoints of one architecture")
        w0 = mb[n]
        s, z = quant_step(w0, bits, group_size, symmetric)
        keys = ("all", block_of(n))
        e0 = rtn_quantize(w0, bits, group_size, symmetric).double()  # E in the parameter's dtype, as the attack
        if torch.equal(w0, wu):  # unmoved (most tensors of a subset run): nothing else to compute
            acc.add(keys, w0.detach().double(), None, e0, None, codes0=True)
            continue
        c0 = rtn_quantize(w0, bits, group_size, symmetric, step=(s, z), return_codes=True)
        cu = rtn_quantize(wu, bits, group_size, symmetric, step=(s, z), return_codes=True)
        eu = rtn_quantize(wu, bits, group_size, symmetric).double()
        step = s.expand(s.shape[0], w0.numel() // s.shape[0]).reshape(w0.shape)
        acc.add(keys, w0.detach().double(), wu.detach().double(), e0, eu, c0, cu, step)
    return acc.values()


def _block_grid(raw: np.ndarray, type_name: str, shape) -> tuple:
    """θ_0's per-weight step d and offset m (float64 tensors shaped like the weight) read from its
    llama.cpp blocks: d is the first float16 of every block, m the second for Q4_1 / Q5_1."""
    import gguf

    _, bsize = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    blocks = np.ascontiguousarray(raw).reshape(-1, bsize)
    d = torch.from_numpy(blocks[:, 0:2].copy().view(np.float16).astype(np.float64))
    m = (torch.from_numpy(blocks[:, 2:4].copy().view(np.float16).astype(np.float64))
         if type_name.endswith("_1") else torch.zeros_like(d))
    d = torch.where(d != 0, d, torch.ones_like(d))
    return d.expand(-1, 32).reshape(shape), m.expand(-1, 32).reshape(shape)


@torch.no_grad()
def gguf_quant_diagnostics(base, model, types="source",
                           source_types: Optional[Mapping[str, str]] = None) -> Dict[str, float]:
    """The quantities of the module docstring for the GGUF export E = dequantize(quantize(·))
    under ``types`` (:func:`~optigrade.analysis.attacks.gguf.resolve_types` of ``base``; "source"
    falls back on ``model``'s source types, as ``bin_crossing_gguf``), split by block and by type.

    Q8_0, one block on its grid (d = 1/8, exact in float16): a move of a quarter step is erased,
    a whole step is kept:

    >>> import copy, pytest; _ = pytest.importorskip("gguf")
    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.arange(-16, 16, dtype=torch.float32).reshape(1, 32) / 8)
    ...     net[0].weight[0, 0] = 127 / 8
    >>> m = copy.deepcopy(net)
    >>> with torch.no_grad():
    ...     m[0].weight[0, 5] += 1 / 32
    >>> r = gguf_quant_diagnostics(net, m, "Q8_0")
    >>> r["level_change"], r["surviving_update"], r["half_steps_max"], r["base_export_error"]
    (0.0, 0.0, 0.5, 0.0)
    >>> with torch.no_grad():
    ...     m[0].weight[0, 5] += 3 / 32
    >>> r = gguf_quant_diagnostics(net, m, "Q8_0")
    >>> r["level_change"], r["surviving_update"], r["surviving_cos"], r["level_change[type Q8_0]"]
    (0.03125, 1.0, 1.0, 0.03125)
    """
    from .attacks.gguf import _PLAIN, quantize_weight, resolve_types

    if source_types is None and getattr(base, "gguf_types", None) is None:
        source_types = getattr(model, "gguf_types", {}).get("param_types")
    resolved = resolve_types(base, types, source_types)
    pu = dict(model.named_parameters())
    acc = _Acc()
    for n, p0 in base.named_parameters():
        if n not in pu or pu[n].shape != p0.shape:
            raise ValueError(f"models differ at {n!r}; compare checkpoints of one architecture")
        t = resolved[n]
        w0, wu = p0.detach().double(), pu[n].detach().double()
        raw0, e0 = quantize_weight(p0, t)
        e0 = e0.to(p0.dtype).double()  # what requantize_gguf writes back
        keys = ("all", block_of(n), f"type {t}")
        if torch.equal(p0, pu[n]):  # unmoved: E(θ_u) = E(θ_0)
            acc.add(keys, w0, None, e0, None, codes0=None if t in _PLAIN else True)
            continue
        eu = quantize_weight(pu[n], t)[1].to(p0.dtype).double()
        if t in _PLAIN:
            acc.add(keys, w0, wu, e0, eu)
            continue
        d, m = _block_grid(raw0, t, p0.shape)
        acc.add(keys, w0, wu, e0, eu, torch.round((w0 - m) / d), torch.round((wu - m) / d), d)
    return acc.values()


def _rows(values: Dict[str, float]) -> List[dict]:
    return [{"quantity": f"diag_{k}", "value": float(v), "unit": _UNITS[k.split("[")[0]]} for k, v in values.items()]


def quant_diagnose(base, model, bits: Iterable[int] = (4, 8), group_size: Optional[int] = None,
                   symmetric: bool = True, gguf_types=None, source_types: Optional[Mapping[str, str]] = None,
                   subject: str = "unlearned", **context) -> pd.DataFrame:
    """Tidy rows (the schema of :func:`~optigrade.analysis.diagnostics.diagnose`, ``data``
    "weights", cost 0) of the module docstring's quantities: per RTN bit width (settings
    ``quantizer`` "rtn", ``bits``, ``group_size``, ``symmetric``) and, when ``gguf_types`` is
    given ("source", a type name or a dict), for the GGUF export (``quantizer`` "gguf",
    ``gguf_types``; ``bits`` NaN).

    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> d = quant_diagnose(net, net, bits=(4,))
    >>> d.loc[d["quantity"] == "diag_level_change", ["value", "unit", "setting_quantizer", "setting_bits"]]
       value      unit setting_quantizer  setting_bits
    0    0.0  fraction               rtn           4.0
    """
    frames = []
    for b in bits:
        frames.append(rows_to_frame(_rows(rtn_quant_diagnostics(base, model, b, group_size, symmetric)),
                                    {"quantizer": "rtn", "bits": float(b), "group_size": group_size, "symmetric": symmetric},
                                    {"loss": 0, "grad": 0, "hvp": 0}, subject=subject, data="weights", **context))
    if gguf_types is not None:
        label = gguf_types if isinstance(gguf_types, str) else "dict"
        frames.append(rows_to_frame(_rows(gguf_quant_diagnostics(base, model, gguf_types, source_types)),
                                    {"quantizer": "gguf", "bits": float("nan"), "gguf_types": label},
                                    {"loss": 0, "grad": 0, "hvp": 0}, subject=subject, data="weights", **context))
    return pd.concat(frames, ignore_index=True) if frames else rows_to_frame([], subject=subject, data="weights")
