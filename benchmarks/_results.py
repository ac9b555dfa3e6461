"""Write one benchmark's section of benchmarks/RESULTS.md (shared by the bench_*.py scripts).

A section is the text between its ``<!-- name:start -->`` and ``<!-- name:end -->`` markers
(markers included in ``section``); it replaces the old one in place, or is appended when absent.
Every other section is left byte for byte.
"""

from __future__ import annotations

import pathlib


def write_section(section: str, path: pathlib.Path, start: str, end: str) -> None:
    """Replace the ``start``…``end`` block of ``path`` with ``section`` (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text)
