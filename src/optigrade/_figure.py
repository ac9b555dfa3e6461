"""Figures that Jupyter displays inline without pyplot (private floor module): every room's
``.plot()`` returns one (:func:`new_figure`)."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

__all__ = ["InlineFigure", "new_figure"]


class InlineFigure(Figure):
    """A Figure on an Agg canvas (no pyplot state: safe in scripts, tests and threads) that
    Jupyter displays inline through ``_repr_png_``; a plain ``Figure`` made without pyplot
    shows only as text there."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(**kw) -> InlineFigure:
    """An :class:`InlineFigure` with an Agg canvas; ``kw`` go to ``Figure``.

    >>> fig = new_figure(figsize=(2, 2)); _ = fig.add_subplot(111).plot([0, 1])
    >>> fig._repr_png_()[:4]
    b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = InlineFigure(**kw)
    FigureCanvasAgg(fig)
    return fig
