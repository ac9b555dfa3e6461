"""Reading the field's public benchmark layouts from a local directory (private).

TOFU, MUSE and WMDP are published on the Hugging Face hub as tables per split.  No hub is
reachable on the project's machines, so every loader reads the *same layout* from a local
directory: one file per split, named as on the hub, in one of the formats the hub serves or
``datasets`` writes —

* ``NAME.json`` / ``NAME.jsonl``: JSON lines (one object per line, as TOFU ships them) or one
  JSON array of objects;
* ``NAME.parquet``: a table (what ``datasets`` exports);
* ``NAME.txt``: raw text, one record ``{"text": <whole file>}`` (MUSE's raw corpora).

:func:`check_files` checks a whole layout (each file present, non-empty, with its columns) and
raises :class:`LayoutError` naming what is missing and the layout expected; benchmarks call it
from ``check_kwargs`` so a bad directory is refused when the config is validated, before any
model is loaded.  :func:`read_records` reads one split (after the same checks).  When
``data_dir`` is None and ``datasets`` can reach the hub, :func:`hub_records` reads the split
through ``datasets.load_dataset`` instead.

    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "forget01.json").write_text('{"question": "q1", "answer": "a1"}\\n{"question": "q2", "answer": "a2"}\\n')
    >>> [r["answer"] for r in read_records(d, "forget01", ["question", "answer"], layout="TOFU")]
    ['a1', 'a2']
    >>> read_records(d, "forget01", ["question", "paraphrased_answer"], layout="TOFU")
    Traceback (most recent call last):
    ...
    optigrade.unlearning.benchmarks._layout.LayoutError: TOFU: .../forget01.json has no column 'paraphrased_answer' (it has: answer, question); ...
    >>> read_records(d, "retain99", ["question"], layout="TOFU")
    Traceback (most recent call last):
    ...
    optigrade.unlearning.benchmarks._layout.LayoutError: TOFU: no file for split 'retain99' in ...: expected retain99.json, retain99.jsonl or retain99.parquet; the directory has: forget01.json; ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = ["LayoutError", "find_file", "read_records", "check_files", "check_dir", "hub_records"]

SUFFIXES = (".json", ".jsonl", ".parquet")


class LayoutError(ValueError):
    """A local benchmark directory that does not have the public layout (a ``ValueError``, so
    the config layer reports it as a bad setting, before any work)."""


def check_dir(data_dir, layout: str, expected: str) -> Path:
    """``data_dir`` as a Path, refused when it is not given or not a directory."""
    if data_dir is None or str(data_dir) == "":
        raise LayoutError(f"{layout}: no data_dir given; pass --data-dir DIR (or benchmark_kwargs: {{data_dir: DIR}}) "
                          f"holding the {layout} layout: {expected}")
    p = Path(data_dir).expanduser()
    if not p.is_dir():
        raise LayoutError(f"{layout}: data_dir {str(data_dir)!r} is not a directory; it must hold the {layout} "
                          f"layout: {expected}")
    return p


def find_file(data_dir, name: str, layout: str, expected: str = "", suffixes: Sequence[str] = SUFFIXES) -> Path:
    """The file of split ``name`` in ``data_dir`` (the first of ``name + suffix`` that exists)."""
    d = Path(data_dir)
    for s in suffixes:
        p = d / f"{name}{s}"
        if p.is_file():
            return p
    have = sorted(q.name for q in d.iterdir() if not q.name.startswith(".")) if d.is_dir() else []
    shown = ", ".join(have[:12]) + (f" and {len(have) - 12} more" if len(have) > 12 else "") if have else "nothing"
    options = ", ".join(f"{name}{s}" for s in suffixes[:-1]) + f" or {name}{suffixes[-1]}"
    raise LayoutError(f"{layout}: no file for split {name!r} in {str(d)!r}: expected {options}; the directory "
                      f"has: {shown}; {expected or 'see the loader documentation for the layout'}")


def _load(path: Path) -> List[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        return [{"text": text}] if text.strip() else []
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    head = text.lstrip()[:1]
    if head == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayoutError(f"{path}: not valid JSON ({e})") from None
        rows = data
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LayoutError(f"{path}: line {i} is not a JSON object ({e}); expected JSON lines "
                                  "(one object per line) or one JSON array of objects") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise LayoutError(f"{path}: record {bad} is {type(rows[bad]).__name__}, not an object with named columns")
    return rows


def _check_columns(path: Path, rows: List[dict], columns: Iterable[str], layout: str, expected: str) -> None:
    if not rows:
        raise LayoutError(f"{layout}: {path} is empty; every split needs at least one record ({expected})")
    have = set(rows[0])
    for c in columns:
        if c not in have:
            raise LayoutError(f"{layout}: {path} has no column {c!r} (it has: {', '.join(sorted(have))}); "
                              f"{expected or 'see the loader documentation for the layout'}")
        missing = next((i for i, r in enumerate(rows) if c not in r), None)
        if missing is not None:
            raise LayoutError(f"{layout}: {path} record {missing} has no {c!r}; every record needs it")


def read_records(data_dir, name: str, columns: Sequence[str], layout: str, expected: str = "",
                 suffixes: Sequence[str] = SUFFIXES) -> List[dict]:
    """The records of split ``name``: found, parsed, non-empty and with every one of
    ``columns`` (else :class:`LayoutError` naming the file, the column and the layout)."""
    path = find_file(data_dir, name, layout, expected, suffixes)
    rows = _load(path)
    _check_columns(path, rows, columns, layout, expected)
    return rows


def check_files(data_dir, required: Dict[str, Sequence[str]], layout: str, expected: str = "",
                suffixes: Sequence[str] = SUFFIXES) -> Dict[str, Path]:
    """Check every split of ``required`` (name → columns) exists, is non-empty and has its
    columns; returns name → path.  The first problem is raised, naming it."""
    out = {}
    for name, cols in required.items():
        path = find_file(data_dir, name, layout, expected, suffixes)
        _check_columns(path, _load(path), cols, layout, expected)
        out[name] = path
    return out


def hub_records(repo: str, config: Optional[str], split: str, columns: Sequence[str], layout: str) -> List[dict]:
    """Records of ``repo`` / ``config`` / ``split`` through ``datasets.load_dataset`` (only
    when ``datasets`` is installed and the hub reachable; otherwise a LayoutError saying to pass
    a local ``data_dir``)."""
    import os
    import socket

    offline = any(os.environ.get(k, "") not in ("", "0", "false", "False") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline:
        try:  # a quick look before `datasets` spends ~25 s retrying an unreachable hub
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError:
            offline = True
    if offline:
        raise LayoutError(f"{layout}: no data_dir given and the Hugging Face hub is not reachable from here (offline); "
                          f"download {repo} elsewhere and pass --data-dir DIR (benchmark_kwargs data_dir) with its files")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise LayoutError(f"{layout}: no data_dir given and the `datasets` package is not installed; download "
                          f"{repo} elsewhere and pass --data-dir DIR with its files") from None
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline, unknown config, …: one clear message
        raise LayoutError(f"{layout}: could not read {repo} ({config or 'default'}/{split}) from the hub ({type(e).__name__}: "
                          f"{str(e)[:200]}); pass --data-dir DIR with a local copy of its files") from None
    rows = [dict(r) for r in ds]
    _check_columns(Path(f"{repo}/{config}/{split}"), rows, columns, layout, "")
    return rows
