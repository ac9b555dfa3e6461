"""The CLI refuses bad input before any work, naming the value and the fix."""

import json

import pytest

from optigrade.cli import main


def run(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def nonempty(tmp_path):
    d = tmp_path / "full"
    d.mkdir()
    (d / "something.txt").write_text("x")
    return d


@pytest.fixture
def not_a_model(tmp_path):
    d = tmp_path / "notmodel"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    return d


BAD = [
    (["--objective", "forget-everything"], "unknown objective 'forget-everything'"),
    (["--optimizer", "adamz"], "unknown optimizer 'adamz'"),
    (["--lr", "0"], "lr must be > 0, got 0.0"),
    (["--lr=-1e-3"], "lr must be > 0"),
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--steps=-5"], "steps must be a positive integer"),
    (["--forget-fraction", "1.5"], "forget_fraction must be in (0, 1), got 1.5"),
    (["--forget-fraction", "0"], "forget_fraction must be in (0, 1)"),
    (["--model", "/no/such/ckpt"], "no such path"),
    (["--model", "NOTMODEL"], "not a model checkpoint"),
    (["--opt-arg", "mu"], "KEY=VALUE"),
    (["--optimizer", "zo-sgd", "--opt-arg", "mu=-1"], "mu"),
    (["--out", "NONEMPTY"], "exists and is not empty"),
    (["--retain-floor", "2"], "retain_floor must be in [0, 1], got 2.0"),
    (["--bench-arg", "n_forget"], "KEY=VALUE"),
    (["--bench-arg", "n_forgett=8"], "['n_forgett'] not accepted by benchmark 'synthetic'"),
]


@pytest.mark.parametrize("extra,msg", BAD)
def test_bad_unlearn_input(extra, msg, tmp_path, nonempty, not_a_model, capsys, monkeypatch):
    import optigrade.unlearning.run as run_mod

    def no_work(*a, **k):
        raise AssertionError("work started before validation")

    monkeypatch.setattr(run_mod, "build_model", no_work)
    extra = [str(not_a_model) if x == "NOTMODEL" else str(nonempty) if x == "NONEMPTY" else x for x in extra]
    args = ["unlearn", "--out", str(tmp_path / "out")] + extra
    if "--optimizer" in extra and "zo-sgd" in extra:
        monkeypatch.setattr(run_mod, "build_benchmark", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
    code, out, err = run(args, capsys)
    assert code == 2, (out, err)
    assert msg in err
    assert not (tmp_path / "out").exists()


def test_evaluate_bad_paths(tmp_path, not_a_model, capsys):
    code, _, err = run(["evaluate", str(tmp_path / "missing")], capsys)
    assert code == 2 and "no such path" in err
    code, _, err = run(["evaluate", str(not_a_model)], capsys)
    assert code == 2 and "no config.json" in err


def test_optimizers_lists_grades(capsys):
    code, out, _ = run(["optimizers"], capsys)
    assert code == 0
    for name in ("zo-sgd", "adazo", "signsgd", "signadam", "adam", "soul", "hybrid"):
        assert name in out


def test_unlearn_end_to_end(tmp_path, pretrained, capsys):
    out = tmp_path / "ckpt"
    code, stdout, err = run(["unlearn", "--objective", "npo", "--optimizer", "adam", "--lr", "1e-3",
                             "--steps", "4", "--target", "-1", "--out", str(out)], capsys)
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["steps"] == 4 and rep["stop_reason"] == "budget"
    code, stdout, _ = run(["evaluate", str(out)], capsys)
    assert code == 0 and "forget_acc" in json.loads(stdout)
