"""optigrade.paper and paper/: generation from a small synthetic study is reproducible, every
macro the prose uses is defined in numbers.tex, the prose types no result number, an absent study
reads n/a with a footnote, and (when TeX is installed) the PDF builds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optigrade import paper
from optigrade.analysis.report import summarize

PAPER = Path(__file__).resolve().parents[2] / "paper"
SECTIONS = sorted((PAPER / "sections").glob("*.tex"))

#: structural tokens with digits that are not results (format names, the model's name, the
#: interval level, "4-bit", the control ids of the analysis plan); everything else with a digit in
#: the prose must come from a macro
ALLOWED = [r"\d+-bit", r"Q\d\\?_\d", r"SmolLM2(-135M)?", r"95\\%", r"\bC[1-7]\b", r"\bG[1-5]\b", r"[12]-D",
           r"\bF32\b", r"\bL24-29\b", r"\bsha256\b"]
#: capitalised LaTeX commands that are not ours (standard LaTeX, packages in main.tex)
STANDARD = {"Phi", "Delta", "Sigma", "Big", "LaTeX", "TeX", "Pr", "S"}


def _study(root: Path, name: str = "demo") -> Path:
    """A tiny finished study in ``root/name``: the original model, zo-sgd, adam and one control
    (noise-like-zo) × 3 seeds, attacks gguf and relearn-half (halves A and B), 8 facts each, with
    the weight diagnostics, a theory row and an explain table."""
    rng = np.random.default_rng(0)
    bits = lambda acc: "".join("1" if i < round(acc * 8) else "0" for i in range(8))  # noqa: E731
    rows = []
    ref = dict(run_id="reference", optimizer="original", objective="none", grade=np.nan, family="", seed=0,
               matched=False, match_reason="reference", match_detail="", steps=0, target=0.25, stop_reason="none",
               lr=np.nan, step_cap=0, unlearn_seconds=0.0, model="tiny", setting_bits=np.nan, setting_quantizer=None,
               attack_kind="none", uncertainty=np.nan, mu=np.nan)
    for d in ("all", "forget-half-A", "forget-half-B"):
        for a in ("none", "gguf"):
            rows.append(dict(ref, data=d, quantity="forget_acc", attack=a, value=1.0, per_example=bits(1.0)))
    rows += [dict(ref, data="all", quantity="heldout_acc", attack="none", value=1.0, per_example=bits(1.0)),
             dict(ref, data="all", quantity="general_ppl", attack="none", value=20.0),
             dict(ref, data="forget", quantity="theory_smoothed_gap", attack="none", mu=1e-3, value=1e-4,
                  uncertainty=2e-5),
             dict(ref, data="forget", quantity="theory_smoothed_gap_predicted", attack="none", mu=1e-3, value=1.2e-4),
             dict(ref, data="forget", quantity="theory_smoothed_gap_ratio", attack="none", mu=1e-3, value=0.83,
                  uncertainty=0.1)]
    for opt, grade, fam in (("zo-sgd", 0.0, "zeroth-order"), ("adam", 1.0, "first-order"),
                            ("noise-like-zo", np.nan, "control")):
        for s in range(3):
            run = dict(ref, run_id=f"npo__{opt}__s{s}", optimizer=opt, objective="npo", grade=grade, family=fam, seed=s,
                       matched=s != 2, match_reason="target" if s != 2 else "ppl-floor",
                       match_detail="" if s != 2 else "ppl 2.5× base", steps=10 + s, lr=1e-3, step_cap=50)
            for a, d in (("none", "all"), ("gguf", "all"), ("none", "forget-half-B"), ("none", "forget-half-A"),
                         ("relearn-half", "forget-half-B"), ("relearn-half", "forget-half-A")):
                acc = float(rng.integers(0, 5)) / 8 if a != "relearn-half" or d.endswith("B") else 1.0
                rows.append(dict(run, data=d, attack=a, quantity="forget_acc", value=acc, per_example=bits(acc),
                                 attack_kind={"none": "none", "gguf": "gguf"}.get(a, "relearn")))
            rows += [dict(run, data="all", attack="none", quantity="heldout_acc", value=0.75, per_example=bits(0.75)),
                     dict(run, data="all", attack="none", quantity="general_ppl", value=25.0 + s),
                     dict(run, data="weights", attack="none", quantity="diag_update_norm", value=1.0 + s),
                     dict(run, data="weights", attack="none", quantity="diag_half_steps_mean", value=0.5 + s,
                          setting_quantizer="gguf"),
                     dict(run, data="weights", attack="gguf", quantity="geo_cos_attack_update", value=0.9)]
    d = root / name
    d.mkdir(parents=True)
    res = pd.DataFrame(rows)
    res.to_parquet(d / "results.parquet")
    summarize(res).to_parquet(d / "summary.parquet")
    pd.DataFrame([dict(population="matched", decides=True, attack="gguf", recovery_data="all", response="forget_acc",
                       role="displacement", predictor="diag_update_norm[weights]", control="none", kind="spearman",
                       hypothesis="H-magnitude", n=6, rho=-0.5, ci_low=-0.9, ci_high=0.3, level=0.95, n_boot=100,
                       n_dropped=0, verdict="not decidable at this n", reason="n = 6 < 12 runs")]
                 ).to_parquet(d / "explain.parquet")
    return d


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    study = _study(root)
    out = root / "gen"
    got = paper.generate([study], out, tex_dir=PAPER, figures=False)
    return root, study, out, got


def _defined(numbers: str) -> set:
    return set(re.findall(r"\\OGset\{([^}]*)\}", numbers))


def test_generation_is_reproducible(generated, tmp_path):
    root, study, out, _ = generated
    again = tmp_path / "gen"
    paper.generate([study], again, tex_dir=PAPER, figures=False)
    assert (out / "numbers.tex").read_text() == (again / "numbers.tex").read_text()
    names = sorted(p.name for p in (out / "tables").glob("*.tex"))
    assert names == sorted(p.name for p in (again / "tables").glob("*.tex"))
    assert {"demo-npo-forget.tex", "demo-npo-controls.tex", "demo-npo-relearn.tex", "demo-explain.tex"} <= set(names)
    for n in names:
        assert (out / "tables" / n).read_text() == (again / "tables" / n).read_text(), n
    assert (out / "MANIFEST.json").read_text() == (again / "MANIFEST.json").read_text()


def test_numbers_carry_intervals_and_provenance(generated):
    _, study, out, got = generated
    numbers = (out / "numbers.tex").read_text()
    assert r"\OGset{demo/npo/forget/original/none}{\OGci{1.00}{1.00}{1.00}}" in numbers
    assert re.search(r"\\OGset\{demo/npo/forget/adam/gguf\}\{\\OGci\{[\d.]+\}\{[\d.]+\}\{[\d.]+\}\}", numbers)
    assert r"\OGset{demo/npo/matched/adam}{2/3}" in numbers
    assert r"\OGset{demo/npo/relearnedA/adam}{1.00}" in numbers
    assert r"\OGset{demo/explain/gguf/magnitude/verdict}{not decidable at this n}" in numbers
    m = json.loads((out / "MANIFEST.json").read_text())
    from optigrade._files import sha256_file

    assert m["studies"]["demo"]["sha256"]["results.parquet"] == sha256_file(study / "results.parquet")
    assert m["numbers"]["demo/npo/forget/adam/gguf"]["study"] == "demo"
    assert m["tables"]["tables/demo-npo-forget.tex"] == "demo"
    table = (out / "tables" / "demo-npo-forget.tex").read_text()
    assert r"\toprule" in table and r"\texttt{zo-sgd} & 0 & 2/3 &" in table


def test_absent_study_reads_na_with_a_footnote(generated):
    _, _, out, got = generated
    numbers = (out / "numbers.tex").read_text()
    assert "smollmtwocontrols" in got["missing"]
    assert r"\OGset{smollmtwocontrols/npo/forget/adam/gguf}{n/a}" in numbers
    note = re.search(r"\\OGset\{smollmtwocontrols/@note\}\{(.*)\}$", numbers, re.M).group(1)
    assert note.startswith(r"\footnote{") and "was missing" in note


def test_every_macro_the_prose_uses_is_defined(generated):
    _, _, out, _ = generated
    numbers = (out / "numbers.tex").read_text()
    keys = _defined(numbers)
    used = paper.prose_keys(PAPER)
    assert used, "the prose uses no generated number"
    assert [k for k in used if k not in keys] == []
    # every capitalised command the prose uses is ours (numbers.tex or main.tex) or standard LaTeX
    ours = set(re.findall(r"\\(?:providecommand|newcommand)\{?\\([A-Za-z]+)", numbers + (PAPER / "main.tex").read_text()))
    ours |= set(re.findall(r"\\newtheorem\{([A-Za-z]+)\}", (PAPER / "main.tex").read_text()))
    prose = "\n".join(p.read_text() for p in [PAPER / "main.tex", *SECTIONS])
    cmds = set(re.findall(r"\\([A-Z][A-Za-z]*)", prose))
    assert sorted(cmds - ours - STANDARD) == []


def _strip(text: str) -> str:
    """The prose of a section without what may hold digits legitimately: comments, math,
    citations, labels and references, file names, and the arguments of the number macros."""
    text = re.sub(r"(?<!\\)%.*", "", text)
    text = re.sub(r"\\begin\{(equation|align|assumption|proposition)\*?\}.*?\\end\{\1\*?\}", " ", text, flags=re.S)
    text = re.sub(r"\\\[.*?\\\]", " ", text, flags=re.S)
    text = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", " ", text, flags=re.S)
    text = re.sub(r"\\(cite[pt]?|label|ref|eqref|input|includegraphics|StudyTable|StudyFigure|UseStudy|"
                  r"UseObjective|[A-Z][A-Za-z]*)(\[[^\]]*\])?(\{[^{}]*\})*", " ", text)
    for pat in ALLOWED:
        text = re.sub(pat, " ", text)
    return text


def test_prose_types_no_result_number():
    assert SECTIONS, f"no sections under {PAPER / 'sections'}"
    bad = {}
    for p in [PAPER / "main.tex", *SECTIONS]:
        text = p.read_text()
        text = text[text.find(r"\begin{document}"):] if p.name == "main.tex" else text  # the preamble is no prose
        hits = re.findall(r"[^\s]*\d[^\s]*", _strip(text))
        if hits:
            bad[p.name] = hits
    assert bad == {}, f"typed numbers in the prose (use a macro from numbers.tex, or allow-list a structural one): {bad}"


def test_strip_catches_a_typed_number():
    assert re.search(r"\d", _strip(r"Adam returns to 0.89 after \ForgetAfter{adam}{gguf}."))
    assert not re.search(r"\d", _strip(r"Adam returns to \ForgetAfter{adam}{gguf} ($\mu^2/2$) with 4-bit Q4\_1."))


def test_slug_is_letters_only_and_collisions_refused(tmp_path):
    for s in ("zo-sgd (down_proj L24-29)", "gguf-q4_0", "adam+zo-noise", "rtn4"):
        assert re.fullmatch(r"[a-z]+", paper.slug(s))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "demo").mkdir()
    (tmp_path / "b" / "demo").mkdir()
    with pytest.raises(ValueError, match="both map to study key 'demo'"):
        paper.generate([tmp_path / "a" / "demo", tmp_path / "b" / "demo"], tmp_path / "out", tex_dir=PAPER,
                       figures=False)


def test_main_writes_and_reports(generated, tmp_path, capsys):
    _, study, _, _ = generated
    assert paper.main(["--results", str(study), "--out", str(tmp_path / "g"), "--tex", str(PAPER),
                       "--no-figures"]) == 0
    assert "numbers.tex" in capsys.readouterr().out
    assert (tmp_path / "g" / "numbers.tex").exists()


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdflatex") is None,
                    reason="latexmk/pdflatex not on PATH (apt-get install latexmk texlive-latex-base "
                           "texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended)")
def test_pdf_builds(generated, tmp_path):
    root, study, _, _ = generated
    work = tmp_path / "paper"
    shutil.copytree(PAPER / "sections", work / "sections")  # the sources only, no build state
    for name in ("main.tex", "refs.bib"):
        shutil.copy(PAPER / name, work / name)
    paper.generate([study], work / "generated", tex_dir=work, figures=True)
    r = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (work / "main.pdf").stat().st_size > 10_000
    log = (work / "main.log").read_text(errors="replace")
    assert "undefined: rerun" not in log and "Citation" not in re.findall(r"Warning: (Citation)", log)
