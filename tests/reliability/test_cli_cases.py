"""RELIABILITY.md appendix, CLI sections: every row runs in-process through
``optigrade.cli.main`` and is refused (exit 2, ``error:`` on stderr naming the value) before any
unlearning step, study run or reference run, or is accepted because it is valid (see
:mod:`._cli_cases`).  Rows whose fix belongs to another engineer are strict xfails naming the
defect."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from optigrade.cli import main

from ._cli_cases import SECTIONS, STUDY_YAML
from ._fixtures import damaged_checkpoint

ROWS = [pytest.param(*r[1:4], id=r[0], marks=[r[4]] if r[4] is not None else [])
        for rows in SECTIONS.values() for r in rows]


class WorkStarted(AssertionError):
    """Raised by the guards: the run got past validation into real work."""


class Rebuilt(Exception):
    """Raised by the pretraining guard: a damaged cache entry is rebuilt (an allowed outcome)."""


def _chattr(path, flag):
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    """A finished two-step study on a small random model (objective npo)."""
    from optigrade.analysis.study import _toy, run_study

    cfg, bench, model = _toy()
    out = tmp_path_factory.mktemp("toy") / "study"
    run_study(cfg, out, progress=False, base=model, benchmark=bench)
    return out


@pytest.fixture
def scratch(tmp_path, bench, toy_study, monkeypatch):
    """Builds the ``@`` tokens of a row in ``tmp_path``; undoes ``chattr +i`` afterwards."""
    immutable = []

    def make_dir(kind):
        d = tmp_path / kind
        if kind == "nonempty":
            d.mkdir()
            (d / "something.txt").write_text("x")
        elif kind == "file":
            d = tmp_path / "afile"
            d.write_text("keep\n")
        elif kind == "under-file":
            (tmp_path / "afile").write_text("keep\n")
            d = tmp_path / "afile" / "sub"
        elif kind in ("ro-parent", "ro-self"):
            d = tmp_path / "ro"
            d.mkdir()
            if not _chattr(d, "+i"):
                pytest.skip("chattr +i is not available here (needs root and a filesystem with attributes)")
            immutable.append(d)
            d = d / "out" if kind == "ro-parent" else d
        elif kind == "user-files":
            d.mkdir()
            (d / "important.txt").write_text("keep\n")
            (d / "results.csv").write_text("mine\n")
        elif kind == "empty":
            d.mkdir()
        elif kind == "corrupt-study":
            d.mkdir()
            (d / "results.parquet").write_bytes(b"not a parquet file at all")
        elif kind == "toy-study":
            shutil.copytree(toy_study, d)
        elif kind == "old-study":
            (d / "runs").mkdir(parents=True)
            pd.DataFrame({"run_id": ["old"], "config_hash": ["x"]}).to_parquet(d / "runs" / "old.parquet")
        else:
            raise ValueError(kind)
        return d

    def token(t):
        if not t.startswith("@"):
            return t
        if t == "@out":
            return str(tmp_path / "out")
        kind, _, name = t[1:].partition(":")
        if kind == "fx":
            return str(damaged_checkpoint(name, tmp_path / f"ckpt-{name}", bench))
        if kind == "dir":
            return str(make_dir(name))
        if kind == "yaml":
            y = STUDY_YAML[name]
            p = tmp_path / f"{name}.yaml"
            p.write_text(y if isinstance(y, str) else yaml.safe_dump(y, sort_keys=False))
            return str(p)
        raise ValueError(t)

    dot = tmp_path / "dot"
    dot.mkdir()
    (dot / "keep.txt").write_text("x\n")
    monkeypatch.chdir(dot)   # for --out . (and so that nothing lands in the repository)
    yield token
    for d in immutable:
        _chattr(d, "-i")


def _guard(monkeypatch):
    import optigrade.analysis.study as study
    import optigrade.unlearning.run as run_mod

    def no_work(*a, **k):
        raise WorkStarted("validation passed and the work started")

    monkeypatch.setattr(run_mod, "unlearn", no_work)
    monkeypatch.setattr(study, "_one_run", no_work)
    monkeypatch.setattr(study, "_reference_rows", no_work)


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:   # argparse's own refusals
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("argv,expect,match", ROWS)
def test_cli_case(argv, expect, match, scratch, capsys, monkeypatch, tmp_path):
    argv = [scratch(a) for a in argv]
    if expect.startswith("check:"):
        CHECKS[expect[len("check:"):]](argv, capsys, monkeypatch, tmp_path)
        return
    _guard(monkeypatch)
    if expect == "accept":
        with pytest.raises(WorkStarted):
            _run(argv, capsys)
        return
    code, out, err = _run(argv, capsys)
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert lines and re.search(match, lines[-1]), err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- rows that need a real run
def _check_diverged(argv, capsys, monkeypatch, tmp_path):
    """A diverging unlearn run exits non-zero saying so, and writes no checkpoint."""
    code, out, err = _run(argv, capsys)
    assert code not in (0, None), out
    assert "diverged" in err
    assert not (tmp_path / "out").exists()


def _check_cache_truncated(argv, capsys, monkeypatch, tmp_path):
    """A truncated cached tiny model is refused naming the file, or rebuilt (never loaded quietly)."""
    from optigrade.unlearning.config import Setup
    from optigrade.unlearning.models import tiny
    from optigrade.unlearning.run import build_benchmark

    monkeypatch.setenv("OPTIGRADE_CACHE", str(tmp_path / "cache"))
    bench = build_benchmark(Setup(benchmark_kwargs={"n_entities": 40}))
    key = tiny._cache_key(bench, tiny.TinyConfig(), tiny.PretrainConfig(), 0)
    entry = damaged_checkpoint("trunc", tmp_path / "cache" / "models" / f"tiny-llama-{key}", bench)
    (entry / "pretrain.json").write_text("{}")

    def rebuilt(*a, **k):
        raise Rebuilt()

    monkeypatch.setattr(tiny, "pretrain", rebuilt)
    _guard(monkeypatch)
    try:
        code, out, err = _run(argv, capsys)
    except Rebuilt:
        return
    assert code == 2 and "model.safetensors" in err, (code, err)


def _check_study_diverged(argv, capsys, monkeypatch, tmp_path):
    """A study whose optimizer diverges or collapses (sgd at lr 1e9: retain 0.00, perplexity
    ~400) completes and reports the run as not matched (never ranked)."""
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    runs = res[res["run_id"] != "reference"]
    assert len(runs) and not runs["matched"].astype(bool).any()
    assert "not matched" in (tmp_path / "out" / "report.md").read_text()


def _check_overwrite_then_invalid(argv, capsys, monkeypatch, tmp_path):
    """--overwrite with a bad config is refused and deletes nothing."""
    _guard(monkeypatch)
    code, out, err = _run(argv, capsys)
    assert code == 2 and "lr must be" in err, err
    assert (tmp_path / "old-study" / "runs" / "old.parquet").exists()


CHECKS = {"diverged": _check_diverged, "cache-truncated": _check_cache_truncated,
          "study-diverged": _check_study_diverged, "overwrite-then-invalid": _check_overwrite_then_invalid}
