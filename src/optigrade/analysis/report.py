"""Summaries and reports of a study directory (tables in, Markdown / HTML out).

* :func:`summarize` — the estimate over seeds and a 95% interval that respects the metric
  (:mod:`~optigrade.analysis.intervals`: a bootstrap over facts × seeds inside [0, 1] for
  accuracies, a geometric mean for perplexity, a t-interval for unbounded quantities) with the
  per-seed values, per objective × optimizer × attack × data split × quantity.  Tables print
  ``estimate [low, high] (per-seed values)``.
* :func:`headline_table` — the README / report table: forget accuracy before and after each
  attack, per optimizer (rows ordered by grade), one objective.
* :func:`claim_sentences` — 3–7 sentences generated from the numbers about the grade claim;
  optimizers are chosen by grade and family (columns of the table), never by label.
* :func:`write_report` — ``OUT/report.md`` and ``OUT/report.html``, rendered from one list of
  sections.
* :func:`print_summary` — the block the CLI and the demo print after a study.
* :func:`update_readme` — the README's generated demo block (``optigrade report RUN_DIR
  --readme README.md [--check]``).

The examples below use a two-optimizer toy study (:func:`_toy_results`).
"""

from __future__ import annotations

import html
from math import nan
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import intervals as _intervals_mod
from ._claims import CONTROL_FAMILIES
from ._claims import by_grade as _order
from ._claims import sentences as _sentences

__all__ = ["summarize", "headline_table", "diagnostics_table", "claim_sentences", "write_report", "load_study",
           "markdown_summary", "print_summary", "render_block", "update_readme", "floor_note"]

#: what a summary row is about: one group of runs differing only in their seed (result columns of
#: the tidy schema, :mod:`optigrade._tables`, plus the run's labels)
KEYS = ["objective", "optimizer", "grade", "attack", "attack_kind", "data", "setting_bits", "quantity"]
#: the utility floors and the base values they were applied to (columns of a study's results)
_FLOORS = ("utility_floor_retain", "utility_max_ppl_ratio", "base_retain_acc", "base_general_ppl")
#: coordinates placing an element of a vector quantity (eigenvalue i, slice point α, noise scale c)
_COORDINATES = ("index", "alpha", "noise_scale", "mu", "queries", "setting_quantizer")
#: the names older study tables used (before the tidy schema), renamed on read
_RENAMED = {"metric": "quantity", "eval_split": "data", "diag_bits": "setting_bits", "std_error": "uncertainty",
            "std_error_kind": "uncertainty_kind"}


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the columns of a study written before the tidy schema renamed to its names."""
    old = {k: v for k, v in _RENAMED.items() if k in df and v not in df}
    return df.rename(columns=old) if old else df


def _intervals(df: pd.DataFrame, gid: np.ndarray) -> dict:
    """``{group id: (Interval, per-seed text)}`` for the rows of ``df`` numbered by ``gid``: each
    group's non-missing values in seed order, with their per-fact matches for accuracies."""
    vals = df["value"].to_numpy(dtype=float)
    seed = pd.to_numeric(df["seed"], errors="coerce").to_numpy(dtype=float) if "seed" in df else np.zeros(len(df))
    pe = df["per_example"].to_numpy(dtype=object) if "per_example" in df else None
    quantity = df["quantity"].astype(str).to_numpy(dtype=object)
    keep = ~np.isnan(vals)
    order = np.lexsort((np.nan_to_num(seed, nan=-1.0), gid))
    order = order[keep[order]]
    out = {}
    if not len(order):
        return out
    g = gid[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    ragged = []
    for idx in np.split(order, cuts):
        q, v = quantity[idx[0]], vals[idx]
        facts = None
        if pe is not None and _intervals_mod.is_accuracy(q):
            strs = [x for x in pe[idx] if isinstance(x, str) and x]
            if len(strs) == len(idx) and len({len(x) for x in strs}) == 1:
                facts = strs
            elif strs:  # some seeds without matches, or different facts: the seeds-only bootstrap, said
                ragged.append(q)
        out[int(gid[idx[0]])] = (_intervals_mod.interval_for(q, v, facts), _intervals_mod.per_seed_text(v))
    if ragged:
        import warnings

        warnings.warn(f"{len(ragged)} accuracy group(s) ({', '.join(sorted(set(ragged)))}) have per-fact matches for "
                      "only some seeds or of different lengths; their intervals bootstrap the seeds only",
                      stacklevel=3)
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The estimate over seeds and its 95% interval, one row per KEYS group, with how many runs
    are not at matched forgetting (``n_capped``: step cap, retain guard, divergence or, when the
    results carry ``matched``, a utility floor; ``unmatched``: why, e.g. "ppl 6.2× base"), the
    mean steps taken, the optimizer's ``family`` and the utility floors with the base values they
    were applied to (when the results carry them).

    The interval respects the metric (:mod:`~optigrade.analysis.intervals`): ``estimate`` and
    ``[ci_low, ci_high]`` are, for accuracies, the mean and a percentile bootstrap over facts ×
    seeds (``interval_kind`` "bootstrap facts×seeds"; "bootstrap seeds" for rows without
    ``per_example``), inside [0, 1]; for perplexities the geometric mean and exp of the t-interval
    of the logs ("geometric t"); for everything else the mean and the t-interval ("t").
    ``per_seed``: the values in seed order, "/"-joined.  ``mean`` and ``sd`` are the plain
    mean and standard deviation; ``ci95`` is the half-width of a symmetric ("t") interval and
    NaN for the asymmetric ones; ``ci95_low`` / ``ci95_high`` repeat ``ci_low`` / ``ci_high``.

    >>> s = summarize(_toy_results())
    >>> x = s[(s["optimizer"] == "adam") & (s["attack"] == "rtn4") & (s["quantity"] == "forget_acc")]
    >>> x[["n", "mean", "n_capped", "family", "interval_kind", "per_seed"]].to_dict("records")   # 6/20, 10/20 facts
    [{'n': 2, 'mean': 0.4, 'n_capped': 0, 'family': 'first-order', 'interval_kind': 'bootstrap facts×seeds', 'per_seed': '0.3/0.5'}]
    >>> [round(float(x[c].iloc[0]), 3) for c in ("estimate", "ci_low", "ci_high")]
    [0.4, 0.174, 0.65]
    >>> s2 = summarize(_toy_results(per_example=False))                        # an old table: seeds only
    >>> x2 = s2[(s2["optimizer"] == "adam") & (s2["attack"] == "rtn4") & (s2["quantity"] == "forget_acc")]
    >>> x2[["interval_kind", "ci_low", "ci_high"]].to_dict("records")
    [{'interval_kind': 'bootstrap seeds', 'ci_low': 0.3, 'ci_high': 0.5}]
    """
    df = _tidy(results).copy()
    keys = KEYS + [c for c in _COORDINATES if c in df]  # vector quantities: one row per element
    g = df.groupby(keys, dropna=False, sort=False)
    df["_gid"] = g.ngroup().to_numpy()
    s = g.agg(n=("value", "count"), mean=("value", "mean"), sd=("value", "std"), _gid=("_gid", "first")).reset_index()
    if "matched" in df:
        df["_why"] = list(zip(df["match_reason"], df["match_detail"]))
        per_run = dict(n_capped=("matched", lambda x: int((~x.astype(bool)).sum())), unmatched=("_why", _why))
    else:  # a study written before the utility floors: reaching the target was the match
        per_run = dict(n_capped=("stop_reason", lambda x: int((x != "target").sum())))
    per_run.update(steps_mean=("steps", "mean"), n_runs=("run_id", "count"))
    for c in ("family", *_FLOORS):
        if c in df:
            per_run[c] = (c, "first")
    runs = df.drop_duplicates("run_id").groupby(["objective", "optimizer"], dropna=False).agg(**per_run).reset_index()
    ivs = _intervals(df, df["_gid"].to_numpy())
    none = (_intervals_mod.Interval(nan, nan, nan, "", 0), "")
    got = [ivs.get(int(i), none) for i in s["_gid"]]
    s["estimate"] = [iv.estimate for iv, _ in got]
    s["ci_low"] = [iv.low for iv, _ in got]
    s["ci_high"] = [iv.high for iv, _ in got]
    s["interval_kind"] = [iv.kind for iv, _ in got]
    s["per_seed"] = [t for _, t in got]
    s["ci95"] = [iv.half_width for iv, _ in got]
    s["ci95_low"], s["ci95_high"] = s["ci_low"], s["ci_high"]
    s = s.drop(columns=["_gid"])
    return s.merge(runs, on=["objective", "optimizer"], how="left")


#: how a table names several runs that missed matched forgetting for the same reason
_WHY = {"ppl-floor": "ppl over the floor", "retain-floor": "retain under the floor",
        "heldout-floor": "held-out facts under the floor", "not-reached": "step cap",
        "diverged": "diverged", "retain-guard": "retain guard"}


def _why(pairs) -> str:
    """Why a group's runs are not matched, compactly: one run's detail ("ppl 6.2× base"), or the
    reason with a count ("ppl over the floor ×2, step cap").

    >>> _why([("target", ""), ("ppl-floor", "ppl 6.2× base"), ("not-reached", "step cap")])
    'ppl 6.2× base, step cap'
    >>> _why([("ppl-floor", "ppl 6.2× base"), ("ppl-floor", "ppl 2.5× base")])
    'ppl over the floor ×2'
    """
    by = {}
    for reason, detail in pairs:
        if reason not in ("target", "reference", ""):
            by.setdefault(reason, []).append(detail)
    return ", ".join(d[0] if len(d) == 1 else f"{_WHY.get(r, r)} ×{len(d)}" for r, d in by.items())


def load_study(path):
    """``(results, summary)`` of a study directory.  Tables written before the tidy schema get
    its column names (``metric`` → ``quantity``, ``eval_split`` → ``data``, ``diag_bits`` →
    ``setting_bits``); a summary without the optimizer ``family`` or without the interval
    columns (``interval_kind``: written before the intervals respected the metric) is
    recomputed from the results.

    Raises:
        FileNotFoundError: no ``results.parquet`` in ``path`` (the message says how to make one).
        ConfigError: the study in ``path`` is INCOMPLETE (killed, failed or still running), its
            tables are not the ones it finished with, or a table is damaged
            (:func:`~optigrade.analysis._studydir.check_complete`).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _toy_results().to_parquet(d / "results.parquet")
    >>> res, summ = load_study(d)
    >>> len(res), "family" in summ
    (24, True)
    """
    from .._validate import ConfigError
    from ._studydir import check_complete

    p = Path(path)
    check_complete(p)  # an unfinished study, or tables of another one, is never presented
    res_p, sum_p = p / "results.parquet", p / "summary.parquet"
    if not res_p.exists():
        raise FileNotFoundError(f"{str(p)!r} holds no results.parquet; run `optigrade study CONFIG --out {p}` "
                                "(or `optigrade demo --out ...`) first")
    def read(f: Path) -> pd.DataFrame:
        try:
            return _tidy(pd.read_parquet(f))
        except Exception as e:  # pyarrow's ArrowInvalid & co.: a damaged or foreign file
            raise ConfigError(f"{str(f)!r} is damaged ({type(e).__name__}: {str(e).splitlines()[0]}); rebuild the "
                              f"tables with `optigrade study CONFIG --out {p} --resume`") from None

    res = read(res_p)
    summ = read(sum_p) if sum_p.exists() else None
    if summ is None or ("family" in res and "family" not in summ) or "interval_kind" not in summ:
        summ = summarize(res)
    return res, summ


def _fmt(m, lo, hi, per_seed: str = "", n: int = 0, digits: int = 2) -> str:
    """A table cell: ``m [lo, hi]``, then the per-seed values when there are 2–5 seeds; ``m``
    alone without an interval, "–" without a value.

    >>> _fmt(0.1, 0.0625, 0.15, "0.08/0.12/0.1", 3)
    '0.10 [0.06, 0.15] (0.08/0.12/0.10)'
    >>> _fmt(0.1, nan, nan, "0.1", 1), _fmt(nan, nan, nan)
    ('0.10', '–')
    """
    if m != m:
        return "–"
    f = lambda v: f"{v:.{digits}f}"  # noqa: E731
    if lo != lo or hi != hi:
        return f(m)
    cell = f"{f(m)} [{f(lo)}, {f(hi)}]"
    if 2 <= n <= 5 and per_seed:
        cell += " (" + "/".join(f(float(v)) for v in per_seed.split("/")) + ")"
    return cell


def _cell(x: pd.DataFrame, digits: int = 2) -> str:
    """The cell of the first summary row of ``x`` (:func:`_fmt`); a summary written before the
    interval columns shows ``mean [mean − ci95, mean + ci95]``."""
    r = x.iloc[0]
    if "ci_low" in r:
        m = r["estimate"] if "estimate" in r else r["mean"]
        ps = r.get("per_seed", "")
        return _fmt(m, r["ci_low"], r["ci_high"], ps if isinstance(ps, str) else "", int(r["n"]), digits)
    return _fmt(r["mean"], r["mean"] - r["ci95"], r["mean"] + r["ci95"], "", int(r["n"]), digits)


#: how the tables' cells read (the same sentence in the report, the printed summary and README)
INTERVAL_NOTE = ("Cells: estimate [95% interval] (per-seed values, when 2–5 seeds). Accuracies: mean over seeds, "
                 "percentile bootstrap over facts × seeds (over seeds only for tables without per-fact matches), "
                 "inside [0, 1]; perplexity: geometric mean, exp of the t-interval of the logs; other quantities: "
                 "mean and Student-t interval.")


def _what(s: pd.DataFrame) -> str:
    """How the headline cells of ``s`` (one metric's rows) are made, for a table's caption."""
    kinds = set(s["interval_kind"]) - {""} if "interval_kind" in s else set()
    return {"bootstrap facts×seeds": "mean over seeds [95% bootstrap over facts × seeds]",
            "bootstrap seeds": "mean over seeds [95% bootstrap over seeds]",
            "geometric t": "geometric mean over seeds [95% t-interval of the logs]",
            "t": "mean over seeds [95% t-interval]"}.get(next(iter(kinds)) if len(kinds) == 1 else "",
                                                          "mean over seeds [95% interval]")


def headline_table(summary: pd.DataFrame, objective: str, metric: str = "forget_acc",
                   digits: int = 2) -> pd.DataFrame:
    """Rows: optimizers by grade (plus the original model); columns: ``steps`` (mean steps,
    with capped runs marked), the metric before attack ("none") and after each attack
    (relearn-half: on the held-out half B, shown next to its before value "none (B)").

    Cells: estimate [95% interval] (per-seed values, with 2–5 seeds), :func:`_fmt`.

    >>> print(headline_table(summarize(_toy_results()), "npo").to_string(index=False))
    optimizer grade steps                          none                          rtn4
       zo-sgd     0    60 0.05 [0.00, 0.20] (0.00/0.10) 0.10 [0.00, 0.30] (0.00/0.20)
          mix   0.5    40 0.10 [0.00, 0.25] (0.10/0.10) 0.20 [0.05, 0.40] (0.20/0.20)
         adam     1    20 0.10 [0.00, 0.25] (0.05/0.15) 0.40 [0.17, 0.65] (0.30/0.50)
    """
    summary = _tidy(summary)
    s = summary[(summary["quantity"] == metric) & (summary["data"] != "weights")]
    s = s[(s["objective"] == objective) | (s["optimizer"] == "original")]
    attacks = list(dict.fromkeys(s["attack"]))
    rows = []
    for opt in _order(s):
        so = s[s["optimizer"] == opt]
        if so.empty:
            continue
        first = so.iloc[0]
        row = {"optimizer": opt, "grade": "" if first["grade"] != first["grade"] else f"{first['grade']:g}"}
        if opt == "original":
            row["steps"] = "0"
        else:
            cap = int(first["n_capped"]) if first["n_capped"] == first["n_capped"] else 0
            why = first.get("unmatched", "")
            why = f": {why}" if isinstance(why, str) and why else ""
            n = int(first["n_runs"]) if "n_runs" in first and first["n_runs"] == first["n_runs"] else int(first["n"])
            row["steps"] = f"{first['steps_mean']:.0f}" + (f" ({cap}/{n} not matched{why})" if cap else "")
        for a in attacks:
            for split, col in (("all", a), ("forget-half-B", f"{a} (B)"), ("forget-half-A", f"{a} (A)")):
                x = so[(so["attack"] == a) & (so["data"] == split)]
                if len(x):
                    row[col] = _cell(x, digits)
        rows.append(row)
    t = pd.DataFrame(rows, columns=None if rows else ["optimizer", "grade", "steps"])
    cols = ["optimizer", "grade", "steps"] + [c for c in t.columns if c not in ("optimizer", "grade", "steps")]
    return t[cols]


def _per_seed(r) -> List[float]:
    ps = r.get("per_seed", "")
    return [float(v) for v in ps.split("/")] if isinstance(ps, str) and ps else []


def _fraction(after: float, unl: float, orig: float) -> float:
    """(after − unl) / (orig − unl): the share of what unlearning removed that came back; NaN
    when unlearning removed nothing (orig ≤ unl)."""
    return (after - unl) / (orig - unl) if orig - unl > 1e-12 else float("nan")


def relearn_half_table(summary: pd.DataFrame, objective: str, metric: str = "forget_acc",
                       digits: int = 2) -> pd.DataFrame:
    """The relearn-half protocol (Deeb & Roger 2024; SCIENCE.md §5), one row per optimizer and
    relearn-half attack: ``metric`` on half B (never fine-tuned on) before and after relearning
    on half A, the **recovery fraction** (acc_B,after − acc_B,unl) / (acc_B,orig − acc_B,unl)
    with the original model's half-B value as acc_B,orig, and the same for half A itself ("was A
    relearned?": a recovery of B means little when A did not come back either).  Fractions are
    of the estimates (per seed in parentheses, from the per-seed values; each seed splits the
    forget facts into its own halves).  "not testable here": unlearning removed nothing on that
    half.  Empty when no run has half-A rows (studies before half A was scored).

    >>> df = _toy_results()
    >>> half = df[(df["attack"] == "rtn4")].assign(attack="relearn-half", data="forget-half-B")
    >>> half_a = half.assign(data="forget-half-A", value=0.9).drop(columns="per_example")
    >>> none_b = df[df["attack"] == "none"].assign(data="forget-half-B")
    >>> none_a = none_b.assign(data="forget-half-A")
    >>> orig = none_b.iloc[:1].assign(optimizer="original", run_id="reference", value=1.0, grade=float("nan"),
    ...                               per_example="1111111111")
    >>> t = relearn_half_table(summarize(pd.concat([df, half, half_a, none_b, none_a, orig])), "npo")
    >>> t[["optimizer", "B recovered", "A relearned"]].iloc[-1].to_dict()      # adam: B 0.10 -> 0.40 of 1.0
    {'optimizer': 'adam', 'B recovered': '0.33 (0.26/0.41)', 'A relearned': '0.89 (0.89/0.88)'}
    """
    summary = _tidy(summary)
    s = summary[(summary["quantity"] == metric)]
    s = s[(s["objective"] == objective) | (s["optimizer"] == "original")]
    attacks = [a for a in dict.fromkeys(s.loc[s["data"] == "forget-half-A", "attack"]) if a != "none"]
    orig_rows = s[(s["optimizer"] == "original") & (s["attack"] == "none")]
    orig = {d: float(orig_rows.loc[orig_rows["data"] == d, "estimate"].iloc[0])
            for d in ("forget-half-A", "forget-half-B") if (orig_rows["data"] == d).any()}
    f = lambda v: "–" if v != v else f"{v:.{digits}f}"  # noqa: E731
    rows = []
    for opt in _order(s):
        if opt == "original":
            continue
        so = s[s["optimizer"] == opt]
        for a in attacks:
            row = {"optimizer": opt, "grade": "" if so["grade"].iloc[0] != so["grade"].iloc[0]
                   else f"{so['grade'].iloc[0]:g}", "attack": a}
            for half in ("B", "A"):
                d = f"forget-half-{half}"
                unl, aft = so[(so["attack"] == "none") & (so["data"] == d)], so[(so["attack"] == a) & (so["data"] == d)]
                if unl.empty or aft.empty:
                    continue
                row[f"{half} unlearned"], row[f"{half} after relearn"] = _cell(unl, digits), _cell(aft, digits)
                o = orig.get(d, orig.get("forget-half-B", float("nan")))
                frac = _fraction(float(aft["estimate"].iloc[0]), float(unl["estimate"].iloc[0]), o)
                ps = [_fraction(x, u, o) for x, u in zip(_per_seed(aft.iloc[0]), _per_seed(unl.iloc[0]))]
                cell = "not testable here (nothing forgotten)" if frac != frac else f(frac)
                if frac == frac and len(ps) > 1:
                    cell += " (" + "/".join(f(v) for v in ps) + ")"
                row[f"{half} recovered" if half == "B" else "A relearned"] = cell
            rows.append(row)
    return pd.DataFrame(rows)


def grade_or_magnitude_table(summary: pd.DataFrame, objective: str, digits: int = 2) -> pd.DataFrame:
    """Grade or magnitude? (SCIENCE.md §3): every grade and every control of a study in one
    table, each with what a referee needs to compare it: its family and grade, how many of its
    runs are at matched forgetting *and* matched utility, its displacement (‖Δ‖ and the mean
    per-weight move in half-steps of each quantizer's grid: below 1 a weight cannot leave its
    bin), forget accuracy before and after every attack (relearn-half on half B), the held-out
    utility (facts never trained on, when the benchmark has them), and general perplexity.
    Rows: grades by grade, then the controls.  Cells as everywhere (:func:`_fmt`).

    >>> t = grade_or_magnitude_table(summarize(_toy_results()), "npo")
    >>> list(t.columns), list(t["optimizer"])
    (['optimizer', 'kind', 'matched', 'forget none', 'forget rtn4'], ['zo-sgd', 'mix', 'adam'])
    >>> t["matched"].tolist()
    ['2/2', '2/2', '2/2']
    """
    summary = _tidy(summary)
    s = summary[summary["objective"] == objective]
    if s.empty:
        return pd.DataFrame()
    fam = s["family"] if "family" in s else pd.Series("", index=s.index)
    ctrl = fam.isin(CONTROL_FAMILIES)
    order = [o for o in _order(s[~ctrl])] + [o for o in _order(s[ctrl])]
    w = s[s["data"] == "weights"]
    qz = w["setting_quantizer"] if "setting_quantizer" in w else pd.Series(None, index=w.index, dtype=object)
    steps = w[w["quantity"] == "diag_half_steps_mean"].assign(_q=qz)
    tags = []
    for qn, b in steps[["_q", "setting_bits"]].drop_duplicates().itertuples(index=False):
        tags.append(("gguf" if qn == "gguf" else f"rtn{int(b)}" if b == b else "?", qn, b))
    attacks = [a for a in dict.fromkeys(s.loc[(s["quantity"] == "forget_acc") & (s["data"] != "weights"), "attack"])]
    rows = []
    for opt in order:
        so = s[s["optimizer"] == opt]
        first = so.iloc[0]
        f = first.get("family", "")
        g = first["grade"]
        row = {"optimizer": opt, "kind": (f if isinstance(f, str) and f else "") + ("" if g != g else f" (grade {g:g})")}
        row["kind"] = row["kind"].strip()
        n = int(first["n_runs"]) if "n_runs" in first and first["n_runs"] == first["n_runs"] else int(first["n"])
        cap = int(first["n_capped"]) if "n_capped" in first and first["n_capped"] == first["n_capped"] else 0
        why = first.get("unmatched", "")
        row["matched"] = f"{n - cap}/{n}" + (f" ({why})" if cap and isinstance(why, str) and why else "")
        x = so[(so["quantity"] == "diag_update_norm") & (so["data"] == "weights")]
        if "setting_bits" in x:
            x = x[x["setting_bits"].isna()] if x["setting_bits"].isna().any() else x
        if len(x):
            row["‖Δ‖"] = _cell(x, digits)
        for tag, qn, b in tags:
            x = steps[(steps["optimizer"] == opt) & (steps["_q"] == qn)]
            x = x[x["setting_bits"] == b] if b == b else x
            if len(x):
                row[f"half-steps {tag}"] = _cell(x, digits)
        for a in attacks:
            for split, col in (("all", f"forget {a}"), ("forget-half-B", f"forget {a} (B)")):
                x = so[(so["attack"] == a) & (so["quantity"] == "forget_acc") & (so["data"] == split)]
                if len(x):
                    row[col] = _cell(x, digits)
        for q, col in (("heldout_acc", "held-out acc"), ("general_ppl", "general ppl")):
            x = so[(so["attack"] == "none") & (so["quantity"] == q) & (so["data"] == "all")]
            if len(x):
                row[col] = _cell(x, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def diagnostics_table(summary: pd.DataFrame, objective: str, digits: int = 3) -> pd.DataFrame:
    """Rows: optimizers by grade; columns: update norms (global, relative, per block) and, per
    quantizer (RTN at each bit width, the GGUF export), the honest quantization diagnostics
    (SCIENCE.md §2): the level-change fraction on the base's grid, the surviving-update ratio
    ‖E(θ_u) − θ₀‖/‖θ_u − θ₀‖ and the mean displacement in half-steps, from the
    ``data == "weights"`` rows.  Studies written before those diagnostics show the bin-crossing
    fraction and the share kept instead.  Empty when the study ran no diagnostics.

    >>> diagnostics_table(summarize(_toy_results()), "npo").empty          # the toy has none
    True
    """
    summary = _tidy(summary)
    s = summary[(summary["data"] == "weights") & (summary["objective"] == objective)]
    if s.empty:
        return pd.DataFrame()
    qz = s["setting_quantizer"] if "setting_quantizer" in s else pd.Series(None, index=s.index, dtype=object)
    s = s.assign(_q=qz.where(qz.notna(), None))
    want = [("update_norm", "diag_update_norm", None, None), ("update_norm_rel", "diag_update_norm_rel", None, None),
            ("update_norm[attention]", "diag_update_norm[attention]", None, None),
            ("update_norm[mlp]", "diag_update_norm[mlp]", None, None),
            ("update_norm[embeddings]", "diag_update_norm[embeddings]", None, None)]
    honest = (s["quantity"] == "diag_level_change").any()
    for (qn, b) in s.loc[s["quantity"] == ("diag_level_change" if honest else "diag_bin_crossing"),
                         ["_q", "setting_bits"]].drop_duplicates().itertuples(index=False):
        tag = "gguf" if qn == "gguf" else f"rtn{int(b)}" if b == b else "?"
        names = ((("level change", "diag_level_change"), ("surviving update", "diag_surviving_update"),
                  ("half-steps", "diag_half_steps_mean")) if honest else
                 (("bin crossing", "diag_bin_crossing"), ("kept", "diag_kept")))
        want += [(f"{n} {tag}", q, qn, b) for n, q in names]
    rows = []
    for opt in _order(s):
        so = s[s["optimizer"] == opt]
        row = {"optimizer": opt}
        for name, m, qn, b in want:
            x = so[so["quantity"] == m]
            x = x[x["setting_bits"] == b] if b is not None and b == b else x[x["setting_bits"].isna()] \
                if b is None else x
            if honest and m != "diag_update_norm" and qn is not None:
                x = x[x["_q"] == qn]
            if len(x):
                row[name] = _cell(x, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def _pick(so: pd.DataFrame, quantity: str, data: str, attack: str = "none", **coords) -> pd.DataFrame:
    x = so[(so["quantity"] == quantity) & (so["data"] == data) & (so["attack"] == attack)]
    for c, v in coords.items():
        x = x[x[c] == v] if c in x else x.iloc[:0]
    return x


def geometry_table(summary: pd.DataFrame, objective: str, digits: int = 3) -> pd.DataFrame:
    """Rows: the original model, then optimizers by grade; columns: the curvature at each
    checkpoint (λmax and tr H on forget / retain, average sharpness at the quantization-noise
    scale c = 1 on forget, the barrier on θ₀ → θ_u) and, per attack, cos(δ, −Δ) (mean [95%
    t-interval] over seeds, from the ``geo_*`` rows).  Empty when the study ran no geometry stage.

    >>> geometry_table(summarize(_toy_results()), "npo").empty
    True
    """
    summary = _tidy(summary)
    s = summary[summary["quantity"].astype(str).str.startswith("geo_")]
    s = s[(s["objective"] == objective) | (s["optimizer"] == "original")]
    if s.empty:
        return pd.DataFrame()
    want = [("λmax forget", "geo_lambda_max", "forget", "none", {}), ("λmax retain", "geo_lambda_max", "retain", "none", {}),
            ("tr H forget", "geo_trace", "forget", "none", {}), ("tr H retain", "geo_trace", "retain", "none", {}),
            ("q-noise sharpness forget", "geo_qnoise_sharpness", "forget", "none", {"noise_scale": 1.0}),
            ("barrier θ₀→θ_u forget", "geo_interp_barrier", "forget", "none", {})]
    attacks = [a for a in dict.fromkeys(s["attack"]) if a != "none"]
    want += [(f"cos(δ,−Δ) {a}", "geo_cos_attack_update", "weights", a, {}) for a in attacks]
    rows = []
    for opt in _order(s):
        so = s[s["optimizer"] == opt]
        row = {"optimizer": opt}
        for name, q, data, a, coords in want:
            x = _pick(so, q, data, a, **coords)
            if len(x):
                row[name] = _cell(x, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def attack_geometry_table(summary: pd.DataFrame, objective: str, data: str = "forget", digits: int = 3) -> pd.DataFrame:
    """Each attack read against the local geometry (SPEC §3.2, §3.4): per optimizer and
    attack, ‖δ‖, the measured forget-loss change ΔL, its first- and second-order predictions
    gᵀδ and gᵀδ + ½δᵀHδ, the uniform-rounding-noise prediction (1/24)Σ s_i² H_ii (RTN), and
    the certified radius over ‖δ‖ (< 1: the certificate says nothing about this attack).

    >>> attack_geometry_table(summarize(_toy_results()), "npo").empty
    True
    """
    summary = _tidy(summary)
    s = summary[summary["quantity"].astype(str).str.startswith("geo_") & (summary["attack"] != "none")]
    s = s[(s["objective"] == objective) | (s["optimizer"] == "original")]
    if s.empty:
        return pd.DataFrame()
    cols = [("‖δ‖", "geo_attack_norm", "weights"), ("ΔL measured", "geo_loss_change", data),
            ("gᵀδ", "geo_loss_change_first", data), ("gᵀδ + ½δᵀHδ", "geo_loss_change_second", data),
            ("uniform-noise prediction", "geo_loss_change_uniform", data),
            ("radius / ‖δ‖", "geo_radius_over_attack_norm", data)]
    rows = []
    for opt in _order(s):
        for a in dict.fromkeys(s["attack"]):
            so = s[(s["optimizer"] == opt)]
            row = {"optimizer": opt, "attack": a}
            for name, q, d in cols:
                x = _pick(so, q, d, a)
                if len(x):
                    row[name] = _cell(x, digits)
            if len(row) > 2:
                rows.append(row)
    return pd.DataFrame(rows)


def _pm(v, u, digits=3) -> str:
    if v != v:
        return "–"
    return f"{v:.{digits}g}" if u != u else f"{v:.{digits}g} ± {u:.2g}"


def theory_tables(results: pd.DataFrame) -> List[tuple]:
    """``[(title, text, table)]`` for the SPEC §3.1 checks on the original model (the
    ``theory_*`` rows): the ZO estimate against the Monte-Carlo ∇L_μ as queries grow, and the
    smoothing gap L_μ − L against (μ²/2)·tr H over μ (values ± their standard error over
    repeats / draws).  Empty when the study ran none.

    >>> theory_tables(_toy_results())
    []
    """
    r = _tidy(results)
    r = r[r["quantity"].astype(str).str.startswith("theory_")]
    if r.empty:
        return []
    unc = r["uncertainty"] if "uncertainty" in r else pd.Series(float("nan"), index=r.index)
    r = r.assign(_u=unc)
    out = []
    zo = r[r["quantity"].isin(["theory_zo_cosine", "theory_zo_sq_rel_error", "theory_zo_sq_rel_error_predicted"])]
    if not zo.empty and "queries" in zo:
        rows = []
        for q, x in zo.groupby("queries", sort=True):
            v = {k: (x.loc[x["quantity"] == k, "value"].iloc[0], x.loc[x["quantity"] == k, "_u"].iloc[0])
                 for k in x["quantity"]}
            rows.append({"queries q": int(q), "cos(ĝ_q, ∇L_μ)": _pm(*v.get("theory_zo_cosine", (nan, nan))),
                         "‖ĝ_q − ∇L_μ‖²/‖∇L_μ‖²": _pm(*v.get("theory_zo_sq_rel_error", (nan, nan))),
                         "predicted c/q": _pm(v.get("theory_zo_sq_rel_error_predicted", (nan, nan))[0], nan)})
        pooled = r[r["quantity"] == "theory_zo_pooled_cosine"]
        mu = zo["setting_mu"].iloc[0] if "setting_mu" in zo else nan
        text = (f"Two-point Gaussian ZO estimates at μ = {mu:g} on the original model's forget NLL, each against a "
                f"Monte-Carlo ∇L_μ (SPEC §3.1a; mean ± s.e. over repeats). On a quadratic the squared error is "
                f"exactly c/q (c = d + 1); the pooled mean of all estimates has cosine "
                f"{pooled['value'].iloc[0]:.3f} with ∇L_μ." if len(pooled) else "")
        out.append(("Theory check: ZO estimates approach ∇L_μ as queries grow", text, pd.DataFrame(rows)))
    gap = r[r["quantity"].isin(["theory_smoothed_gap", "theory_smoothed_gap_predicted", "theory_smoothed_gap_ratio"])]
    if not gap.empty and "mu" in gap:
        rows = []
        for mu, x in gap.groupby("mu", sort=True):
            v = {k: (x.loc[x["quantity"] == k, "value"].iloc[0], x.loc[x["quantity"] == k, "_u"].iloc[0])
                 for k in x["quantity"]}
            rows.append({"μ": f"{mu:g}", "L_μ − L measured": _pm(*v.get("theory_smoothed_gap", (nan, nan))),
                         "(μ²/2)·tr H": _pm(*v.get("theory_smoothed_gap_predicted", (nan, nan))),
                         "ratio": _pm(*v.get("theory_smoothed_gap_ratio", (nan, nan)))})
        out.append(("Theory check: the smoothing gap L_μ − L against (μ²/2)·tr H",
                    "SPEC §3.1b on the original model's forget NLL (antithetic Gaussian draws; tr H by Hutchinson). "
                    "A ratio near 1 within its error says ZO's implicit penalty is the trace term at that μ; away "
                    "from 1 the higher-order terms (large μ) or rounding (small μ) dominate.", pd.DataFrame(rows)))
    return out


def _to_md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else "–" if v != v else str(v) for v in r) + " |")
    return "\n".join(lines)


def markdown_summary(summary: pd.DataFrame, objectives: Optional[List[str]] = None) -> str:
    """The headline table(s) in Markdown (one per objective), as printed by
    ``optigrade report DIR --markdown`` and pasted into the README.

    >>> print(markdown_summary(summarize(_toy_results())))
    **npo** — forget accuracy (↓ = more forgotten; mean over seeds [95% bootstrap over facts × seeds]; per-seed values in parentheses)
    <BLANKLINE>
    | optimizer | grade | steps | none | rtn4 |
    |---|---|---|---|---|
    | zo-sgd | 0 | 60 | 0.05 [0.00, 0.20] (0.00/0.10) | 0.10 [0.00, 0.30] (0.00/0.20) |
    | mix | 0.5 | 40 | 0.10 [0.00, 0.25] (0.10/0.10) | 0.20 [0.05, 0.40] (0.20/0.20) |
    | adam | 1 | 20 | 0.10 [0.00, 0.25] (0.05/0.15) | 0.40 [0.17, 0.65] (0.30/0.50) |
    <BLANKLINE>
    """
    objs = objectives or [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    parts = []
    for o in objs:
        s = summary[(summary["quantity"] == "forget_acc") & (summary["objective"] == o)]
        parts.append(f"**{o}** — forget accuracy (↓ = more forgotten; {_what(s)}; per-seed values in parentheses)\n")
        parts.append(_to_md(headline_table(summary, o)))
        parts.append("")
    floors = floor_note(summary)
    if floors:
        parts.append(f"_{floors}_\n")
    return "\n".join(parts).strip() + "\n"


def floor_note(summary: pd.DataFrame) -> str:
    """The sentence that says what "matched" meant in a study: the target, the utility floors and
    the base model's values they were applied to ("" for a study written before the floors).

    >>> s = summarize(_toy_results()).assign(utility_floor_retain=0.5, utility_max_ppl_ratio=2.0,
    ...                                      base_retain_acc=1.0, base_general_ppl=4.8167)
    >>> floor_note(s)
    'Matched = reached the forget target with retain_acc ≥ 0.5 × base 1.00 = 0.50 and general perplexity ≤ 2 × base 4.82 = 9.63; rows marked "not matched" are shown, never ranked.'
    """
    if not all(c in summary for c in _FLOORS):
        return ""
    s = summary.dropna(subset=["base_retain_acc", "base_general_ppl"], how="all")
    if s.empty:
        return ""
    f = s.iloc[0]
    parts = []
    if f["utility_floor_retain"] == f["utility_floor_retain"] and f["base_retain_acc"] == f["base_retain_acc"]:
        fr, b = float(f["utility_floor_retain"]), float(f["base_retain_acc"])
        parts.append(f"retain_acc ≥ {fr:g} × base {b:.2f} = {fr * b:.2f}")
    if f["utility_max_ppl_ratio"] == f["utility_max_ppl_ratio"] and f["base_general_ppl"] == f["base_general_ppl"]:
        fp, b = float(f["utility_max_ppl_ratio"]), float(f["base_general_ppl"])
        parts.append(f"general perplexity ≤ {fp:g} × base {b:.2f} = {fp * b:.2f}")
    floors = f" with {' and '.join(parts)}" if parts else " (no utility floor)"
    return f'Matched = reached the forget target{floors}; rows marked "not matched" are shown, never ranked.'


def claim_sentences(summary: pd.DataFrame, objective: Optional[str] = None, model: str = "tiny") -> List[str]:
    """3–7 sentences, generated from the numbers, on what the study does and does not show
    about the grade claim: matched forgetting; how forget accuracy after the GGUF re-export,
    4-bit RTN and relearning orders with grade; the hybrid-family optimizer against the
    first-order one and the first zeroth-order (grade 0) one, after attack and in retain
    accuracy (rows chosen by the ``family`` and ``grade`` columns, whatever their labels).
    ``model`` (the study's) picks the closing caveat.

    >>> for line in claim_sentences(summarize(_toy_results())):
    ...     print("-", line)
    - For npo, every optimizer reached the forget target in every seed, so the rows compare matched forgetting.
    - After 4-bit RTN quantization (rtn4), forget accuracy among matched runs ranges from 0.10 (zo-sgd, grade 0) to 0.40 (adam, grade 1); averaged per grade (0: 0.10, 0.5: 0.20, 1: 0.40) the ordering is monotone with lower grade = more robust, as the paper claims, and the extremes’ 95% intervals overlap, so the ranking is not statistically resolved.
    - mix vs adam vs ZO: after rtn4 mix's forget accuracy is 0.20, not distinguishable (95% intervals overlap or are missing) from adam's 0.40 and zo-sgd 0.10.
    - Before any attack retain accuracy is 0.80 for mix, 0.90 for adam and 0.50 for zo-sgd: utility is not resolved between them (95% intervals overlap or are missing).
    - What this does not show: it is a 430k-parameter Llama on synthetic facts with RTN fake-quantization and a few seeds, not MUSE/WMDP on 7B models with bitsandbytes, so it tests the mechanism, not the paper's numbers.
    """
    return _sentences(_tidy(summary), objective, model)


# ----------------------------------------------------------------------------- report
class _Section(NamedTuple):
    title: str
    text: str  # Markdown (bold only)
    table: Optional[pd.DataFrame]


def explain_or_note(results: pd.DataFrame):
    """``(Explained, None)`` for a study's results, or ``(None, why)`` when the table holds
    nothing to explain (no attack, no unlearned run)."""
    from .explain import explain

    if "subject" not in results:
        return None, "the table predates the tidy schema (no subject column)"
    if not (results["subject"].astype(str).str.startswith("attacked:")).any():
        return None, "the study ran no attack: there is no recovery to explain"
    try:
        return explain(results), None
    except ValueError as e:
        return None, f"nothing to explain: {' '.join(str(e).split())}"


def _ci(m, lo, hi, digits=2) -> str:
    return "–" if m != m else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def explain_summary(explained) -> pd.DataFrame:
    """One row per attack: the matched runs' n, mean recovery [95% bootstrap CI] (forget
    response after − before the attack; positive: knowledge came back), and each hypothesis's
    verdict (H-curvature: one verdict per curvature quantity, counted), from an
    :class:`~optigrade.analysis.explain.Explained` (the README's Explain table)."""
    t, rec = explained.table, explained.recovery
    t = t[(t["population"] == "matched") & (t["verdict"] != "descriptive")]
    rec = rec[rec["population"] == "matched"]
    rows = []
    for a in [a for a in dict.fromkeys(t["attack"]) if a in set(rec["attack"])]:  # H-flat-ZO: the note
        ta, ra = t[t["attack"] == a], rec[rec["attack"] == a]
        r0 = ra.iloc[0] if len(ra) else None
        row = {"attack": a, "data": r0["recovery_data"] if r0 is not None else "",
               "n matched": int(r0["n"]) if r0 is not None else 0,
               "recovery [95% CI]": _ci(r0["recovery_mean"], r0["recovery_ci_low"], r0["recovery_ci_high"])
               if r0 is not None else "–"}
        for h, col in (("H-magnitude", "displacement"), ("H-curvature", "curvature given displacement"),
                       ("H-grade", "grade given displacement")):
            th = ta[ta["hypothesis"] == h]
            v = (th[th["kind"] == "partial spearman"] if h != "H-magnitude" else th)["verdict"].tolist()
            counts = {k: v.count(k) for k in dict.fromkeys(v)}
            row[col] = "; ".join(k if len(v) == 1 else f"{k} ×{c}" for k, c in counts.items()) if v else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _sections(results: pd.DataFrame, summary: pd.DataFrame, cfg=None, meta: Optional[dict] = None,
              explained=None) -> List[_Section]:
    """The report's content, once: setup, matched forgetting, the sentences, then per objective
    the headline tables of four metrics and the diagnostics."""
    objs = [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    runs = results.drop_duplicates("run_id")
    unl = runs[runs["optimizer"] != "original"]
    intro = (f"Study **{(meta or {}).get('name', '')}**: {len(unl)} unlearning runs "
             f"({', '.join(objs)} × {unl['optimizer'].nunique()} optimizers × {unl['seed'].nunique()} seeds), "
             f"target forget_acc ≤ {unl['target'].iloc[0] if len(unl) else '?'}; wall time "
             f"{(meta or {}).get('seconds', float('nan'))} s. Retain metrics are scored on fixed subsets "
             f"(eval_retain={getattr(cfg, 'eval_retain', '?')}); relearn with protocol=half is measured on the "
             f"held-out half B of the forget entities (column '(B)', with the unattacked value 'none (B)').")
    agg = dict(grade=("grade", "first"), lr=("lr", "first"), cap=("step_cap", "first"), steps_mean=("steps", "mean"))
    if "matched" in unl:
        unl = unl.assign(_why=list(zip(unl["match_reason"], unl["match_detail"])))
        agg.update(capped=("matched", lambda x: int((~x.astype(bool)).sum())), why=("_why", _why))
    else:
        agg["capped"] = ("stop_reason", lambda x: int((x != "target").sum()))
    agg.update(n=("seed", "count"), seconds=("unlearn_seconds", "mean"))
    runs_t = unl.groupby(["objective", "optimizer"], sort=False).agg(**agg).reset_index()
    floors = floor_note(summary)
    sections = [
        _Section("Setup", intro, None),
        _Section("Matched forgetting (steps to target; capped = not matched)",
                 "Rows with capped > 0 are not at matched forgetting (step cap, retain guard, divergence or a "
                 "utility floor; 'why' says which)." + (f" {floors}" if floors else " They are never ranked."),
                 runs_t.round({"steps_mean": 1, "seconds": 1})),
        _Section("What the numbers say about the grade claim",
                 " ".join(claim_sentences(summary, model=getattr(cfg, "model", "tiny"))), None)]
    for o in objs:
        for metric, label in (("forget_acc", "forget accuracy ↓"), ("forget_para_acc", "paraphrased forget accuracy ↓"),
                              ("retain_acc", "retain accuracy ↑"), ("general_ppl", "general perplexity ↓")):
            sections.append(_Section(f"{o}: {label} before/after attacks (estimate [95% interval] (per seed))",
                                     INTERVAL_NOTE if metric == "forget_acc" else "",
                                     headline_table(summary, o, metric)))
        if "family" in summary and summary["family"].isin(CONTROL_FAMILIES).any():
            sections.append(_Section(
                f"{o}: grade or magnitude? every grade and control side by side",
                "Controls (SCIENCE.md §3) are built from θ₀ and other runs' updates and go through the same attacks; "
                "'matched' counts the runs at matched forgetting and matched utility (only those are compared). "
                "half-steps: mean |θ_u − θ₀| of the moved weights in units of half that quantizer's step (below 1 "
                "a weight cannot change level). If a control of the same displacement survives as well as a grade, "
                "displacement, not grade, explains the survival.", grade_or_magnitude_table(summary, o)))
            from .magnitude import control_kinds, magnitude_sentences, magnitude_verdicts

            tgt = float(unl["target"].iloc[0]) if len(unl) and "target" in unl else None
            v = magnitude_verdicts(summary, control_kinds(results), o, target=tgt)
            if not v.empty:
                sections.append(_Section(f"{o}: grade or magnitude? the reading", " ".join(magnitude_sentences(v)),
                                         None))
        for title, text, table in (
                (f"{o}: relearn-half (fine-tune on half A of the forget facts, measure half B; forget accuracy)",
                 "Recovery fraction (acc_B,after − acc_B,unl) / (acc_B,orig − acc_B,unl), Deeb & Roger 2024; 'A "
                 "relearned' is the same fraction on the half that was fine-tuned on (if A did not come back, B's "
                 "recovery says little). Each seed draws its own halves.", relearn_half_table(summary, o)),
                (f"{o}: mechanism diagnostics (update norms; what of the update each quantizer keeps)",
                 "Level change: share of the weights θ_u moves to another level of the base's own grid; surviving "
                 "update: ‖E(θ_u) − θ₀‖ / ‖θ_u − θ₀‖ (0: the export snaps the model back to θ₀); half-steps: mean "
                 "|θ_u − θ₀| of the moved weights in units of half the quantization step (below 1 a move cannot "
                 "leave its bin). SCIENCE.md §2; the old bin-crossing fraction stays in results.parquet.",
                 diagnostics_table(summary, o))):
            if not table.empty:
                sections.append(_Section(title, text, table))
        g = geometry_table(summary, o)
        if not g.empty:
            sections.append(_Section(
                f"{o}: geometry at each checkpoint (mean [95% t-interval] over seeds)",
                "Curvature of the forget / retain NLL on the geometry batch (λmax: Lanczos, its residual in the "
                "results' uncertainty column; tr H: Hutch++), average sharpness under Gaussian noise of the RTN "
                "rounding std s/√12 per weight, the loss barrier on the straight line θ₀ → θ_u, and cos(δ, −Δ) "
                "between each attack's weight change δ and the reversed update (≈ 1: the attack undoes the "
                "update; SCIENCE.md G3).", g))
            ga = attack_geometry_table(summary, o)
            if not ga.empty:
                sections.append(_Section(
                    f"{o}: each attack read against the local geometry (forget NLL; mean [95% t-interval] over seeds)",
                    "ΔL measured next to its first- and second-order Taylor predictions at the checkpoint, and for "
                    "RTN the uniform-rounding-noise prediction (1/24)Σ s_i² H_ii (SPEC §3.2); the certified radius "
                    "(randomized smoothing in weight space, SPEC §3.3) divided by ‖δ‖: below 1 the certificate "
                    "cannot speak to this attack (vacuous at this scale), and it is shown as such.", ga))
    if explained is None:
        explained, why = explain_or_note(results)
    else:
        why = None
    if explained is not None:
        sections += [_Section(t, x, d) for t, x, d in explained.sections()]
    else:
        sections.append(_Section("Explain", f"Not run: {why}.", None))
    for title, text, table in theory_tables(results):
        sections.append(_Section(title, text, table))
    return sections


#: the figures a report opens with, when ``OUT/figures`` holds them (``optigrade figures`` / the study's hook)
HEADLINE_FIGURES = (("forget_utility", "Forgetting and utility before and after each attack"),
                    ("magnitude", "Recovery against displacement: grades and controls together"))


def _reordered(sections: List[_Section]) -> List[_Section]:
    """The answer first (the reading, each objective's forget-accuracy table, the grade-or-magnitude
    reading), then Explain, then the detailed tables; setup and bookkeeping in an appendix."""
    def pick(pred):
        return [s for s in sections if pred(s.title)]
    first = pick(lambda t: t.startswith("What the numbers say"))
    first += pick(lambda t: ": forget accuracy ↓ before/after" in t or t.endswith("grade or magnitude? the reading"))
    explain = pick(lambda t: t.startswith("Explain"))
    appendix = pick(lambda t: t.startswith(("Setup", "Matched forgetting")))
    taken = {id(s) for s in first + explain + appendix}
    rest = [s for s in sections if id(s) not in taken]
    return first + explain + rest + [s._replace(title=f"Appendix: {s.title}") for s in appendix]


def _figures(out: Path) -> List[Tuple[str, str]]:
    """(relative path, caption) of the headline figures present in ``OUT/figures``."""
    found = []
    for stem, caption in HEADLINE_FIGURES:
        for p in sorted((out / "figures").glob(f"{stem}*.png")):
            found.append((f"figures/{p.name}", caption + (f" ({p.stem[len(stem) + 1:]})" if p.stem != stem else "")))
    return found


def _markdown(sections: List[_Section], figures: Sequence[Tuple[str, str]] = ()) -> str:
    md = ["# optigrade study report", ""]
    later = list(figures[1:])  # the first figure opens the report, the others come before Explain
    for path, caption in figures[:1]:
        md += [f"![{caption}]({path})", ""]
    for title, text, df in sections:
        if later and (title.startswith("Explain") or title.startswith("Appendix")):
            md += [x for path, caption in later for x in (f"![{caption}]({path})", "")]
            later = []
        md += [f"## {title}", ""]
        if text:
            md += [text, ""]
        if df is not None:
            md += [_to_md(df), ""]
    return "\n".join(md)


def _styled(df: pd.DataFrame) -> str:
    """``df`` as HTML through pandas' Styler: rows that say "not matched" greyed (shown, never
    ranked), no index, "–" for missing values."""
    def grey(row):
        off = row.astype(str).str.contains("not matched").any()
        return ["color:#999" if off else "" for _ in row]
    try:
        return (df.style.apply(grey, axis=1).hide(axis="index")
                .format(lambda v: f"{v:g}" if isinstance(v, float) else v, na_rep="–").to_html())
    except (ImportError, AttributeError, ValueError):  # no jinja2, or duplicate column labels
        return _grey_unmatched(df.to_html(index=False, border=0, na_rep="–"))


def _html(sections: List[_Section], figures: Sequence[Tuple[str, str]] = ()) -> str:
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>optigrade study report</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}figure{margin:1em 0}"
         "img{max-width:100%}</style></head><body>",
         "<h1>optigrade study report</h1>"]
    def fig(path, caption):
        return (f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    later = list(figures[1:])  # as in the Markdown: the first figure opens, the others come before Explain
    h += [fig(*f) for f in figures[:1]]
    for title, text, df in sections:
        if later and (title.startswith("Explain") or title.startswith("Appendix")):
            h += [fig(*f) for f in later]
            later = []
        h.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            h.append(f"<p>{html.escape(text).replace('**', '')}</p>")
        if df is not None:
            h.append(_styled(df))
    h.append("</body></html>")
    return "\n".join(h)


def _grey_unmatched(table: str) -> str:
    """``table`` (HTML) with the rows that say "not matched" greyed out.

    >>> _grey_unmatched("<tr>\\n<td>a</td></tr><tr>\\n<td>5 (1/2 not matched)</td></tr>").count("color:#999")
    1
    """
    import re

    return re.sub(r"<tr>((?:(?!</tr>).)*not matched(?:(?!</tr>).)*)</tr>", r'<tr style="color:#999">\1</tr>', table,
                  flags=re.S)


def write_report(out, results: pd.DataFrame, summary: pd.DataFrame, cfg=None, meta: Optional[dict] = None,
                 explained=None) -> Path:
    """Write ``OUT/report.md`` and ``OUT/report.html`` (the same sections, rendered twice);
    returns the Markdown path.  ``cfg`` (the StudyConfig) and ``meta`` (``study.json``) fill
    the setup paragraph.

    >>> import tempfile
    >>> p = write_report(tempfile.mkdtemp(), _toy_results(), summarize(_toy_results()), meta={"name": "toy"})
    >>> lines = p.read_text().splitlines()
    >>> lines[2]                      # the answer first; setup and bookkeeping in the appendix
    '## What the numbers say about the grade claim'
    >>> print(lines[lines.index("## Appendix: Setup") + 2])
    Study **toy**: 6 unlearning runs (npo × 3 optimizers × 2 seeds), target forget_acc ≤ 0.1; wall time nan s. ...
    >>> "<h2>npo: forget accuracy ↓ before/after attacks (estimate [95% interval] (per seed))</h2>" in (p.parent / "report.html").read_text()
    True
    """
    from optigrade._files import atomic_write_text

    out = Path(out)
    sections = _reordered(_sections(_tidy(results), _tidy(summary), cfg, meta, explained))
    figs = _figures(out)
    mdp = out / "report.md"
    atomic_write_text(mdp, _markdown(sections, figs))
    atomic_write_text(out / "report.html", _html(sections, figs))
    return mdp


def print_summary(result, cfg, file=None) -> None:
    """Print what a finished study shows: the headline tables, the claim sentences and one line
    of bookkeeping (runs computed / reused, seconds, runs not at matched forgetting, where the
    results are).  ``result`` is a :class:`~optigrade.analysis.study.StudyResult`, ``cfg`` its
    StudyConfig (for the model's caveat).

    >>> from types import SimpleNamespace as NS
    >>> res = NS(summary=summarize(_toy_results()), computed=["a", "b"], skipped=[], seconds=12.3,
    ...          capped=[], out=Path("runs/toy"))
    >>> print_summary(res, NS(model="tiny"))
    **npo** — forget accuracy (↓ = more forgotten; mean over seeds [95% bootstrap over facts × seeds]; ...)
    ...
    - For npo, every optimizer reached the forget target in every seed, so the rows compare matched forgetting.
    ...
    2 run(s) computed, 0 reused, 12 s; 0 not at matched forgetting (step cap / retain guard / divergence / utility floor); results under runs/toy
    """
    file = sys.stdout if file is None else file
    print(markdown_summary(result.summary), file=file)
    for s in claim_sentences(result.summary, model=cfg.model):
        print("-", s, file=file)
    results = getattr(result, "results", None)
    explained = explain_or_note(results)[0] if results is not None else None
    if explained is not None:
        print("\n**Explain** (matched runs; SCIENCE.md §4 verdicts; details in report.md)\n", file=file)
        print(_to_md(explain_summary(explained)), file=file)
    print(f"\n{len(result.computed)} run(s) computed, {len(result.skipped)} reused, {result.seconds:.0f} s; "
          f"{len(result.capped)} not at matched forgetting (step cap / retain guard / divergence / utility floor); "
          f"results under {result.out}",
          file=file)


# ----------------------------------------------------------------------------- README block
README_START, README_END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def render_block(run_dir) -> str:
    """The README's generated block for a finished study: the Markdown headline tables and the
    claim sentences, with the command that regenerates it.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _toy_results().to_parquet(d / "results.parquet")
    >>> block = render_block(d)
    >>> block.startswith("**npo** — forget accuracy"), block.rstrip().endswith(f"optigrade report {d} --readme README.md`._")
    (True, True)
    """
    results, summary = load_study(run_dir)
    body = markdown_summary(summary)
    model = str(results["model"].iloc[0]) if "model" in results and len(results) else "tiny"
    sentences = " ".join(claim_sentences(summary, model=model))
    explained, _ = explain_or_note(results)
    ex = ""
    if explained is not None:
        ex = ("\n**Explain** — does displacement, curvature or grade account for each attack's recovery? "
              "(matched runs; verdicts per SCIENCE.md §4: n ≥ 12 and |ρ| ≥ 0.6 with the 95% bootstrap interval "
              "excluding 0 to support; full tables in the study's report.md)\n\n"
              + _to_md(explain_summary(explained)) + "\n\n'ZO basins are flatter than FO + noise' is not decidable "
              "without the controls C1–C3 of SCIENCE.md §3, which this study does not run.\n")
    return f"{body}\n{sentences}\n{ex}\n_Generated by `optigrade report {run_dir} --readme README.md`._\n"


def update_readme(run_dir, readme="README.md", check: bool = False) -> bool:
    """Replace the text between ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` in
    ``readme`` with :func:`render_block` ``(run_dir)``; returns True when the file changed (or,
    with ``check``, would change; then nothing is written).

    Raises:
        ValueError: the markers are missing or out of order.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _toy_results().to_parquet(d / "results.parquet")
    >>> _ = (d / "README.md").write_text(f"intro\\n{README_START}\\nold\\n{README_END}\\n")
    >>> update_readme(d, d / "README.md"), update_readme(d, d / "README.md", check=True)
    (True, False)
    >>> "| adam | 1 | 20 |" in (d / "README.md").read_text()
    True
    """
    from optigrade._files import atomic_write_text

    p = Path(readme)
    text = p.read_text()
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"{p} needs a block between {README_START} and {README_END} (in that order); add the two "
                         "marker lines where the table should go")
    new = text[: i + len(README_START)] + "\n" + render_block(run_dir) + text[j:]
    if new == text:
        return False
    if not check:
        atomic_write_text(p, new)
    return True


# ----------------------------------------------------------------------------- doctest data
def _toy_results(per_example: bool = True) -> pd.DataFrame:
    """Results of a toy study (doctests): npo, three optimizers (zo-sgd grade 0, a hybrid-family
    "mix" grade 0.5, adam grade 1) × 2 seeds, attacks none and rtn4, forget and retain accuracy
    on 20 facts each, with each fact's exact match (the first ⌊20·acc⌉ facts right) unless
    ``per_example`` is False (a table written before the column)."""
    forget = {"zo-sgd": {"none": (0.0, 0.1), "rtn4": (0.0, 0.2)}, "mix": {"none": (0.1, 0.1), "rtn4": (0.2, 0.2)},
              "adam": {"none": (0.05, 0.15), "rtn4": (0.3, 0.5)}}
    opts = {"zo-sgd": (0.0, "zeroth-order", 60, 0.5), "mix": (0.5, "hybrid", 40, 0.8), "adam": (1.0, "first-order", 20, 0.9)}
    rows = []
    for opt, (grade, family, steps, retain) in opts.items():
        for attack, accs in forget[opt].items():
            for seed, acc in enumerate(accs):
                run = dict(run_id=f"npo__{opt}__s{seed}", model="tiny", objective="npo", optimizer=opt, grade=grade,
                           family=family, seed=seed, lr=1e-3, step_cap=100, steps=steps, target=0.1,
                           stop_reason="target", unlearn_seconds=1.0, attack=attack,
                           attack_kind="none" if attack == "none" else "quantize", data="all",
                           setting_bits=float("nan"))
                rows += [{**run, "quantity": "forget_acc", "value": acc, "per_example": _bits(acc)},
                         {**run, "quantity": "retain_acc", "value": retain, "per_example": _bits(retain)}]
    df = pd.DataFrame(rows)
    return df if per_example else df.drop(columns=["per_example"])


def _bits(acc: float, n: int = 20) -> str:
    k = round(acc * n)
    return "1" * k + "0" * (n - k)
