"""Output paths (private): checked before any work, written by one process at a time, and
cleaned of what killed runs left.

* :func:`check_out`: an output path refused before any work (a file, inside a file, the
  current directory where it would be replaced, ``/``, not writable: a real probe file, so
  read-only mounts and immutable directories are caught, even for root).
* :func:`output_lock`: an exclusive lock on an output path (``flock`` on a sibling
  ``.NAME.lock`` holding the holder's pid, removed afterwards); a second writer is told at once
  who holds it (:class:`OutputBusyError`).
* :func:`clean_stale`: the ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings a killed run left.
* :func:`check_replace`: only an empty directory, or with ``overwrite`` optigrade's own output,
  is replaced.

:mod:`optigrade._files` builds its atomic directory swap on these and re-exports them.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from ._validate import ConfigError

__all__ = ["OutputBusyError", "lock_path", "output_lock", "dir_is_nonempty", "check_out", "clean_stale",
           "check_replace"]


# ----------------------------------------------------------------------------- locks
class OutputBusyError(ConfigError):
    """Another process holds the output's lock (:func:`output_lock`); nothing was done."""


_HELD: Dict[str, list] = {}  # lock path -> [fd, depth]: a process holding a lock may take it again
_GUARD = threading.Lock()


def lock_path(path) -> Path:
    """The lock file of an output path: ``.NAME.lock`` next to it (so it survives the swap of
    the path itself).

    >>> lock_path("/tmp/runs/x").as_posix()
    '/tmp/runs/.x.lock'
    """
    p = Path(path).expanduser().resolve()
    return p.parent / f".{p.name}.lock"


def _read_pid(fd) -> Optional[int]:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _acquire(lp: Path, wait: bool, shown: str):
    try:
        import fcntl
    except ImportError:  # no flock on this platform: unlocked
        return None
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {str(lp.parent)!r} for {shown!r} ({e.strerror or e}); choose an "
                          "output directory you can write to") from None
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
        except OSError as e:
            raise ConfigError(f"cannot write the lock file {str(lp)!r} for {shown!r} ({e.strerror or e}); choose "
                              "an output directory you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = "another optigrade process" + (f" (pid {pid})" if pid else "")
            raise OutputBusyError(f"{who} is writing {shown!r}; wait for it to finish, or choose another --out") \
                from None
        try:  # the holder before us may have removed the file between our open and flock
            st, mine = os.stat(lp), os.fstat(fd)
            same = (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


@contextmanager
def output_lock(path, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` for the block (``flock`` on
    ``.NAME.lock`` next to it; the file holds the holder's pid and is removed afterwards).
    Re-entrant within a process.  ``wait=False`` raises :class:`OutputBusyError` at once when
    another process holds it ("another optigrade process (pid N) is writing OUT").

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "ckpt"
    >>> with output_lock(out) as lp:
    ...     with output_lock(out):                    # the same process may take it again
    ...         lp.read_text().strip() == str(os.getpid())
    True
    >>> lp.exists()
    False
    """
    lp = lock_path(path)
    key = str(lp)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is None:  # first holder in this process: take the OS lock
        held = [_acquire(lp, wait, str(path)), 1]
        with _GUARD:
            _HELD[key] = held
    try:
        yield lp
    finally:
        with _GUARD:
            held[1] -= 1
            last = held[1] == 0
            if last:
                del _HELD[key]
        if last and held[0] is not None:
            try:  # removed while still held: a waiter on this file sees it gone and locks a new one
                os.unlink(lp)
            except OSError:
                pass
            os.close(held[0])


# ----------------------------------------------------------------------------- output paths
def dir_is_nonempty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _probe(d: Path, shown: str, flag: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".optigrade-probe-", dir=d)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ConfigError(f"{flag} {shown!r}: cannot write in {str(d)!r} ({e.strerror or e}); choose a "
                          f"directory you can write to") from None


def check_out(path, *, overwrite: bool = False, replace: bool = False, flag: str = "--out",
              inside: Sequence[str] = ()) -> Path:
    """Refuse, before any work, an output path optigrade cannot or must not write; returns it
    (``~`` expanded).

    Refused: an existing *file* (optigrade writes a directory and never replaces a file it did
    not write), a path inside a file, the current directory or one above it (always when
    ``replace``, the path is swapped as a whole; with ``overwrite`` otherwise), ``/``, and a
    path whose directory (or, when it exists, the path itself and its subdirectories
    ``inside``) cannot be written (a real probe file, so read-only mounts and immutable
    directories are caught, even for root).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_out(d / "new" / "ckpt") == d / "new" / "ckpt"
    True
    >>> _ = (d / "afile").write_text("mine")
    >>> check_out(d / "afile")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: --out '.../afile' is a file, not a directory; optigrade writes a directory there and never replaces a file it did not write: choose another --out
    >>> check_out(d / "afile" / "sub")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: --out '.../afile/sub' is inside '.../afile', which is a file, not a directory; choose a path under a directory
    >>> check_out(".", overwrite=True)
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: --out '.' is the current directory; --overwrite would replace it and everything in it: choose a new subdirectory, e.g. --out runs/NAME
    """
    p = Path(path).expanduser()
    a = p.resolve()
    shown = str(p)
    if a.exists() and not a.is_dir():
        raise ConfigError(f"{flag} {shown!r} is a file, not a directory; optigrade writes a directory there and "
                          f"never replaces a file it did not write: choose another {flag}")
    anc = a.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{flag} {shown!r} is inside {str(anc)!r}, which is a file, not a directory; choose a "
                          "path under a directory")
    cwd = Path.cwd().resolve()
    if a == a.parent or ((replace or overwrite) and (a == cwd or a in cwd.parents)):
        what = "the current directory" if a == cwd else "the file system root" if a == a.parent \
            else "a directory above the current one"
        how = "--overwrite would replace it and everything in it" if overwrite or a == a.parent \
            else "optigrade writes its output as a new directory in its place"
        raise ConfigError(f"{flag} {shown!r} is {what}; {how}: choose a new subdirectory, e.g. {flag} runs/NAME")
    if not a.exists():
        _probe(anc, shown, flag)
    else:
        _probe(a.parent, shown, flag)
        for sub in (a, *(a / s for s in inside)):
            if sub.is_dir():
                _probe(sub, shown, flag)
    return p


def clean_stale(path) -> List[Path]:
    """Remove what killed runs left next to ``path``: ``.NAME.tmp-*`` (unfinished writes) and
    ``.NAME.old-*`` (a replaced version not yet deleted).  When ``path`` itself is missing but
    a ``.NAME.old-*`` holds its previous version (a kill between the two renames of a
    non-atomic swap), that version is put back first.  Call it holding :func:`output_lock`;
    returns what was removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / ".ckpt.tmp-abc").mkdir(); (d / ".ckpt.old-123").mkdir()
    >>> [p.name for p in clean_stale(d / "ckpt")], sorted(p.name for p in d.iterdir())
    (['.ckpt.tmp-abc'], ['ckpt'])
    """
    p = Path(path).expanduser()
    parent = p.parent
    if not parent.is_dir():
        return []
    pat = glob.escape(f".{p.name}.")
    olds = sorted(parent.glob(pat + "old-*"), key=lambda q: q.stat().st_mtime)
    if olds and not os.path.lexists(p):
        os.replace(olds.pop(), p)
    removed = []
    for q in olds + sorted(parent.glob(pat + "tmp-*")):
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q, ignore_errors=True)
        else:
            try:
                q.unlink()
            except OSError:
                continue
        removed.append(q)
    return removed


def check_replace(path, overwrite: bool, marker: Optional[str] = None) -> None:
    """Refuse to replace ``path``: it exists and is not an empty directory, unless ``overwrite``;
    and even then when ``marker`` is given and ``path`` does not contain it (so optigrade did
    not write it: only its own output is replaced).

    Raises:
        FileExistsError: naming the path and the way out.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"{p} is a file, not a directory; optigrade never replaces a file it did not write: "
                              "pick a new directory")
    if not dir_is_nonempty(p):
        return
    if not overwrite:
        raise FileExistsError(f"{p} exists and is not empty; pass overwrite=True (--overwrite) or pick a new directory")
    if marker is not None and not (p / marker).exists():
        raise FileExistsError(f"{p} is not empty and holds no {marker}, so optigrade did not write it; --overwrite "
                              "replaces only optigrade's own output: move its files away or pick a new directory")
