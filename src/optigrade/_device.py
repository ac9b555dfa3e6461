"""Device and dtype names as users type them (``--device``, ``--dtype``), and the model's device
(private).

Library functions follow the model: tensors they build go to :func:`model_device`, never to an
implicit CPU.  Names are resolved once, at the boundary, with an error that says what to do:

    >>> resolve_device("cpu"), resolve_device(None)
    (device(type='cpu'), device(type='cpu'))
    >>> resolve_dtype("bfloat16"), resolve_dtype(None) is None
    (torch.bfloat16, True)
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: unknown device 'tpu'; choose one of: auto, cpu, cuda, mps (or cuda:N for one GPU)
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch

from ._validate import ConfigError, unknown

__all__ = ["DEVICES", "DTYPES", "resolve_device", "resolve_dtype", "model_device", "to_device"]

DEVICES = ("cpu", "cuda", "mps", "auto")
DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: Union[str, torch.device, None] = "cpu") -> torch.device:
    """``"cpu"`` (also for None) | ``"cuda"`` / ``"cuda:N"`` | ``"mps"`` | ``"auto"`` (cuda, else
    mps, else cpu) → :class:`torch.device`.

    Raises:
        ConfigError: an unknown name, or an accelerator that is not visible, e.g.

            >>> import torch
            >>> if not torch.cuda.is_available():
            ...     resolve_device("cuda")
            Traceback (most recent call last):
            ...
            optigrade._validate.ConfigError: device 'cuda': no CUDA GPU is visible (torch.cuda.is_available() is False); use --device cpu
    """
    if isinstance(name, torch.device):
        name = str(name)
    key = "cpu" if name is None else str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    kind, _, index = key.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        unknown("device", name, DEVICES, "or cuda:N for one GPU")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA GPU is visible (torch.cuda.is_available() is False); "
                              "use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                              "use --device cuda:0")
    if kind == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r}: Apple's MPS back-end is not available "
                          "(torch.backends.mps.is_available() is False); use --device cpu")
    return torch.device(key)


def resolve_dtype(name: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    """``"float32"`` | ``"bfloat16"`` | ``"float16"`` (or the torch dtype itself) → torch dtype;
    None keeps the model's own dtype (returns None).

        >>> resolve_dtype("fp16")
        Traceback (most recent call last):
        ...
        optigrade._validate.ConfigError: unknown dtype 'fp16'; choose one of: bfloat16, float16, float32
    """
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower()
    if key not in DTYPES:
        unknown("dtype", name, DTYPES)
    return DTYPES[key]


def model_device(model) -> torch.device:
    """The device of ``model``'s first parameter (where its inputs must go).

        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    return next(model.parameters()).device


def to_device(batch: Dict[str, torch.Tensor], model) -> Dict[str, torch.Tensor]:
    """``batch`` (a dict of tensors) on ``model``'s device (a no-op copy of the dict when it is
    already there).

        >>> to_device({"x": torch.ones(2)}, torch.nn.Linear(2, 2))["x"].device
        device(type='cpu')
    """
    dev = model_device(model)
    return {k: v.to(dev) for k, v in batch.items()}
