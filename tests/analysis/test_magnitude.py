"""analysis.magnitude: verdicts follow the intervals; the headline speaks for matched comparisons
only and says first when there are none; a collapsed control is left out of it."""

import pandas as pd

from optigrade.analysis.magnitude import _Ctrl, magnitude_sentences, magnitude_verdicts
from optigrade.analysis.report import _toy_results, summarize


def _study(zo_unmatched=False, c2_after=(0.0, 0.9, 0.2, 0.9)):
    df = _toy_results(per_example=False)
    c2 = df[df["optimizer"] == "adam"].assign(optimizer="adam+zo-noise", family="control", grade=float("nan"))
    c2.loc[c2["attack"] == "rtn4", "value"] = list(c2_after)
    if zo_unmatched:
        df.loc[df["optimizer"] == "zo-sgd", "stop_reason"] = "budget"
    return summarize(pd.concat([df, c2]))


KINDS = {"adam+zo-noise": _Ctrl("fo_noise", "adam", "zo-sgd")}


def test_matched_magnitude_is_the_headline():
    v = magnitude_verdicts(_study(), KINDS, "npo")
    assert v["verdict"].tolist() == ["magnitude"] and (v["unmatched"] == "").all()
    assert magnitude_sentences(v)[0].startswith("**Magnitude accounts for the survival** at matched")


def test_like_the_source_is_not_magnitude_alone():
    v = magnitude_verdicts(_study(c2_after=(0.35, 0.9, 0.45, 0.9)), KINDS, "npo")  # like adam [0.30, 0.50]
    assert v["verdict"].tolist() == ["not magnitude alone"]
    assert magnitude_sentences(v)[0].startswith("**Displacement alone does not account")


def test_unmatched_comparisons_are_for_reference_only():
    v = magnitude_verdicts(_study(zo_unmatched=True), KINDS, "npo")
    assert v["verdict"].tolist() == ["magnitude"] and v["unmatched"].iloc[0] == "zo-sgd: not matched"
    s = magnitude_sentences(v)
    assert s[0].startswith("**No comparison here is at matched forgetting and utility** (zo-sgd: not matched)")
    assert s[1].startswith("For reference only, the unmatched comparisons point to magnitude: after rtn4")
    assert "compared for reference only" in s[2]
    from optigrade.analysis.magnitude import magnitude_headline

    assert magnitude_headline(v) == s[:2]


def test_overlapping_both_is_not_decidable_and_nothing_moved_is_not_testable():
    v = magnitude_verdicts(_study(c2_after=(0.1, 0.9, 0.3, 0.9)), KINDS, "npo")  # [0.1, 0.3]: overlaps both
    assert v["verdict"].tolist() == ["not decidable at this n"]
    df = _toy_results(per_example=False)
    df.loc[df["attack"] == "rtn4", "value"] = df.loc[df["attack"] == "none", "value"].to_numpy()  # rtn4 moved nothing
    c2 = df[df["optimizer"] == "adam"].assign(optimizer="adam+zo-noise", family="control", grade=float("nan"))
    v = magnitude_verdicts(summarize(pd.concat([df, c2])), KINDS, "npo")
    assert v["verdict"].tolist() == ["not testable here"]


def test_nothing_decided_gives_the_undecided_headline():
    """Only "does not unlearn" / "not testable" rows (nothing decided): no crash on the empty
    selection (pandas' string dtype), and the headline says nothing is decided."""
    df = _toy_results(per_example=False)
    df.loc[df["attack"] == "rtn4", "value"] = df.loc[df["attack"] == "none", "value"].to_numpy()
    c2 = df[df["optimizer"] == "adam"].assign(optimizer="adam+zo-noise", family="control", grade=float("nan"))
    v = magnitude_verdicts(summarize(pd.concat([df, c2])), KINDS, "npo")
    s = magnitude_sentences(v)
    assert s[0].startswith("**Grade or magnitude is not decided by this study**") and len(s) == 2
