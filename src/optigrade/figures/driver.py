"""Every figure of a results directory, as PNG and PDF (:func:`write_all`).

A results directory holds a study's tables (``results.parquet``; ``explain.parquet`` when the
explain stage ran) and/or a batch landscape table (``landscape.parquet``).  A figure whose data
is absent is skipped with one line saying why; that is not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import matplotlib.pyplot as plt
import pandas as pd

from ._common import MissingData
from .barrier import barriers
from .contour import contour_2d
from .curvature import recovery_vs_curvature
from .curves import unlearning_curves
from ._names import optimizer_labels
from .density import spectral_density
from .interp import interpolation
from .magnitude import recovery_vs_displacement
from .outcomes import forget_utility
from .radius import certified_radius
from .relearn import relearn_half
from .slices import slices_1d
from .theory import theory_checks

__all__ = ["FIGURES", "load_tables", "write_all"]

#: file stem → (table it reads, how to draw it from the tables); in the order of the issue
FIGURES: Dict[str, Tuple[str, Callable]] = {
    "forget_utility": ("results", lambda t: forget_utility(t["results"])),
    "magnitude": ("results", lambda t: recovery_vs_displacement(t["results"])),
    "curvature": ("results", lambda t: recovery_vs_curvature(t["results"], t.get("explain"))),
    "interpolation": ("results", lambda t: interpolation(t["results"])),
    "slices": ("results", lambda t: slices_1d(t["results"])),
    "contour": ("results", lambda t: contour_2d(t["plane"] if "plane" in t else t["results"])),
    "density": ("landscape", lambda t: spectral_density(
        t["landscape"], optimizer_labels(t["results"]) if "results" in t else None)),
    "certified_radius": ("results", lambda t: certified_radius(t["results"])),
    "barrier": ("results", lambda t: barriers(pd.concat([t["results"], t["lmc"]], ignore_index=True)
                                              if "lmc" in t else t["results"])),
    "curves": ("results", lambda t: unlearning_curves(t["results"])),
    "theory": ("results", lambda t: theory_checks(t["results"])),
    "relearn_half": ("results", lambda t: relearn_half(t["results"])),
}


def load_tables(results_dir, results: Optional[pd.DataFrame] = None) -> Dict[str, pd.DataFrame]:
    """``{"results", "explain", "landscape", "lmc"}`` → the tables present in ``results_dir``.  A study
    directory goes through :func:`optigrade.analysis.load_study` (which refuses an unfinished
    study); a 2-D plane in the landscape table is drawn from there when the results have none."""
    from optigrade.analysis import load_study

    d = Path(results_dir)
    out: Dict[str, pd.DataFrame] = {}
    if results is not None:  # a study drawing its own figures before it is sealed
        out["results"] = results
    elif (d / "results.parquet").exists():
        out["results"], _ = load_study(d)
    if (d / "lmc.parquet").exists():  # barriers between checkpoints (optigrade lmc)
        out["lmc"] = pd.read_parquet(d / "lmc.parquet")
    if (d / "plane.parquet").exists():  # a plane through θ₀ and two checkpoints (optigrade lmc --plane)
        out["plane"] = pd.read_parquet(d / "plane.parquet")
    if (d / "explain.parquet").exists():
        out["explain"] = pd.read_parquet(d / "explain.parquet")
    if (d / "landscape.parquet").exists():
        out["landscape"] = pd.read_parquet(d / "landscape.parquet")
        if "results" not in out and {"a", "b"} <= set(out["landscape"].columns):
            out["results"] = out["landscape"]
    return out


def write_all(results_dir, out_dir, dpi: int = 150, results: Optional[pd.DataFrame] = None,
              landscape=None) -> List[Tuple[str, str]]:
    """Write ``OUT/<name>.png`` and ``OUT/<name>.pdf`` for every figure whose data is in
    ``results_dir``; returns ``[(name, status)]`` in :data:`FIGURES` order, status "written" or
    "skipped: <why>".  A study with several objectives gets one file per objective
    (``<name>-<objective>``) for the per-objective figures.

    ``landscape``: a batch report's directory (or its landscape.parquet) whose table the density
    figure reads, when it is not inside ``results_dir``.
    ``results``: the study's tidy results already in memory (a study drawing its figures before it
    seals its directory; :func:`~optigrade.analysis.load_study` refuses an unsealed one).

    Raises:
        FileNotFoundError: ``results_dir`` holds none of results.parquet / landscape.parquet.
    """
    tables = load_tables(results_dir, results)
    if landscape is not None:  # a batch landscape report kept apart from the study (`optigrade landscape --out`)
        path = Path(landscape) / "landscape.parquet" if Path(landscape).is_dir() else Path(landscape)
        if not path.exists():
            raise FileNotFoundError(f"{str(landscape)!r} holds no landscape.parquet; run `optigrade landscape ... "
                                    f"--out {landscape}` first")
        tables["landscape"] = pd.read_parquet(path)
    if not tables:
        raise FileNotFoundError(f"{str(results_dir)!r} holds no results.parquet or landscape.parquet; run "
                                f"`optigrade study CONFIG --out {results_dir}` (or `optigrade landscape ...`) first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objectives = _objectives(tables.get("results"))
    status = []
    for name, (needs, draw) in FIGURES.items():
        if needs not in tables:
            status.append((name, f"skipped: no {needs}.parquet in {results_dir}"))
            continue
        per_obj = name not in ("density", "theory", "contour") and len(objectives) > 1
        for obj in objectives if per_obj else [None]:
            t = dict(tables)
            if obj is not None:
                r = t["results"]
                t["results"] = r[(r["objective"] == obj) | (r["optimizer"] == "original")]
                if "lmc" in t:
                    t["lmc"] = t["lmc"][t["lmc"]["objective"] == obj]
            stem = name if obj is None else f"{name}-{obj}"
            try:
                fig = draw(t)
            except MissingData as e:
                status.append((stem, f"skipped: {e}"))
                continue
            for ext in ("png", "pdf"):
                fig.savefig(out / f"{stem}.{ext}", dpi=dpi, bbox_inches="tight")
            plt.close(fig)
            status.append((stem, "written"))
    return status


def _objectives(results: Optional[pd.DataFrame]) -> List[str]:
    if results is None or "objective" not in results:
        return []
    return [o for o in dict.fromkeys(results["objective"].astype(str)) if o not in ("none", "nan", "")]
