"""Reports: summaries against closed forms, claim sentences chosen by grade / family (not by
label), Markdown and HTML from the same sections, the printed summary and the README block."""

import io
import math
import re
from types import SimpleNamespace as NS

import pandas as pd
import pytest

from optigrade.analysis.report import (README_END, README_START, _toy_results, claim_sentences, headline_table,
                                       load_study, markdown_summary, print_summary, render_block, summarize,
                                       update_readme, write_report)


def test_summarize_t_interval_closed_form():
    """Unbounded quantities keep the Student-t interval (here the toy's accuracies renamed to NLLs)."""
    r = _toy_results(per_example=False)
    r["quantity"] = r["quantity"].str.replace("_acc", "_nll")
    s = summarize(r)
    x = s[(s["optimizer"] == "adam") & (s["attack"] == "rtn4") & (s["quantity"] == "forget_nll")].iloc[0]
    sd = math.sqrt(((0.3 - 0.4) ** 2 + (0.5 - 0.4) ** 2) / 1)
    assert x["mean"] == pytest.approx(0.4) and x["sd"] == pytest.approx(sd) and x["estimate"] == x["mean"]
    assert x["ci95"] == pytest.approx(12.706204736 * sd / math.sqrt(2)) and x["interval_kind"] == "t"
    assert (x["ci_low"], x["ci_high"]) == (pytest.approx(0.4 - x["ci95"]), pytest.approx(0.4 + x["ci95"]))
    assert x["family"] == "first-order" and x["n_capped"] == 0 and x["steps_mean"] == 20


def test_accuracy_cells_stay_in_the_unit_interval():
    """The toy's accuracies: every interval inside [0, 1] (the t-interval gave 0.40 ± 1.27), and
    every table cell reads "m [lo, hi] (per-seed values)"."""
    s = summarize(_toy_results())
    assert ((s["ci_low"] >= 0) & (s["ci_high"] <= 1)).all() and s["ci95"].isna().all()
    t = headline_table(s, "npo")
    assert t.loc[t["optimizer"] == "adam", "rtn4"].item() == "0.40 [0.17, 0.65] (0.30/0.50)"
    cell = re.compile(r"^(\d\.\d\d) \[(\d\.\d\d), (\d\.\d\d)\] \((\d\.\d\d)/(\d\.\d\d)\)$")
    for v in t[["none", "rtn4"]].to_numpy().ravel():
        m = cell.match(v)
        assert m, v
        est, lo, hi, *seeds = map(float, m.groups())
        assert 0 <= lo <= hi <= 1 and est == pytest.approx(sum(seeds) / 2, abs=0.006)
    assert "±" not in markdown_summary(s)


def test_claims_compare_the_intervals_low_and_high():
    """Two optimizers whose accuracy intervals do not overlap are ranked as resolved; widening
    one (fewer facts) makes the same means unresolved."""
    r = _toy_results()
    sep = claim_sentences(summarize(r))
    assert "the extremes’ 95% intervals overlap" in sep[1]
    big = r.copy()  # 20 × as many facts, same accuracies: the intervals shrink and separate
    big["per_example"] = big["per_example"].map(lambda b: b * 20)
    out = claim_sentences(summarize(big))
    assert "intervals overlap" not in out[1] and out[1].endswith("as the paper claims.")
    assert out[3].endswith("utility is lower with mix.")


def _relabel(results, names):
    r = results.copy()
    r["optimizer"] = r["optimizer"].replace(names)
    r["run_id"] = [f"{o}__{s}" for o, s in zip(r["optimizer"], r["seed"])]
    return r


def test_claims_choose_rows_by_family_not_label():
    base = claim_sentences(summarize(_toy_results()))
    names = {"mix": "blend", "adam": "fo-baseline", "zo-sgd": "zo"}
    renamed = claim_sentences(summarize(_relabel(_toy_results(), names)))
    assert len(renamed) == len(base) == 5
    for a, b in zip(base, renamed):
        for old, new in names.items():
            a = re.sub(rf"\b{re.escape(old)}\b", new, a)
        assert a == b
    assert renamed[2].startswith("blend vs fo-baseline vs ZO: after rtn4 blend's forget accuracy is 0.20")


def test_claims_without_a_hybrid_family_skip_the_comparison():
    r = _toy_results()
    r.loc[r["optimizer"] == "mix", "family"] = "compressed-first-order"
    out = claim_sentences(summarize(r))
    assert not any(" vs ZO:" in x or "Before any attack" in x for x in out)
    # a summary without the family column (written before it existed) still gives sentences
    out2 = claim_sentences(summarize(r.drop(columns=["family"])))
    assert out2 == out


OLD_NAMES = {"quantity": "metric", "data": "eval_split", "setting_bits": "diag_bits"}


def test_load_study_reads_a_study_written_before_the_tidy_schema(tmp_path):
    """Old column names (metric, eval_split, diag_bits) and a summary without ``family``."""
    res = _toy_results()
    new = summarize(res)
    res.rename(columns=OLD_NAMES).to_parquet(tmp_path / "results.parquet")
    new.drop(columns=["family"]).rename(columns=OLD_NAMES).to_parquet(tmp_path / "summary.parquet")
    r, summ = load_study(tmp_path)
    pd.testing.assert_frame_equal(summ, new)
    pd.testing.assert_frame_equal(r, res)
    assert claim_sentences(new.rename(columns=OLD_NAMES)) == claim_sentences(new)
    with pytest.raises(FileNotFoundError, match="holds no results.parquet"):
        load_study(tmp_path / "nothing")


def test_headline_table_of_a_metric_without_rows():
    t = headline_table(summarize(_toy_results()), "npo", metric="general_ppl")
    assert t.empty and list(t.columns) == ["optimizer", "grade", "steps"]


def test_markdown_and_html_have_the_same_sections(tmp_path):
    res = _toy_results()
    md = write_report(tmp_path, res, summarize(res), NS(model="tiny", eval_retain=7), {"name": "toy", "seconds": 1.5})
    text, page = md.read_text(), (tmp_path / "report.html").read_text()
    titles = re.findall(r"^## (.+)$", text, flags=re.M)
    assert titles == [t.replace("&#x27;", "'") for t in re.findall(r"<h2>(.+?)</h2>", page)]
    assert len(titles) == 3 + 4 + 1  # setup, matched, sentences; four metrics of npo (no diagnostics); Explain
    # the answer first, then Explain, then the other tables; setup and bookkeeping in the appendix
    assert titles[0].startswith("What the numbers say") and titles[1].startswith("npo: forget accuracy")
    assert titles[2] == "Explain" and "Not run: the table predates the tidy schema" in text
    assert titles[-2].startswith("Appendix: Setup") and titles[-1].startswith("Appendix: Matched forgetting")
    assert text.count("\n|---") + text.count("_(no rows)_") == page.count("<table") == 1 + 4  # matched + 4 metrics
    assert "(eval_retain=7)" in text and "wall time 1.5 s" in text
    assert "_(no rows)_" in text  # forget_para_acc / general_ppl are not in the toy


def test_print_summary_block():
    res = NS(summary=summarize(_toy_results()), computed=["a"], skipped=["b", "c"], seconds=9.6, capped=["x"],
             out="runs/toy")
    buf = io.StringIO()
    print_summary(res, NS(model="smollm2"), file=buf)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("**npo**") and lines[-1] == ("1 run(s) computed, 2 reused, 10 s; 1 not at matched "
                                                            "forgetting (step cap / retain guard / divergence / utility floor); "
                                                            "results under runs/toy")
    assert sum(x.startswith("- ") for x in lines) == 5 and "smollm2 on a handful of real facts" in buf.getvalue()


def test_update_readme_check_mode(tmp_path):
    _toy_results().to_parquet(tmp_path / "results.parquet")
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- demo-table:start -->\nold\n<!-- demo-table:end -->\nb\n")
    assert update_readme(tmp_path, readme, check=True) and "old" in readme.read_text()
    assert update_readme(tmp_path, readme) and not update_readme(tmp_path, readme)
    text = readme.read_text()
    assert text.startswith("a\n<!-- demo-table:start -->\n**npo**") and text.endswith("<!-- demo-table:end -->\nb\n")
    from optigrade.cli import main

    assert main(["report", str(tmp_path), "--readme", str(readme), "--check"]) == 0
    readme.write_text(readme.read_text().replace("**npo**", "**stale**"))
    assert main(["report", str(tmp_path), "--readme", str(readme), "--check"]) == 1
    assert main(["report", str(tmp_path), "--readme", str(readme)]) == 0
    readme.write_text("no markers\n")
    assert main(["report", str(tmp_path), "--readme", str(readme)]) == 2


def test_readme_block_of_a_study_run_here_and_its_check(tmp_path, small_bench, small_model, capsys):
    """The README mechanism on a study this test runs (CI has no runs/demo): the block is what
    :func:`render_block` makes from the study's tables (accuracy cells with per-fact bootstrap
    intervals inside [0, 1]), ``--check`` says "up to date" right after writing and "out of date"
    once the block is edited by hand, and rewriting restores it."""
    from optigrade.analysis.config import StudyConfig
    from optigrade.analysis.study import run_study
    from optigrade.cli import main

    from .conftest import small_study_dict

    cfg = StudyConfig(**small_study_dict(seeds=[0, 1], attacks=[{"kind": "quantize", "label": "rtn4", "bits": 4}],
                                         diagnostics={"bits": []}, geometry={"enabled": False}))
    out = tmp_path / "study"
    res = run_study(cfg, out, progress=False, base=small_model, benchmark=small_bench)
    acc = res.summary[res.summary["quantity"].str.endswith("_acc")]
    assert set(acc["interval_kind"]) == {"bootstrap facts×seeds"}
    assert ((acc["ci_low"] >= 0) & (acc["ci_high"] <= 1)).all()
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{README_START}\nstale\n{README_END}\n\nmore\n")
    assert main(["report", str(out), "--readme", str(readme), "--check"]) == 1  # stale before writing
    assert main(["report", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert render_block(out) in text and text.endswith(f"{README_END}\n\nmore\n")
    assert re.search(r"\| adam \| 1 \| 2 \| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(\d\.\d\d/\d\.\d\d\) \|", text), text
    capsys.readouterr()
    assert main(["report", str(out), "--readme", str(readme), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    readme.write_text(text.replace("| adam | 1 | 2 |", "| adam | 1 | 3 |"))  # a hand edit of a number
    assert main(["report", str(out), "--readme", str(readme), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert update_readme(out, readme)  # rewriting restores the generated block
    assert readme.read_text() == text and not update_readme(out, readme, check=True)


def test_report_opens_with_the_headline_figures_and_greys_unmatched_rows(tmp_path):
    res = _toy_results()
    (tmp_path / "figures").mkdir()
    for stem in ("magnitude", "forget_utility", "curves"):
        (tmp_path / "figures" / f"{stem}.png").write_bytes(b"\x89PNG")
    md = write_report(tmp_path, res, summarize(res), NS(model="tiny", eval_retain=7), {"name": "toy"})
    text, page = md.read_text(), (tmp_path / "report.html").read_text()
    imgs = re.findall(r"!\[[^]]*\]\((figures/[^)]+)\)", text)
    assert imgs == ["figures/forget_utility.png", "figures/magnitude.png"]  # headline ones only, in order
    assert text.index("figures/forget_utility.png") < text.index("## ")  # the first figure opens the report
    assert text.index("## npo: forget accuracy") < text.index("figures/magnitude.png") < text.index("## Explain")
    assert re.findall(r"<img src='([^']+)'", page) == imgs and page.index("<img") < page.index("<h2>")
    from optigrade.analysis.report import _styled

    styled = _styled(pd.DataFrame({"optimizer": ["adam", "zo-sgd"], "steps": ["12", "40 (2/3 not matched)"],
                                   "value": [0.125, float("nan")]}))
    rows = re.findall(r"<tr>(.*?)</tr>", styled, flags=re.S)
    grey_ids = re.search(r"([^{]*)\{\s*color: #999;", styled).group(1)
    assert "row1_col0" in grey_ids and "row0_col" not in grey_ids  # the unmatched row, all of it, only it
    assert ">0.125<" in styled and ">–<" in styled and len(rows) == 3
