"""Matched forgetting in a study (issue 11, defect 1): a run matches only when it reached the
forget target *and* kept its utility (retain accuracy and general-text perplexity relative to
the base model); diverged and collapsed runs are shown, marked, never ranked, and the report's
sentences never draw a conclusion from them."""

import math
import re

import pandas as pd
import pytest

from optigrade.unlearning import ConfigError
from optigrade.analysis.config import StudyConfig
from optigrade.analysis.report import _toy_results, claim_sentences, headline_table, markdown_summary, summarize
from optigrade.analysis.study import run_study
from optigrade.unlearning.config import Setup, UnlearnConfig
from optigrade.unlearning.loop import MATCH_REASONS, match_status

BASE = {"retain_acc": 0.9, "general_ppl": 5.0}

MATCH_CASES = [  # (id, stop_reason, metrics, floors, (matched, reason))
    ("matched", "target", {"retain_acc": 0.8, "general_ppl": 9.0}, {}, (True, "target")),
    ("retain-floor", "target", {"retain_acc": 0.44, "general_ppl": 5.0}, {}, (False, "retain-floor")),
    ("retain-at-floor", "target", {"retain_acc": 0.45, "general_ppl": 5.0}, {}, (True, "target")),
    ("ppl-floor", "target", {"retain_acc": 0.9, "general_ppl": 10.5}, {}, (False, "ppl-floor")),
    ("ppl-nan", "target", {"retain_acc": 0.9, "general_ppl": math.nan}, {}, (False, "ppl-floor")),
    ("ppl-inf", "target", {"retain_acc": 0.9, "general_ppl": math.inf}, {}, (False, "ppl-floor")),
    ("retain-nan", "target", {"retain_acc": math.nan, "general_ppl": 5.0}, {}, (False, "retain-floor")),
    ("floors-off", "target", {"retain_acc": 0.0, "general_ppl": 399.0},
     {"utility_floor_retain": None, "utility_max_ppl_ratio": None}, (True, "target")),
    ("stricter", "target", {"retain_acc": 0.8, "general_ppl": 5.0}, {"utility_floor_retain": 0.95},
     (False, "retain-floor")),
    ("no-ppl-measured", "target", {"retain_acc": 0.9}, {}, (True, "target")),
    ("budget", "budget", {"retain_acc": 0.9, "general_ppl": 5.0}, {}, (False, "not-reached")),
    ("diverged", "diverged", {}, {}, (False, "diverged")),
    ("retain-guard", "retain-guard", {"retain_acc": 0.1}, {}, (False, "retain-guard")),
]


@pytest.mark.parametrize("stop,metrics,floors,want", [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_match_status(stop, metrics, floors, want):
    ok, reason, detail = match_status(stop, metrics, BASE, **floors)
    assert (ok, reason) == want and reason in MATCH_REASONS
    assert (detail == "") == ok


def test_floors_are_setup_fields_on_by_default_and_checked():
    s = Setup()
    assert (s.utility_floor_retain, s.utility_max_ppl_ratio) == (0.5, 2.0)
    assert UnlearnConfig(utility_max_ppl_ratio=None).utility_max_ppl_ratio is None
    assert StudyConfig(optimizers=[{"name": "adam", "lr": 1e-3}], utility_floor_retain=0.8).utility_floor_retain == 0.8
    for kw, msg in (({"utility_floor_retain": 1.5}, "utility_floor_retain must be in [0, 1], got 1.5"),
                    ({"utility_max_ppl_ratio": 0.5}, "utility_max_ppl_ratio must be >= 1, got 0.5"),
                    ({"utility_max_ppl_ratio": math.inf}, "utility_max_ppl_ratio must be a finite number")):
        with pytest.raises(ConfigError, match=re.escape(msg) + ".*e.g."):
            Setup(**kw)


# ----------------------------------------------------------------------------- a study
@pytest.fixture(scope="module")
def diverge_study(pretrained, bench, tmp_path_factory):
    """graddiff on the pretrained tiny model (target 0.5, a few steps): sgd at lr 1e12 (NaN loss),
    sgd at lr 1e9 (finite but collapsed: retain 0, the review's s-diverge-lr1e9 case) and two
    valid optimizers."""
    cfg = StudyConfig(name="div", objectives=["graddiff"], seeds=[0], target=0.5, eval_every=2, eval_retain=40,
                      eval_general=20, diagnostics={"enabled": False},
                      attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}],
                      optimizers=[{"name": "sgd", "label": "sgd-nan", "lr": 1e12, "steps": 6},
                                  {"name": "sgd", "label": "sgd-collapse", "lr": 1e9, "steps": 6},
                                  {"name": "adam", "lr": 3e-3, "steps": 20},
                                  {"name": "signsgd", "lr": 3e-3, "steps": 20}])
    out = tmp_path_factory.mktemp("div")
    return run_study(cfg, out, progress=False, base=pretrained[0], benchmark=bench), cfg


def _runs(res):
    return res.results.drop_duplicates("run_id").set_index("optimizer")


def test_diverged_and_collapsed_runs_are_not_matched(diverge_study):
    res, _ = diverge_study
    runs = _runs(res)
    assert runs.loc["sgd-nan", "stop_reason"] == "diverged"
    assert runs.loc["sgd-nan", "stop_note"].startswith("loss nan at step")
    assert runs.loc["sgd-collapse", "stop_reason"] == "target"  # it "reached" the target by collapsing...
    assert runs.loc["sgd-collapse", "match_reason"] == "retain-floor"  # ...which the floor catches
    assert runs.loc["sgd-nan", "match_reason"] == "diverged"
    assert list(runs["matched"]) == [False, False, False, True, True]  # reference, sgd-nan, sgd-collapse, adam, signsgd
    assert set(res.capped) == {"graddiff__sgd-nan__s0", "graddiff__sgd-collapse__s0"}
    # the floors and the base values they were applied to travel with every row
    assert (res.results["utility_max_ppl_ratio"] == 2.0).all() and (res.results["base_retain_acc"] == 1.0).all()
    # a diverged model has no numbers (NaN weights would score as perfect forgetting) and is never attacked
    r = res.results[res.results["optimizer"] == "sgd-nan"]
    assert set(r["attack"]) == {"none"} and r["value"].isna().all()


def test_report_marks_unmatched_rows_and_never_ranks_them(diverge_study):
    res, cfg = diverge_study
    t = headline_table(res.summary, "graddiff").set_index("optimizer")
    assert t.loc["sgd-nan", "steps"].endswith("(1/1 not matched: diverged)")
    assert "(1/1 not matched: retain 0.00 < 0.5 × 1.00)" in t.loc["sgd-collapse", "steps"]
    assert "not matched" not in t.loc["adam", "steps"] + t.loc["signsgd", "steps"]
    assert t.loc["sgd-nan", "none"] == "–"  # not 0.00
    md = markdown_summary(res.summary)
    assert "retain_acc ≥ 0.5 × base 1.00 = 0.50 and general perplexity ≤ 2 × base" in md
    sentences = claim_sentences(res.summary)
    first, rest = sentences[0], " ".join(sentences[1:])
    assert "sgd-nan (diverged)" in first and "sgd-collapse (retain 0.00 < 0.5 × 1.00)" in first
    assert "sgd" not in rest.replace("signsgd", "")  # no conclusion drawn from them
    assert "(signsgd, grade 0.5)" in rest  # the matched ones are compared
    report = (res.out / "report.md").read_text()
    assert "Matched = reached the forget target with retain_acc ≥ 0.5 × base 1.00" in report
    html = (res.out / "report.html").read_text()
    # the Styler greys whole rows through CSS: every cell of a greyed row is named in a rule with color #999
    greyed = set()
    for selectors in re.findall(r"([^{}]+)\{\s*color: #999;\s*\}", html):
        greyed |= {m.group(1) for m in re.finditer(r"#(T_\w+?_row\d+)_col\d+", selectors)}
    rows = {rid: re.sub(r"<[^>]+>", " ", cells) for rid, cells in
            re.findall(r'<td id="(T_\w+?_row\d+)_col0"[^>]*>(.*?)</td>', html, flags=re.S)}
    assert greyed and all("sgd-nan" in rows[r] or "sgd-collapse" in rows[r] for r in greyed)


def test_floors_judge_but_never_change_a_run(diverge_study, pretrained, bench, tmp_path):
    """Resuming with the floors off reuses every run (the floors are not in the run hash), keeps
    every number, and only relabels: the collapsed run now counts as matched."""
    import shutil

    res, cfg = diverge_study
    out = tmp_path / "again"
    shutil.copytree(res.out, out)
    off = cfg.model_copy(update={"utility_floor_retain": None, "utility_max_ppl_ratio": None})
    again = run_study(off, out, resume=True, progress=False, base=pretrained[0], benchmark=bench)
    assert again.computed == [] and len(again.skipped) == 5
    cols = ["run_id", "subject", "data", "quantity", "attack", "value", "steps", "stop_reason"]
    pd.testing.assert_frame_equal(again.results[cols], res.results[cols])
    runs = _runs(again)
    assert runs.loc["sgd-collapse", "matched"] and not runs.loc["sgd-nan", "matched"]
    assert runs["utility_max_ppl_ratio"].isna().all()


# ----------------------------------------------------------------------------- sentences (no study)
def test_sentences_never_draw_a_conclusion_from_an_unmatched_optimizer():
    """The toy's adam seed 1 reached the target with 6× the base perplexity: adam is named once,
    as not matched, and left out of the ordering and of the hybrid-vs-first-order comparison."""
    r = _toy_results()
    r["matched"], r["match_reason"], r["match_detail"] = True, "target", ""
    bad = r["run_id"] == "npo__adam__s1"
    r.loc[bad, ["matched", "match_reason", "match_detail"]] = [False, "ppl-floor", "ppl 6.2× base"]
    s = summarize(r)
    out = claim_sentences(s)
    assert out[0].startswith("For npo, adam (ppl 6.2× base) did not reach matched forgetting in 1 run(s)")
    assert all("adam" not in x for x in out[1:])
    assert any("ranges from 0.10 (zo-sgd, grade 0) to 0.20 (mix, grade 0.5)" in x for x in out)
    assert headline_table(s, "npo").set_index("optimizer").loc["adam", "steps"] == "20 (1/2 not matched: ppl 6.2× base)"
    # with one matched optimizer left nothing is ranked, and the report says so
    r.loc[r["optimizer"] == "mix", ["matched", "match_reason", "match_detail"]] = [False, "diverged", "diverged"]
    out = claim_sentences(summarize(r))
    assert any("Fewer than two optimizers are at matched forgetting in every seed (only zo-sgd)" in x for x in out)
    assert not any("ranges from" in x or "vs" in x for x in out)
