"""optigrade._files and _outdir: atomic writes and swaps, output locks, output-path checks, stale
leftovers, file modes and checksums (defects 5, 6, 10 of the reliability review and the 0700/0600 modes)."""

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from optigrade import _files
from optigrade._files import (OutputBusyError, atomic_dir, atomic_file, atomic_write_text, check_out, clean_stale,
                              dir_mode, file_mode, lock_path, output_lock, read_sums, sha256_file)
from optigrade._validate import ConfigError

#: a process holding output_lock(argv[1]) until killed
HOLD = ("import sys, time\nfrom optigrade._files import output_lock\nwith output_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


@contextmanager
def held_elsewhere(path):
    """``output_lock(path)`` held by another process for the block; yields its pid."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"held"
        yield p.pid
    finally:
        p.kill()
        p.wait()


@contextmanager
def immutable(path):
    """``path`` made immutable (chattr +i: refused even to root), or the test skipped."""
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


# ----------------------------------------------------------------------------- atomic_file
def test_atomic_file_mode_and_no_leftover_on_error(tmp_path):
    target = tmp_path / "r.txt"
    atomic_write_text(target, "one")
    assert _mode(target) == file_mode() and file_mode() == 0o666 & ~_files._umask()
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]


# ----------------------------------------------------------------------------- atomic_dir
def _fill(tmp: Path, text: str) -> None:
    (tmp / "w.bin").write_text(text)
    fd = os.open(tmp / "private.bin", os.O_WRONLY | os.O_CREAT, 0o600)  # like safetensors' own files
    os.close(fd)
    (tmp / "manifest.json").write_text("{}")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_atomic_dir_replaces_in_one_swap(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(_files, "_exchange", lambda a, b: False)
    out = tmp_path / "ckpt"
    with atomic_dir(out, checksums=True) as tmp:
        _fill(tmp, "old")
    assert _mode(out) == dir_mode() and _mode(out / "private.bin") == file_mode()  # not mkdtemp's 0700 / 0600
    assert read_sums(out) == {n: sha256_file(out / n) for n in ("manifest.json", "private.bin", "w.bin")}
    with atomic_dir(out, overwrite=True, marker="manifest.json") as tmp:
        _fill(tmp, "new")
    assert (out / "w.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .tmp / .old / .lock left


def test_atomic_dir_refuses_before_the_block(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "user.txt").write_text("mine")

    def never():
        raise AssertionError("the block ran")

    with pytest.raises(FileExistsError, match="exists and is not empty"):
        with atomic_dir(out):
            never()
    with pytest.raises(FileExistsError, match="holds no manifest.json, so optigrade did not write it"):
        with atomic_dir(out, overwrite=True, marker="manifest.json"):
            never()
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match="is a file"):  # even with overwrite: never replaces a user's file
        with atomic_dir(afile, overwrite=True):
            never()
    assert (out / "user.txt").read_text() == "mine" and afile.read_text() == "mine"


def test_atomic_dir_error_in_block_leaves_path_untouched(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_dir(out) as tmp:
        _fill(tmp, "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "w.bin").write_text("half")
            raise RuntimeError("failed mid-write")
    assert (out / "w.bin").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_two_rename_swap_failing_in_between_puts_the_old_back(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    with atomic_dir(out) as tmp:
        _fill(tmp, "old")
    monkeypatch.setattr(_files, "_exchange", lambda a, b: False)
    real, calls = os.replace, []

    def second_fails(src, dst):  # new -> out fails once (the put-back of the old one works)
        if Path(dst) == out and ".tmp-" in Path(src).name and not calls:
            calls.append(src)
            raise OSError(5, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(_files.os, "replace", second_fails)
    with pytest.raises(OSError):
        with atomic_dir(out, overwrite=True) as tmp:
            _fill(tmp, "new")
    monkeypatch.setattr(_files.os, "replace", real)
    assert (out / "w.bin").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ----------------------------------------------------------------------------- stale leftovers
def test_clean_stale_removes_leftovers_and_restores_an_orphaned_old(tmp_path):
    out = tmp_path / "ckpt"
    (tmp_path / ".ckpt.tmp-abc").mkdir()                       # a kill during the write
    (tmp_path / ".ckpt.old-99").mkdir()                        # a kill between the two renames
    (tmp_path / ".ckpt.old-99" / "w.bin").write_text("old")
    (tmp_path / ".ckpt.json.tmp-x").write_text("")             # an atomic_file temp of a neighbour: not ours
    (tmp_path / ".ckptx.tmp-y").mkdir()                        # another output's: not ours
    removed = clean_stale(out)
    assert [p.name for p in removed] == [".ckpt.tmp-abc"]
    assert (out / "w.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.json.tmp-x", ".ckptx.tmp-y", "ckpt"]
    (tmp_path / ".ckpt.old-100").mkdir()  # with the path present an old copy is only removed
    assert [p.name for p in clean_stale(out)] == [".ckpt.old-100"] and (out / "w.bin").exists()


def test_atomic_dir_cleans_what_a_killed_run_left(tmp_path):
    (tmp_path / ".ckpt.tmp-dead").mkdir()
    with atomic_dir(tmp_path / "ckpt") as tmp:
        _fill(tmp, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ----------------------------------------------------------------------------- locks
def test_output_lock_tells_the_second_writer_who_holds_it(tmp_path):
    out = tmp_path / "ckpt"
    with held_elsewhere(out) as pid:
        assert lock_path(out).read_text().strip() == str(pid)
        with pytest.raises(OutputBusyError, match=rf"another optigrade process \(pid {pid}\) is writing '.*ckpt'"):
            with output_lock(out):
                pass
        with pytest.raises(OutputBusyError):  # atomic_dir of a library caller too (it would wait: not here)
            with output_lock(out, wait=False):
                pass
    with output_lock(out):  # released by the holder's death (flock), taken at once
        with output_lock(out):  # re-entrant
            pass
    assert not lock_path(out).exists()


def test_output_lock_wait_takes_it_after_the_holder(tmp_path):
    out = tmp_path / "ckpt"
    p = subprocess.Popen([sys.executable, "-c", HOLD.replace("120", "1"), str(out)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"held"
        with output_lock(out, wait=True) as lp:
            assert lp.read_text().strip() == str(os.getpid())
    finally:
        p.kill()
        p.wait()


# ----------------------------------------------------------------------------- output paths
def _paths(tmp_path):
    (tmp_path / "afile").write_text("mine")
    return {"file": tmp_path / "afile", "under-file": tmp_path / "afile" / "sub", "root": Path("/"),
            "sys": Path("/sys/optigrade_out")}


OUT_CASES = [  # (id, path key, kwargs, message)
    ("out-file", "file", {}, "is a file, not a directory"),
    ("out-file-overwrite", "file", {"overwrite": True}, "never replaces a file it did not write"),
    ("out-under-file", "under-file", {}, "which is a file, not a directory"),
    ("out-dot-overwrite", ".", {"overwrite": True}, "is the current directory; --overwrite would replace it"),
    ("out-dot-replace", ".", {"replace": True}, "is the current directory"),
    ("out-parent-replace", "..", {"replace": True}, "a directory above the current one"),
    ("out-root", "root", {}, "the file system root"),
    ("out-sys", "sys", {}, "cannot write in '/sys'"),
]


@pytest.mark.parametrize("key,kw,msg", [c[1:] for c in OUT_CASES], ids=[c[0] for c in OUT_CASES])
def test_check_out_refuses(tmp_path, monkeypatch, key, kw, msg):
    monkeypatch.chdir(tmp_path)
    path = _paths(tmp_path).get(key, key)
    if key == "sys" and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    with pytest.raises(ConfigError, match=msg):
        check_out(path, **kw)
    assert (tmp_path / "afile").read_text() == "mine"


def test_check_out_accepts_what_it_can_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_out(".") == Path(".")                      # a study may write into the cwd (without --overwrite)
    assert check_out("deep/new/dir", overwrite=True) == Path("deep/new/dir")
    assert not (tmp_path / "deep").exists()                 # nothing created by the check
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # and no probe file left


@pytest.mark.parametrize("which", ["parent", "self", "inside"])
def test_check_out_probes_immutable_directories(tmp_path, which):
    out = tmp_path / "ro"
    (out / "runs").mkdir(parents=True)
    target = {"parent": tmp_path, "self": out, "inside": out / "runs"}[which]
    with immutable(target):
        with pytest.raises(ConfigError, match="cannot write in .*Operation not permitted"):
            check_out(out if which != "parent" else tmp_path / "new", inside=("runs",))
