"""optigrade.figures: one module per figure of a study, each ``<name>(table, ...) -> Figure``
reading the tidy result tables (never a model), and :func:`write_all`, which writes PNG and PDF
of every figure whose data a results directory holds and says why the others were skipped.

    >>> from optigrade import figures
    >>> figures.write_all("runs/demo", "runs/demo/figures")           # doctest: +SKIP
    [('forget_utility', 'written'), ..., ('density', 'skipped: no landscape.parquet in runs/demo')]

Figures draw per-seed points and 95% intervals over seeds (:mod:`optigrade.analysis.intervals`),
the Okabe–Ito palette, and reader-facing names (:mod:`optigrade.figures._names`).
"""

from ._common import MissingData
from .barrier import barriers
from .contour import contour_2d
from .curvature import recovery_vs_curvature
from .curves import unlearning_curves
from .density import spectral_density
from .driver import FIGURES, load_tables, write_all
from .interp import interpolation
from .magnitude import recovery_vs_displacement
from .outcomes import forget_utility
from .radius import certified_radius
from .relearn import relearn_half
from .slices import slices_1d
from .theory import theory_checks

__all__ = ["forget_utility", "recovery_vs_displacement", "recovery_vs_curvature", "interpolation", "slices_1d",
           "contour_2d", "spectral_density", "certified_radius", "barriers", "unlearning_curves", "theory_checks",
           "relearn_half", "write_all", "load_tables", "FIGURES", "MissingData"]
