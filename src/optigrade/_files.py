"""Atomic writes, output directories and content hashes (private): nothing half-written is ever
left where a finished result is expected, two optigrade processes never write one output at
once, and nothing optigrade did not write is deleted.

* :func:`atomic_file` (:func:`atomic_write_text` / ``_json`` / ``_parquet``): a temporary sibling,
  fsynced, then one ``os.replace``.
* :func:`atomic_dir`: a temporary sibling directory, fsynced, then swapped in: one rename for a
  new path; for a replaced one an atomic exchange where the OS has it (Linux
  ``renameat2(RENAME_EXCHANGE)``), else old → ``.NAME.old-PID``, new → path, then delete.
* re-exported from :mod:`optigrade._outdir`: :func:`output_lock` (one writer per output path,
  the second told at once), :func:`check_out` (output paths refused before any work),
  :func:`clean_stale` (what killed runs left), :func:`check_replace`.
* :func:`sha256_file`, :func:`file_hashes`, ``SHA256SUMS`` (:func:`write_sums`,
  :func:`read_sums`): what a directory held when it was written, checked when it is read.

Files and directories get the modes ``open`` / ``mkdir`` give (0666 / 0777 less the umask),
not the private 0600 / 0700 of ``mkstemp`` / ``mkdtemp``.

    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_json(d / "a.json", {"x": 1})
    >>> json.loads((d / "a.json").read_text())
    {'x': 1}
    >>> sorted(p.name for p in d.iterdir())       # no temporary file is left behind
    ['a.json']
    >>> oct((d / "a.json").stat().st_mode & 0o777) == oct(file_mode())
    True
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

from ._outdir import (OutputBusyError, check_out, check_replace, clean_stale, dir_is_nonempty,  # noqa: F401
                      lock_path, output_lock)

#: the checksum file :func:`atomic_dir` writes with ``checksums=True`` (``sha256sum -c`` reads it)
SUMS = "SHA256SUMS"


# ----------------------------------------------------------------------------- modes, hashes, fsync
def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (0o644 under the usual 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory: 0o777 less the umask (0o755 under 022)."""
    return 0o777 & ~_umask()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The sha256 (64 hex) of a file's bytes.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(directory, exclude: Sequence[str] = ()) -> Dict[str, dict]:
    """``{name: {"sha256": ..., "bytes": ...}}`` for every regular file under ``directory``
    (names relative, with ``/``; ``exclude`` names skipped), sorted by name."""
    root = Path(directory)
    out = {}
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        if p.is_file() and not p.is_symlink() and name not in exclude:
            out[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_sums(directory) -> Path:
    """Write ``directory/SHA256SUMS`` (``<sha256>  <name>`` per file, the format of
    ``sha256sum -c``) over every other file in it."""
    d = Path(directory)
    lines = [f"{v['sha256']}  {k}\n" for k, v in file_hashes(d, exclude=(SUMS,)).items()]
    with open(d / SUMS, "w") as f:
        f.writelines(lines)
    return d / SUMS


def read_sums(directory) -> Optional[Dict[str, str]]:
    """``{name: sha256}`` from ``directory/SHA256SUMS``; None when there is none.

    Raises:
        ValueError: a line is not ``<64 hex>  <name>``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "w.bin").write_bytes(b"abc")
    >>> _ = write_sums(d)
    >>> read_sums(d) == {"w.bin": sha256_file(d / "w.bin")}
    True
    """
    p = Path(directory) / SUMS
    if not p.exists():
        return None
    out = {}
    for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise ValueError(f"{p} line {i} is not '<sha256>  <file name>': {line[:80]!r}")
        out[name] = digest
    return out


def _fsync_fd_of(path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system without fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_tree(root) -> None:
    """fsync every file and directory under ``root`` (bottom-up), so a rename of ``root`` that
    survives a power loss names complete files."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for f in filenames:
            _fsync_fd_of(os.path.join(dirpath, f), os.O_RDONLY)
        _fsync_fd_of(dirpath, os.O_RDONLY)


def _fsync_dir(path) -> None:
    _fsync_fd_of(path, os.O_RDONLY)


def _usual_modes(root) -> None:
    """Give everything under ``root`` the modes ``open`` / ``mkdir`` would (some writers, e.g.
    safetensors, create private 0600 files)."""
    fm, dm = file_mode(), dir_mode()
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), dm)
        for f in filenames:
            q = os.path.join(dirpath, f)
            if not os.path.islink(q):
                os.chmod(q, fm)


# ----------------------------------------------------------------------------- atomic writes
def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS or
    the file system has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished ``tmp`` at ``path``: one rename when ``path`` is new or an empty
    directory; else an atomic exchange (the old version then sits at ``tmp`` and is deleted),
    or, without one, old → ``.NAME.old-PID``, ``tmp`` → path, delete the old one (a kill
    between the two renames leaves the old version where :func:`clean_stale` puts it back)."""
    if not dir_is_nonempty(path):
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        _fsync_dir(path.parent)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)


@contextmanager
def atomic_dir(path, overwrite: bool = False, marker: Optional[str] = None,
               checksums: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory (``.NAME.tmp-*``); when the block ends it is
    fsynced and replaces ``path`` (see :func:`_swap_in`).  On an exception the temporary
    directory is removed and ``path`` is untouched.

    Holds :func:`output_lock` (waiting for another writer), removes what killed runs left
    (:func:`clean_stale`), and refuses (:func:`check_replace`) a non-empty ``path`` unless
    ``overwrite`` (and, with ``marker``, one that does not contain that file).  ``checksums``
    writes ``SHA256SUMS`` over the finished directory.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(d / "m", checksums=True) as tmp:
    ...     _ = (tmp / "w.bin").write_bytes(b"abc")
    >>> sorted(p.name for p in d.iterdir()), oct((d / "m").stat().st_mode & 0o777) == oct(dir_mode())
    (['m'], True)
    >>> with atomic_dir(d / "m", overwrite=True, marker="manifest.json") as tmp:
    ...     pass
    Traceback (most recent call last):
    ...
    FileExistsError: .../m is not empty and holds no manifest.json, so optigrade did not write it; ...
    """
    path = check_out(path, overwrite=overwrite, replace=True, flag="output directory")
    with output_lock(path, wait=True):
        clean_stale(path)
        check_replace(path, overwrite, marker)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            os.chmod(tmp, dir_mode())
            yield tmp
            if checksums:
                write_sums(tmp)
            _usual_modes(tmp)
            fsync_tree(tmp)
            _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextmanager
def atomic_file(path) -> Iterator[Path]:
    """Yield a temporary sibling path (``.NAME.tmp-*``, mode 0666 less the umask) to write; on
    success it is fsynced and replaces ``path`` in one rename (on an exception it is removed
    and ``path`` is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        _fsync_fd_of(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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


def model_fingerprint(model, sample: Optional[int] = None, full: bool = False) -> str:
    """Content hash of a model's weights (names, shapes, dtypes and values; sha256, 16 hex, or
    all 64 with ``full=True``: the ``base_sha256`` of manifests and study rows).

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
    return h.hexdigest() if full else h.hexdigest()[:16]
