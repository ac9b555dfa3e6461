"""The study's explain stage: what accounts for the survival of forgetting under each attack
(SCIENCE.md §4), read from a study's joined tidy table (``results.parquet``), with numbers,
intervals and n, and a verdict per hypothesis that claims no more than its interval allows.

**Recovery.** For run r and attack a, with D the data split of the attacked row ("all", or
"forget-half-B" for relearn-half) and R the ``response`` quantity (default ``forget_acc``)::

    recovery(r, a)  = s · [R(attacked:a, D) − R(unlearned, attack "none", D)]
    fraction(r, a)  = [R(attacked:a, D) − R(unlearned, D)] / [R(original, D) − R(unlearned, D)]

s = +1, or −1 when lower R means more knowledge (a name with ``nll``, ``ppl`` or ``loss``), so a
positive recovery always means knowledge came back; R(original, D) comes from the
``run_id == "reference"`` rows, and the fraction is defined only where the run forgot at least
one fact (s·[R(original) − R(unlearned)] ≥ one fact).  *One fact* is the response's
resolution: ``fact`` if given, else 1/N for an accuracy over N facts (N from the rows'
``per_example`` strings, else the smallest N making every value a multiple of 1/N), else the
smallest gap between distinct values of R on D (:func:`_one_fact`), so "|recovery| < one fact"
means "recovery 0".

**Predictors**, per run, from its ``subject == "unlearned"`` rows (index 0; a predictor's rows
with ``attack == a`` when the table has any for a, else attack "none"): the displacement
(default ``diag_update_norm`` on "weights" = ‖θ_u − θ₀‖₂), each curvature quantity of
:data:`CURVATURE` (λmax, tr H, average sharpness at the quantization-noise scale (noise_scale
1.0), adaptive sharpness; on forget and retain), the run's ``grade`` column, and descriptive
per-attack quantities (:data:`DESCRIPTIVE`: cos(δ, −Δ), ‖δ‖, the 2nd-order ΔL prediction),
which are shown but test no hypothesis.  A predictor is a quantity name or a tuple
``(quantity, data[, {coordinate: value}])``; one that selects two different values for a run
is refused (name the coordinate that tells them apart).

**Statistics**, over the runs that have recovery, the predictor and the displacement:
Spearman ρ (Pearson correlation of average ranks, ties averaged) and the partial Spearman ρ
given displacement (Pearson correlation of the rank residuals after a least-squares fit, with
intercept, of each variable's ranks on the displacement's ranks).  Intervals: percentile
bootstrap over runs (``n_boot`` resamples of the runs with replacement, ranks recomputed in each,
``numpy.random.default_rng(seed)``, the same resamples for every predictor of a given n); a
resample in which a variable (or a residual) has zero variance has no correlation: it is dropped
and counted (``n_dropped``).

**Hypotheses** (SCIENCE.md §4): *H-magnitude*: recovery ~ displacement (Spearman); *H-curvature*:
recovery ~ curvature | displacement (partial, one per curvature quantity); *H-grade*: recovery ~
grade | displacement (partial).  "ZO is flatter than FO + noise" (*H-flat-ZO*) needs the FO+noise
controls C1–C3 of §3, which the table does not carry: it is always "not decidable without
controls C1–C3".

**Verdict rule**, with ρ̂ the estimate, [lo, hi] its ``level`` interval, t = ``threshold``
(0.6), decided on the ``population`` runs (default: matched forgetting and utility) only:

1. *not testable here*: the attack moved nothing (|recovery| < one fact for every run), or
   recovery is constant, or the predictor is absent from the table or takes one value;
2. *not decidable at this n*: n < ``min_n`` (12), or fewer than half the resamples had variance;
3. *supported*: |ρ̂| ≥ t and the interval excludes 0 (lo > 0 or hi < 0);
4. *refuted*: the interval contains 0 and lies inside (−t, t): −t < lo ≤ 0 ≤ hi < t (the
   association vanishes, and no value |ρ| ≥ t is plausible);
5. *not decidable at this n*: everything else: the interval reaches both 0 and |ρ| ≥ t, or it
   excludes 0 but the estimate is below t (a weak association: neither §4 criterion holds).

3 and 4 exclude each other (one needs 0 outside the interval, the other inside).  H-grade with
fewer than 3 distinct grades is at most "not decidable at this n" (a rank correlation on two
grades compares two groups).  The other population's rows (``"finished"``: every non-diverged
run, matched or not) read "exploratory" and say in ``reason`` what the rule would give;
marginal correlations of curvature and grade, and every descriptive predictor, read
"descriptive".

>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for i in range(16):
...     c, d = rng.uniform(size=2)       # curvature and displacement, independent
...     run = dict(run_id=f"r{i}", attack="none", matched=True, grade=float(i % 4))
...     rows += [dict(run, subject="unlearned", data="all", quantity="forget_acc", value=0.1),
...              dict(run, subject="attacked:rtn4", attack="rtn4", data="all", quantity="forget_acc",
...                   value=0.1 + 0.5 * c + 0.02 * rng.normal()),
...              dict(run, subject="unlearned", data="weights", quantity="diag_update_norm", value=d),
...              dict(run, subject="unlearned", data="forget", quantity="geo_trace", value=c)]
>>> ex = explain(pd.DataFrame(rows), curvature=[("geo_trace", "forget")], n_boot=500)
>>> ex.verdict("rtn4", "geo_trace[forget]"), ex.verdict("rtn4", "diag_update_norm[weights]")
('supported', 'not decidable at this n')
>>> ex
Explained(forget_acc; 1 attack; matched n ≤ 16: 1 supported, 2 not decidable at this n, 1 not decidable without controls C1–C3)
"""

from __future__ import annotations

import dataclasses
import html
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .._files import atomic_write_parquet
from .._tables import Result

__all__ = ["CURVATURE", "DESCRIPTIVE", "POPULATIONS", "VERDICTS", "Explained", "explain", "write_explain",
           "spearman", "partial_spearman", "bootstrap_rho"]

_Q4 = ("geo_lambda_max", "geo_trace", "geo_qnoise_sharpness", "geo_adaptive_sharpness")
#: Default curvature predictors: the geometry stage's curvature quantities on forget and retain.
CURVATURE: Tuple[tuple, ...] = tuple((q, d, (("noise_scale", 1.0),) if q == "geo_qnoise_sharpness" else ())
                                     for d in ("forget", "retain") for q in _Q4)
#: Default descriptive predictors (no hypothesis): per-attack quantities of the geometry stage.
DESCRIPTIVE: Tuple[tuple, ...] = (("geo_cos_attack_update", "weights"), ("geo_attack_norm", "weights"),
                                  ("geo_loss_change_second", "forget"))
POPULATIONS = ("matched", "finished")
VERDICTS = ("supported", "refuted", "not decidable at this n", "not testable here",
            "not decidable without controls C1–C3", "descriptive", "exploratory")
_REQUIRED = ("run_id", "subject", "data", "quantity", "value", "attack", "matched")
_COLUMNS = ["population", "decides", "attack", "recovery_data", "response", "role", "predictor", "control", "kind",
            "hypothesis", "n", "rho", "ci_low", "ci_high", "level", "n_boot", "n_dropped", "verdict", "reason"]


# ----------------------------------------------------------------------------- statistics
def _ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of ``x[idx[b]]`` within each row b of ``idx``
    (B, m), from the resample's counts of each distinct value: O(B·m), no sort per row."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    gid = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    g = np.empty(len(x), dtype=np.int64)
    g[order] = gid
    n_groups = int(gid[-1]) + 1
    B = idx.shape[0]
    gi = g[idx]
    cnt = np.bincount((gi + n_groups * np.arange(B)[:, None]).ravel(), minlength=B * n_groups).reshape(B, n_groups)
    below = np.cumsum(cnt, axis=1) - cnt
    return np.take_along_axis(below + (cnt + 1) / 2.0, gi, axis=1)


def _corr_rows(a: np.ndarray, b: np.ndarray, control: Optional[np.ndarray] = None) -> np.ndarray:
    """Row-wise Pearson correlation of ``a`` and ``b`` (B, m), after regressing each on
    ``control`` (with intercept) when given; NaN where a variable or residual has no variance."""
    def centred(v):
        return v - v.mean(axis=1, keepdims=True)

    a, b = centred(a), centred(b)
    sa, sb = (a * a).sum(1), (b * b).sum(1)
    ok = (sa > 0) & (sb > 0)
    if control is not None:
        z = centred(control)
        zz = (z * z).sum(1)
        ok &= zz > 0
        zz = np.where(zz > 0, zz, 1.0)[:, None]
        a = a - ((a * z).sum(1)[:, None] / zz) * z
        b = b - ((b * z).sum(1)[:, None] / zz) * z
    aa, bb = (a * a).sum(1), (b * b).sum(1)
    ok &= (aa > 1e-10 * sa) & (bb > 1e-10 * sb)  # a residual that is rounding noise has no direction
    r = (a * b).sum(1) / np.sqrt(np.where(ok, aa * bb, 1.0))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def spearman(x, y) -> float:
    """Spearman ρ: the Pearson correlation of the average ranks (NaN when x or y is constant).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 12), round(spearman([1, 2, 2, 3], [3, 2, 2, 1]), 12)
    (0.8, -1.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.arange(len(x))[None]
    return float(_corr_rows(_ranks(x, idx), _ranks(y, idx))[0])


def partial_spearman(x, y, z) -> float:
    """Partial Spearman ρ of x and y given z: the Pearson correlation of the residuals of x's
    and y's ranks after a least-squares fit (with intercept) on z's ranks.  Equals
    (ρ_xy − ρ_xz ρ_yz)/√((1 − ρ_xz²)(1 − ρ_yz²)) on the Spearman ρs.

    >>> z = np.arange(8.0); x = z + np.array([0, 3, 0, 3, 0, 3, 0, 3])
    >>> round(partial_spearman(x, x, z), 12), math.isnan(partial_spearman(x, z, z))   # z given z: nothing left
    (1.0, True)
    """
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    idx = np.arange(len(x))[None]
    return float(_corr_rows(_ranks(x, idx), _ranks(y, idx), _ranks(z, idx))[0])


def bootstrap_rho(x, y, z=None, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """ρ (partial given ``z`` when given) with its percentile bootstrap interval over the
    paired observations: ``{n, rho, ci_low, ci_high, n_dropped}`` (``n_dropped``: resamples
    without variance, which have no ρ and are left out of the interval).

    >>> r = bootstrap_rho(np.arange(20.0), np.arange(20.0) ** 2, n_boot=200)
    >>> r["rho"], r["ci_low"], r["ci_high"], r["n_dropped"]
    (1.0, 1.0, 1.0, 0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    idx0 = np.arange(n)[None]
    rk = [(lambda i, v=v: _ranks(v, i)) for v in ((x, y) if z is None else (x, y, np.asarray(z, float)))]
    rho = float(_corr_rows(*(f(idx0) for f in rk))[0]) if n >= 2 else float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n)) if n >= 2 else np.zeros((0, 0), int)
    boot = _corr_rows(*(f(idx) for f in rk)) if n >= 2 else np.array([])
    kept = boot[np.isfinite(boot)]
    lo, hi = (np.quantile(kept, [(1 - level) / 2, (1 + level) / 2]) if len(kept) else (np.nan, np.nan))
    return dict(n=n, rho=rho, ci_low=float(lo), ci_high=float(hi), n_dropped=int(n_boot - len(kept)))


def _rule(c: dict, min_n: int, t: float, n_boot: int) -> Tuple[str, str]:
    """The verdict of the module docstring (steps 2–5) for one correlation ``c``."""
    n, r, lo, hi = c["n"], c["rho"], c["ci_low"], c["ci_high"]
    iv = f"[{lo:.2f}, {hi:.2f}]"
    if n < min_n:
        return "not decidable at this n", f"n = {n} < {min_n} runs"
    if n_boot - c["n_dropped"] < n_boot / 2:
        return "not decidable at this n", f"only {n_boot - c['n_dropped']} of {n_boot} resamples had variance"
    if abs(r) >= t and (lo > 0 or hi < 0):
        return "supported", f"|ρ| = {abs(r):.2f} ≥ {t:g} and the interval {iv} excludes 0"
    if -t < lo <= 0 <= hi < t:
        return "refuted", f"the interval {iv} contains 0 and lies inside ±{t:g}"
    if lo > 0 or hi < 0:
        return "not decidable at this n", f"weak: the interval {iv} excludes 0 but |ρ| = {abs(r):.2f} < {t:g}"
    return "not decidable at this n", f"the interval {iv} contains 0 and reaches |ρ| ≥ {t:g}"


# ----------------------------------------------------------------------------- the result
@dataclasses.dataclass(frozen=True, repr=False)
class Explained(Result):
    """What :func:`explain` found.

    Attributes:
        table: one row per population × attack × predictor × control (``_COLUMNS``: n, rho,
            ci_low, ci_high, level, n_boot, n_dropped, kind "spearman" | "partial spearman",
            hypothesis, verdict, reason); what ``explain.parquet`` holds.
        recovery: per population × attack: n, mean recovery and fraction with their intervals,
            one fact, runs that moved.
        runs: the per run × attack numbers every correlation was computed from.
        settings: the arguments of :func:`explain`.
    """

    table: pd.DataFrame
    recovery: pd.DataFrame
    runs: pd.DataFrame
    settings: dict
    cost: object = None

    def _rows(self) -> List[dict]:
        """Tidy rows: value = ρ, uncertainty = half the interval's width; the rest as coordinates."""
        kind = f"bootstrap ci{round(100 * self.settings['level'])} half-width"
        return [dict(quantity="explain_" + r["kind"].replace(" ", "_"), value=r["rho"],
                     uncertainty=(r["ci_high"] - r["ci_low"]) / 2, uncertainty_kind=kind,
                     **{k: r[k] for k in _COLUMNS if k not in ("kind", "rho", "level", "n_boot")})
                for r in self.table.to_dict("records") if r["kind"] != "none"]

    def verdict(self, attack: str, predictor: str, population: Optional[str] = None) -> str:
        """The verdict on ``predictor``'s hypothesis (the partial row where there is one)."""
        t = self.table
        t = t[(t["attack"] == attack) & (t["predictor"] == predictor)
              & (t["population"] == (population or self.settings["population"]))]
        if t.empty:
            raise ValueError(f"no row for attack {attack!r}, predictor {predictor!r}; have attacks "
                             f"{sorted(set(self.table['attack']))}, predictors {sorted(set(self.table['predictor']))}")
        return t.iloc[-1]["verdict"]  # the partial row where there is one

    def __repr__(self) -> str:
        t = self.table[self.table["decides"] & _judged(self.table)]
        counts = ", ".join(f"{int((t['verdict'] == v).sum())} {v}" for v in VERDICTS if (t["verdict"] == v).any())
        n = int(t["n"].max()) if len(t) else 0
        na = len(self.recovery["attack"].unique()) if len(self.recovery) else 0
        return (f"Explained({self.settings['response']}; {na} attack{'s' * (na != 1)}; "
                f"{self.settings['population']} n ≤ {n}: {counts})")

    def sections(self) -> List[Tuple[str, str, pd.DataFrame]]:
        """The report's Explain section as ``(title, text, table)`` triples (text: Markdown with
        bold only), the shape of ``report._Section``."""
        return _sections(self)

    def to_markdown(self) -> str:
        """The Explain section in Markdown (``## title``, text, a table per part)."""
        out = []
        for title, text, df in self.sections():
            out += [f"## {title}", "", text, ""] + ([_md_table(df), ""] if df is not None else [])
        return "\n".join(out)

    def _repr_html_(self) -> str:
        h = []
        for title, text, df in self.sections():
            h.append(f"<h3>{html.escape(title)}</h3><p>{html.escape(text).replace('**', '')}</p>")
            if df is not None:
                h.append(df.to_html(index=False, border=0, na_rep="–"))
        return "\n".join(h)


# ----------------------------------------------------------------------------- inputs
def _spec(s, default_data: str) -> Tuple[str, str, tuple]:
    """A predictor as ``(quantity, data, ((coordinate, value), ...))``."""
    if isinstance(s, str):
        return s, default_data, ()
    if isinstance(s, (tuple, list)) and len(s) in (2, 3) and all(isinstance(v, str) for v in s[:2]):
        co = s[2] if len(s) == 3 else ()
        co = tuple(co.items()) if isinstance(co, Mapping) else tuple(tuple(p) for p in co)
        return s[0], s[1], co
    raise ValueError(f"a predictor is a quantity name or (quantity, data[, {{coordinate: value}}]), got {s!r}; "
                     f"e.g. ('geo_trace', 'forget') or ('geo_qnoise_sharpness', 'forget', {{'noise_scale': 1.0}})")


def _name(spec) -> str:
    q, d, co = spec
    return f"{q}[{', '.join([d] + [f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in co])}]"


def _lookup(unl: pd.DataFrame, spec, attack: str) -> Tuple[Optional[pd.Series], str]:
    """run_id → the predictor's value (None and why when the table has no such rows)."""
    q, d, co = spec
    sel = unl[(unl["quantity"] == q) & (unl["data"] == d)]
    if sel.empty:
        return None, f"absent: the table has no {q} rows on {d}"
    for k, v in co:
        if k not in sel.columns:
            return None, f"absent: the {q} rows have no column {k}"
        col = sel[k]
        sel = sel[np.isclose(pd.to_numeric(col, errors="coerce"), v)] if isinstance(v, float) else sel[col == v]
        if sel.empty:
            return None, f"absent: no {q} rows on {d} at {k} = {v} (have {sorted(set(col.dropna()))})"
    if "index" in sel.columns:
        sel = sel[sel["index"] == 0]
    sel = sel[sel["attack"] == attack] if (sel["attack"] == attack).any() else sel[sel["attack"] == "none"]
    if sel.empty:
        return None, f"absent: no {q} rows on {d} for attack none or {attack}"
    many = sel.groupby("run_id")["value"].nunique()
    if (many > 1).any():
        rid = many[many > 1].index[0]
        rows = sel[sel["run_id"] == rid]
        differ = [c for c in rows.columns if c not in ("value", "uncertainty", "std_error")
                  and not c.startswith("cost_") and rows[c].astype(str).nunique() > 1]
        raise ValueError(f"predictor {_name(spec)} has {len(rows)} different values for run {rid!r} (rows differ in "
                         f"{differ}); pick one with a coordinate, e.g. ({q!r}, {d!r}, "
                         f"{{{differ[0] if differ else 'column'!r}: ...}})")
    return sel.groupby("run_id")["value"].first().astype(float), ""


def _check(results, response, population, n_boot, level, min_n, threshold, fact) -> None:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame (a study's results.parquet), "
                         f"got {type(results).__name__}")
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks columns {missing}; pass a study's joined results table "
                         f"(OUT/results.parquet, or optigrade.analysis.load_study(OUT).results)")
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {list(POPULATIONS)}, got {population!r}; 'matched' (runs at "
                         f"matched forgetting and utility) decides verdicts, 'finished' is exploratory")
    for name, v, ok, hint in (("n_boot", n_boot, isinstance(n_boot, int) and n_boot >= 100,
                               "an int ≥ 100, e.g. 2000"),
                              ("level", level, isinstance(level, float) and 0 < level < 1, "in (0, 1), e.g. 0.95"),
                              ("min_n", min_n, isinstance(min_n, int) and min_n >= 3, "an int ≥ 3, e.g. 12"),
                              ("threshold", threshold, isinstance(threshold, (int, float)) and 0 < threshold < 1,
                               "in (0, 1), e.g. 0.6"),
                              ("fact", fact, fact is None or (isinstance(fact, (int, float)) and fact > 0),
                               "None (inferred) or > 0, e.g. 1/N for an accuracy over N facts")):
        if not ok:
            raise ValueError(f"{name} must be {hint}, got {v!r}")
    unl = results[(results["subject"] == "unlearned") & (results["attack"] == "none")]
    if not (unl["quantity"] == response).any():
        attacked = results.loc[results["subject"].str.startswith("attacked:"), "quantity"]
        have = sorted(set(unl["quantity"]) & set(attacked))
        raise ValueError(f"unknown response {response!r}: no unlearned rows measure it; choose one of {have}")
    attacked = results[(results["run_id"] != "reference") & results["subject"].str.startswith("attacked:")]
    if not (attacked["quantity"] == response).any():
        raise ValueError(f"results has no attacked rows (subject 'attacked:<label>') measuring {response!r}: there is "
                         f"no attack to explain; run the study with attacks")


# ----------------------------------------------------------------------------- explain
def _one_fact(rows: pd.DataFrame, max_n: int = 5000) -> float:
    """One fact's worth of a response on one split (module docstring): 1/N where N is the
    number of scored facts — read from the rows' ``per_example`` strings (one 0/1 per fact) when
    present, else the smallest N ≤ ``max_n`` for which every value in [0, 1] is a multiple of 1/N
    (an accuracy over N facts) — else the smallest gap between distinct values (a continuous
    response such as an NLL).  Not the smallest gap alone: on a 100-fact split whose runs all
    differ by ≥ 2 facts that gap is 0.02, two facts, not one.

        >>> import pandas as pd
        >>> _one_fact(pd.DataFrame({"value": [0.0, 0.02, 0.06, 0.5]}))        # all multiples of 1/50
        0.02
        >>> _one_fact(pd.DataFrame({"value": [0.0, 0.02, 0.5], "per_example": ["0" * 100] * 3}))
        0.01
        >>> round(_one_fact(pd.DataFrame({"value": [1.25, 1.5, 2.0625]})), 4)   # not in [0, 1]: the smallest gap
        0.25
    """
    if "per_example" in rows:
        n = {len(x) for x in rows["per_example"].dropna() if isinstance(x, str) and x}
        if len(n) == 1:
            return 1.0 / n.pop()
    v = rows["value"].dropna().to_numpy(float)
    if len(v) and (v >= 0).all() and (v <= 1).all() and (v > 0).any():
        for n in range(1, max_n + 1):
            if np.all(np.abs(v * n - np.round(v * n)) < 1e-6 * n):
                return 1.0 / n
    pool = np.unique(np.round(v, 12))
    return float(np.diff(pool).min()) if len(pool) > 1 else float("nan")


def explain(results: pd.DataFrame, *, population: str = "matched", response: str = "forget_acc",
            displacement="diag_update_norm", curvature: Sequence = CURVATURE, descriptive: Sequence = DESCRIPTIVE,
            n_boot: int = 2000, level: float = 0.95, min_n: int = 12, threshold: float = 0.6,
            fact: Optional[float] = None, seed: int = 0) -> Explained:
    """Correlate each attack's recovery with displacement, curvature and grade (module docstring).

    Args:
        results: a study's joined tidy table (columns run_id, subject, data, quantity, value,
            attack, matched; grade, match_reason / stop_reason, index and coordinates when present).
        population: whose verdicts count: "matched" (runs at matched forgetting and utility) or
            "finished" (every non-diverged run: exploratory). Both populations are in the table.
        response: the quantity whose change is the recovery.
        displacement: the control (a quantity on "weights" or a predictor tuple).
        curvature, descriptive: predictors (quantity name or ``(quantity, data[, coords])``).
        n_boot, level, seed: the bootstrap over runs.  min_n, threshold: the §4 criteria.
        fact: one fact's worth in response units (None: inferred, see the module docstring).

    Raises:
        ValueError: missing columns, unknown response or population, bad numbers or predictor
            specs, or a predictor that selects several values for one run.
    """
    _check(results, response, population, n_boot, level, min_n, threshold, fact)
    disp, curv, desc = _spec(displacement, "weights"), [_spec(s, "forget") for s in curvature], \
        [_spec(s, "weights") for s in descriptive]
    df = results if "index" not in results.columns else results[results["index"] == 0]
    s = -1.0 if any(k in response for k in ("nll", "ppl", "loss")) else 1.0
    is_run = df["run_id"] != "reference"
    info = df[is_run].groupby("run_id", sort=False).agg(
        **{k: (k, "first") for k in ("matched", "grade", "match_reason", "stop_reason", "optimizer", "family", "seed")
           if k in df.columns})
    diverged = np.zeros(len(info), bool)
    for k in ("match_reason", "stop_reason"):
        if k in info:
            diverged |= (info[k] == "diverged").to_numpy()
    pops = {"finished": info.index[~diverged],
            "matched": info.index[~diverged & info["matched"].fillna(False).astype(bool).to_numpy()]}
    unl_all = df[is_run & (df["subject"] == "unlearned")]
    resp = df[df["quantity"] == response]
    base = resp[(resp["run_id"] != "reference") & (resp["subject"] == "unlearned") & (resp["attack"] == "none")]
    orig = resp[(resp["run_id"] == "reference") & (resp["subject"] == "original")].groupby("data")["value"].first()
    att = resp[(resp["run_id"] != "reference") & resp["subject"].str.startswith("attacked:")]
    settings = dict(population=population, response=response, displacement=_name(disp), n_boot=n_boot, level=level,
                    min_n=min_n, threshold=threshold, fact=fact, seed=seed)
    grade = info["grade"].astype(float) if "grade" in info else None
    plans = []  # every lookup first: a bad predictor is refused before any resampling
    for (a, D), g in att.groupby(["attack", "data"], sort=False):
        label = a if att.loc[att["attack"] == a, "data"].nunique() == 1 else f"{a}@{D}"
        one = fact if fact is not None else _one_fact(resp[resp["data"] == D])
        tol = (one if one == one else 1e-12) * (1 - 1e-9)  # |Δ| ≥ tol: at least one fact
        u = base[base["data"] == D].groupby("run_id")["value"].first()
        v = g.groupby("run_id")["value"].first()
        wide = pd.DataFrame({"attacked": v, "unlearned": u}).reindex(info.index)
        wide["recovery"] = s * (wide["attacked"] - wide["unlearned"])
        o = float(orig.get(D, np.nan))
        forgot = s * (o - wide["unlearned"])
        wide["fraction"] = ((wide["attacked"] - wide["unlearned"]) / (o - wide["unlearned"])).where(
            forgot >= tol)
        disp_v, disp_why = _lookup(unl_all, disp, a)
        wide["displacement"] = np.nan if disp_v is None else disp_v.reindex(info.index)
        preds = [("displacement", "displacement", disp_v, disp_why)]
        preds += [("curvature", _name(c), *_lookup(unl_all, c, a)) for c in curv]
        preds += [("grade", "grade", grade, "" if grade is not None else "absent: the table has no grade column")]
        preds += [("descriptive", _name(c), *_lookup(unl_all, c, a)) for c in desc]
        for role, col, val, _ in preds[1:]:
            if val is not None:
                wide[col] = val.reindex(info.index)
        wide = wide.join(info[[k for k in ("matched", "optimizer", "family", "seed") if k in info]])
        plans.append((label, D, one, tol, wide, preds))
    rows, rec_rows, run_frames = [], [], []
    for label, D, one, tol, wide, preds in plans:
        for pop in POPULATIONS:
            w = wide.loc[pops[pop]]
            w = w[np.isfinite(w["recovery"])]
            r = w["recovery"].to_numpy()
            moved = int((np.abs(r) >= tol).sum())
            if len(r) == 0:
                dead = f"no {pop} run has both the unlearned and the attacked {response} on {D}"
            elif moved == 0:
                dead = (f"the attack moved nothing: |recovery| < one fact ({one:.3g}) for all {len(r)} runs"
                        if one == one else f"the attack moved nothing: recovery 0 for all {len(r)} runs")
            elif np.ptp(r) == 0:
                dead = f"recovery is constant ({r[0]:.3g}) over the {len(r)} runs: its ranks carry nothing"
            else:
                dead = ""
            rec_rows.append(_recovery_row(pop, label, D, w, one, moved, n_boot, level, seed))
            ctx = dict(population=pop, decides=pop == population, attack=label, recovery_data=D, response=response)
            for role, col, val, why in preds:
                rows += _predictor_rows(ctx, role, col, val, why, w, dead, settings)
            run_frames.append(wide.loc[pops[pop]].assign(population=pop, attack=label, data=D).reset_index())
    if rows:
        rows.append(dict(population=population, decides=True, attack="all", recovery_data="", response=response,
                         role="flatness", predictor="family", control="none", kind="none", hypothesis="H-flat-ZO",
                         n=len(pops[population]), rho=np.nan, ci_low=np.nan, ci_high=np.nan, level=level,
                         n_boot=n_boot, n_dropped=0, verdict="not decidable without controls C1–C3",
                         reason="'ZO is flatter than FO + noise' needs the FO+noise controls C1–C3 (SCIENCE.md §3) "
                                "at matched ‖Δ‖ and perplexity; this table has none"))
    table = pd.DataFrame(rows, columns=_COLUMNS)
    table = table.astype({"n": int, "n_boot": int, "n_dropped": int, "decides": bool})
    runs = pd.concat(run_frames, ignore_index=True) if run_frames else pd.DataFrame()
    return Explained(table, pd.DataFrame(rec_rows), runs, settings)


def _recovery_row(pop, label, D, w, one, moved, n_boot, level, seed) -> dict:
    """Mean recovery and mean fraction of one population and attack, with percentile intervals."""
    out = dict(population=pop, attack=label, recovery_data=D, fact=one, n=len(w), n_moved=moved)
    rng = np.random.default_rng(seed)
    for col in ("recovery", "fraction"):
        x = w[col].dropna().to_numpy(float)
        m = rng.integers(0, len(x), size=(n_boot, len(x))) if len(x) else None
        lo, hi = np.quantile(x[m].mean(1), [(1 - level) / 2, (1 + level) / 2]) if len(x) else (np.nan, np.nan)
        out.update({f"{col}_n": len(x), f"{col}_mean": float(x.mean()) if len(x) else np.nan,
                    f"{col}_ci_low": float(lo), f"{col}_ci_high": float(hi)})
    return out


_HYP = {"displacement": "H-magnitude", "curvature": "H-curvature", "grade": "H-grade", "descriptive": ""}


def _predictor_rows(ctx, role, col, val, why, w, dead, st) -> List[dict]:
    """The Spearman row (and, but for the displacement, the partial-given-displacement row) of the
    predictor in column ``col`` of ``w`` for one population and attack, each with its verdict."""
    name = st["displacement"] if role == "displacement" else col
    hyp = _HYP[role]
    has_disp = "displacement" in w and w["displacement"].notna().any()
    out = []
    kinds = [("spearman", "none")] + ([] if role == "displacement" else [("partial spearman", st["displacement"])])
    for kind, control in kinds:
        judged = bool(hyp) and (role == "displacement" or kind == "partial spearman")
        row = dict(ctx, role=role, predictor=name, control=control, kind=kind, hypothesis=hyp, level=st["level"],
                   n_boot=st["n_boot"], n=0, rho=np.nan, ci_low=np.nan, ci_high=np.nan, n_dropped=0)
        sub = w[["recovery", col] + (["displacement"] if has_disp and col != "displacement" else [])].dropna() \
            if val is not None and col in w else None
        if sub is None:
            row.update(verdict="not testable here", reason=why or f"absent: no {name} values")
        elif dead:
            row.update(n=len(sub), verdict="not testable here", reason=dead)
        elif kind == "partial spearman" and not has_disp:
            row.update(n=len(sub), verdict="not testable here",
                       reason=f"absent: no displacement ({st['displacement']}) to control for")
        else:
            z = sub["displacement"].to_numpy() if kind == "partial spearman" else None
            c = bootstrap_rho(sub[col].to_numpy(), sub["recovery"].to_numpy(), z, n_boot=st["n_boot"],
                              level=st["level"], seed=st["seed"])
            row.update(c)
            k = sub[col].nunique()
            if c["n"] < 3:
                v, reason = "not decidable at this n", f"n = {c['n']} < 3 runs"
            elif k < 2 or not np.isfinite(c["rho"]):
                v, reason = "not testable here", (f"{name} takes one value over the {c['n']} runs" if k < 2 else
                                                  "no variance left once displacement is controlled")
            else:
                v, reason = _rule(c, st["min_n"], st["threshold"], st["n_boot"])
                if role == "grade" and k < 3:
                    reason += (f"; grade takes {k} distinct values: the rank correlation compares two groups, "
                               f"not informative")
                    v = "not decidable at this n" if v in ("supported", "refuted") else v
            if not judged:
                v, reason = "descriptive", ("marginal; the hypothesis is judged on the partial given displacement"
                                            if hyp else "descriptive: no hypothesis")
            elif not ctx["decides"] and v in ("supported", "refuted", "not decidable at this n"):
                v, reason = "exploratory", (f"the §4 rule would read '{v}' ({reason}), but these runs are not all at "
                                            f"matched forgetting and utility; verdicts use {st['population']} runs")
            row.update(verdict=v, reason=reason)
        out.append(row)
    return out


# ----------------------------------------------------------------------------- report
def _judged(t: pd.DataFrame) -> pd.Series:
    """The rows that carry a hypothesis's verdict: the displacement's Spearman, the partials of
    curvature and grade, and H-flat-ZO."""
    return (t["hypothesis"] != "") & ((t["role"] == "displacement") | (t["kind"] == "partial spearman")
                                      | (t["role"] == "flatness"))


def _ci(r) -> str:
    return "–" if not np.isfinite(r["rho"]) else f"{r['rho']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _sentence(a: str, hyp: str, rows: pd.DataFrame, what: str) -> str:
    """One sentence per hypothesis from its judged rows (numbers, interval, n in each)."""
    def item(r):
        return f"{r['predictor']} (ρ = {_ci(r)}, n = {r['n']})" if np.isfinite(r["rho"]) else \
            f"{r['predictor']} (n = {r['n']}: {r['reason']})"
    if len(rows) == 1:
        r = rows.iloc[0]
        trend = ""
        if r["verdict"] == "supported":
            trend = f"; recovery {'rises' if r['rho'] > 0 else 'falls'} with {r['predictor']}" + (
                " at equal displacement" if r["kind"] == "partial spearman" else "")
        nums = f"ρ = {_ci(r)}, n = {r['n']}" if np.isfinite(r["rho"]) else f"n = {r['n']}"
        return f"**{hyp}** ({a}, {what}): {nums}: **{r['verdict']}** ({r['reason']}{trend})."
    parts = []
    for v in ("supported", "refuted", "not decidable at this n", "not testable here"):
        sel = rows[rows["verdict"] == v]
        if v == "not testable here" and len(sel) and sel["reason"].str.startswith("absent").all():
            parts.append(f"not testable here for {len(sel)} quantit{'y' if len(sel) == 1 else 'ies'} absent from the "
                         f"table ({', '.join(sel['predictor'])})")
        elif len(sel) > 1 and not np.isfinite(sel["rho"]).any() and sel["reason"].nunique() == 1 \
                and sel["n"].nunique() == 1:  # one shared reason: say it once
            parts.append(f"{v} for all {len(sel)} ({', '.join(sel['predictor'])}; n = {sel['n'].iloc[0]}: "
                         f"{sel['reason'].iloc[0]})")
        elif len(sel):
            parts.append(f"{v} for " + "; ".join(item(r) for _, r in sel.iterrows()))
    return f"**{hyp}** ({a}, {what}): " + "; ".join(parts) + "."


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def _sections(ex: Explained) -> List[Tuple[str, str, pd.DataFrame]]:
    st, t = ex.settings, ex.table
    pop, other = st["population"], [p for p in POPULATIONS if p != st["population"]][0]
    pct = f"{100 * st['level']:g}%"
    who = {"matched": "the matched runs (at matched forgetting and utility)",
           "finished": "all finished runs, matched or not (exploratory: they differ in forgetting and utility)"}
    intro = (f"Recovery = {st['response']} after the attack − before it, on the attack's data (positive: knowledge "
             f"came back); ρ = Spearman over runs, partial ρ = given displacement ({st['displacement']}); [a, b] = "
             f"{pct} percentile bootstrap interval over runs ({st['n_boot']} resamples); n = runs. Verdicts "
             f"(SCIENCE.md §4) on {who[pop]}: supported when |ρ| ≥ {st['threshold']:g} and the interval "
             f"excludes 0; "
             f"refuted when the interval contains 0 and lies inside ±{st['threshold']:g}; otherwise, or with n < "
             f"{st['min_n']}, not decidable at this n; not testable here when the attack moved nothing or the "
             f"quantity is absent. 'ZO is flatter than FO + noise' is not decidable without controls C1–C3 "
             f"(SCIENCE.md §3), which this table does not carry.")
    out = [("Explain: what accounts for the survival of forgetting", intro, None)]
    for a in dict.fromkeys(t.loc[t["kind"] != "none", "attack"]):
        ta = t[(t["attack"] == a) & (t["population"] == pop)]
        rc = ex.recovery[(ex.recovery["attack"] == a) & (ex.recovery["population"] == pop)].iloc[0]
        fr = (f"; recovery fraction {rc['fraction_mean']:.2f} [{rc['fraction_ci_low']:.2f}, "
              f"{rc['fraction_ci_high']:.2f}] (n = {rc['fraction_n']} runs that forgot)" if rc["fraction_n"] else "")
        text = [f"Recovery on {rc['recovery_data']}: mean {rc['recovery_mean']:.3f} [{rc['recovery_ci_low']:.3f}, "
                f"{rc['recovery_ci_high']:.3f}] over n = {rc['n']} {pop} runs, {rc['n_moved']} moved by at least one "
                f"fact ({rc['fact']:.3g}){fr}." if rc["n"] else f"No {pop} run has this attack's rows."]
        for role, hyp, what in (("displacement", "H-magnitude", "recovery ~ displacement"),
                                ("curvature", "H-curvature", "partial ρ given displacement"),
                                ("grade", "H-grade", "partial ρ given displacement")):
            j = ta[(ta["role"] == role) & _judged(ta)]
            if len(j):
                text.append(_sentence(a, hyp, j, what))
        shown = ta[(ta["kind"] != "none") & ~ta["reason"].str.startswith("absent")]
        tab = []
        for p in dict.fromkeys(shown["predictor"]):
            m = shown[(shown["predictor"] == p) & (shown["kind"] == "spearman")].iloc[0]
            q = shown[(shown["predictor"] == p) & (shown["kind"] == "partial spearman")]
            judged = q.iloc[0] if len(q) else m
            tab.append({"predictor": p, "role": m["role"], "n": m["n"], f"ρ [{pct}]": _ci(m),
                        f"partial ρ given displacement [{pct}]": _ci(q.iloc[0]) if len(q) else "–",
                        "verdict": judged["verdict"]})
        out.append((f"Explain: {a} ({pop} runs, n = {rc['n']})", " ".join(text), pd.DataFrame(tab)))
    te = t[(t["population"] == other) & (t["kind"] != "none") & ~t["reason"].str.startswith("absent")]
    if len(te):
        tab = []
        for (a, p), g in te.groupby(["attack", "predictor"], sort=False):
            m, q = g[g["kind"] == "spearman"].iloc[0], g[g["kind"] == "partial spearman"]
            tab.append({"attack": a, "predictor": p, "n": m["n"], f"ρ [{pct}]": _ci(m),
                        f"partial ρ given displacement [{pct}]": _ci(q.iloc[0]) if len(q) else "–"})
        out.append((f"Explain (exploratory): {'all finished runs' if other == 'finished' else 'matched runs'}",
                    f"The same correlations over {who[other]}. No verdict is drawn from them: only {who[pop]} "
                    f"decide.", pd.DataFrame(tab)))
    return out


def write_explain(out_dir, explained: Explained) -> List[Path]:
    """Write ``explain.parquet`` (``explained.table``), ``explain_recovery.parquet`` and
    ``explain_runs.parquet`` (the per-run numbers) into ``out_dir`` atomically; returns the paths.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> ex = explain(pd.DataFrame(dict(run_id=["r0", "r0"], subject=["unlearned", "attacked:n"], data="all",
    ...                                 quantity="forget_acc", value=[0.1, 0.1], attack=["none", "n"], matched=True)))
    >>> [p.name for p in write_explain(d, ex)], pd.read_parquet(d / "explain.parquet")["verdict"].iloc[0]
    (['explain.parquet', 'explain_recovery.parquet', 'explain_runs.parquet'], 'not testable here')
    """
    out = Path(out_dir)
    paths = [out / "explain.parquet", out / "explain_recovery.parquet", out / "explain_runs.parquet"]
    for df, p in zip((explained.table, explained.recovery, explained.runs), paths):
        atomic_write_parquet(df, p)
    return paths
