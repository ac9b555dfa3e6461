"""optigrade.figures on a small synthetic study: every figure has labelled axes, draws exactly the
table's values, is written by write_all, and a figure without data is skipped with a reason."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from optigrade import figures  # noqa: E402
from optigrade.figures._names import attack_label, optimizer_label, optimizer_labels  # noqa: E402

OPTS = [("zo-sgd", 0.0, "zeroth-order", None), ("adam", 1.0, "first-order", None),
        ("noise-like-zo", np.nan, "control", ("noise", "", "zo-sgd"))]
SEEDS = (0, 1, 2)


def _study() -> pd.DataFrame:
    """A tiny study: 3 optimizers (one control) × 3 seeds × attacks rtn4 and relearn-half, with
    every row kind the figures read."""
    rng = np.random.default_rng(0)
    acc = lambda: float(rng.integers(0, 9)) / 8  # noqa: E731 - 8 facts
    rows = []
    ref = dict(run_id="reference", optimizer="original", optimizer_name="original", objective="none", grade=np.nan,
               family="", seed=0, matched=False, match_reason="reference", match_detail="", steps=0, target=0.5,
               checks="[]", stop_reason="none")
    for d in ("all", "forget-half-A", "forget-half-B"):
        rows.append(dict(ref, subject="original", data=d, quantity="forget_acc", attack="none", value=1.0))
    rows += [dict(ref, subject="original", data="all", quantity="retain_acc", attack="none", value=1.0),
             dict(ref, subject="original", data="all", quantity="general_ppl", attack="none", value=20.0)]
    for q in (1, 4, 16):
        rows += [dict(ref, subject="original", data="forget", quantity="theory_zo_sq_rel_error", attack="none",
                      queries=float(q), value=10.0 / q + rng.uniform(), uncertainty=0.3, uncertainty_kind="sem"),
                 dict(ref, subject="original", data="forget", quantity="theory_zo_sq_rel_error_predicted",
                      attack="none", queries=float(q), value=10.0 / q)]
    for mu in (0.001, 0.01, 0.03):
        rows += [dict(ref, subject="original", data="forget", quantity="theory_smoothed_gap", attack="none", mu=mu,
                      value=50 * mu ** 2 * (1 + 0.1 * rng.normal()), uncertainty=1e-6, uncertainty_kind="sem"),
                 dict(ref, subject="original", data="forget", quantity="theory_smoothed_gap_predicted", attack="none",
                      mu=mu, value=50 * mu ** 2)]
    for a in np.linspace(-1, 1, 5):
        for b in np.linspace(-1, 1, 4):
            rows.append(dict(ref, subject="original", data="forget", quantity="geo_slice_2d", attack="none", a=a, b=b,
                             value=1 + a ** 2 + 0.5 * b ** 2))
    for opt, grade, fam, ctrl in OPTS:
        for s in SEEDS:
            steps = [4, 8, 12] if ctrl is None else [0]
            run = dict(run_id=f"npo__{opt}__s{s}", optimizer=opt, optimizer_name=opt, objective="npo", grade=grade,
                       family=fam, seed=s, matched=bool(s != 2), match_reason="target" if s != 2 else "not-reached",
                       match_detail="", steps=steps[-1], target=0.5, stop_reason="target",
                       checks=json.dumps([[t, acc(), acc()] for t in steps]),
                       control_kind=ctrl[0] if ctrl else None, control_match=ctrl[2] if ctrl else None,
                       control_source=ctrl[1] if ctrl else None)
            u = dict(run, subject="unlearned", attack="none")
            rows += [dict(u, data="all", quantity="forget_acc", value=acc()),
                     dict(u, data="all", quantity="retain_acc", value=acc()),
                     dict(u, data="all", quantity="general_ppl", value=float(rng.uniform(20, 40))),
                     dict(u, data="forget-half-B", quantity="forget_acc", value=acc()),
                     dict(u, data="forget-half-A", quantity="forget_acc", value=acc()),
                     dict(u, data="weights", quantity="diag_update_norm", value=float(rng.uniform(1, 3))),
                     dict(u, data="weights", quantity="diag_half_steps_mean", setting_quantizer="rtn", setting_bits=4.0,
                          value=float(rng.uniform(0.1, 2))),
                     dict(u, data="forget", quantity="geo_lambda_max", value=float(rng.uniform(10, 50))),
                     dict(u, data="forget", quantity="geo_trace", value=float(rng.uniform(100, 500))),
                     dict(u, data="forget", quantity="geo_qnoise_sharpness", noise_scale=1.0,
                          value=float(rng.uniform(0, 0.1))),
                     dict(u, data="forget", quantity="geo_interp_barrier", value=float(rng.uniform(0, 0.2))),
                     dict(u, data="forget", quantity="geo_certified_radius", setting_sigma=0.01,
                          value=float(rng.uniform(0.1, 0.5))),
                     dict(u, data="weights", quantity="geo_attack_norm", attack="rtn4", value=float(rng.uniform(1, 2)))]
            for i, al in enumerate((0.0, 0.5, 1.0)):
                rows.append(dict(u, data="forget", quantity="geo_interp", index=i, alpha=al,
                                 value=float(0.3 + al + rng.uniform(0, 0.1))))
            for q in ("geo_slice_attack", "geo_slice_random"):
                for i, al in enumerate((-0.5, 0.0, 0.5, 1.0, 1.5)):
                    rows.append(dict(u, data="forget", quantity=q, attack="rtn4", index=i, alpha=al,
                                     value=float(1 + al ** 2 + rng.uniform(0, 0.1))))
            rt = dict(run, subject="attacked:rtn4", attack="rtn4", data="all")
            rows += [dict(rt, quantity="forget_acc", value=acc()), dict(rt, quantity="retain_acc", value=acc()),
                     dict(rt, quantity="general_ppl", value=float(rng.uniform(20, 60)))]
            rh = dict(run, subject="attacked:relearn-half", attack="relearn-half")
            rows += [dict(rh, data="forget-half-B", quantity="forget_acc", value=acc()),
                     dict(rh, data="forget-half-A", quantity="forget_acc", value=acc())]
    df = pd.DataFrame(rows)
    df["index"] = df["index"].fillna(0).astype(int) if "index" in df else 0
    for c in ("uncertainty",):
        df[c] = df[c].astype(float)
    df["uncertainty_kind"] = df["uncertainty_kind"].fillna("")
    df["unit"] = ""
    df["attack_kind"] = df["attack"].map({"none": "none", "rtn4": "quantize", "relearn-half": "relearn"})
    return df


def _landscape() -> pd.DataFrame:
    rows = []
    for opt in ("zo-sgd", "adam"):
        for i, lam in enumerate(np.linspace(-1, 10, 6)):
            rows.append(dict(checkpoint=f"demo.npo__{opt}__s0", quantity_group="density", quantity="spectral_density",
                             data="forget", index=i, value=float(np.exp(-abs(lam)) + 0.01), **{"lambda": lam}))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def study():
    return _study()


def _seed_values(fig) -> np.ndarray:
    return np.sort(np.concatenate([c.get_offsets()[:, 1] for ax in fig.axes for c in ax.collections
                                   if c.get_gid() == "per-seed"] or [np.zeros(0)]))


def _assert_labelled(fig) -> None:
    """Every row of panels has a y label and every column an x label (colour bars excluded)."""
    rows, cols = {}, {}
    for ax in fig.axes:
        if hasattr(ax, "_colorbar") or ax.get_label() == "<colorbar>":
            continue
        ss = ax.get_subplotspec()
        rows.setdefault(ss.rowspan.start, []).append(ax.get_ylabel().strip())
        cols.setdefault(ss.colspan.start, []).append(ax.get_xlabel().strip())
    assert rows and all(any(v) for v in rows.values()), rows
    assert all(any(v) for v in cols.values()), cols


def _recovery(df: pd.DataFrame) -> np.ndarray:
    r = df[(df["quantity"] == "forget_acc") & df["subject"].astype(str).str.startswith("attacked:")
           & df["data"].isin(["all", "forget-half-B"])]
    unl = df[(df["quantity"] == "forget_acc") & (df["subject"] == "unlearned")].set_index(["run_id", "data"])["value"]
    return np.array([v - unl[(run, d)] for run, d, v in zip(r["run_id"], r["data"], r["value"])])


def _close(a, b) -> None:
    np.testing.assert_allclose(np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float)), rtol=1e-9, atol=1e-12)


def _vals(df, q, **eq) -> np.ndarray:
    x = df[df["quantity"] == q]
    for k, v in eq.items():
        x = x[x[k].isin(v) if isinstance(v, (list, tuple)) else x[k] == v]
    return x[x["optimizer"] != "original"]["value"].to_numpy(float)


def test_forget_utility(study):
    fig = figures.forget_utility(study)
    _assert_labelled(fig)
    shown = study[(study["data"] == "all") | ((study["data"] == "forget-half-B") & (study["attack"] != "none"))]
    want = np.concatenate([_vals(shown, q) for q in ("forget_acc", "retain_acc", "general_ppl")])
    _close(_seed_values(fig), want)
    texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "zeroth-order (ZO-SGD)" in texts and "RTN 4-bit" in texts
    assert "noise-like-zo" not in texts and "npo__" not in texts  # readers see names, not identifiers
    plt.close(fig)


def test_magnitude_and_curvature(study):
    rec = _recovery(study)
    fig = figures.recovery_vs_displacement(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), np.concatenate([rec, rec]))  # ‖Δ‖ panel and half-steps panel
    plt.close(fig)
    explain = pd.DataFrame([dict(population="matched", attack="rtn4", recovery_data="all", predictor="geo_trace[forget]",
                                 kind="partial spearman", rho=0.25, ci_low=-0.5, ci_high=0.8, n=9,
                                 verdict="not decidable at this n")])
    fig = figures.recovery_vs_curvature(study, explain)
    _assert_labelled(fig)
    _close(_seed_values(fig), np.concatenate([rec] * 3))
    assert any("partial ρ | ‖Δ‖ = 0.25 [-0.50, 0.80], n = 9" in ax.get_title(loc="left") for ax in fig.axes)
    plt.close(fig)


def test_curves_along_lines(study):
    fig = figures.interpolation(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), _vals(study, "geo_interp"))
    plt.close(fig)
    fig = figures.slices_1d(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), np.concatenate([_vals(study, "geo_slice_attack"), _vals(study, "geo_slice_random")]))
    plt.close(fig)


def test_radius_barrier_relearn(study):
    fig = figures.certified_radius(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), _vals(study, "geo_certified_radius"))
    plt.close(fig)
    fig = figures.barriers(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), _vals(study, "geo_interp_barrier"))
    assert "θ₀ → θ_u" in fig._suptitle.get_text() and "not between grades" in fig._suptitle.get_text()
    plt.close(fig)
    fig = figures.relearn_half(study)
    _assert_labelled(fig)
    _close(_seed_values(fig), _vals(study, "forget_acc", data=["forget-half-A", "forget-half-B"]))
    plt.close(fig)


def test_barrier_matrix_when_pairwise():
    pw = pd.DataFrame([dict(quantity="geo_lmc_barrier", endpoint_a="zo-sgd", endpoint_b="adam", value=v, seed=s,
                            optimizer="zo-sgd", objective="npo", data="forget") for s, v in enumerate((0.2, 0.4))])
    fig = figures.barriers(pw)
    im = fig.axes[0].images[0].get_array()
    assert im[0, 1] == pytest.approx(0.3) and im[1, 0] == pytest.approx(0.3)
    _assert_labelled(fig)
    plt.close(fig)


def test_unlearning_curves(study):
    fig = figures.unlearning_curves(study)
    _assert_labelled(fig)
    runs = study[(study["optimizer"] != "original")].drop_duplicates("run_id")
    pts = [p for c in runs["checks"] for p in json.loads(c) if len(json.loads(c)) >= 2]  # controls: one check
    assert len(pts) == 6 * 3
    ax_f, ax_r = fig.axes[:2]
    got_f = np.concatenate([ln.get_ydata() for ln in ax_f.lines if ln.get_gid() == "per-run"])
    got_r = np.concatenate([ln.get_ydata() for ln in ax_r.lines if ln.get_gid() == "per-run"])
    _close(got_f, [p[1] for p in pts])
    _close(got_r, [p[2] for p in pts])
    plt.close(fig)


def test_theory_and_density_and_contour(study):
    fig = figures.theory_checks(study)
    _assert_labelled(fig)
    ys = np.concatenate([ln.get_ydata() for ax in fig.axes for ln in ax.lines if len(ln.get_xdata()) == 3
                         and ln.get_marker() not in ("_", "", "None")])
    want = np.concatenate([_vals(study.assign(optimizer="x"), q) for q in
                           ("theory_zo_sq_rel_error", "theory_zo_sq_rel_error_predicted", "theory_smoothed_gap",
                            "theory_smoothed_gap_predicted")])
    _close(ys, want)
    plt.close(fig)
    land = _landscape()
    fig = figures.spectral_density(land)
    _assert_labelled(fig)
    _close(np.concatenate([ln.get_ydata() for ln in fig.axes[0].lines]), land["value"])
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"zeroth-order (ZO-SGD)", "first-order (Adam)"}
    plt.close(fig)
    fig = figures.contour_2d(study)
    _assert_labelled(fig)
    g = study[study["quantity"] == "geo_slice_2d"]
    cs = fig.axes[0].collections[0]
    assert min(cs.levels) <= g["value"].min() and max(cs.levels) >= g["value"].max()
    assert len(fig.axes) == 2  # the panel and its colour bar
    plt.close(fig)


def test_missing_data_is_skipped_with_a_reason(tmp_path, study):
    bare = study[study["quantity"].isin(["forget_acc", "retain_acc", "general_ppl"])]
    for fn in (figures.slices_1d, figures.interpolation, figures.certified_radius, figures.theory_checks,
               figures.recovery_vs_curvature):
        with pytest.raises(figures.MissingData, match="no "):
            fn(bare)
    with pytest.raises(figures.MissingData, match="spectral_density"):
        figures.spectral_density(pd.DataFrame({"quantity": ["eigenvalue_LA"], "value": [1.0]}))
    bare.to_parquet(tmp_path / "results.parquet")
    status = dict(figures.write_all(tmp_path, tmp_path / "figs"))
    assert status["forget_utility"] == "written"
    assert status["slices"].startswith("skipped: ") and "geo_slice_attack" in status["slices"]
    assert status["density"] == f"skipped: no landscape.parquet in {tmp_path}"
    assert not (tmp_path / "figs" / "slices.png").exists()


def test_write_all_tiny_study(tmp_path, study):
    study.to_parquet(tmp_path / "results.parquet")
    _landscape().to_parquet(tmp_path / "landscape.parquet")
    status = figures.write_all(tmp_path, tmp_path / "figs")
    written = [n for n, s in status if s == "written"]
    assert len(written) >= 10, status
    assert [n for n, _ in status] == list(figures.FIGURES)
    for n in written:
        assert (tmp_path / "figs" / f"{n}.png").stat().st_size > 0
        assert (tmp_path / "figs" / f"{n}.pdf").stat().st_size > 0
    assert len(written) == 12, [s for s in status if s[1] != "written"]


def test_names():
    assert optimizer_label("zo-sgd") == "zeroth-order (ZO-SGD)"
    assert optimizer_label("signadam") == "sign-based (sign-Adam)"
    assert optimizer_label("adam+gru", family="gru(first-order)") == "first-order (Adam + GRU)"
    assert optimizer_label("mystery-opt") == "mystery-opt"  # unknown: the identifier, never an error
    assert attack_label("rtn8") == "RTN 8-bit" and attack_label("relearn-half") == "relearn on half A"
    labels = optimizer_labels(_study())
    assert labels["noise-like-zo"].startswith("C1: noise of ZO-SGD's size")
