"""Summaries and reports of a study directory (tables in, Markdown / HTML out).

* :func:`summarize` — mean, standard deviation and a 95% Student-t interval over seeds,
  ``mean ± t_{0.975, n−1}·sd/√n``, per objective × optimizer × attack × eval split × metric.
* :func:`headline_table` — the README / report table: forget accuracy before and after each
  attack, per optimizer (rows ordered by grade), one objective.
* :func:`claim_sentences` — 3–6 sentences generated from the numbers about the grade claim.
* :func:`write_report` — ``OUT/report.md`` and ``OUT/report.html``.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import List, Optional

import pandas as pd

__all__ = ["summarize", "headline_table", "claim_sentences", "write_report", "load_study", "markdown_summary"]

KEYS = ["objective", "optimizer", "grade", "attack", "attack_kind", "eval_split", "diag_bits", "metric"]


def _tcrit(n: int) -> float:
    if n < 2:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds (one row per KEYS group), with how many runs did not
    reach the forget target (``n_capped``: step cap, retain guard or divergence) and the mean
    steps taken."""
    df = results.copy()
    g = df.groupby(KEYS, dropna=False, sort=False)
    s = g["value"].agg(n="count", mean="mean", sd="std").reset_index()
    runs = df.drop_duplicates("run_id").groupby(["objective", "optimizer"], dropna=False).agg(
        n_capped=("stop_reason", lambda x: int((x != "target").sum())),
        steps_mean=("steps", "mean")).reset_index()
    s = s.merge(runs, on=["objective", "optimizer"], how="left")
    half = [(_tcrit(int(n)) * sd / math.sqrt(n)) if n >= 2 and sd == sd else float("nan")
            for n, sd in zip(s["n"], s["sd"])]
    s["ci95"] = half
    s["ci95_low"] = s["mean"] - s["ci95"]
    s["ci95_high"] = s["mean"] + s["ci95"]
    return s


def load_study(path):
    """``(results, summary)`` of a study directory."""
    p = Path(path)
    res_p, sum_p = p / "results.parquet", p / "summary.parquet"
    if not res_p.exists():
        raise FileNotFoundError(f"{str(p)!r} holds no results.parquet; run `optigrade study CONFIG --out {p}` "
                                "(or `optigrade demo --out ...`) first")
    res = pd.read_parquet(res_p)
    summ = pd.read_parquet(sum_p) if sum_p.exists() else summarize(res)
    return res, summ


def _fmt(m, ci, digits=2) -> str:
    if m != m:
        return "–"
    return f"{m:.{digits}f}" if ci != ci else f"{m:.{digits}f} ± {ci:.{digits}f}"


def _order(summary: pd.DataFrame) -> List[str]:
    o = summary[["optimizer", "grade"]].drop_duplicates("optimizer")
    o = o.assign(g=o["grade"].fillna(9)).sort_values(["g", "optimizer"])
    return list(o["optimizer"])


def headline_table(summary: pd.DataFrame, objective: str, metric: str = "forget_acc",
                   digits: int = 2) -> pd.DataFrame:
    """Rows: optimizers by grade (plus the original model); columns: ``steps`` (mean steps,
    with capped runs marked), the metric before attack ("none") and after each attack
    (relearn-half: on the held-out half B, shown next to its before value "none (B)")."""
    s = summary[(summary["metric"] == metric) & (summary["eval_split"] != "weights")]
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
            row["steps"] = f"{first['steps_mean']:.0f}" + (f" ({cap}/{int(first['n'])} not matched)" if cap else "")
        for a in attacks:
            for split, col in (("all", a), ("forget-half-B", f"{a} (B)")):
                x = so[(so["attack"] == a) & (so["eval_split"] == split)]
                if len(x):
                    row[col] = _fmt(x["mean"].iloc[0], x["ci95"].iloc[0], digits)
        rows.append(row)
    t = pd.DataFrame(rows)
    cols = ["optimizer", "grade", "steps"] + [c for c in t.columns if c not in ("optimizer", "grade", "steps")]
    # put "none (B)" right before the half-protocol attack column
    return t[cols]


def diagnostics_table(summary: pd.DataFrame, objective: str, digits: int = 3) -> pd.DataFrame:
    s = summary[(summary["eval_split"] == "weights") & (summary["objective"] == objective)]
    if s.empty:
        return pd.DataFrame()
    want = [("diag_update_norm", None), ("diag_update_norm_rel", None), ("diag_update_norm[attention]", None),
            ("diag_update_norm[mlp]", None), ("diag_update_norm[embeddings]", None)]
    bits = sorted(b for b in s["diag_bits"].dropna().unique())
    for b in bits:
        want += [("diag_bin_crossing", b), ("diag_kept", b)]
    rows = []
    for opt in _order(s):
        so = s[s["optimizer"] == opt]
        row = {"optimizer": opt}
        for m, b in want:
            x = so[(so["metric"] == m) & ((so["diag_bits"] == b) if b is not None else so["diag_bits"].isna())]
            name = m.replace("diag_", "") + (f" @{int(b)}b" if b is not None else "")
            if len(x):
                row[name] = _fmt(x["mean"].iloc[0], x["ci95"].iloc[0], digits)
        rows.append(row)
    return pd.DataFrame(rows)


def _to_md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else str(v) for v in r) + " |")
    return "\n".join(lines)


def markdown_summary(summary: pd.DataFrame, objectives: Optional[List[str]] = None) -> str:
    """The headline table(s) in Markdown (one per objective), as printed by
    ``optigrade report DIR --markdown`` and pasted into the README."""
    objs = objectives or [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    parts = []
    for o in objs:
        parts.append(f"**{o}** — forget accuracy (↓ = more forgotten; mean ± 95% CI over seeds)\n")
        parts.append(_to_md(headline_table(summary, o)))
        parts.append("")
    return "\n".join(parts).strip() + "\n"


# ----------------------------------------------------------------------------- sentences
def _mean(summary, objective, opt, attack, metric="forget_acc", split="all"):
    x = summary[(summary["objective"] == objective) & (summary["optimizer"] == opt) & (summary["attack"] == attack)
                & (summary["metric"] == metric) & (summary["eval_split"] == split)]
    return (float(x["mean"].iloc[0]), float(x["ci95"].iloc[0])) if len(x) else (float("nan"), float("nan"))


def claim_sentences(summary: pd.DataFrame, objective: Optional[str] = None, model: str = "tiny") -> List[str]:
    """3–6 sentences, generated from the numbers, on what the study does and does not show
    about the grade claim (ordering after 4-bit RTN and relearning; hybrid vs Adam vs ZO).
    ``model`` (the study's) picks the closing caveat."""
    objs = [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    if not objs:
        return ["No unlearning runs in this study."]
    obj = objective if objective in objs else ("npo" if "npo" in objs else objs[0])
    s = summary[(summary["objective"] == obj) & (summary["metric"] == "forget_acc")]
    attacks = list(dict.fromkeys(s["attack"]))
    kinds = dict(zip(s["attack"], s["attack_kind"]))
    opts = [o for o in _order(s)]
    grade = dict(zip(s["optimizer"], s["grade"]))
    runs = s.drop_duplicates("optimizer").set_index("optimizer")
    out = []
    capped = [o for o in opts if runs.loc[o, "n_capped"] > 0]
    matched = [o for o in opts if o not in capped]
    if capped:
        out.append(f"For {obj}, {', '.join(capped)} stopped (step cap or retain guard) in "
                   f"{sum(int(runs.loc[o, 'n_capped']) for o in capped)} "
                   f"run(s) without reaching the forget target, so those rows are not at matched forgetting "
                   f"and their post-attack numbers partly reflect unlearning less, not robustness.")
    else:
        out.append(f"For {obj}, every optimizer reached the forget target in every seed, so the rows compare "
                   f"matched forgetting.")
    q4 = next((a for a in attacks if kinds.get(a) == "quantize" and "4" in a), None)
    gg = next((a for a in attacks if kinds.get(a) == "gguf"), None)
    for a, what in ((gg, "the GGUF re-export"), (q4, "4-bit RTN quantization"),
                    (next((a for a in attacks if kinds.get(a) == "relearn"), None), "relearning")):
        if a is None:
            continue
        vals = {o: _mean(summary, obj, o, a) for o in matched}
        vals = {o: v for o, v in vals.items() if v[0] == v[0]}
        if len(vals) < 2:
            continue
        ranked = sorted(vals, key=lambda o: vals[o][0])
        by_grade = {}
        for o, (m, _) in vals.items():
            by_grade.setdefault(grade[o], []).append(m)
        gm = {g: sum(v) / len(v) for g, v in by_grade.items()}
        gs = sorted(gm)
        mono = all(gm[gs[i]] <= gm[gs[i + 1]] + 1e-12 for i in range(len(gs) - 1))
        rev = all(gm[gs[i]] >= gm[gs[i + 1]] - 1e-12 for i in range(len(gs) - 1))
        order = ("monotone with lower grade = more robust, as the paper claims" if mono else
                 "reversed (higher grade = more robust), the opposite of the paper's claim" if rev else
                 "not monotone in grade, so the paper's ordering is not reproduced here")
        best, worst = ranked[0], ranked[-1]
        sep = vals[best][0] + _nz(vals[best][1]) < vals[worst][0] - _nz(vals[worst][1])
        out.append(f"After {what} ({a}), forget accuracy among matched runs ranges from {vals[best][0]:.2f} "
                   f"({best}, grade {grade[best]:g}) to {vals[worst][0]:.2f} ({worst}, grade {grade[worst]:g}); "
                   f"averaged per grade ({', '.join(f'{g:g}: {gm[g]:.2f}' for g in gs)}) the ordering is {order}"
                   f"{'' if sep else ', and the extremes’ 95% intervals overlap, so the ranking is not statistically resolved'}.")
    rl = [a for a in attacks if kinds.get(a) == "relearn"]
    comp = []
    for a in ([q4] if q4 else []) + rl[:1]:
        h, ad = _mean(summary, obj, "hybrid", a), _mean(summary, obj, "adam", a)
        zo = [o for o in opts if grade.get(o) == 0]
        z = _mean(summary, obj, zo[0], a) if zo else (float("nan"),) * 2
        if h[0] == h[0] and ad[0] == ad[0]:
            rel = ("about equal to" if round(h[0], 2) == round(ad[0], 2) else
                   "below" if h[0] < ad[0] else "above")
            zt = f" and {zo[0]} {z[0]:.2f}" if z[0] == z[0] else ""
            comp.append(f"after {a} hybrid's forget accuracy is {h[0]:.2f}, {rel} Adam's {ad[0]:.2f}{zt}")
    if comp:
        out.append("Hybrid vs Adam vs ZO: " + "; ".join(comp) + ".")
    hr, ar = _mean(summary, obj, "hybrid", "none", "retain_acc"), _mean(summary, obj, "adam", "none", "retain_acc")
    if hr[0] == hr[0] and ar[0] == ar[0]:
        zo = [o for o in opts if grade.get(o) == 0]
        zr = ", ".join(f"{_mean(summary, obj, o, 'none', 'retain_acc')[0]:.2f} for {o}" for o in zo)
        out.append(f"Before any attack retain accuracy is {hr[0]:.2f} for hybrid, {ar[0]:.2f} for Adam"
                   f"{' and ' + zr if zr else ''}: utility is {'kept' if hr[0] >= ar[0] - 0.02 else 'lower'} with "
                   f"the hybrid, and a ZO row that reaches the target with low retain accuracy got there by "
                   f"damaging the model, not by selective forgetting.")
    if model == "tiny":
        out.append("What this does not show: it is a 430k-parameter Llama on synthetic facts with RTN fake-quantization "
                   "and a few seeds, not MUSE/WMDP on 7B models with bitsandbytes, so it tests the mechanism, "
                   "not the paper's numbers.")
    else:
        n = int(runs["n"].max()) if "n" in runs and len(runs) else 0
        out.append(f"What this does not show: it is {model} on a handful of real facts"
                   f"{' with one seed' if n <= 1 else f' with {n} seeds'}, so a difference of one or two facts "
                   "is within noise; it tests the mechanism on a real model in its real format, not the paper's "
                   "7B numbers.")
    return out[:7]


def _nz(x):
    return 0.0 if x != x else x


# ----------------------------------------------------------------------------- report
def write_report(out, results: pd.DataFrame, summary: pd.DataFrame, cfg=None, meta: Optional[dict] = None) -> Path:
    """Write ``OUT/report.md`` and ``OUT/report.html``; returns the Markdown path."""
    from optigrade._files import atomic_write_text

    out = Path(out)
    objs = [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    sections = []  # (title, markdown text, DataFrame | None)
    runs = results.drop_duplicates("run_id")
    unl = runs[runs["optimizer"] != "original"]
    intro = (f"Study **{(meta or {}).get('name', '')}**: {len(unl)} unlearning runs "
             f"({', '.join(objs)} × {unl['optimizer'].nunique()} optimizers × {unl['seed'].nunique()} seeds), "
             f"target forget_acc ≤ {unl['target'].iloc[0] if len(unl) else '?'}; wall time "
             f"{(meta or {}).get('seconds', float('nan'))} s. Retain metrics are scored on fixed subsets "
             f"(eval_retain={getattr(cfg, 'eval_retain', '?')}); relearn with protocol=half is measured on the "
             f"held-out half B of the forget entities (column '(B)', with the unattacked value 'none (B)').")
    sections.append(("Setup", intro, None))
    runs_t = unl.groupby(["objective", "optimizer"], sort=False).agg(
        grade=("grade", "first"), lr=("lr", "first"), cap=("step_cap", "first"), steps_mean=("steps", "mean"),
        capped=("stop_reason", lambda x: int((x != "target").sum())), n=("seed", "count"),
        seconds=("unlearn_seconds", "mean")).reset_index()
    sections.append(("Matched forgetting (steps to target; capped = did not reach it)",
                     "Rows with capped > 0 did not reach the target (step cap, retain guard or divergence): they "
                     "are not at matched forgetting.",
                     runs_t.round({"steps_mean": 1, "seconds": 1})))
    sentences = claim_sentences(summary, model=getattr(cfg, "model", "tiny"))
    sections.append(("What the numbers say about the grade claim", " ".join(sentences), None))
    for o in objs:
        for metric, label in (("forget_acc", "forget accuracy ↓"), ("forget_para_acc", "paraphrased forget accuracy ↓"),
                              ("retain_acc", "retain accuracy ↑"), ("general_ppl", "general perplexity ↓")):
            t = headline_table(summary, o, metric)
            sections.append((f"{o}: {label} before/after attacks (mean ± 95% CI)", "", t))
        d = diagnostics_table(summary, o)
        if not d.empty:
            sections.append((f"{o}: mechanism diagnostics (update norms; bin-crossing fraction and share of the "
                             f"update kept by quantization, per bit width)", "", d))
    md = ["# optigrade study report", ""]
    for title, text, df in sections:
        md += [f"## {title}", ""]
        if text:
            md += [text, ""]
        if df is not None:
            md += [_to_md(df), ""]
    mdp = out / "report.md"
    atomic_write_text(mdp, "\n".join(md))
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>optigrade study report</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>",
         "<h1>optigrade study report</h1>"]
    for title, text, df in sections:
        h.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            h.append(f"<p>{html.escape(text).replace('**', '')}</p>")
        if df is not None:
            h.append(df.to_html(index=False, border=0, na_rep="–"))
    h.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(h))
    return mdp
