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

The input model is never modified.  Needs the ``gguf`` package (``pip install optigrade[real]``);
the Hugging Face → llama.cpp tensor names come from the SmolLM2 loader
(:func:`optigrade.unlearning.models.smollm2.hf_to_gguf_name`), which builds the per-parameter
source types from the same map.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Mapping, Optional, Union

import numpy as np
import torch

from optigrade._files import atomic_file

from ._spec import AttackSpec, register

__all__ = ["SUPPORTED_TYPES", "requantize_gguf", "export_gguf", "bin_crossing_gguf", "BinCrossing",
           "resolve_types", "quantize_weight", "permute_qk", "unpermute_qk", "GGUFSpec"]

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


def _check_whole(types: str) -> str:
    """A type name for every matrix (not a plain float type)."""
    t = _check_type(types)
    if t in _PLAIN:
        raise ValueError(f"unsupported GGUF type {types!r} as a whole-model type; supported: 'source', "
                         f"{', '.join(repr(x) for x in SUPPORTED_TYPES)}")
    return t


def _check_types(types):
    """``types`` as a setting: "source", a supported type name, or a dict name → type."""
    if isinstance(types, Mapping):
        for k, v in types.items():
            _check_type(v, f"types[{k!r}]")
    elif types != "source":
        _check_whole(types)
    return types


def resolve_types(model, types: Types = "source", source_types: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Per-parameter GGML type names for ``model``'s named parameters.

    ``types``: ``"source"`` (each tensor's type in the source file: ``source_types`` or, when
    None, ``model.gguf_types["param_types"]`` set by
    :func:`optigrade.unlearning.models.smollm2.load_smollm2`), a supported type name (every ≥2-D
    weight; 1-D tensors stay F32), or a dict name → type.

    Raises:
        ValueError: unsupported type, or ``"source"`` without source types.

    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 2), torch.nn.LayerNorm(2))
    >>> resolve_types(net, "q8_0")
    {'0.weight': 'Q8_0', '0.bias': 'F32', '1.weight': 'F32', '1.bias': 'F32'}
    >>> resolve_types(net, "Q4_K")
    Traceback (most recent call last):
    ...
    ValueError: unsupported GGUF type 'Q4_K' in types; supported: 'source', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0' (and F32/F16/BF16 per tensor); K-quants (Q4_K, ...) cannot be quantized by the gguf package
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
                             "(optigrade.unlearning.models.smollm2.gguf_types()['param_types']) or a model "
                             "from load_smollm2()")
        missing = [n for n in names if n not in src]
        if missing:
            raise ValueError(f"source_types lacks {missing[0]!r} (and {len(missing) - 1} more); "
                             f"is this model the one the GGUF file describes?")
        return {n: _check_type(src[n], "source_types") for n in names}
    t = _check_whole(types)
    return {n: (t if p.dim() >= 2 else "F32") for n, p in model.named_parameters()}


def quantize_weight(w: torch.Tensor, type_name: str):
    """``(raw, dequantized)``: llama.cpp block codes (uint8 [rows, bytes], or the float array for
    F32/F16/BF16) and their float32 values as a tensor shaped like ``w``.

    Q8_0 stores per block of 32 the scale d = max|x|/127 (float16) and q = round(x/d); a block
    already on that grid (d = 1/8 here, exact in float16) comes back unchanged:

    >>> import pytest; _ = pytest.importorskip("gguf")                    # pip install optigrade[real]
    >>> w = torch.arange(-16, 16, dtype=torch.float32).reshape(1, 32) / 8
    >>> w[0, 0] = 127 / 8
    >>> raw, deq = quantize_weight(w, "Q8_0")
    >>> raw.dtype, raw.shape, torch.equal(deq, w)                          # 2-byte d + 32 codes
    (dtype('uint8'), (1, 34), True)
    """
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

    Q8_0 moves each weight by at most half a step d/2, plus |q| ≤ 127 times d's float16
    rounding (2^-11 relative):

    >>> import pytest; _ = pytest.importorskip("gguf")
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 4))
    >>> q = requantize_gguf(net, "Q8_0")
    >>> w, wq = net[0].weight.detach(), q[0].weight.detach()
    >>> d = w.reshape(-1, 32).abs().amax(1, keepdim=True) / 127
    >>> bool(((wq - w).reshape(-1, 32).abs() <= d * (0.5 + 127 * 2 ** -11)).all()), torch.equal(q[0].bias, net[0].bias)
    (True, True)
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
    at all in float; ``per_tensor`` maps name → fraction (see :func:`bin_crossing_gguf`).

    >>> BinCrossing(0.25, 1, 4, 0.5, "Q8_0", {"w": 0.25}).to_frame()
      tensor  bin_crossing
    0      w          0.25
    """

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
    under the GGUF types of ``model_a`` (see :func:`resolve_types`).

    A model against itself crosses no bin; a shift of every weight by a whole block's range
    crosses them all:

    >>> import copy, pytest; _ = pytest.importorskip("gguf")
    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 4, bias=False))
    >>> bin_crossing_gguf(net, copy.deepcopy(net), "Q8_0").fraction
    0.0
    >>> moved = torch.nn.Sequential(torch.nn.Linear(32, 4, bias=False))
    >>> moved[0].weight.data = net[0].weight.data + 1.0
    >>> r = bin_crossing_gguf(net, moved, "Q8_0")
    >>> r.fraction, r.changed_any, r.n_total
    (1.0, 1.0, 128)
    """
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
    within each head, interleave the two rotary halves.

    >>> permute_qk(np.arange(4), n_head=1).tolist()             # halves [0, 1] [2, 3] interleaved
    [0, 2, 1, 3]
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (what transformers' GGUF loader does).

    >>> w = np.arange(24).reshape(12, 2)
    >>> np.array_equal(unpermute_qk(permute_qk(w, 3), 3), w)
    True
    """
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
        tokenizer: its tokenizer (checked against the source vocabulary size; None skips the
            check).
        path: output ``.gguf`` (written to a temporary sibling, then renamed).
        source_file: the GGUF whose metadata to copy (default: the packaged SmolLM2 file).

    Raises:
        ValueError: unsupported type, or a model/tokenizer that does not match the source file.
        FileExistsError: ``path`` exists and ``overwrite`` is False.

    A one-layer Llama exported to Q8_0 against a source file of its own shapes; the stored
    codes dequantize to the weights of :func:`requantize_gguf`:

    >>> import pytest; gguf = pytest.importorskip("gguf")
    >>> import pathlib, tempfile, transformers
    >>> from optigrade.unlearning.models.smollm2 import hf_to_gguf_name
    >>> net = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=32, hidden_size=32,
    ...     intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> src = gguf.GGUFWriter(str(d / "src.gguf"), "llama")
    >>> for key, v in [("embedding_length", 32), ("block_count", 1), ("attention.head_count", 2),
    ...                ("attention.head_count_kv", 1)]:
    ...     src.add_uint32(f"llama.{key}", v)
    >>> src.add_token_list([f"t{i}" for i in range(32)])
    >>> for n, p in net.named_parameters():
    ...     src.add_tensor(hf_to_gguf_name(n), p.detach().numpy())
    >>> src.write_header_to_file(); src.write_kv_data_to_file(); src.write_tensors_to_file(); src.close()
    >>> out = export_gguf(net, None, d / "net.gguf", types="Q8_0", source_file=d / "src.gguf")
    >>> t = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}["blk.0.ffn_down.weight"]
    >>> deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).reshape(32, 64))
    >>> t.tensor_type.name, torch.equal(deq, requantize_gguf(net, "Q8_0").model.layers[0].mlp.down_proj.weight)
    ('Q8_0', True)
    """
    import gguf

    path = Path(path)
    if path.suffix != ".gguf":
        raise ValueError(f"export path {str(path)!r} must end in .gguf")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another path")
    resolved = resolve_types(model, types, source_types)
    if source_file is None:
        from optigrade.unlearning.models.smollm2 import smollm2_gguf_path

        source_file = smollm2_gguf_path()
    reader = gguf.GGUFReader(str(source_file))
    arch = _check_source(reader, model, tokenizer, source_file)
    with atomic_file(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        _copy_metadata(reader, w, resolved, model)
        _add_tensors(reader, w, resolved, model)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _check_source(reader, model, tokenizer, source_file) -> str:
    """The source file's architecture, after checking its shapes and vocabulary against the model."""
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
    return arch


_FILE_TYPE = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "F16": 1, "F32": 0}


def _copy_metadata(reader, w, resolved: Dict[str, str], model) -> None:
    """Every key/value of the source file except the architecture and file type, then the file
    type of the export (the matrices' one type, else Q4_1's code as llama.cpp's "mostly" value)."""
    import gguf

    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in _SKIP_KV:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    ftypes = {resolved[n] for n, p in model.named_parameters() if p.dim() >= 2}
    w.add_uint32("general.file_type", _FILE_TYPE.get(ftypes.pop(), 3) if len(ftypes) == 1 else 3)


def _add_tensors(reader, w, resolved: Dict[str, str], model) -> None:
    """The model's tensors in the source file's order, quantized, q/k rows in llama.cpp's layout."""
    from optigrade.unlearning.models.smollm2 import hf_to_gguf_name

    cfg = model.config
    params = dict(model.named_parameters())
    by_gguf = {hf_to_gguf_name(n): n for n in params}
    for t in reader.tensors:
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


# ------------------------------------------------------------------------------------- spec
class GGUFSpec(AttackSpec):
    """Settings of ``kind: gguf`` (:func:`requantize_gguf`): ``types`` is "source" (the types of
    the GGUF file the model was loaded from), one supported type for every matrix, or a dict
    parameter name → type.

    >>> GGUFSpec(types="Q4_1").resolved()
    {'types': 'Q4_1'}
    """

    kind: Literal["gguf"] = "gguf"
    types: Union[str, Dict[str, str]] = "source"

    checks = {"types": _check_types}

    def _check_model(self, model, model_name: str) -> None:
        """``types: source`` needs a model loaded from a GGUF file; a dict must name every
        parameter; the quantized rows must be multiples of the block size 32."""
        if self.types == "source" and getattr(model, "gguf_types", None) is None:
            raise ValueError(f"types 'source' needs a model loaded from a GGUF file (model: smollm2); model "
                             f"{model_name!r} has no source types: give one type for every matrix, e.g. "
                             f"types: Q4_1 ({', '.join(SUPPORTED_TYPES)})")
        resolved = resolve_types(model, self.types)
        for n, p in model.named_parameters():
            if resolved[n] not in _PLAIN and p.shape[-1] % 32:
                raise ValueError(f"cannot quantize {n} (shape {tuple(p.shape)}) to {resolved[n]}: its last "
                                 f"dimension is not a multiple of the block size 32; choose types per tensor "
                                 f"(a dict) or use kind: quantize")


register("gguf", requantize_gguf, GGUFSpec)
