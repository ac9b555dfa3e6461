"""Atomic writes and content fingerprints (private): nothing half-written is ever left where a
finished result is expected.

    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_json(d / "a.json", {"x": 1})
    >>> json.loads((d / "a.json").read_text())
    {'x': 1}
    >>> sorted(p.name for p in d.iterdir())       # no temporary file is left behind
    ['a.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def dir_is_nonempty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


@contextmanager
def atomic_dir(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On an exception the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    if dir_is_nonempty(path) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True (--overwrite) or pick a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextmanager
def atomic_file(path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces ``path`` in one rename
    (on an exception it is removed and ``path`` is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(df, path) -> None:
    """Write a pandas DataFrame to parquet atomically (no index)."""
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def model_fingerprint(model, sample: Optional[int] = None) -> str:
    """Content hash of a model's weights (names, shapes, dtypes and values; sha256, 16 hex).

    ``sample=None`` hashes every byte (exact: two models share a fingerprint only when every
    weight is bit-identical); ``sample=n`` hashes a strided sample of about ``n`` values per
    tensor (cheap, for cache keys of large models).
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for n, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        h.update(f"{n}{tuple(p.shape)}{p.dtype}".encode())
        if sample is not None:
            flat = flat[:: max(1, flat.numel() // sample)].to("cpu", torch.float32)
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes() if sample is None
                 else flat.numpy().tobytes())
    return h.hexdigest()[:16]
