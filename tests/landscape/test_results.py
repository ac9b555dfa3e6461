"""Every landscape result: to_frame conforms to the one schema, the repr stays one short line,
and Jupyter shows the result as an HTML table and its figure inline (as a PNG)."""

import pytest
import torch

from optigrade import landscape as ls
from optigrade._tables import validate_frame
from optigrade.landscape._examples import least_squares


def _results():
    probe, _ = least_squares()
    theta = probe.flat_params()
    return {
        "eigen": ls.top_eigenvalues(probe, 2),
        "trace": ls.hutchinson_trace(probe, 4),
        "hutchpp": ls.hutchpp_trace(probe, 6),
        "density": ls.spectral_density(probe, m=4, n_v=2),
        "blocks": ls.block_spectra(probe, {"w": "weight", "b": "bias"}, n_trace=3),
        "worst": ls.worst_case_sharpness(probe, 0.1, steps=2),
        "average": ls.average_sharpness(probe, 0.1, n=4),
        "sam": ls.sam_sharpness(probe, 0.1),
        "pac": ls.pac_bayes_flatness(probe, 0.05, n=2, iters=3),
        "radius": ls.certified_radius(probe, 0.01, n=5, loss_threshold=0.0),
        "slice1d": ls.slice_1d(probe, points=3),
        "interpolate": ls.interpolate(probe, theta, theta + 1, alphas=[0.0, 1.0]),
        "connectivity": ls.mode_connectivity(probe, theta, theta + 1, points=3),
        "slice2d": ls.slice_2d(probe, points=(2, 3)),
    }


RESULTS = _results()


@pytest.mark.parametrize("name", list(RESULTS))
def test_to_frame_conforms_to_schema(name):
    r = RESULTS[name]
    df = validate_frame(r.to_frame(run_id="run-1", subject="attacked:rtn-4bit", data="forget"))
    assert len(df) > 0
    assert set(df.run_id) == {"run-1"} and set(df.subject) == {"attacked:rtn-4bit"}
    assert set(df.data) == {"forget"}
    assert (df.cost_loss + df.cost_grad + df.cost_hvp == r.cost.loss + r.cost.grad + r.cost.hvp).all()
    assert set(df.uncertainty_kind) <= {"", "sem", "residual"}
    assert "std_error" not in df.columns and "std_error_kind" not in df.columns
    assert validate_frame(r.to_frame()).subject.eq("").all()


@pytest.mark.parametrize("name", list(RESULTS))
def test_repr_is_one_short_line(name):
    text = repr(RESULTS[name])
    assert text.startswith(type(RESULTS[name]).__name__ + "(") and "\n" not in text
    assert len(text) < 600, text


def test_jupyter_shows_table_and_inline_figure():
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    fmt = InteractiveShell.instance().display_formatter
    data, _ = fmt.format(RESULTS["density"])
    assert "<table" in data["text/html"] and len(data["text/plain"]) < 600
    for fig in (RESULTS["density"].plot(), RESULTS["slice1d"].plot(), RESULTS["blocks"].plot(),
                RESULTS["slice2d"].plot("contour")):
        data, _ = fmt.format(fig)
        assert data["image/png"][:4] == b"\x89PNG", sorted(data)


def test_eigen_frame_reports_residual_as_uncertainty_of_kind_residual():
    r = RESULTS["eigen"]
    df = r.to_frame()
    assert df.uncertainty.tolist() == pytest.approx(list(r.residuals))
    assert set(df.uncertainty_kind) == {"residual"} and "residual" not in df.columns
    assert df.converged.tolist() == list(r.converged)


def test_probe_restores_after_every_result():
    probe, _ = least_squares()
    before = probe.flat_params()
    _ = ls.slice_2d(probe, trajectory=[before + i for i in range(3)], points=(2, 2))
    assert torch.equal(probe.flat_params(), before)


def _errorbar_containers(ax):
    from matplotlib.container import ErrorbarContainer
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_block_plot_draws_only_standard_errors_as_error_bars():
    from optigrade.landscape.results import RESIDUAL_LABEL, SEM_LABEL
    b = RESULTS["blocks"]
    fig = b.plot(["lambda_max", "trace"])
    eig_ax, tr_ax = fig.axes
    # eigenvalue panel: no error bars; the residual is named as a bound, not a standard error
    assert _errorbar_containers(eig_ax) == []
    (text,) = [t.get_text() for t in eig_ax.get_legend().get_texts()]
    assert text.startswith(RESIDUAL_LABEL) and "not a standard error" in text
    assert "± 1 s.e." not in text
    # trace panel: error bars labelled "± 1 s.e." whose half-lengths are the Hutchinson s.e.
    (eb,) = _errorbar_containers(tr_ax)
    assert eb.get_label() == SEM_LABEL
    seg = eb.lines[2][0].get_segments()
    tr = b.table[b.table.quantity == "trace"]
    assert [0.5 * (s[1, 1] - s[0, 1]) for s in seg] == pytest.approx(tr.uncertainty.tolist())
    assert set(tr.uncertainty_kind) == {"sem"}
    for ax, name in ((eig_ax, "λ_max"), (tr_ax, "trace")):
        assert ax.get_ylabel() == f"{name} [loss/param²]"
        assert "loss/param²" in ax.get_title() and "H_bb" in ax.get_title()
    assert [t.get_text() for t in tr_ax.get_xticklabels()] == ["w", "b"]


def test_block_plot_marks_visible_residuals_apart_from_error_bars():
    b = RESULTS["blocks"]
    t = b.table.copy()
    eig = t.quantity == "lambda_max"
    t.loc[eig, "uncertainty"] = 0.2 * t.loc[eig, "value"]  # a loose Lanczos run
    fig = ls.BlockSpectra(t, b.settings, b.cost).plot("lambda_max")
    (ax,) = fig.axes
    assert _errorbar_containers(ax) == []
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "_"]
    (ln,) = marks
    v, r = t.loc[eig, "value"].to_numpy(), t.loc[eig, "uncertainty"].to_numpy()
    assert sorted(ln.get_ydata()) == pytest.approx(sorted(list(v - r) + list(v + r)))
    assert "too small to draw" not in ax.get_legend().get_texts()[0].get_text()


def test_block_plot_names_the_quantities_it_has():
    with pytest.raises(ValueError, match=r"'lambda_max', 'trace'"):
        RESULTS["blocks"].plot("eigenvalue")
