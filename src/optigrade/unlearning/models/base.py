"""The model table and what every model loader shares: the cache directory, opening a local
Hugging Face checkpoint, placing a model on a device and dtype.

Opening a checkpoint verifies it first (:func:`verify_checkpoint`): the sha256 of every file
recorded in ``manifest.json`` (``files``, written by ``UnlearnResult.save_pretrained``) or in
``SHA256SUMS`` (model caches), valid ``config.json`` / ``manifest.json``, readable safetensors
headers, finite weights; a damaged directory is a :class:`ModelLoadError` naming the file and
what to do, never a traceback or a model that quietly scores as "forgotten".

A loader registered in :data:`MODELS` is ``fn(*, device, dtype) -> (model, tokenizer)``;
:func:`optigrade.unlearning.models.load` resolves names through it.  The table lives here, not in
the package ``__init__``, so the loaders (``tiny.py``, ``smollm2.py``) register themselves without
importing the package that imports them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..._files import SUMS, read_sums, sha256_file
from ..._registry import Registry
from ..._validate import ModelLoadError

__all__ = ["MODELS", "cache_dir", "load_checkpoint", "place", "read_manifest", "verify_checkpoint"]

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


def _fix(path: Path) -> str:
    """What to do about a damaged checkpoint directory: rebuild a cache entry, rewrite a run."""
    try:
        cached = path.resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        cached = False
    if cached:
        return f"the cached model is damaged: delete {str(path)!r} and run again to rebuild it"
    if (path / "manifest.json").exists():
        return (f"the checkpoint is damaged: write it again (`optigrade unlearn ... --out {path} --overwrite`) "
                "or restore it from a copy")
    return "the checkpoint is damaged: save it again or restore it from a copy"


def _damaged(path: Path, what: str) -> ModelLoadError:
    err = ModelLoadError(f"checkpoint {str(path)!r}: {what}; {_fix(path)}")
    err.problem = f"checkpoint {str(path)!r}: {what}"  # without the advice (a loader that rebuilds says its own)
    return err


def _json_file(path: Path, name: str):
    f = path / name
    try:
        return json.loads(f.read_bytes())
    except (OSError, UnicodeDecodeError) as e:
        raise _damaged(path, f"{name} cannot be read ({e})") from None
    except ValueError as e:
        size = f.stat().st_size
        raise _damaged(path, f"{name} is not valid JSON ({'empty file' if size == 0 else e})") from None


def read_manifest(path) -> dict:
    """The ``manifest.json`` of a checkpoint directory ({} when it has none).

    Raises:
        ModelLoadError: it is not a JSON object, or its ``files`` record is malformed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> read_manifest(d)
    {}
    >>> _ = (d / "manifest.json").write_text("{broken")
    >>> read_manifest(d)
    Traceback (most recent call last):
    ...
    optigrade._validate.ModelLoadError: checkpoint '...': manifest.json is not valid JSON (Expecting property name ...); the checkpoint is damaged: ...
    """
    path = Path(path)
    if not (path / "manifest.json").exists():
        return {}
    m = _json_file(path, "manifest.json")
    if not isinstance(m, dict):
        raise _damaged(path, f"manifest.json holds a {type(m).__name__}, not a JSON object")
    files = m.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())):
        raise _damaged(path, "manifest.json's 'files' record is malformed (want {name: {sha256, bytes}})")
    return m


def verify_checkpoint(path) -> None:
    """Check a checkpoint directory before it is opened: ``config.json`` is a JSON object; every
    file recorded in ``manifest.json`` (``files``: sha256 and size) or ``SHA256SUMS`` is present
    with exactly those bytes; there are weights (``*.safetensors`` or ``pytorch_model*.bin``),
    none empty, and every safetensors header parses and covers its file.

    Raises:
        ModelLoadError: naming the file, what is wrong with it and what to do.

    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    >>> verify_checkpoint(d)
    Traceback (most recent call last):
    ...
    optigrade._validate.ModelLoadError: checkpoint '...': holds no weights (no model.safetensors or pytorch_model.bin); ...
    """
    path = Path(path)
    cfg = _json_file(path, "config.json")
    if not isinstance(cfg, dict):
        raise _damaged(path, f"config.json holds a {type(cfg).__name__}, not a JSON object")
    files = read_manifest(path).get("files")
    where = "manifest.json"
    if files is None:
        try:
            sums = read_sums(path)
        except ValueError as e:
            raise _damaged(path, f"{SUMS} is malformed ({e})") from None
        files, where = ({k: {"sha256": v} for k, v in sums.items()} if sums is not None else {}), SUMS
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            raise _damaged(path, f"{name} is missing (recorded in {where})")
        size = f.stat().st_size
        if "bytes" in want and size != want["bytes"]:
            how = "empty" if size == 0 else "truncated" if size < want["bytes"] else "longer than written"
            raise _damaged(path, f"{name} is {how} ({size} bytes; {where} records {want['bytes']})")
        got = sha256_file(f)
        if got != want["sha256"]:
            raise _damaged(path, f"{name} has changed since it was written (sha256 {got[:16]}..., {where} "
                                 f"records {want['sha256'][:16]}...)")
    shards = sorted(path.glob("*.safetensors"))
    if not shards and not any(path.glob("pytorch_model*.bin")):
        raise _damaged(path, "holds no weights (no model.safetensors or pytorch_model.bin)")
    from safetensors import safe_open

    for f in shards:
        if f.stat().st_size == 0:
            raise _damaged(path, f"{f.name} is empty (0 bytes)")
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # SafetensorError: bad header, file not covered by it
            raise _damaged(path, f"{f.name} is not a valid safetensors file ({e})") from None


def _nonfinite(model) -> list:
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def load_checkpoint(path, *, device="cpu", dtype: Optional[torch.dtype] = None,
                    verify: bool = True) -> Tuple[object, object]:
    """Open a local Hugging Face causal-LM checkpoint directory (eager attention, eval mode),
    after :func:`verify_checkpoint` (``verify=False`` skips it and the finite-weights check).

    Returns ``(model, tokenizer)``; the tokenizer is None when the directory holds none.
    ``dtype=None`` keeps the dtype the checkpoint was saved in.

    Raises:
        ModelLoadError: the path does not exist, it holds no model (no ``config.json``), it is
            damaged (see :func:`verify_checkpoint`), transformers cannot open it, or its
            weights are not finite.

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
    if verify:
        verify_checkpoint(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                     dtype=dtype if dtype is not None else "auto")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ModelLoadError(f"checkpoint {str(path)!r}: transformers cannot open it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); {_fix(path)}") from None
    model.eval()
    bad = _nonfinite(model) if verify else []
    if bad:
        raise ModelLoadError(f"checkpoint {str(path)!r}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}); "
                             "the run that wrote it diverged or the file is damaged: unlearn again with a smaller "
                             "learning rate, or restore it from a copy")
    try:
        tok = AutoTokenizer.from_pretrained(path) if _has_tokenizer(path) else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"checkpoint {str(path)!r}: its tokenizer files cannot be read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); {_fix(path)}") from None
    return place(model, device, None), tok
