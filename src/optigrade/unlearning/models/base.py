"""The model table and what every model loader shares: the cache directory, opening a local
Hugging Face checkpoint, placing a model on a device and dtype.

A loader registered in :data:`MODELS` is ``fn(*, device, dtype) -> (model, tokenizer)``;
:func:`optigrade.unlearning.models.load` resolves names through it.  The table lives here, not in
the package ``__init__``, so the loaders (``tiny.py``, ``smollm2.py``) register themselves without
importing the package that imports them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..._registry import Registry
from ..._validate import ModelLoadError

__all__ = ["MODELS", "cache_dir", "load_checkpoint", "place"]

#: model name → loader ``fn(*, device, dtype) -> (model, tokenizer)``
MODELS: Registry = Registry("model", hint="or a local checkpoint directory")


def cache_dir() -> Path:
    """``$OPTIGRADE_CACHE``, default ``~/.cache/optigrade`` (pretrained tiny models, the SmolLM2
    float checkpoint, fact verifications), read at each call.

        >>> import os
        >>> cache_dir() == Path(os.environ.get("OPTIGRADE_CACHE", Path.home() / ".cache" / "optigrade"))
        True
    """
    return Path(os.environ.get("OPTIGRADE_CACHE", Path.home() / ".cache" / "optigrade"))


def place(model, device=None, dtype: Optional[torch.dtype] = None):
    """``model`` moved to ``device`` (None: where it is) and cast to ``dtype`` (None: its own).

        >>> place(torch.nn.Linear(2, 2), "cpu", torch.float64).weight.dtype
        torch.float64
    """
    if device is None and dtype is None:
        return model
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def load_checkpoint(path, *, device="cpu", dtype: Optional[torch.dtype] = None) -> Tuple[object, object]:
    """Open a local Hugging Face causal-LM checkpoint directory (eager attention, eval mode).

    Returns ``(model, tokenizer)``; the tokenizer is None when the directory holds none.
    ``dtype=None`` keeps the dtype the checkpoint was saved in.

    Raises:
        ModelLoadError: the path does not exist, or it holds no model (no ``config.json``).

        >>> import tempfile
        >>> load_checkpoint(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        optigrade._validate.ModelLoadError: model path '...' exists but is not a model checkpoint (no config.json); point at a directory written by save_pretrained / `optigrade unlearn --out`

    (:func:`optigrade.unlearning.models.load` shows a round trip.)
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model {str(path)!r}: no such path; give a local Hugging Face checkpoint directory "
            f"(with config.json and *.safetensors) or a named model ({', '.join(MODELS.names())})")
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"model path {str(path)!r} exists but is not a model checkpoint (no config.json); "
            f"point at a directory written by save_pretrained / `optigrade unlearn --out`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                 dtype=dtype if dtype is not None else "auto")
    model.eval()
    tok = AutoTokenizer.from_pretrained(path) if _has_tokenizer(path) else None
    return place(model, device, None), tok
