"""Every landscape result draws itself (Jupyter user, issue 15): ``.plot()`` returns a figure that
displays inline (``_repr_png_``), with labelled axes, showing the result's own numbers; and
``.to_frame()`` gives the tidy rows."""

import numpy as np
import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape import results as R
from optigrade.landscape._examples import least_squares


@pytest.fixture(scope="module")
def measured():
    probe, H = least_squares()
    d = torch.randn(probe.flat_params().numel(), dtype=probe.dtype, generator=torch.Generator().manual_seed(0)) * 0.1
    theta = probe.flat_params()
    return {
        "EigenResult": ls.top_eigenvalues(probe, 3),
        "TraceResult": ls.hutchinson_trace(probe, n=12, seed=0),
        "Density": ls.spectral_density(probe, m=4, n_v=2, width=0.5),
        "SharpnessResult": ls.average_sharpness(probe, rho=0.1, n=4, seed=0),
        "CertifiedRadius": ls.radius_from_outcomes([0] * 50, sigma=0.1, n_params=100),
        "Slice1D": ls.mode_connectivity(probe, theta, theta + 1.0, points=5),
        "Slice2D": ls.slice_2d(probe, points=(3, 3)),
        "LossChange": ls.loss_change(probe, d),
    }


def test_every_public_result_class_is_covered(measured):
    public = {n for n in R.__all__ if isinstance(getattr(R, n), type) and issubclass(getattr(R, n), R.Result)}
    assert public - {"BlockSpectra"} <= set(measured)  # BlockSpectra: tested with its own block measurement


@pytest.mark.parametrize("name", ["EigenResult", "TraceResult", "Density", "SharpnessResult", "CertifiedRadius",
                                  "Slice1D", "Slice2D", "LossChange"])
def test_plot_and_frame(measured, name):
    r = measured[name]
    fig = r.plot()
    assert fig._repr_png_()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    df = r.to_frame(subject="unlearned", data="forget")
    assert len(df) and {"quantity", "value", "subject", "data"} <= set(df.columns)
    html = r._repr_html_()
    assert "<table" in html and len(html) < 20000


def test_plots_show_the_numbers(measured):
    e = measured["EigenResult"]
    ys = np.concatenate([l.get_ydata() for l in e.plot().axes[0].lines if len(l.get_ydata())])
    assert set(np.round(e.eigenvalues, 9)) <= set(np.round(ys, 9))
    lc = measured["LossChange"]
    heights = [p.get_height() for p in lc.plot().axes[0].patches]
    assert heights == pytest.approx([lc.measured, lc.first_order, lc.second_order])
    tr = measured["TraceResult"]
    line = [l for l in tr.plot().axes[0].lines if l.get_label() == "running mean"][0]
    assert line.get_ydata()[-1] == pytest.approx(np.mean(tr.samples))
