"""Regenerate the README's demo table from a finished study (the command line of
:func:`optigrade.analysis.report.update_readme`).

    python -m optigrade.analysis.readme_tables [RUN_DIR=runs/demo] [--readme README.md] [--check]

Replaces only the text between ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->``
with the Markdown headline tables (``optigrade report RUN_DIR --markdown``) and the generated
sentences about the grade claim.  ``--check`` exits 1 when the README is out of date.
"""

from __future__ import annotations

import argparse
import sys

from .report import render_block, update_readme

__all__ = ["render_block", "update_readme", "main"]


def main(argv=None) -> int:
    """Exit status: 0 done (or up to date with ``--check``), 1 out of date (``--check``), 2 error.

    >>> main(["/nonexistent-study"])
    2
    """
    ap = argparse.ArgumentParser(prog="python -m optigrade.analysis.readme_tables", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/demo")
    ap.add_argument("--readme", default="README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README block is out of date")
    a = ap.parse_args(argv)
    try:
        changed = update_readme(a.run_dir, a.readme, a.check)
    except (ValueError, FileNotFoundError) as e:
        print(f"readme_tables: error: {e}", file=sys.stderr)
        return 2
    if a.check:
        return 1 if changed else 0
    print(f"{a.readme}: {'updated' if changed else 'already up to date'} from {a.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
