"""The claim sentences of a study report (private): prose generated from the summary table.

Each sentence is one small function of a :class:`Claim` (the summary rows of one objective);
optimizers are picked by their ``grade`` and ``family`` columns, never by label.  No sentence
draws a conclusion from an optimizer with a run that is not at matched forgetting
(``n_capped > 0``: step cap, retain guard, divergence or a utility floor); the first sentence
names those optimizers and why.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import pandas as pd


#: optimizer families that are controls of SCIENCE.md §3, never compared as a grade
CONTROL_FAMILIES = ("control", "first-order+noise")


def by_grade(summary: pd.DataFrame) -> List[str]:
    """Optimizer labels of ``summary`` by grade (no grade, e.g. the original model, last), then label."""
    o = summary[["optimizer", "grade"]].drop_duplicates("optimizer")
    o = o.assign(g=o["grade"].fillna(9)).sort_values(["g", "optimizer"])
    return list(o["optimizer"])


def _mean(summary, objective, opt, attack, metric="forget_acc", split="all"):
    """``(estimate, ci_low, ci_high)`` of one summary row (NaN when absent or without an
    interval); a summary written before the interval columns gives ``mean ∓ ci95``."""
    x = summary[(summary["objective"] == objective) & (summary["optimizer"] == opt) & (summary["attack"] == attack)
                & (summary["quantity"] == metric) & (summary["data"] == split)]
    if not len(x):
        return (float("nan"),) * 3
    r = x.iloc[0]
    if "ci_low" in x:
        return float(r["estimate"] if "estimate" in x else r["mean"]), float(r["ci_low"]), float(r["ci_high"])
    m, h = float(r["mean"]), float(r["ci95"])
    return m, m - h, m + h


class Claim(NamedTuple):
    """What the sentences are about, read from the summary of one objective."""

    summary: pd.DataFrame  # every objective (``_mean`` filters)
    obj: str
    attacks: list  # attack labels, in table order
    kinds: dict  # attack label -> kind
    opts: list  # optimizer labels by grade
    grade: dict  # optimizer label -> grade
    family: dict  # optimizer label -> family ("" when the summary has none)
    runs: pd.DataFrame  # one row per optimizer (n, n_capped, ...)

    def matched(self) -> List[str]:
        """The optimizers (by grade) whose every run is at matched forgetting."""
        return [o for o in self.opts if not self.runs.loc[o, "n_capped"] > 0]

    def role(self, family: str) -> Optional[str]:
        """The first matched optimizer (by grade, then label) of ``family``."""
        return next((o for o in self.matched() if self.family.get(o) == family), None)

    def zo(self) -> List[str]:
        """The matched zeroth-order (grade 0) optimizers."""
        return [o for o in self.matched() if self.grade.get(o) == 0]


def claim_of(summary: pd.DataFrame, obj: str) -> Claim:
    s = summary[(summary["objective"] == obj) & (summary["quantity"] == "forget_acc")]
    # controls (analysis.controls: no grade) and FO + noise (C3: sgld, noisy-adam) are controls, not grades: the grade
    # sentences leave them out
    s = s[s["grade"].notna() & ~(s["family"].isin(CONTROL_FAMILIES) if "family" in s else False)]
    family = dict(zip(s["optimizer"], s["family"])) if "family" in s else {}
    return Claim(summary, obj, list(dict.fromkeys(s["attack"])), dict(zip(s["attack"], s["attack_kind"])),
                  by_grade(s), dict(zip(s["optimizer"], s["grade"])), family,
                  s.drop_duplicates("optimizer").set_index("optimizer"))


def _matched_sentence(c: Claim) -> str:
    capped = [o for o in c.opts if c.runs.loc[o, "n_capped"] > 0]
    if not capped:
        return (f"For {c.obj}, every optimizer reached the forget target in every seed, so the rows compare "
                f"matched forgetting.")
    def why(o):
        w = c.runs.loc[o, "unmatched"] if "unmatched" in c.runs else ""
        return f"{o} ({w})" if isinstance(w, str) and w else o

    return (f"For {c.obj}, {', '.join(why(o) for o in capped)} did not reach matched forgetting in "
            f"{sum(int(c.runs.loc[o, 'n_capped']) for o in capped)} "
            f"run(s) (step cap, retain guard, divergence or a utility floor), so those rows are shown but "
            f"neither ranked nor compared: their post-attack numbers reflect unlearning less or a damaged "
            f"model, not robustness.")


def _ordering_sentence(c: Claim, a: str, what: str) -> Optional[str]:
    """How forget accuracy after attack ``a`` orders with grade, among matched runs."""
    vals = {o: _mean(c.summary, c.obj, o, a) for o in c.matched()}
    vals = {o: v for o, v in vals.items() if v[0] == v[0]}
    if len(vals) < 2:
        return None
    ranked = sorted(vals, key=lambda o: vals[o][0])
    by_grade = {}
    for o, (m, *_) in vals.items():
        by_grade.setdefault(c.grade[o], []).append(m)
    gm = {g: sum(v) / len(v) for g, v in by_grade.items()}
    gs = sorted(gm)
    mono = all(gm[gs[i]] <= gm[gs[i + 1]] + 1e-12 for i in range(len(gs) - 1))
    rev = all(gm[gs[i]] >= gm[gs[i + 1]] - 1e-12 for i in range(len(gs) - 1))
    if len(gs) < 2:  # one grade: nothing to order by grade
        order = f"not comparable across grades (every matched optimizer has grade {gs[0]:g})"
    else:
        order = ("monotone with lower grade = more robust, as the paper claims" if mono else
                 "reversed (higher grade = more robust), the opposite of the paper's claim" if rev else
                 "not monotone in grade, so the paper's ordering is not reproduced here")
    best, worst = ranked[0], ranked[-1]
    return (f"After {what} ({a}), forget accuracy among matched runs ranges from {vals[best][0]:.2f} "
            f"({best}, grade {c.grade[best]:g}) to {vals[worst][0]:.2f} ({worst}, grade {c.grade[worst]:g}); "
            f"averaged per grade ({', '.join(f'{g:g}: {gm[g]:.2f}' for g in gs)}) the ordering is {order}"
            f"{_unresolved(vals[best], vals[worst], 'the extremes’')}.")


def _no_interval(x) -> bool:
    return x[1] != x[1] or x[2] != x[2]


def _separated(x, y) -> bool:
    """The 95% intervals ``[low, high]`` of two ``(estimate, low, high)`` triples do not overlap
    (never when one is missing: one seed without per-fact matches gives no interval).

    >>> _separated((0.1, 0.0, 0.2), (0.5, 0.3, 0.7)), _separated((0.1, 0.0, 0.4), (0.5, 0.3, 0.7))
    (True, False)
    >>> _separated((0.1, float("nan"), float("nan")), (0.9, 0.8, 1.0))
    False
    """
    if _no_interval(x) or _no_interval(y):
        return False
    lo, hi = (x, y) if x[0] <= y[0] else (y, x)
    return lo[2] < hi[1]


def _unresolved(x, y, whose: str) -> str:
    if _separated(x, y):
        return ""
    if _no_interval(x) or _no_interval(y):
        return f", but {whose} values have no interval (one seed), so the ranking is not statistically resolved"
    return f", and {whose} 95% intervals overlap, so the ranking is not statistically resolved"


def _comparison_sentence(c: Claim, attacks: List[str]) -> Optional[str]:
    """The hybrid-family optimizer vs the first-order one vs the first ZO one, after ``attacks``."""
    mixed, fo, zo = c.role("hybrid"), c.role("first-order"), c.zo()
    if mixed is None or fo is None:
        return None
    comp = []
    for a in attacks:
        h, ad = _mean(c.summary, c.obj, mixed, a), _mean(c.summary, c.obj, fo, a)
        z = _mean(c.summary, c.obj, zo[0], a) if zo else (float("nan"),) * 3
        if h[0] == h[0] and ad[0] == ad[0]:
            rel = ("not distinguishable (95% intervals overlap or are missing) from" if not _separated(h, ad) else
                   "below" if h[0] < ad[0] else "above")
            zt = f" and {zo[0]} {z[0]:.2f}" if z[0] == z[0] else ""
            comp.append(f"after {a} {mixed}'s forget accuracy is {h[0]:.2f}, {rel} {fo}'s {ad[0]:.2f}{zt}")
    return f"{mixed} vs {fo} vs ZO: " + "; ".join(comp) + "." if comp else None


def _retain_sentence(c: Claim) -> Optional[str]:
    mixed, fo = c.role("hybrid"), c.role("first-order")
    if mixed is None or fo is None:
        return None
    hr, ar = _mean(c.summary, c.obj, mixed, "none", "retain_acc"), _mean(c.summary, c.obj, fo, "none", "retain_acc")
    if not (hr[0] == hr[0] and ar[0] == ar[0]):
        return None
    zr = ", ".join(f"{_mean(c.summary, c.obj, o, 'none', 'retain_acc')[0]:.2f} for {o}" for o in c.zo())
    verdict = ("not resolved between them (95% intervals overlap or are missing)" if not _separated(hr, ar) else
               f"{'higher' if hr[0] > ar[0] else 'lower'} with {mixed}")
    return (f"Before any attack retain accuracy is {hr[0]:.2f} for {mixed}, {ar[0]:.2f} for {fo}"
            f"{' and ' + zr if zr else ''}: utility is {verdict}.")


def _caveat(c: Claim, model: str) -> str:
    if model == "tiny":
        return ("What this does not show: it is a 430k-parameter Llama on synthetic facts with RTN fake-quantization "
                "and a few seeds, not MUSE/WMDP on 7B models with bitsandbytes, so it tests the mechanism, "
                "not the paper's numbers.")
    n = int(c.runs["n"].max()) if "n" in c.runs and len(c.runs) else 0
    return (f"What this does not show: it is {model} on a handful of real facts"
            f"{' with one seed' if n <= 1 else f' with {n} seeds'}, so a difference of one or two facts "
            "is within noise; it tests the mechanism on a real model in its real format, not the paper's "
            "7B numbers.")


def sentences(summary: pd.DataFrame, objective: Optional[str] = None, model: str = "tiny") -> List[str]:
    """The sentences of :func:`optigrade.analysis.report.claim_sentences`, in order."""
    objs = [o for o in dict.fromkeys(summary["objective"]) if o != "none"]
    if not objs:
        return ["No unlearning runs in this study."]
    c = claim_of(summary, objective if objective in objs else ("npo" if "npo" in objs else objs[0]))
    out = [_matched_sentence(c)]
    if len(c.matched()) < 2:
        only = f" (only {c.matched()[0]})" if c.matched() else ""
        out.append(f"Fewer than two optimizers are at matched forgetting in every seed{only}, so for {c.obj} this "
                   "study ranks nothing and draws no conclusion about the grade claim.")
    q4 = next((a for a in c.attacks if c.kinds.get(a) == "quantize" and "4" in a), None)
    gg = next((a for a in c.attacks if c.kinds.get(a) == "gguf"), None)
    rl = [a for a in c.attacks if c.kinds.get(a) == "relearn"]
    for a, what in ((gg, "the GGUF re-export"), (q4, "4-bit RTN quantization"), (rl[0] if rl else None, "relearning")):
        if a is not None:
            out.append(_ordering_sentence(c, a, what))
    out += [_comparison_sentence(c, ([q4] if q4 else []) + rl[:1]), _retain_sentence(c), _caveat(c, model)]
    return [x for x in out if x is not None][:7]
