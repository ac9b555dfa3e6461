"""A study's output directory (defects 3, 4, 9 and 10 of the reliability review): validated
before anything is deleted, never written into a user's directory, one study at a time, an
unfinished or mixed directory never presented, output paths checked before any work."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import optigrade.analysis.study as study_mod
from optigrade._files import OutputBusyError, file_mode
from optigrade._validate import ConfigError
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.report import load_study
from optigrade.analysis.study import run_study
from optigrade.analysis.study import VOLATILE_COLUMNS
from optigrade.cli import main

from .._kill import kill_at_flag
from ..test_files import held_elsewhere, immutable
from .conftest import small_study_dict

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = VOLATILE_COLUMNS


def _study(out, bench, model, resume=False, overwrite=False, **over):
    cfg = StudyConfig.from_dict(small_study_dict(**over))
    return run_study(cfg, out, resume=resume, overwrite=overwrite, progress=False, base=model, benchmark=bench)


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _report(out, capsys):
    code = main(["report", str(out)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def no_prepare(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("work started before the output checks")

    monkeypatch.setattr(study_mod, "prepare", fail)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_bench, small_model):
    """A finished study directory (seed 0) to copy."""
    out = tmp_path_factory.mktemp("finished") / "study"
    _study(out, small_bench, small_model)
    return out


def _copy(src, tmp_path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- defect 3
def test_overwrite_with_a_refused_config_deletes_nothing(finished, tmp_path, small_bench, small_model, capsys):
    """s-overwrite-then-invalid: refused by the YAML checks (CLI) or against the model
    (prepare): the earlier study is intact and still reported."""
    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    bad = tmp_path / "lr0.yaml"
    bad.write_text(yaml.safe_dump(small_study_dict(optimizers=[{"name": "adam", "lr": 0, "steps": 2}])))
    assert main(["study", str(bad), "--out", str(out), "--overwrite"]) == 2
    assert "lr" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="group_size=7"):  # known only once the model is built
        _study(out, small_bench, small_model, overwrite=True,
               attacks=[{"kind": "quantize", "label": "rtn4g7", "bits": 4, "group_size": 7}])
    assert _snapshot(out) == before
    assert load_study(out)[0].equals(pd.read_parquet(finished / "results.parquet"))


# ----------------------------------------------------------------------------- defect 4
@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}], ids=["plain", "resume", "overwrite"])
def test_user_directory_is_refused(tmp_path, small_bench, small_model, no_prepare, flags):
    """s-out-nonempty-nonstudy: a non-empty directory that is not a study's is refused before
    work; --overwrite writes next to a user's files but never replaces one."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "results.csv").write_text("keep")
    msg = "would be replaced by the study's" if flags.get("overwrite") else "is not an optigrade study directory"
    with pytest.raises(ConfigError, match=msg):
        _study(d, small_bench, small_model, **flags)
    assert _snapshot(d) == {"results.csv": b"keep"}


def test_demo_refuses_a_user_directory(tmp_path, small_bench, small_model, no_prepare):
    """d-out-nonempty: the demo is a study: refused before its (minutes of) work."""
    from optigrade.demo import run_demo

    (tmp_path / "important.txt").write_text("keep")
    with pytest.raises(ConfigError, match="is not an optigrade study directory"):
        run_demo(tmp_path, quick=True, progress=False, base=small_model, benchmark=small_bench)
    assert _snapshot(tmp_path) == {"important.txt": b"keep"}


def test_overwrite_removes_only_the_studys_own_files(tmp_path, small_bench, small_model):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("keep")
    _study(d, small_bench, small_model, overwrite=True)  # a user directory without clashes: written next to notes
    (d / "runs" / "mine.txt").write_text("keep")
    assert (d / "runs" / "graddiff__adam__s0.parquet").exists()
    r = _study(d, small_bench, small_model, overwrite=True, seeds=[1])
    assert r.computed == ["reference", "graddiff__adam__s1"]
    assert sorted(p.name for p in (d / "runs").iterdir()) == ["graddiff__adam__s1.delta.safetensors",
                                                              "graddiff__adam__s1.parquet", "mine.txt",
                                                              "reference.parquet"]
    assert (d / "notes.txt").read_text() == "keep" and (d / "runs" / "mine.txt").read_text() == "keep"
    for f in ("results.parquet", "study.json", "config.yaml", "report.md", "runs/reference.parquet"):
        assert (d / f).stat().st_mode & 0o777 == file_mode(), f  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no lock file or temporary left


def test_resume_and_overwrite_together_are_refused(tmp_path, small_bench, small_model, no_prepare):
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict each other"):
        _study(tmp_path / "x", small_bench, small_model, resume=True, overwrite=True)


# ----------------------------------------------------------------------------- defect 9
class Killed(BaseException):
    """Stands in for a kill during the aggregation (the slow test below sends a real SIGKILL)."""


def _kill_in_aggregation(monkeypatch):
    import optigrade.analysis.report as report_mod

    def killed(*a, **k):
        raise Killed()

    monkeypatch.setattr(report_mod, "write_report", killed)


def test_unfinished_study_is_marked_incomplete(tmp_path, small_bench, small_model, monkeypatch, capsys):
    out = tmp_path / "s"
    with monkeypatch.context() as m:
        _kill_in_aggregation(m)
        with pytest.raises(Killed):
            _study(out, small_bench, small_model, seeds=[0, 1])
    assert (out / "results.parquet").exists()  # written, but not vouched for
    code, stdout, err = _report(out, capsys)
    assert code == 2 and stdout == "" and "holds an INCOMPLETE study 't' (status 'running'" in err
    assert f"optigrade study CONFIG --out {out} --resume" in err
    r = _study(out, small_bench, small_model, resume=True, seeds=[0, 1])
    assert sorted(r.skipped) == ["graddiff__adam__s0", "graddiff__adam__s1", "reference"]
    ref = _study(tmp_path / "ref", small_bench, small_model, seeds=[0, 1])
    pd.testing.assert_frame_equal(r.results.drop(columns=VOLATILE, errors="ignore"), ref.results.drop(columns=VOLATILE, errors="ignore"))
    assert _report(out, capsys)[0] == 0


def test_killed_second_study_never_shows_the_first_ones_tables(finished, tmp_path, small_bench, small_model,
                                                              monkeypatch, capsys):
    """The review's case: config.yaml of the new study (2 seeds) next to results of the old one
    (1 seed).  Now the old tables are gone as soon as the new study starts, and the directory is
    marked running until the new one finishes."""
    out = _copy(finished, tmp_path)
    with monkeypatch.context() as m:
        _kill_in_aggregation(m)
        with pytest.raises(Killed):
            _study(out, small_bench, small_model, resume=True, seeds=[0, 1])
    assert yaml.safe_load((out / "config.yaml").read_text())["seeds"] == [0, 1]
    code, _, err = _report(out, capsys)
    assert code == 2 and "INCOMPLETE" in err
    with pytest.raises(ConfigError, match="INCOMPLETE"):
        load_study(out)


def test_tables_changed_after_the_study_are_refused(finished, tmp_path, small_bench, small_model, capsys):
    out = _copy(finished, tmp_path)
    other = _study(tmp_path / "other", small_bench, small_model, seeds=[1])
    shutil.copy(other.out / "results.parquet", out / "results.parquet")
    code, _, err = _report(out, capsys)
    assert code == 2 and "results.parquet does not belong to the study recorded in study.json" in err
    (out / "study.json").write_text("{broken")
    code, _, err = _report(out, capsys)
    assert code == 2 and "study.json' is damaged" in err


def test_damaged_results_table_is_a_clear_error(tmp_path, capsys):
    """r-corrupt-parquet (a directory without study.json: nothing to compare against)."""
    (tmp_path / "results.parquet").write_bytes(b"not a parquet file")
    code, _, err = _report(tmp_path, capsys)
    assert code == 2 and "results.parquet' is damaged (ArrowInvalid" in err and "--resume" in err


def test_second_study_on_one_out_is_told_before_work(tmp_path, small_bench, small_model, no_prepare):
    out = tmp_path / "s"
    with held_elsewhere(out) as pid:
        with pytest.raises(OutputBusyError, match=rf"another optigrade process \(pid {pid}\) is writing"):
            _study(out, small_bench, small_model)
    assert not out.exists()


# ----------------------------------------------------------------------------- defect 10
OUT_CASES = [  # (appendix id, --out, flags, message)
    ("s-out-file", "FILE", {}, "is a file, not a directory"),
    ("s-out-under-file", "FILE/sub", {}, "which is a file, not a directory"),
    ("s-out-dot-overwrite", ".", {"overwrite": True}, "is the current directory; --overwrite would replace it"),
    ("s-out-sys", "/sys/optigrade_out", {}, "cannot write in '/sys'"),
]


@pytest.mark.parametrize("out,flags,msg", [c[1:] for c in OUT_CASES], ids=[c[0] for c in OUT_CASES])
def test_study_out_refused_before_work(tmp_path, monkeypatch, small_bench, small_model, no_prepare, out, flags, msg):
    if out.startswith("/sys") and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("mine")
    with pytest.raises(ConfigError, match=msg):
        _study(out, small_bench, small_model, **flags)
    assert _snapshot(tmp_path) == {"FILE": b"mine"}


@pytest.mark.parametrize("which", ["s-out-readonly-parent", "s-out-readonly-self", "s-out-readonly-runs"])
def test_study_readonly_out_refused_before_work(finished, tmp_path, small_bench, small_model, no_prepare, which):
    out = _copy(finished, tmp_path / "p") if which != "s-out-readonly-parent" else tmp_path / "p" / "new"
    (tmp_path / "p").mkdir(exist_ok=True)
    target = {"s-out-readonly-parent": tmp_path / "p", "s-out-readonly-self": out,
              "s-out-readonly-runs": out / "runs"}[which]
    with immutable(target):
        with pytest.raises(ConfigError, match="cannot write in .*Operation not permitted"):
            _study(out, small_bench, small_model, resume=True)


# ----------------------------------------------------------------------------- a real kill
KILL = r"""
import sys, time
from pathlib import Path
import optigrade.analysis.report as report_mod
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.study import run_study
from optigrade.unlearning import SyntheticFacts, TinyConfig, tiny_llama
from tests.analysis.conftest import small_study_dict

out, flag = sys.argv[1], Path(sys.argv[2])

def stop_here(*a, **k):  # results.parquet and summary written; the report and study.json not yet
    flag.write_text("here")
    time.sleep(120)

report_mod.write_report = stop_here
bench = SyntheticFacts(n_entities=40)
small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
model = tiny_llama(len(bench.tokenizer), small, seed=0, tokenizer=bench.tokenizer)
run_study(StudyConfig.from_dict(small_study_dict(seeds=[0, 1])), out, resume=True, progress=False,
          base=model, benchmark=bench)
"""


@pytest.mark.slow
def test_study_killed_during_aggregation(finished, tmp_path, small_bench, small_model, capsys):
    """SIGKILL while the tables are gathered, over a finished one-seed study resumed with two
    seeds: `report` refuses the directory (INCOMPLETE), a --resume finishes it and equals the
    uninterrupted study."""
    out = _copy(finished, tmp_path)
    flag = tmp_path / "flag"
    kill_at_flag([sys.executable, "-c", KILL, str(out), str(flag)], flag, ROOT, "its aggregation")
    assert len(pd.read_parquet(out / "results.parquet")["seed"].unique()) == 2  # new tables, not vouched for
    code, stdout, err = _report(out, capsys)
    assert code == 2 and stdout == "" and "INCOMPLETE" in err
    r = _study(out, small_bench, small_model, resume=True, seeds=[0, 1])
    assert r.computed == [] and len(r.skipped) == 3
    ref = _study(tmp_path / "ref", small_bench, small_model, seeds=[0, 1])
    pd.testing.assert_frame_equal(r.results.drop(columns=VOLATILE, errors="ignore"), ref.results.drop(columns=VOLATILE, errors="ignore"))
    assert _report(out, capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flag", "ref", "study"]  # no lock or temporaries
