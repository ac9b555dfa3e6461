"""Grade or magnitude? The reading of a study with controls (SCIENCE.md §3), in sentences that
follow from the summary's intervals.

A control built with ``match: <run>`` has that run's displacement (C1 noise, C2 FO + matched
noise, C4 FO direction scaled to it).  For each attack the reading compares forget accuracy
after the attack, never ranking two rows whose 95% intervals overlap:

* C2 / C4 (``source`` = an FO run S, ``match`` = a run M of another grade): the control has S's
  forgetting and M's displacement.  If it ends up like M and unlike S, displacement accounts for
  M's survival (*magnitude*); if like S and unlike M, displacement alone does not (*not
  magnitude alone*); otherwise *not decidable at this n*.
* C1 (noise only, ``match`` = M): a control that does not reach the forget target shows that a
  displacement of M's size does not unlearn by itself; one that does is compared with M.
* An attack that moves no run's forget accuracy beyond its interval is *not testable here*.

Every comparison involving a run that is not at matched forgetting and utility says so.
:func:`magnitude_verdicts` returns the verdicts as rows (for JSON / tables),
:func:`magnitude_sentences` the sentences, magnitude-first when any attack says magnitude.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import pandas as pd

from ._claims import _mean

__all__ = ["control_kinds", "magnitude_verdicts", "magnitude_sentences", "magnitude_headline", "VERDICTS"]

VERDICTS = ("magnitude", "not magnitude alone", "not decidable at this n", "not testable here", "does not unlearn")


class _Ctrl(NamedTuple):
    kind: str
    source: str
    match: str


def control_kinds(results: pd.DataFrame) -> Dict[str, _Ctrl]:
    """``{control label: (kind, source, match)}`` from a study's results (its ``control_*``
    columns); empty when the study has no controls."""
    if "control_kind" not in results:
        return {}
    c = results[results["family"] == "control"].drop_duplicates("optimizer")
    return {str(r["optimizer"]): _Ctrl(str(r["control_kind"]), str(r.get("control_source", "") or ""),
                                       str(r.get("control_match", "") or "")) for _, r in c.iterrows()}


def _iv(summary, obj, opt, attack, split) -> Tuple[float, float, float]:
    return _mean(summary, obj, opt, attack, "forget_acc", split)


def _overlap(a, b) -> bool:
    return not (a[2] < b[1] or b[2] < a[1])


def _fmt(v) -> str:
    return "–" if v[0] != v[0] else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def _matched(summary: pd.DataFrame, obj: str) -> Dict[str, str]:
    """``{optimizer: ""}`` for runs all at matched forgetting and utility, else the reason."""
    s = summary[summary["objective"] == obj].drop_duplicates("optimizer")
    out = {}
    for _, r in s.iterrows():
        cap = r.get("n_capped", 0)
        why = r.get("unmatched", "")
        out[str(r["optimizer"])] = "" if not (cap == cap and cap > 0) else (why if isinstance(why, str) and why
                                                                            else "not matched")
    return out


def _attacks(summary: pd.DataFrame, obj: str) -> List[Tuple[str, str]]:
    """``(attack, split)`` for every attack of the study (relearn-half on half B)."""
    s = summary[(summary["objective"] == obj) & (summary["quantity"] == "forget_acc")]
    out = []
    for a in dict.fromkeys(s["attack"]):
        if a == "none":
            continue
        splits = set(s.loc[s["attack"] == a, "data"])
        out.append((a, "forget-half-B" if "forget-half-B" in splits and "all" not in splits else "all"))
    return out


def magnitude_verdicts(summary: pd.DataFrame, kinds: Dict[str, _Ctrl], objective: str,
                       target: Optional[float] = None) -> pd.DataFrame:
    """One row per (control, attack): the rows compared, their forget accuracy after the attack
    (estimate and 95% interval), the verdict (:data:`VERDICTS`) and why.

    >>> from optigrade.analysis.report import summarize, _toy_results
    >>> df = _toy_results(per_example=False)          # seeds-only intervals: adam after rtn4 [0.30, 0.50]
    >>> c2 = df[df["optimizer"] == "adam"].assign(optimizer="adam+zo-noise", family="control", grade=float("nan"))
    >>> c2.loc[c2["attack"] == "rtn4", "value"] = [0.0, 0.9, 0.2, 0.9]      # after rtn4 like zo-sgd
    >>> kinds = {"adam+zo-noise": _Ctrl("fo_noise", "adam", "zo-sgd")}
    >>> v = magnitude_verdicts(summarize(pd.concat([df, c2])), kinds, "npo")
    >>> v[["control", "attack", "verdict"]].to_dict("records")
    [{'control': 'adam+zo-noise', 'attack': 'rtn4', 'verdict': 'magnitude'}]
    >>> magnitude_sentences(v)[0]
    '**Magnitude accounts for the survival** at matched forgetting and utility: after rtn4: adam+zo-noise 0.10 [0.00, 0.20] vs zo-sgd 0.10 [0.00, 0.20] and adam 0.40 [0.30, 0.50].'
    >>> magnitude_sentences(v)[1]
    "After rtn4, forget accuracy: adam+zo-noise (adam plus noise of zo-sgd's size (C2)) 0.10 [0.00, 0.20], zo-sgd 0.10 [0.00, 0.20], adam 0.40 [0.30, 0.50]: **magnitude** (like zo-sgd, unlike adam)."

    """
    rows = []
    matched = _matched(summary, objective)
    for label, k in kinds.items():
        for a, split in _attacks(summary, objective):
            base = {"control": label, "kind": k.kind, "source": k.source, "match": k.match, "attack": a,
                    "data": split}
            ctrl = _iv(summary, objective, label, a, split)
            m = _iv(summary, objective, k.match, a, split) if k.match else (float("nan"),) * 3
            s = _iv(summary, objective, k.source, a, split) if k.source else (float("nan"),) * 3
            row = {**base, "control_after": ctrl[0], "control_low": ctrl[1], "control_high": ctrl[2],
                   "match_after": m[0], "match_low": m[1], "match_high": m[2],
                   "source_after": s[0], "source_low": s[1], "source_high": s[2],
                   "unmatched": "; ".join(f"{o}: {matched[o]}" for o in (label, k.match, k.source)
                                          if o and matched.get(o))}
            # did the attack move anything?  (before vs after, any of the rows compared)
            moved = False
            for o in (label, k.match, k.source):
                if not o:
                    continue
                b, x = _iv(summary, objective, o, "none", split), _iv(summary, objective, o, a, split)
                if b[0] == b[0] and x[0] == x[0] and not _overlap(b, x):
                    moved = True
            if k.kind == "noise":
                before = _iv(summary, objective, label, "none", "all")
                if target is not None and before[0] == before[0] and before[0] > target:
                    verdict, why = "does not unlearn", (f"forget accuracy {before[0]:.2f} before any attack, above "
                                                        f"the target {target:g}: a displacement of {k.match}'s size "
                                                        "does not forget by itself")
                    rows.append({**row, "verdict": verdict, "why": why})
                    continue
            if ctrl[0] != ctrl[0] or (m[0] != m[0] and s[0] != s[0]):
                verdict, why = "not decidable at this n", "rows missing"
            elif not moved:
                verdict, why = "not testable here", f"{a} moved no compared row's forget accuracy beyond its interval"
            else:
                like_m = m[0] == m[0] and _overlap(ctrl, m)
                like_s = s[0] == s[0] and _overlap(ctrl, s)
                if k.source and k.match:
                    if like_m and not like_s:
                        verdict, why = "magnitude", f"like {k.match}, unlike {k.source}"
                    elif like_s and not like_m:
                        verdict, why = "not magnitude alone", f"like {k.source}, unlike {k.match}"
                    else:
                        verdict, why = "not decidable at this n", ("its interval overlaps both" if like_m and like_s
                                                                   else "its interval overlaps neither")
                else:
                    verdict, why = ("magnitude", f"like {k.match}") if like_m else (
                        "not magnitude alone", f"unlike {k.match}")
            rows.append({**row, "verdict": verdict, "why": why})
    return pd.DataFrame(rows)


_KIND = {"noise": "noise of {m}'s per-tensor size on θ₀ (C1)",
         "fo_noise": "{s} plus noise of {m}'s size (C2)",
         "scale": "{s}'s update scaled to {m}'s ‖Δ‖ (C4)"}


def _collapsed(r) -> bool:
    """A compared row failed the retain floor: a destroyed model forgets everything and "keeps"
    it through any attack, so it says nothing about survival."""
    return "retain " in (r.unmatched or "") or "retain guard" in (r.unmatched or "")


def _cmp(r) -> str:
    out = f"{r.control} {_fmt((r.control_after, r.control_low, r.control_high))}"
    if r.match:
        out += f" vs {r.match} {_fmt((r.match_after, r.match_low, r.match_high))}"
    if r.source:
        out += f" and {r.source} {_fmt((r.source_after, r.source_low, r.source_high))}"
    return f"after {r.attack}{' (half B)' if r.data == 'forget-half-B' else ''}: {out}"


def magnitude_sentences(verdicts: pd.DataFrame) -> List[str]:
    """The reading: a headline, then one sentence per (control, attack) with its numbers and
    intervals (a control that does not unlearn gets one sentence, not one per attack).

    The headline speaks for matched comparisons only (every compared row at matched forgetting
    and utility).  When there are none, it says so first and reports the unmatched comparisons
    "for reference only", leaving out controls whose model collapsed (retain floor)."""
    if verdicts is None or verdicts.empty:
        return []
    v = verdicts.assign(unmatched=verdicts["unmatched"].fillna(""))
    decided = v[v["verdict"].isin(["magnitude", "not magnitude alone"])]
    ok = decided[decided["unmatched"] == ""]
    collapsed = pd.Series([_collapsed(r) for r in decided.itertuples()], index=decided.index, dtype=bool)
    ref = decided[(decided["unmatched"] != "").to_numpy(dtype=bool) & ~collapsed.to_numpy()]
    out = []
    if len(ok):
        mag, notmag = ok[ok["verdict"] == "magnitude"], ok[ok["verdict"] != "magnitude"]
        if len(mag):
            out.append("**Magnitude accounts for the survival** at matched forgetting and utility: "
                       + "; ".join(_cmp(r) for r in mag.itertuples()) + ".")
        if len(notmag):
            out.append(("Against it: " if len(mag) else "**Displacement alone does not account for the survival** "
                        "at matched forgetting and utility: ") + "; ".join(_cmp(r) for r in notmag.itertuples()) + ".")
    else:
        why = sorted({u for x in v["unmatched"] for u in x.split("; ") if u})
        head = ("**No comparison here is at matched forgetting and utility** (" + "; ".join(why) + "), so grade "
                "and magnitude are not separated at matched utility." if why else
                "**Grade or magnitude is not decided by this study**: no control-vs-grade comparison separates at "
                "these intervals (or the attacks moved nothing).")
        out.append(head)
        for verdict, lead in (("magnitude", "For reference only, the unmatched comparisons point to magnitude"),
                              ("not magnitude alone", "For reference only, the unmatched comparisons point away "
                                                      "from magnitude alone")):
            x = ref[ref["verdict"] == verdict]
            if len(x):
                out.append(f"{lead}: " + "; ".join(_cmp(r) for r in x.itertuples()) + ".")
    return out + _details(v)


def magnitude_headline(verdicts: pd.DataFrame) -> List[str]:
    """Only the headline sentences of :func:`magnitude_sentences` (what README puts first)."""
    if verdicts is None or verdicts.empty:
        return []
    full = magnitude_sentences(verdicts)
    return full[: len(full) - len(_details(verdicts.assign(unmatched=verdicts["unmatched"].fillna(""))))]


def _details(v: pd.DataFrame) -> List[str]:
    out: List[str] = []
    seen_no = set()
    for r in v.itertuples():
        what = _KIND.get(r.kind, r.kind).format(m=r.match or "?", s=r.source or "?")
        note = f" (not matched — {r.unmatched}: compared for reference only)" if r.unmatched else ""
        if r.verdict == "does not unlearn":
            if r.control not in seen_no:
                seen_no.add(r.control)
                out.append(f"{r.control} ({what}): **does not unlearn** ({r.why}).")
            continue
        where = " on half B" if r.data == "forget-half-B" else ""
        c = _fmt((r.control_after, r.control_low, r.control_high))
        nums = f"{r.control} ({what}) {c}"
        if r.match:
            nums += f", {r.match} {_fmt((r.match_after, r.match_low, r.match_high))}"
        if r.source:
            nums += f", {r.source} {_fmt((r.source_after, r.source_low, r.source_high))}"
        out.append(f"After {r.attack}, forget accuracy{where}: {nums}: **{r.verdict}** ({r.why}){note}.")
    return out
