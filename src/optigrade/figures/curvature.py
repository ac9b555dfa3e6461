"""Figure 3: recovery under each attack against the curvature at the unlearned checkpoint
(SCIENCE.md §4, H-curvature).

x: λmax (``geo_lambda_max``), tr H (``geo_trace``) and the average sharpness at the
quantization-noise scale c = 1 (``geo_qnoise_sharpness``, ``noise_scale`` 1), all on the
``forget`` split of the geometry stage; y: recovery of forget accuracy (as in Figure 2).  With
the study's explain table (``explain.parquet``), each panel states the partial Spearman ρ given
the displacement, its 95% bootstrap interval, n and the verdict (population "matched").
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from ._common import MissingData, legend_below, new_figure, objective_rows, style_handles, styles
from ._names import attack_label
from ._recovery import per_run, recovery

__all__ = ["recovery_vs_curvature", "CURVATURE"]

#: (quantity, explain predictor name, axis label, coordinates)
CURVATURE = (("geo_lambda_max", "geo_lambda_max[forget]", "λmax on forget (loss/param²)", {}),
             ("geo_trace", "geo_trace[forget]", "tr H on forget (loss/param²)", {}),
             ("geo_qnoise_sharpness", "geo_qnoise_sharpness[forget, noise_scale=1]",
              "sharpness at q-noise scale on forget\n(Δloss, nats/token)", {"noise_scale": 1.0}))


def _partial(explain: Optional[pd.DataFrame], attack: str, data: str, predictor: str) -> str:
    """"partial ρ | ‖Δ‖ = … [lo, hi], n = …: verdict" from the explain table, or ""."""
    if explain is None or explain.empty or "predictor" not in explain:
        return ""
    e = explain[(explain["predictor"] == predictor) & (explain["kind"] == "partial spearman")]
    if "population" in e:
        e = e[e["population"] == "matched"]
    names = {attack, f"{attack}@{data}"}
    e = e[e["attack"].isin(names)]
    if "recovery_data" in e and (e["attack"] == attack).any():
        e = e[(e["attack"] != attack) | (e["recovery_data"] == data)]
    if e.empty:
        return ""
    x = e.iloc[0]
    if not np.isfinite(x["rho"]):
        return f"partial ρ | ‖Δ‖: {x['verdict']}"
    return (f"partial ρ | ‖Δ‖ = {x['rho']:.2f} [{x['ci_low']:.2f}, {x['ci_high']:.2f}], n = {int(x['n'])}\n"
            f"{x['verdict']}")


def recovery_vs_curvature(results: pd.DataFrame, explain: Optional[pd.DataFrame] = None,
                          objective: Optional[str] = None):
    """Recovery of forget accuracy against λmax, tr H and q-noise sharpness, per attack.

    Columns read (results): quantity, subject, attack, data, run_id, optimizer, seed, value,
    index, noise_scale; optional matched.  (explain): attack, recovery_data, predictor, kind,
    population, rho, ci_low, ci_high, n, verdict.

    Raises:
        MissingData: no attacked forget accuracy, or no curvature rows on forget.
    """
    r, obj = objective_rows(results, objective)
    rec = recovery(r)
    if rec.empty:
        raise MissingData("no attacked forget_acc rows (subject 'attacked:<label>') to compute recovery from")
    xs = [(per_run(r, q, "forget", **c), pred, lab) for q, pred, lab, c in CURVATURE]
    xs = [x for x in xs if len(x[0])]
    if not xs:
        raise MissingData("no curvature rows (geo_lambda_max / geo_trace / geo_qnoise_sharpness on 'forget'): "
                          "the study ran no geometry stage")
    attacks = list(dict.fromkeys(rec["attack"]))
    st = styles(r)
    fig, axes = new_figure(len(attacks), len(xs), w=3.0, h=2.4, sharey="row")
    for i, a in enumerate(attacks):
        ra = rec[rec["attack"] == a]
        data = ra["data"].iloc[0]
        for j, (s, pred, lab) in enumerate(xs):
            ax = axes[i, j]
            d = ra.assign(x=ra["run_id"].map(s)).dropna(subset=["x"])
            for opt, g in d.groupby("optimizer", sort=False):
                sty = st[opt]
                filled = g["matched"].astype(bool).to_numpy() if "matched" in g else np.ones(len(g), bool)
                sc = ax.scatter(g["x"], g["recovery"], s=22, marker=sty["marker"], edgecolors=sty["color"],
                                facecolors=[sty["color"] if f else "white" for f in filled], linewidths=0.9, zorder=3)
                sc.set_gid("per-seed")
            ax.axhline(0, color="0.6", lw=0.7, zorder=1)
            ax.set_xlabel(lab, fontsize=8)
            txt = _partial(explain, a, data, pred)
            if txt:
                ax.set_title(txt, fontsize=7, loc="left")
        half = " (half B)" if data == "forget-half-B" else ""
        axes[i, 0].set_ylabel(f"recovery after\n{attack_label(a)}{half}\n(Δ forget acc.)", fontsize=8)
    opts = sorted(rec["optimizer"].unique(), key=lambda o: st[o]["order"])
    h, lab = style_handles(st, opts)
    note = "One point per run (hollow: not at matched forgetting and utility)."
    if explain is not None and len(explain):
        note += " Panel titles: partial Spearman ρ given ‖Δ‖ on matched runs, 95% bootstrap interval (explain stage)."
    legend_below(fig, h, lab, ncol=min(len(lab), 3), note=note)
    fig.suptitle(f"Recovery vs curvature at θ_u{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
