"""The notebooks in notebooks/: each executes top to bottom on the embedded default, within the
time budget, without errors or stderr, shows its key outputs, and is committed with its outputs.

Each notebook runs from a copy in a temporary directory (the kernel's cwd), so the relative paths
it writes (``runs/...``, ``study.yaml``) land there and the committed file is never rewritten.
"""

import hashlib
import shutil
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: the budget each notebook is written for (one CPU core, the cached tiny Llama): recorded per run, not asserted
BUDGET_S = 120

#: per notebook: (a line of the code cell's source, the MIME type its outputs must hold, text the
#: output must contain or None): the results a reader comes for
KEY_OUTPUTS = {
    "01_quickstart.ipynb": [
        ('for name, res in runs.items():', "text/plain", "stop=target"),   # printed by the run loop
        ('runs["adam"]', "text/html", "<b>UnlearnResult</b>"),
        ('runs["adam"].plot()', "image/png", None),
        ('runs["zo-sgd"].plot()', "image/png", None),
        ('effect', "text/html", "forget facts recovered"),
    ],
    "02_landscape.ipynb": [
        ('density.plot()', "image/png", None),
        ('display(fig)', "image/png", None),
        ('pd.concat({f"{name} / {split}": r.to_frame()[cols]', "text/html", "residual"),
        ('print(changes["adam", "forget"])', "text/plain", "LossChange("),
        ('table[["checkpoint"', "text/html", "npo-zo-sgd"),
        ('summary_table(table)', "text/html", "(sem)"),
    ],
    "03_report.ipynb": [
        ('study', "text/html", "<b>StudyResult</b>"),
        ('headline_table(study.summary, "npo")', "text/html", "not matched"),
        ('explain_summary(explained)', "text/html", "n matched"),
        ('fig = figures.forget_utility(results)', "image/png", None),
        ('fig = figures.recovery_vs_displacement(results)', "image/png", None),
        ('pd.DataFrame(figures.write_all(', "text/html", "skipped"),
    ],
}


def _cell(nb, line):
    """The code cell with a source line equal to (or, failing that, starting with) ``line``."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for match in (lambda s: s.strip() == line, lambda s: s.strip().startswith(line)):
        hits = [c for c in cells if any(match(s) for s in c.source.splitlines())]
        if hits:
            return hits[0]
    raise AssertionError(f"no code cell has the line {line!r}; update KEY_OUTPUTS with the notebook")


def _texts(cell, mime):
    out = []
    for o in cell.get("outputs", []):
        if mime == "text/plain" and o.output_type == "stream" and o.name == "stdout":
            out.append(o.text)
        elif mime in o.get("data", {}):
            data = o.data[mime]
            out.append(data if isinstance(data, str) else "".join(data))
    return out


def _problems(nb):
    """Error outputs and stderr text: a notebook on GitHub should show neither."""
    found = []
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            if o.output_type == "error":
                found.append(f"cell {i}: {o.ename}: {o.evalue}")
            elif o.output_type == "stream" and o.name == "stderr":
                found.append(f"cell {i} wrote to stderr: {o.text.strip()[:300]}")
    return found


def _check_key_outputs(nb, name):
    for line, mime, text in KEY_OUTPUTS.get(name, []):
        got = _texts(_cell(nb, line), mime)
        assert got, f"{name}: the cell with {line!r} shows no {mime} output"
        if text is not None:
            assert any(text in g for g in got), f"{name}: the {mime} output of {line!r} lacks {text!r}"


def test_every_notebook_has_key_outputs_listed():
    assert {p.name for p in NOTEBOOKS} == set(KEY_OUTPUTS), "list the key outputs of every notebook in KEY_OUTPUTS"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    """Saved executed (so it reads on GitHub): every code cell ran, in order, without errors."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert None not in counts, f"{path.name} has unexecuted cells; execute it and save it with outputs"
    assert counts == sorted(counts), f"{path.name} was not run top to bottom (execution counts {counts})"
    assert not _problems(nb)
    _check_key_outputs(nb, path.name)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, pretrained, tmp_path, record_property):
    import nbformat
    from nbclient import NotebookClient

    before = hashlib.sha256(path.read_bytes()).hexdigest()
    copy = Path(shutil.copy(path, tmp_path / path.name))
    nb = nbformat.read(copy, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - t0
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s")
    assert not _problems(nb)
    _check_key_outputs(nb, path.name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the committed notebook was rewritten"
    # the time is recorded (record_property, printed), not asserted: timings do not belong in unit tests
