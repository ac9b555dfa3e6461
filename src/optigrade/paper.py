"""optigrade.paper: the numbers, tables and figures of the paper (``paper/``), generated from
study result directories, so that no result is ever typed into the prose.

:func:`generate` reads one or more study directories (``load_study``: ``results.parquet``,
``summary.parquet``; ``explain.parquet`` / ``explain_recovery.parquet`` when present) and writes

* ``OUT/numbers.tex``: the lookup macros the prose uses (:data:`LOOKUPS`) and one
  ``\\OGset{key}{value}`` per number.  Keys are ``study/objective/quantity/optimizer/attack``
  (or ``study/info/field``, ``study/explain/attack/hypothesis/what``, ...), every part a
  letters-only *slug* (:func:`slug`: ``rtn4`` → ``rtnfour``, ``adam+zo-noise`` →
  ``adampluszonoise``), so the prose's arguments carry no digits.  Values read
  ``estimate [low, high]`` (``\\OGci``) where the summary has a 95% interval, and "n/a" when
  the number is absent.  Every key the prose asks for is defined: a study that is absent gets
  "n/a" everywhere and a footnote (``\\StudyNote``) saying which study was missing.
* ``OUT/tables/<study>-<objective>-<kind>.tex`` (booktabs tabulars): ``forget`` (per grade,
  forget accuracy before/after each attack, matched n/N), ``controls`` (grade-or-magnitude, when
  the study has control rows), ``relearn`` (relearn-half recovery); ``<study>-explain.tex``
  (when ``explain.parquet`` is there) and ``<study>-theory.tex`` (SPEC §3.1 checks).
* ``OUT/figures/<study>/*.pdf`` (:func:`optigrade.figures.write_all`).
* ``OUT/MANIFEST.json``: each study's directory and the sha256 of its tables, and which study
  each number, table and figure came from.

    >>> generate(["runs/demo", "runs/smollm2-controls"], "paper/generated")      # doctest: +SKIP
    {'numbers': 'paper/generated/numbers.tex', ..., 'missing': {}}

Command line: ``python -m optigrade.paper --results DIR [DIR ...] --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

__all__ = ["generate", "main", "slug", "LOOKUPS", "DEFAULT_RESULTS", "prose_keys"]

#: the studies the paper is written about (used when no directory is given; absent ones read n/a)
DEFAULT_RESULTS = ("runs/demo", "runs/smollm2", "runs/smollm2-controls")
#: prose macro → (number of arguments, key template); {s} the current study, {o} its objective
LOOKUPS: Dict[str, Tuple[int, str]] = {
    "ForgetAfter": (2, "{s}/{o}/forget/{0}/{1}"), "ForgetEst": (2, "{s}/{o}/forget/{0}/{1}/est"),
    "Metric": (3, "{s}/{o}/{0}/{1}/{2}"), "MetricEst": (3, "{s}/{o}/{0}/{1}/{2}/est"),
    "Matched": (1, "{s}/{o}/matched/{0}"), "Steps": (1, "{s}/{o}/steps/{0}"), "Grade": (1, "{s}/{o}/grade/{0}"),
    "Label": (1, "{s}/{o}/label/{0}"), "LearningRate": (1, "{s}/{o}/lr/{0}"),
    "Hyper": (1, "{s}/{o}/kwargs/{0}"), "Family": (1, "{s}/{o}/family/{0}"),
    "RecoveryB": (1, "{s}/{o}/recoveryB/{0}"), "RelearnedA": (1, "{s}/{o}/relearnedA/{0}"),
    "StudyInfo": (1, "{s}/info/{0}"), "Explain": (2, "{s}/explain/{0}/{1}/verdict"),
    "ExplainRho": (2, "{s}/explain/{0}/{1}/rho"), "ExplainN": (2, "{s}/explain/{0}/{1}/n"),
    "Recovery": (1, "{s}/recovery/{0}/mean"), "RecoveryFraction": (1, "{s}/recovery/{0}/fraction"),
    "RecoveryN": (1, "{s}/recovery/{0}/n"), "Theory": (1, "{s}/theory/{0}"), "StudyNote": (0, "{s}/@note"),
    "Versus": (4, "{s}/{o}/versus/{0}/{1}/{2}/{3}"),
}
#: summary quantity → name in keys; rows on "forget"/"retain" data (geometry) get the data appended
QUANTITIES = {"forget_acc": "forget", "forget_para_acc": "forgetpara", "retain_acc": "retain",
              "heldout_acc": "heldout", "general_ppl": "ppl", "diag_update_norm": "updatenorm",
              "diag_half_steps_mean": "halfsteps", "diag_level_change": "levelchange",
              "diag_surviving_update": "surviving", "diag_surviving_cos": "survivingcos",
              "geo_cos_attack_update": "cosattack", "geo_lambda_max": "lambdamax", "geo_trace": "trace",
              "geo_qnoise_sharpness": "qnoise", "geo_interp_barrier": "barrier", "geo_loss_change": "dlmeasured",
              "geo_loss_change_second": "dlsecond", "geo_attack_norm": "attacknorm",
              "geo_radius_over_attack_norm": "radiusratio"}
_HALF = {"all": "", "weights": "", "forget-half-B": "B", "forget-half-A": "A"}
_HYP = {"H-magnitude": ("magnitude", "spearman"), "H-grade": ("grade", "partial spearman")}
_DIGITS = "zero one two three four five six seven eight nine".split()


def slug(text) -> str:
    """A letters-only key part: lower case, ``+`` → ``plus``, each digit spelled out, everything
    else dropped.

    >>> slug("rtn4"), slug("adam+zo-noise"), slug("smollm2-controls"), slug("gguf-q4_0")
    ('rtnfour', 'adampluszonoise', 'smollmtwocontrols', 'ggufqfourzero')
    """
    s = str(text).lower().replace("+", "plus")
    return "".join(_DIGITS[int(c)] if c.isdigit() else c for c in s if c.isascii() and c.isalnum()) or "none"


def _esc(text) -> str:
    """``text`` safe in LaTeX's text mode."""
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text)).replace("~", r"\textasciitilde{}").replace("^", r"\^{}")


def _num(x, quantity: str = "") -> str:
    """A number as LaTeX text: accuracies with 2 decimals, others by magnitude; "n/a" for NaN.

    >>> _num(0.4375, "forget_acc"), _num(142.3), _num(2.5e-4), _num(-0.12), _num(float("nan"))
    ('0.44', '142', '\\\\ensuremath{2.5\\\\times10^{-4}}', '\\\\ensuremath{-}0.12', 'n/a')
    """
    if x is None or x != x:
        return "n/a"
    x = float(x)
    if math.isinf(x):
        return r"\ensuremath{\infty}" if x > 0 else r"\ensuremath{-\infty}"
    sign, a = (r"\ensuremath{-}" if x < 0 else ""), abs(x)
    if "acc" in quantity or "fraction" in quantity:
        return sign + f"{a:.2f}"
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-2:
        m, e = f"{a:.1e}".split("e")
        return rf"\ensuremath{{{'-' if x < 0 else ''}{m}\times10^{{{int(e)}}}}}"
    return sign + (f"{a:.0f}" if a >= 100 else f"{a:.1f}" if a >= 10 else f"{a:.2f}")


def _ci(est, lo, hi, quantity: str = "", macro: str = "OGci") -> str:
    """``\\OGci{est}{lo}{hi}`` (the estimate alone without an interval, "n/a" without a value)."""
    if est != est:
        return "n/a"
    if lo != lo or hi != hi:
        return _num(est, quantity)
    return rf"\{macro}{{{_num(est, quantity)}}}{{{_num(lo, quantity)}}}{{{_num(hi, quantity)}}}"


# ----------------------------------------------------------------------------- studies
class _Study:
    """One results directory: its tables, or why it is missing."""

    def __init__(self, path, key: Optional[str] = None):
        from optigrade._files import sha256_file

        self.path, self.key = Path(path), key or slug(Path(path).name)
        self.results = self.summary = self.explain = self.recovery = None
        self.missing, self.files = "", {}
        try:
            from optigrade.analysis.report import load_study

            self.results, self.summary = load_study(self.path)
        except Exception as e:  # FileNotFoundError, ConfigError (unfinished study), damaged tables
            self.missing = " ".join(str(e).split()) or type(e).__name__
            return
        for name in ("explain", "explain_recovery"):
            p = self.path / f"{name}.parquet"
            if p.exists():
                setattr(self, "recovery" if name == "explain_recovery" else "explain", pd.read_parquet(p))
        for name in ("results.parquet", "summary.parquet", "explain.parquet", "explain_recovery.parquet"):
            if (self.path / name).exists():
                self.files[name] = sha256_file(self.path / name)
        s = self.summary
        self.objectives = [o for o in dict.fromkeys(s["objective"].astype(str)) if o not in ("none", "nan", "")]

    def manifest(self) -> dict:
        return {"dir": str(self.path), "status": "missing" if self.missing else "present",
                **({"reason": self.missing} if self.missing else {}), "sha256": self.files}


def _first(df: pd.DataFrame, col: str, default=float("nan")):
    return df[col].iloc[0] if col in df and len(df) else default


def _numbers(st: _Study) -> Dict[str, str]:
    """``{key: LaTeX value}`` of every number a present study offers."""
    s, r, k = st.summary, st.results, st.key
    out: Dict[str, str] = {f"{k}/@note": "", f"{k}/@objective": st.objectives[0] if st.objectives else "npo"}
    nan = float("nan")
    for row in s.to_dict("records"):
        q = row["quantity"]
        if q not in QUANTITIES:
            continue
        idx, ns, al = row.get("index", nan), row.get("noise_scale", nan), row.get("alpha", nan)
        if (idx == idx and idx != 0) or (ns == ns and ns != 1.0) or al == al:
            continue
        name, data = QUANTITIES[q], str(row["data"])
        if data in ("forget", "retain"):
            name += data
        qz, bits = row.get("setting_quantizer"), row.get("setting_bits", nan)
        if data == "weights" and isinstance(qz, str) and qz:
            name += slug("gguf" if qz == "gguf" else f"{qz}{int(bits)}" if bits == bits else qz)
        elif data == "weights" and bits == bits:
            continue
        if data not in _HALF and data not in ("forget", "retain"):
            continue
        objs = st.objectives if str(row["objective"]) in ("none", "nan", "") else [str(row["objective"])]
        for o in objs:
            key = f"{k}/{slug(o)}/{name}/{slug(row['optimizer'])}/{slug(row['attack'])}{_HALF.get(data, '')}"
            if key not in out:
                out[key] = _ci(row["estimate"], row["ci_low"], row["ci_high"], q)
                out[key + "/est"] = _num(row["estimate"], q)
    runs = r.drop_duplicates("run_id")
    for o in st.objectives:
        so = s[(s["objective"] == o) | (s["optimizer"] == "original")]
        for opt in dict.fromkeys(so["optimizer"]):
            x, base = so[so["optimizer"] == opt], f"{k}/{slug(o)}/%s/{slug(opt)}"
            g = _first(x, "grade")
            out[base % "label"] = rf"\texttt{{{_esc(opt)}}}"
            out[base % "grade"] = "n/a" if g != g else f"{g:g}"
            n, cap = _first(x, "n_runs"), _first(x, "n_capped")
            out[base % "matched"] = "n/a" if n != n else f"{int(n - (cap if cap == cap else 0))}/{int(n)}"
            out[base % "steps"] = "0" if opt == "original" else _num(_first(x, "steps_mean"))
            lr = runs.loc[(runs["optimizer"] == opt) & (runs["objective"] == o), "lr"] if "lr" in runs else []
            out[base % "lr"] = _num(float(lr.iloc[0])) if len(lr) and lr.iloc[0] == lr.iloc[0] else "n/a"
            kw = runs.loc[(runs["optimizer"] == opt) & (runs["objective"] == o), "optimizer_kwargs"] \
                if "optimizer_kwargs" in runs else []
            kw = str(kw.iloc[0]) if len(kw) and isinstance(kw.iloc[0], str) else ""
            out[base % "kwargs"] = rf"\texttt{{{_esc(kw)}}}" if kw not in ("", "{}") else "defaults"
            fam = _first(x, "family", "")
            out[base % "family"] = _esc(fam) if isinstance(fam, str) and fam else "n/a"
        out.update(_relearn_fractions(so, f"{k}/{slug(o)}"))
    unl = runs[runs["optimizer"] != "original"]
    orig = s[(s["optimizer"] == "original") & (s["attack"] == "none") & (s["data"] == "all")]
    n_facts = lambda q: len(_first(r[(r["optimizer"] == "original") & (r["quantity"] == q)  # noqa: E731
                                     & (r["attack"] == "none") & (r["data"] == "all")], "per_example", "") or "")
    info = {"model": rf"\texttt{{{_esc(_first(runs, 'model', 'n/a'))}}}", "nseeds": str(unl["seed"].nunique()),
            "nruns": str(len(unl)), "noptimizers": str(unl["optimizer"].nunique()),
            "nforget": str(n_facts("forget_acc") or "n/a"), "nretain": str(n_facts("retain_acc") or "n/a"),
            "nheldout": str(n_facts("heldout_acc") or "n/a"), "target": _num(_first(unl, "target"), "acc"),
            "floorretain": _num(_first(s, "utility_floor_retain"), "acc"),
            "floorppl": _num(_first(s, "utility_max_ppl_ratio")), "baseppl": _num(_first(s, "base_general_ppl")),
            "baseforget": _ci(*(_first(orig[orig["quantity"] == "forget_acc"], c) for c in
                                ("estimate", "ci_low", "ci_high")), "acc"),
            "dir": rf"\texttt{{{_esc(st.path)}}}", "nobjectives": str(len(st.objectives))}
    out.update({f"{k}/info/{f}": v for f, v in info.items()})
    out.update(_explain_numbers(st))
    out.update(_theory_numbers(st))
    out.update(_versus(st))
    return out


#: the quantities a ``\Versus`` sentence may compare (summary quantity → key name)
VERSUS = {"forget_acc": "forget", "retain_acc": "retain", "heldout_acc": "heldout", "general_ppl": "ppl"}


def verdict(a: dict, b: dict) -> str:
    """The words that follow "X (a) and Y (b)" in a sentence comparing two estimates with their
    95% intervals (``estimate``, ``ci_low``, ``ci_high``): an ordering only when the intervals
    do not overlap.

        >>> verdict({"estimate": 0.9, "ci_low": 0.8, "ci_high": 1.0}, {"estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3})
        'are separated by their 95\\\\% intervals (the first is higher)'
        >>> verdict({"estimate": 0.5, "ci_low": 0.3, "ci_high": 0.7}, {"estimate": 0.4, "ci_low": 0.2, "ci_high": 0.6})
        'have overlapping 95\\\\% intervals: no ordering is claimed'
        >>> verdict({"estimate": 0.5, "ci_low": float("nan"), "ci_high": float("nan")}, {"estimate": 0.4, "ci_low": 0.2, "ci_high": 0.6})
        'cannot be ordered: an interval is missing (one seed)'
    """
    lo_a, hi_a, lo_b, hi_b = (float(x) for x in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"]))
    if any(x != x for x in (lo_a, hi_a, lo_b, hi_b)):
        return "cannot be ordered: an interval is missing (one seed)"
    if lo_a > hi_b:
        return r"are separated by their 95\% intervals (the first is higher)"
    if lo_b > hi_a:
        return r"are separated by their 95\% intervals (the first is lower)"
    return r"have overlapping 95\% intervals: no ordering is claimed"


def _versus(st: _Study) -> Dict[str, str]:
    """``\\Versus{quantity}{optA}{optB}{attack}``: :func:`verdict` of every pair of optimizers
    (controls, the original) on each attack and split, so the prose never states an ordering the
    intervals do not support."""
    out, s, k = {}, st.summary, st.key
    need = {"quantity", "optimizer", "attack", "data", "estimate", "ci_low", "ci_high", "objective"}
    if not need <= set(s.columns):
        return out
    for o in st.objectives:
        so = s[((s["objective"] == o) | (s["optimizer"] == "original")) & s["quantity"].isin(list(VERSUS))
               & s["data"].isin(list(_HALF))]
        for (q, att, data), g in so.groupby(["quantity", "attack", "data"], sort=False):
            rows = {str(r["optimizer"]): r for r in g.to_dict("records")}
            for a, ra in rows.items():
                for b, rb in rows.items():
                    if a != b:
                        key = f"{k}/{slug(o)}/versus/{VERSUS[q]}/{slug(a)}/{slug(b)}/{slug(att)}{_HALF[data]}"
                        out[key] = verdict(ra, rb)
    return out


def _relearn_fractions(so: pd.DataFrame, base: str) -> Dict[str, str]:
    """relearn-half recovery fractions (acc_after − acc_unl) / (acc_orig − acc_unl) on half B, and on
    half A ("was A relearned?"), of the estimates (Deeb & Roger 2024)."""
    out = {}
    f = so[so["quantity"] == "forget_acc"]
    est = lambda o, a, d: _first(f[(f["optimizer"] == o) & (f["attack"] == a) & (f["data"] == d)], "estimate")  # noqa
    for a in [a for a in dict.fromkeys(f.loc[f["data"] == "forget-half-B", "attack"]) if a != "none"]:
        for opt in dict.fromkeys(f["optimizer"]):
            if opt == "original":
                continue
            for half, name in (("B", "recoveryB"), ("A", "relearnedA")):
                d = f"forget-half-{half}"
                o = est("original", "none", d)
                o = est("original", "none", "forget-half-B") if o != o else o
                after, unl = est(opt, a, d), est(opt, "none", d)
                frac = (after - unl) / (o - unl) if o - unl > 1e-12 else float("nan")
                out[f"{base}/{name}/{slug(opt)}"] = _num(frac, "fraction")
    return out


def _explain_numbers(st: _Study) -> Dict[str, str]:
    out, k = {}, st.key
    if st.explain is not None:
        e = st.explain[(st.explain["population"] == "matched") & st.explain["decides"].astype(bool)]
        for row in e.itertuples(index=False):
            if row.hypothesis in _HYP:
                hyp, kind = _HYP[row.hypothesis]
                if row.kind != kind:
                    continue
            elif row.hypothesis == "H-curvature" and row.kind == "partial spearman":
                hyp = _predictor(row.predictor)
            else:
                continue
            base = f"{k}/explain/{_akey(row.attack)}/{hyp}"
            out[base + "/verdict"] = _esc(row.verdict)
            out[base + "/rho"] = _ci(row.rho, row.ci_low, row.ci_high)
            out[base + "/n"] = str(int(row.n))
    if st.recovery is not None:
        rec = st.recovery[st.recovery["population"] == "matched"]
        for row in rec.itertuples(index=False):
            base = f"{k}/recovery/{_akey(row.attack)}"
            out[base + "/mean"] = _ci(row.recovery_mean, row.recovery_ci_low, row.recovery_ci_high, "acc")
            out[base + "/fraction"] = _ci(row.fraction_mean, row.fraction_ci_low, row.fraction_ci_high, "fraction")
            out[base + "/n"] = str(int(row.n))
    return out


def _akey(attack) -> str:
    """An explain table's attack as a key part: ``relearn-half:forget-half-B`` → ``relearnhalfB``."""
    m = re.match(r"(.*?)[:@]?forget-half-([AB])$", str(attack))
    return slug(m.group(1)) + m.group(2) if m else slug(attack)


def _predictor(name: str) -> str:
    """``geo_trace[forget]`` → ``traceforget``; ``geo_qnoise_sharpness[forget, noise_scale=1]`` →
    ``qnoisesharpnessforget``."""
    q, _, rest = str(name).partition("[")
    return slug(q.removeprefix("geo_")) + slug(rest.split(",")[0].rstrip("]"))


def _theory_numbers(st: _Study) -> Dict[str, str]:
    """SPEC §3.1 on the original model: the smoothing gap at the smallest μ and the ZO estimate's
    cosine with ∇L_μ (value ± standard error)."""
    r = st.results
    t = r[r["quantity"].astype(str).str.startswith("theory_")]
    if t.empty:
        return {}
    pm = lambda x: "n/a" if not len(x) else _num(x["value"].iloc[0]) + (  # noqa: E731
        "" if "uncertainty" not in x or x["uncertainty"].iloc[0] != x["uncertainty"].iloc[0]
        else r"\,\ensuremath{\pm}\," + _num(x["uncertainty"].iloc[0]))
    out = {}
    gap = t[t["quantity"] == "theory_smoothed_gap"]
    if len(gap) and "mu" in gap:
        mu = gap["mu"].min()
        at = t[t["mu"] == mu] if "mu" in t else t.iloc[:0]
        out.update(mu=_num(mu), gap=pm(at[at["quantity"] == "theory_smoothed_gap"]),
                   gappredicted=pm(at[at["quantity"] == "theory_smoothed_gap_predicted"]),
                   gapratio=pm(at[at["quantity"] == "theory_smoothed_gap_ratio"]))
    for q, name in (("theory_zo_pooled_cosine", "zocos"), ("theory_hessian_trace", "trace"),
                    ("theory_grad_norm", "gradnorm")):
        out[name] = pm(t[t["quantity"] == q])
    return {f"{st.key}/theory/{n}": v for n, v in out.items()}


# ----------------------------------------------------------------------------- tables
def _cell(s: pd.DataFrame, q: str, opt: str, attack: str, data: str = "all") -> str:
    x = s[(s["quantity"] == q) & (s["optimizer"] == opt) & (s["attack"] == attack) & (s["data"] == data)]
    if "setting_bits" in x and data == "weights":
        x = x[x["setting_bits"].isna()] if x["setting_bits"].isna().any() else x
    if x.empty:
        return "--"
    return _ci(*(x[c].iloc[0] for c in ("estimate", "ci_low", "ci_high")), q, macro="OGcell")


def _tabular(header: List[str], rows: List[List[str]], note: str, groups: Sequence[int] = ()) -> str:
    lines = [r"\begin{tabular}{@{}l" + "c" * (len(header) - 1) + "@{}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        if i in groups and i:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}{" + note + "}"]
    return "% generated by optigrade.paper; do not edit\n\\OGtable{" + "\n".join(lines) + "\n"


def _attack_cols(s: pd.DataFrame) -> List[Tuple[str, str, str]]:
    """(attack, data, header) of the forget-accuracy columns: before, then each attack (relearn-half on B)."""
    f = s[(s["quantity"] == "forget_acc") & (s["data"].isin(["all", "forget-half-B"]))]
    cols = []
    for a, d in f[["attack", "data"]].drop_duplicates().itertuples(index=False):
        if a == "none" and d != "all" and not (f["attack"] != "none").any():
            continue
        head = "before" if a == "none" else _esc(a)
        cols.append((a, d, head + (" (B)" if d == "forget-half-B" else "")))
    return sorted(cols, key=lambda c: (c[0] != "none", c[1] != "all"))


def _tables(st: _Study) -> Dict[str, str]:
    from optigrade.analysis._claims import CONTROL_FAMILIES, by_grade

    out, s = {}, st.summary
    fam = s["family"] if "family" in s else pd.Series("", index=s.index)
    for o in st.objectives:
        so = s[(s["objective"] == o) | (s["optimizer"] == "original")]
        ctrl = so["optimizer"].isin(s.loc[fam.isin(CONTROL_FAMILIES), "optimizer"])
        cols = _attack_cols(so)
        meta = lambda opt: (so.loc[so["optimizer"] == opt].iloc[0])  # noqa: E731
        grades = [x for x in by_grade(so[~ctrl])]
        rows = []
        for opt in grades:
            m = meta(opt)
            n, cap = m.get("n_runs", float("nan")), m.get("n_capped", float("nan"))
            matched = "--" if opt == "original" or n != n else f"{int(n - (cap if cap == cap else 0))}/{int(n)}"
            g = m["grade"]
            rows.append([rf"\texttt{{{_esc(opt)}}}", "--" if g != g else f"{g:g}", matched]
                        + [_cell(so, "forget_acc", opt, a, d) for a, d, _ in cols])
        note = (r"Forget accuracy ($\downarrow$ = more forgotten): mean over seeds [95\% percentile bootstrap over "
                r"facts $\times$ seeds]. Matched: runs at matched forgetting and matched utility, of all runs; only "
                r"fully matched rows compare like with like. (B): the held-out half of relearn-half.")
        out[f"{st.key}-{slug(o)}-forget"] = _tabular(
            ["optimizer", "grade", "matched"] + [h for _, _, h in cols], rows, note)
        if ctrl.any():
            out[f"{st.key}-{slug(o)}-controls"] = _controls_table(so, grades[:-1] + by_grade(so[ctrl]), cols, meta)
        rel = [opt for opt in grades if opt != "original"]
        rb = [c for c in cols if c[1] == "forget-half-B" and c[0] != "none"]
        if rb:
            num = _relearn_fractions(so, "x")
            rows = [[rf"\texttt{{{_esc(opt)}}}", _cell(so, "forget_acc", opt, "none", "forget-half-B"),
                     _cell(so, "forget_acc", opt, rb[0][0], "forget-half-B"), num.get(f"x/recoveryB/{slug(opt)}", "--"),
                     num.get(f"x/relearnedA/{slug(opt)}", "--")] for opt in rel]
            out[f"{st.key}-{slug(o)}-relearn"] = _tabular(
                ["optimizer", "B unlearned", "B after relearning A", "B recovered", "A relearned"], rows,
                r"Recovery fraction $(a_{B,\mathrm{after}} - a_{B,\mathrm{unl}})/(a_{B,\mathrm{orig}} - "
                r"a_{B,\mathrm{unl}})$ of the estimates (Deeb \& Roger); ``A relearned'' is the same fraction on the "
                r"half that was fine-tuned on.")
    if st.explain is not None:
        out[f"{st.key}-explain"] = _explain_table(st)
    return out


def _controls_table(so, order, cols, meta) -> str:
    w = so[(so["data"] == "weights") & (so["quantity"] == "diag_half_steps_mean")]
    quant = "gguf" if "setting_quantizer" in w and (w["setting_quantizer"] == "gguf").any() else None
    rows = []
    for opt in order:
        m = meta(opt)
        n, cap = m.get("n_runs", float("nan")), m.get("n_capped", float("nan"))
        fam = m.get("family", "")
        hs = w[(w["optimizer"] == opt) & ((w["setting_quantizer"] == quant) if quant else w["setting_bits"].notna())]
        rows.append([rf"\texttt{{{_esc(opt)}}}", _esc(fam if isinstance(fam, str) else ""),
                     "--" if n != n else f"{int(n - (cap if cap == cap else 0))}/{int(n)}",
                     _cell(so, "diag_update_norm", opt, "none", "weights"),
                     "--" if hs.empty else _ci(*(hs[c].iloc[0] for c in ("estimate", "ci_low", "ci_high")),
                                               macro="OGcell")]
                    + [_cell(so, "forget_acc", opt, a, d) for a, d, _ in cols if a != "none" or d == "all"]
                    + [_cell(so, "heldout_acc", opt, "none"), _cell(so, "general_ppl", opt, "none")])
    head = ["optimizer", "kind", "matched", r"$\|\Delta\|$", "half-steps"] + \
        [h for a, d, h in cols if a != "none" or d == "all"] + \
           ["held-out", "ppl"]
    return _tabular(head, rows, r"Grades, then the controls built to match the zeroth-order run's displacement "
                    r"(Section~\ref{sec:grades}). $\|\Delta\|$: $\|\theta_u - \theta_0\|_2$; half-steps: mean $|\theta_u - "
                    r"\theta_0|$ of the moved weights in half-steps of the export's grid (below one a weight cannot "
                    r"change level). Forget columns: forget accuracy; held-out: accuracy on facts never trained on; "
                    r"ppl: general perplexity (geometric mean). All before any attack unless the column names one.",
                    groups=[len(order) - sum(1 for _ in order if str(meta(_).get('family', '')) in
                                             ('control', 'first-order+noise'))])


def _explain_table(st: _Study) -> str:
    e = st.explain[(st.explain["population"] == "matched") & st.explain["decides"].astype(bool)]
    rec = st.recovery[st.recovery["population"] == "matched"] if st.recovery is not None else None
    rows, groups = [], []
    for a in dict.fromkeys(e["attack"]):
        ea = e[(e["attack"] == a) & (e["n"] > 0)]
        ea = ea[((ea["hypothesis"] == "H-magnitude") & (ea["kind"] == "spearman"))
                | (ea["hypothesis"].isin(["H-grade", "H-curvature"]) & (ea["kind"] == "partial spearman"))]
        r = rec[rec["attack"] == a] if rec is not None else pd.DataFrame()
        groups.append(len(rows))
        recov = _ci(r["recovery_mean"].iloc[0], r["recovery_ci_low"].iloc[0], r["recovery_ci_high"].iloc[0], "acc",
                    "OGcell") if len(r) else "--"
        for i, x in enumerate(ea.itertuples(index=False)):
            rows.append([_esc(a) if i == 0 else "", recov if i == 0 else "", _esc(x.hypothesis),
                         _esc(x.predictor), str(int(x.n)), _ci(x.rho, x.ci_low, x.ci_high, macro="OGcell"),
                         _esc(x.verdict)])
    return _tabular(["attack", "recovery", "hypothesis", "predictor", "$n$", r"$\rho$ [95\% CI]", "verdict"], rows,
                    r"Matched runs only. Recovery: forget accuracy after minus before the attack (positive: "
                    r"knowledge came back), mean [95\% bootstrap]. H-magnitude: Spearman $\rho$ of recovery with "
                    r"$\|\Delta\|$; H-curvature and H-grade: partial Spearman given $\|\Delta\|$; percentile bootstrap "
                    r"over runs. Verdict rule (fixed before the runs): supported needs $n \ge 12$, $|\hat\rho| \ge 0.6$ and an "
                    r"interval excluding $0$.", groups)


# ----------------------------------------------------------------------------- prose
_CALL = re.compile(r"\\(UseStudy|UseObjective|" + "|".join(sorted(LOOKUPS, key=len, reverse=True))
                   + r")(?![A-Za-z])((?:\s*\{[^{}]*\})*)")


def _prose(tex_dir: Path) -> str:
    """main.tex with its ``\\input{sections/...}`` expanded (generated files are not prose)."""
    def expand(p: Path, depth=0) -> str:
        text = p.read_text() if p.exists() else ""
        text = re.sub(r"(?<!\\)%.*", "", text)
        return re.sub(r"\\input\{((?!generated/)[^}]*)\}",
                      lambda m: expand(tex_dir / (m.group(1) + ("" if m.group(1).endswith(".tex") else ".tex")),
                                       depth + 1) if depth < 5 else "", text)
    return expand(tex_dir / "main.tex")


def prose_keys(tex_dir) -> List[str]:
    """Every key the prose under ``tex_dir`` looks up, in reading order (``\\UseStudy`` and
    ``\\UseObjective`` followed as they occur; the objective defaults to ``npo``)."""
    study, obj, keys = "none", "npo", []
    for m in _CALL.finditer(_prose(Path(tex_dir))):
        name, args = m.group(1), re.findall(r"\{([^{}]*)\}", m.group(2))
        if name == "UseStudy":
            study, obj = (args[0] if args else study), "npo"
        elif name == "UseObjective":
            obj = args[0] if args else obj
        else:
            n, tmpl = LOOKUPS[name]
            keys.append(tmpl.format(*args[:n], s=study, o=obj))
    return list(dict.fromkeys(keys))


def _macros() -> str:
    """The lookup machinery of numbers.tex: one command per :data:`LOOKUPS` entry."""
    lines = [r"\makeatletter",
             r"\providecommand\OGset[2]{\expandafter\gdef\csname og@#1\endcsname{#2}}",
             r"\providecommand\OGget[1]{\ifcsname og@#1\endcsname\csname og@#1\endcsname\else"
             r"\textbf{??}\PackageWarning{optigrade}{number #1 undefined: rerun make -C paper}\fi}",
             r"\providecommand\OGci[3]{#1~[#2,\,#3]}",
             r"\providecommand\OGcell[3]{\begin{tabular}[t]{@{}c@{}}#1\\[-2pt]{\scriptsize[#2,\,#3]}\end{tabular}}",
             r"\providecommand\OGtable[2]{\begingroup\setbox0=\hbox{#1}\ifdim\wd0>\linewidth"
             r"\resizebox{\linewidth}{!}{\box0}\else\box0\fi\par\smallskip"
             r"{\footnotesize\raggedright #2\par}\endgroup}",
             r"\gdef\OGstudy{none}\gdef\OGobjective{npo}",
             r"\providecommand\UseStudy[1]{\gdef\OGstudy{#1}\ifcsname og@#1/@objective\endcsname"
             r"\xdef\OGobjective{\csname og@#1/@objective\endcsname}\else\gdef\OGobjective{npo}\fi}",
             r"\providecommand\UseObjective[1]{\gdef\OGobjective{#1}}",
             r"\providecommand\OGmissing[1]{\fbox{\parbox{0.9\linewidth}{\centering\small #1}}}",
             r"\providecommand\StudyTable[1]{\IfFileExists{generated/tables/\OGstudy-\OGobjective-#1.tex}"
             r"{\input{generated/tables/\OGstudy-\OGobjective-#1.tex}}{\IfFileExists{generated/tables/\OGstudy-#1.tex}"
             r"{\input{generated/tables/\OGstudy-#1.tex}}{\OGmissing{table \texttt{#1} not generated for study "
             r"\texttt{\OGstudy}}}}}",
             r"\providecommand\StudyFigure[2][\linewidth]{\IfFileExists{generated/figures/\OGstudy/#2-\OGobjective.pdf}"
             r"{\includegraphics[width=#1]{generated/figures/\OGstudy/#2-\OGobjective.pdf}}"
             r"{\IfFileExists{generated/figures/\OGstudy/#2.pdf}{\includegraphics[width=#1]{generated/figures/"
             r"\OGstudy/#2.pdf}}{\OGmissing{figure \texttt{\detokenize{#2}} not generated for study "
             r"\texttt{\OGstudy}}}}}"]
    for name, (n, tmpl) in LOOKUPS.items():
        key = tmpl.format(*(f"#{i + 1}" for i in range(n)), s=r"\OGstudy", o=r"\OGobjective")
        lines.append(rf"\providecommand\{name}[{n}]{{\OGget{{{key}}}}}" if n else
                     rf"\providecommand\{name}{{\OGget{{{key}}}}}")
    return "\n".join(lines + [r"\makeatother"]) + "\n"


# ----------------------------------------------------------------------------- generate
def generate(results_dirs: Optional[Iterable] = None, out_dir="paper/generated", tex_dir=None,
             figures: bool = True) -> dict:
    """Write numbers.tex, tables/, figures/ and MANIFEST.json under ``out_dir`` from the study
    directories ``results_dirs`` (default :data:`DEFAULT_RESULTS`), each keyed by :func:`slug`
    of its directory name.  Every key the prose under ``tex_dir`` (default: ``out_dir``'s parent,
    when it holds main.tex) looks up is defined: "n/a" when its study is absent or lacks the
    number.  Tables and figures of earlier generations are removed first, so a study that
    disappeared leaves no stale numbers behind.

    Returns ``{"numbers", "manifest", "tables", "figures", "missing", "na"}``: paths, the table
    files written, ``{study: [(figure, status)]}``, ``{study: why it is missing}`` and the prose
    keys that read n/a.

    Raises:
        ValueError: two results directories map to the same study key.
    """
    out = Path(out_dir)
    tex_dir = Path(tex_dir) if tex_dir is not None else out.parent
    studies: Dict[str, _Study] = {}
    if results_dirs is None:  # the defaults are relative to the repository root (tex_dir's parent) or cwd
        results_dirs = [d if Path(d).exists() or not (tex_dir.parent / d).exists() else tex_dir.parent / d
                        for d in DEFAULT_RESULTS]
    for d in results_dirs:
        st = _Study(d)
        if st.key in studies:
            raise ValueError(f"{str(d)!r} and {str(studies[st.key].path)!r} both map to study key {st.key!r}; "
                             "rename one directory")
        studies[st.key] = st
    used = prose_keys(tex_dir) if (tex_dir / "main.tex").exists() else []
    for k in dict.fromkeys(u.split("/")[0] for u in used):
        if k not in studies:
            studies[k] = _Study(Path("<not given>") / k)
            studies[k].missing = "not among the results directories given"
    values, origin = {}, {}
    for st in studies.values():
        got = _numbers(st) if not st.missing else {
            f"{st.key}/@note": rf"\footnote{{Study \texttt{{{_esc(st.path)}}} was missing when this paper was "
                               rf"generated ({_esc(st.missing[:160])}); its numbers read n/a.}}",
            f"{st.key}/@objective": "npo"}
        values.update(got)
        origin.update({key: st.key for key in got})
    na = [u for u in used if u not in values]
    values.update({u: "n/a" for u in na})
    origin.update({u: u.split("/")[0] for u in na})
    # write
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for p in (out / "tables").glob("*.tex"):
        p.unlink()
    from optigrade._files import atomic_write_text

    body = [f"% generated by optigrade.paper from {', '.join(sorted(str(s.path) for s in studies.values()))};",
            "% do not edit: rerun `python -m optigrade.paper` (make -C paper)", _macros()]
    body += [rf"\OGset{{{k}}}{{{v}}}" for k, v in sorted(values.items())]
    atomic_write_text(out / "numbers.tex", "\n".join(body) + "\n")
    tables: Dict[str, str] = {}
    for st in studies.values():
        if st.missing:
            continue
        for name, tex in _tables(st).items():
            atomic_write_text(out / "tables" / f"{name}.tex", tex)
            tables[f"tables/{name}.tex"] = st.key
    figs: Dict[str, List] = {}
    if figures:
        figs = _figures(studies, out / "figures")
    manifest = {"generator": "optigrade.paper", "studies": {k: s.manifest() for k, s in sorted(studies.items())},
                "tables": dict(sorted(tables.items())), "figures": figs,
                "numbers": {k: {"study": origin[k], "dir": str(studies[origin[k]].path),
                                "results_sha256": studies[origin[k]].files.get("results.parquet")}
                            for k in sorted(values)},
                "na": na}
    atomic_write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {"numbers": str(out / "numbers.tex"), "manifest": str(out / "MANIFEST.json"), "tables": sorted(tables),
            "figures": figs, "missing": {k: s.missing for k, s in studies.items() if s.missing}, "na": na}


def _figures(studies: Dict[str, _Study], root: Path) -> Dict[str, List]:
    from optigrade.figures import write_all

    if root.exists():
        for p in root.iterdir():
            if p.is_dir() and p.name in studies:
                shutil.rmtree(p)
    figs = {}
    for k, st in sorted(studies.items()):
        if st.missing:
            continue
        try:
            figs[k] = [list(x) for x in write_all(st.path, root / k)]
        except Exception as e:  # a figure module failing must not lose the numbers; say so in the manifest
            figs[k] = [["*", f"failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"]]
    return figs


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m optigrade.paper [--results DIR ...] [--out DIR] [--no-figures]``."""
    ap = argparse.ArgumentParser(prog="python -m optigrade.paper", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", nargs="+", default=None, metavar="DIR",
                    help=f"study result directories (default: {' '.join(DEFAULT_RESULTS)}; absent ones read n/a)")
    ap.add_argument("--out", default="paper/generated", help="output directory (default paper/generated)")
    ap.add_argument("--tex", default=None, help="directory holding main.tex (default: the parent of --out)")
    ap.add_argument("--no-figures", action="store_true", help="skip the figures (numbers and tables only)")
    a = ap.parse_args(argv)
    got = generate(a.results, a.out, a.tex, figures=not a.no_figures)
    print(f"wrote {got['numbers']}, {len(got['tables'])} table(s), "
          f"{sum(s == 'written' for v in got['figures'].values() for _, s in v)} figure(s); {got['manifest']}")
    for k, why in got["missing"].items():
        print(f"study {k} missing: {why}", file=sys.stderr)
    if got["na"]:
        print(f"{len(got['na'])} number(s) the prose uses read n/a (see MANIFEST.json 'na')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
