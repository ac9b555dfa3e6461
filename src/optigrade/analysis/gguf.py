"""GGUF: the quantization format real users run, as an attack and as an export.

An unlearned float model reaches users as a GGUF file: each matrix is cut into blocks of 32
weights along its input dimension (the last dimension of a Hugging Face ``[out, in]`` weight)
and stored with llama.cpp's block codes, e.g. Q4_1: per block a scale d and minimum m (float16)
and 4-bit codes q ∈ {0..15}, value = d·q + m.  What a user's model computes with is
``dequantize(quantize(θ))``, so an unlearning update that does not move a weight across a
quantization bin is erased (SPEC §3.2, §4c).

* :func:`requantize_gguf` — the attack: a NEW model whose weights are ``dequantize(quantize(θ))``
  per tensor, with ``gguf.quants`` (llama.cpp's own reference quantizers in numpy).
  ``types="source"`` uses each tensor's type in the source file (SmolLM2: token_embd Q8_0, the
  other matrices Q4_1, norms F32); a type name applies it to every matrix (1-D norms stay F32, as
  llama.cpp does).  For an unmodified model loaded from the GGUF, ``types="source"`` returns the
  same weights bit for bit.
* :func:`export_gguf` — writes a real ``.gguf`` (metadata and tokenizer copied from the source
  file; q/k rows permuted into llama.cpp's rotary layout) that ``transformers`` and llama.cpp load.
* :func:`bin_crossing_gguf` — share of (matrix) weights whose quantized value differs between two
  models: the part of an update that survives quantization.

The input model is never modified.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np
import torch

__all__ = ["SUPPORTED_TYPES", "requantize_gguf", "export_gguf", "bin_crossing_gguf", "BinCrossing",
           "resolve_types", "quantize_weight", "permute_qk", "unpermute_qk"]

SUPPORTED_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
_PLAIN = ("F32", "F16", "BF16")  # allowed as per-tensor types (source files keep norms in F32)
Types = Union[str, Mapping[str, str]]


def _qtype(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def _check_type(name: str, where: str = "types") -> str:
    if not isinstance(name, str) or name.upper() not in SUPPORTED_TYPES + _PLAIN:
        raise ValueError(f"unsupported GGUF type {name!r} in {where}; supported: 'source', "
                         f"{', '.join(repr(t) for t in SUPPORTED_TYPES)} (and F32/F16/BF16 per tensor); "
                         f"K-quants (Q4_K, ...) cannot be quantized by the gguf package")
    return name.upper()


def resolve_types(model, types: Types = "source", source_types: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Per-parameter GGML type names for ``model``'s named parameters.

    ``types``: ``"source"`` (each tensor's type in the source file: ``source_types`` or, when
    None, ``model.gguf_types["param_types"]`` set by :func:`unlearning.smollm2.load_smollm2`), a
    supported type name (every ≥2-D weight; 1-D tensors stay F32), or a dict name → type.

    Raises:
        ValueError: unsupported type, or ``"source"`` without source types.
    """
    names = [n for n, _ in model.named_parameters()]
    if isinstance(types, Mapping):
        out = {n: _check_type(t, f"types[{n!r}]") for n, t in types.items()}
        missing = [n for n in names if n not in out]
        if missing:
            raise ValueError(f"types dict lacks {len(missing)} parameter(s), e.g. {missing[0]!r}")
        return out
    if not isinstance(types, str):
        raise ValueError(f"types must be 'source', a type name or a dict, got {type(types).__name__}")
    if types.lower() == "source":
        src = source_types
        if src is None:
            src = getattr(model, "gguf_types", {}).get("param_types")
        if src is None:
            raise ValueError("types='source' needs the source file's per-tensor types: pass source_types= "
                             "(unlearning.smollm2.gguf_types()['param_types']) or a model from load_smollm2()")
        missing = [n for n in names if n not in src]
        if missing:
            raise ValueError(f"source_types lacks {missing[0]!r} (and {len(missing) - 1} more); "
                             f"is this model the one the GGUF file describes?")
        return {n: _check_type(src[n], "source_types") for n in names}
    t = _check_type(types)
    if t in _PLAIN:
        raise ValueError(f"unsupported GGUF type {types!r} as a whole-model type; supported: 'source', "
                         f"{', '.join(repr(x) for x in SUPPORTED_TYPES)}")
    return {n: (t if p.dim() >= 2 else "F32") for n, p in model.named_parameters()}


def quantize_weight(w: torch.Tensor, type_name: str):
    """``(raw, dequantized)``: llama.cpp block codes (uint8 [rows, bytes], or the float array for
    F32/F16/BF16) and their float32 values as a tensor shaped like ``w``."""
    import gguf

    qt = _qtype(type_name)
    arr = w.detach().to("cpu", torch.float32).numpy()
    if type_name == "F32":
        return arr.copy(), w.detach().to("cpu", torch.float32).clone()
    if arr.shape[-1] % 32 != 0:
        raise ValueError(f"cannot quantize a weight of shape {tuple(arr.shape)} to {type_name}: "
                         f"its last dimension is not a multiple of the block size 32")
    raw = gguf.quants.quantize(arr, qt)
    deq = gguf.quants.dequantize(raw, qt).reshape(arr.shape).astype(np.float32, copy=False)
    return raw, torch.from_numpy(np.ascontiguousarray(deq))


@torch.no_grad()
def requantize_gguf(model, types: Types = "source", source_types: Optional[Mapping[str, str]] = None):
    """The GGUF re-export attack: a new model with θ ← dequantize(quantize(θ)) per tensor.

    Args:
        model: a float causal LM (left untouched).
        types: see :func:`resolve_types`.
        source_types: HF name → GGML type of the source file (for ``types="source"``).

    Returns:
        A deep copy of ``model`` holding the dequantized weights (float32 values cast back to
        each parameter's dtype).

    Raises:
        ValueError: unsupported type (the message lists the supported ones).
    """
    resolved = resolve_types(model, types, source_types)
    new = copy.deepcopy(model)
    for name, p in new.named_parameters():
        t = resolved[name]
        if t == "F32" and p.dtype == torch.float32:
            continue
        _, deq = quantize_weight(p, t)
        p.copy_(deq.to(p.dtype))
    return new


@dataclass(frozen=True)
class BinCrossing:
    """Share of quantized weights whose quantized value differs between two models.

    ``fraction = n_changed / n_total`` over every tensor whose type is a quantized one (F32
    tensors are excluded: they have no bins); ``changed_any`` is the share of weights that differ
    at all in float; ``per_tensor`` maps name → fraction."""

    fraction: float
    n_changed: int
    n_total: int
    changed_any: float
    types: str
    per_tensor: Dict[str, float] = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"tensor": k, "bin_crossing": v} for k, v in self.per_tensor.items()])


@torch.no_grad()
def bin_crossing_gguf(model_a, model_b, types: Types = "source",
                      source_types: Optional[Mapping[str, str]] = None) -> BinCrossing:
    """Bin-crossing fraction between ``model_a`` (e.g. original) and ``model_b`` (unlearned)
    under the GGUF types of ``model_a`` (see :func:`resolve_types`)."""
    if source_types is None and getattr(model_a, "gguf_types", None) is None:
        source_types = getattr(model_b, "gguf_types", {}).get("param_types")
    resolved = resolve_types(model_a, types, source_types)
    pb = dict(model_b.named_parameters())
    changed = total = moved = all_n = 0
    per = {}
    for name, pa in model_a.named_parameters():
        if name not in pb or pb[name].shape != pa.shape:
            raise ValueError(f"models differ at {name!r}; bin crossing needs two checkpoints of one architecture")
        moved += int((pa != pb[name]).sum())
        all_n += pa.numel()
        t = resolved[name]
        if t in _PLAIN:
            continue
        _, qa = quantize_weight(pa, t)
        _, qb = quantize_weight(pb[name], t)
        c = int((qa != qb).sum())
        per[name] = c / pa.numel()
        changed += c
        total += pa.numel()
    return BinCrossing(fraction=changed / max(total, 1), n_changed=changed, n_total=total,
                       changed_any=moved / max(all_n, 1), types=str(types) if isinstance(types, str) else "dict",
                       per_tensor=per)


# ------------------------------------------------------------------------------------- export
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotary layout → llama.cpp's (what convert_hf_to_gguf does to q_proj / k_proj rows):
    within each head, interleave the two rotary halves."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (what transformers' GGUF loader does)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_SKIP_KV = {"general.architecture", "general.file_type"}


def export_gguf(model, tokenizer, path, types: Types = "source", source_types: Optional[Mapping[str, str]] = None,
                source_file=None, overwrite: bool = False) -> Path:
    """Write ``model`` as a GGUF file at ``path`` (metadata + tokenizer from ``source_file``).

    Every tensor is quantized with :func:`quantize_weight` in Hugging Face layout (blocks run
    along rows, so they are unaffected by the row permutation), then q/k rows are permuted into
    llama.cpp's layout.  The file round-trips: ``AutoModelForCausalLM.from_pretrained(dir,
    gguf_file=name)`` gives the weights of ``requantize_gguf(model, types)`` bit for bit.

    Args:
        model: a Llama causal LM with the source file's shapes (SmolLM2-135M).
        tokenizer: its tokenizer (checked against the source vocabulary size).
        path: output ``.gguf`` (written to a temporary sibling, then renamed).
        source_file: the GGUF whose metadata to copy (default: the packaged SmolLM2 file).

    Raises:
        ValueError: unsupported type, or a model/tokenizer that does not match the source file.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import os
    import tempfile

    import gguf

    path = Path(path)
    if path.suffix != ".gguf":
        raise ValueError(f"export path {str(path)!r} must end in .gguf")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another path")
    resolved = resolve_types(model, types, source_types)
    if source_file is None:
        from optigrade.unlearning.smollm2 import smollm2_gguf_path

        source_file = smollm2_gguf_path()
    reader = gguf.GGUFReader(str(source_file))
    arch = reader.fields["general.architecture"].contents()
    cfg = model.config
    meta = {k: reader.fields[k].contents() for k in (f"{arch}.embedding_length", f"{arch}.block_count",
                                                       f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv")}
    want = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    if tuple(meta.values()) != want:
        raise ValueError(f"model config (hidden, layers, heads, kv heads) = {want} does not match the source GGUF "
                         f"{source_file} {tuple(meta.values())}; export needs the source file of this architecture")
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    if tokenizer is not None and len(tokenizer) != n_vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the source GGUF {n_vocab}: export copies the "
                         f"source tokenizer, so the tokenizer must be the model's original one")
    from optigrade.unlearning.smollm2 import hf_to_gguf_name

    params = dict(model.named_parameters())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch)
        for key, f in reader.fields.items():
            if key.startswith("GGUF.") or key in _SKIP_KV:
                continue
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            val = f.contents()
            w.add_key_value(key, val, vtype, sub_type=sub)
        ftypes = {resolved[n] for n, p in params.items() if p.dim() >= 2}
        ftype = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "F16": 1, "F32": 0}
        w.add_uint32("general.file_type", ftype.get(ftypes.pop(), 3) if len(ftypes) == 1 else 3)
        by_gguf = {hf_to_gguf_name(n): n for n in params}
        for t in reader.tensors:  # same tensor order as the source file
            name = by_gguf.get(t.name)
            if name is None:
                raise ValueError(f"source tensor {t.name!r} has no parameter in the model")
            raw, _ = quantize_weight(params[name], resolved[name])
            if name.endswith("self_attn.q_proj.weight"):
                raw = permute_qk(raw, cfg.num_attention_heads)
            elif name.endswith("self_attn.k_proj.weight"):
                raw = permute_qk(raw, cfg.num_key_value_heads)
            raw = np.ascontiguousarray(raw)
            qt = None if resolved[name] == "F32" else _qtype(resolved[name])
            w.add_tensor(t.name, raw, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
