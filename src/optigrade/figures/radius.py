"""Figure 8: the certified radius at each noise level σ against the attacks' sizes ‖δ‖.

Reads ``geo_certified_radius`` rows (unlearned checkpoints, ``setting_sigma``: the isotropic
noise std of the certificate) and ``geo_attack_norm`` rows (``data`` "weights", one per attack:
each bit width / export type).  Points: the radius per run against σ, coloured by optimizer;
horizontal lines: the mean ‖δ‖ of each attack.  A radius below an attack's ‖δ‖ certifies
nothing about that attack.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._common import MissingData, legend_below, new_figure, objective_rows, seed_order, seeds_with_interval, \
    style_handles, styles
from ._names import attack_label

__all__ = ["certified_radius"]

_LS = ["--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1, 1, 1))]
_GREYS = ["0.15", "0.45"]  # line style × grey: distinct for up to 14 attacks


def certified_radius(results: pd.DataFrame, objective: Optional[str] = None):
    """Certified radius vs σ, with the attacks' ‖δ‖ as reference lines.

    Columns read: quantity, setting_sigma, attack, data, optimizer, seed, value, subject.

    Raises:
        MissingData: no ``geo_certified_radius`` rows with ``setting_sigma``.
    """
    r, obj = objective_rows(results, objective)
    cr = r[(r["quantity"] == "geo_certified_radius") & (r["optimizer"] != "original")]
    if cr.empty or "setting_sigma" not in cr:
        raise MissingData("no certified-radius rows (quantity 'geo_certified_radius' with 'setting_sigma'): the "
                          "geometry stage ran without 'radius'")
    st = styles(r)
    fig, axes = new_figure(1, 1, w=5.2, h=3.4)
    ax = axes[0, 0]
    sigmas = sorted(cr["setting_sigma"].dropna().unique())
    span = (max(sigmas) - min(sigmas)) or max(sigmas) or 1.0
    opts = sorted(cr["optimizer"].unique(), key=lambda o: st[o]["order"])
    for j, opt in enumerate(opts):
        for s in sigmas:
            x = seed_order(cr[(cr["optimizer"] == opt) & (cr["setting_sigma"] == s)])
            off = (j - (len(opts) - 1) / 2) * 0.04 * span if len(sigmas) > 1 else (j - (len(opts) - 1) / 2) * 0.1
            xpos = s + off if len(sigmas) > 1 else off
            seeds_with_interval(ax, xpos, x["value"], "geo_certified_radius", style=st[opt],
                                spread=0.01 * span if len(sigmas) > 1 else 0.02, lower=0.0)
    norms = r[(r["quantity"] == "geo_attack_norm") & (r["data"] == "weights") & (r["optimizer"] != "original")]
    hs, lab = style_handles(st, opts)
    for k, (a, g) in enumerate(norms.groupby("attack", sort=False)):
        style = dict(color=_GREYS[(k // len(_LS)) % 2], ls=_LS[k % len(_LS)])
        ax.axhline(float(g["value"].mean()), lw=1, **style)
        hs.append(Line2D([], [], **style))
        lab.append(f"‖δ‖ of {attack_label(a)} (mean over runs)")
    vals = np.concatenate([cr["value"].to_numpy(float), norms["value"].to_numpy(float)])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if len(vals) and vals.max() / vals.min() > 50:
        ax.set_yscale("log")
    if len(sigmas) == 1:
        ax.set_xticks([0], [f"σ = {sigmas[0]:.3g}"])
        ax.set_xlim(-0.5, 0.5)
        ax.set_xlabel("noise level σ of the certificate (RMS quantization-noise std, weight units)")
    else:
        ax.set_xlabel("noise level σ of the certificate (weight units)")
    ax.set_ylabel("certified radius on forget\n(L2 weight norm" + (", log)" if ax.get_yscale() == "log" else ")"))
    legend_below(fig, hs, lab, ncol=2, note="Points: seeds (radius 0: not certified); bars: 95% t-interval, clipped at 0. "
                                            "A radius below ‖δ‖ certifies nothing about that attack.")
    fig.suptitle(f"Certified radius vs attack size{f' (objective {obj})' if obj else ''}", fontsize=11)
    return fig
