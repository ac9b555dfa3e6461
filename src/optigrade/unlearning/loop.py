"""The unlearn loop: objective × optimizer on a benchmark, to a step budget or a forget target.

The loop owns batching, the closure, stopping, logging and checkpoints; the objective only
scores a (forget, retain) batch pair and the optimizer only moves weights.  Every step builds
one :class:`optigrade.optimizers.Closure` over a fixed forget/retain batch pair, so a zeroth-order
optimizer that evaluates it several times (at θ+μu and θ−μu) sees the same data, and a
first-order one gets ``.grad`` filled.  ``optimizer.step(closure)`` is the only call, for every
grade.

Stopping: with ``target`` set, the forget metric (``forget_acc`` by default) is evaluated every
``eval_every`` steps and the run stops at the first check where it is ``<= target``
(``stop_reason="target"``); otherwise at ``steps`` (``"budget"``).  An optimizer exposing
``at_round_end`` (the FO/ZO hybrid) is stopped only once its current round is complete, so a
hybrid run always ends on a zeroth-order step (the paper's rule).  Comparing optimizers at
matched forgetting needs the target; the budget acts as a cap that is reported when hit.

Divergence: a non-finite loss (checked every step) or non-finite weights (checked at every
evaluation and at the end) stop the run with ``stop_reason="diverged"``; such a model is not
scored (its accuracy would read as perfect forgetting) and :func:`match_status` never counts
it as matched.  ``run_unlearn`` refuses to save it (:class:`RunDiverged`).

Matched forgetting (:func:`match_status`): the run reached the target *and* kept its utility:
retain accuracy >= ``utility_floor_retain`` × the base model's and general-text perplexity
<= ``utility_max_ppl_ratio`` × the base model's (the :class:`~optigrade.unlearning.config.Setup`
fields; a judgment on the final metrics, so it never changes what a run computes).

Batches are built on the model's device; the data order comes from a CPU ``torch.Generator``
seeded with ``seed``, so the same seed gives the same batches on every device.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import pandas as pd
import torch

from optigrade.optimizers import Closure

from .._device import model_device
from .._files import atomic_dir, atomic_write_json, file_hashes
from .._lm import lm_logits, mean_nll, shifted
from .._prefix import PrefixCache, first_layer_of
from .benchmarks.base import Benchmark
from .objectives import Objective, Reference

__all__ = ["unlearn", "UnlearnResult", "RunDiverged", "match_status", "MATCH_REASONS"]

#: why a run is or is not at matched forgetting (:func:`match_status`)
MATCH_REASONS = ("target", "not-reached", "retain-floor", "heldout-floor", "ppl-floor", "diverged", "retain-guard")


class RunDiverged(RuntimeError):
    """The run's loss or weights became non-finite (``stop_reason="diverged"``); raised by
    :func:`~optigrade.unlearning.run.run_unlearn` instead of saving the model.  ``result``
    holds the :class:`UnlearnResult` (its log shows where it happened)."""

    def __init__(self, message: str, result: "UnlearnResult" = None):
        super().__init__(message)
        self.result = result


@dataclass(repr=False)
class UnlearnResult:
    """What a run produced: the model (modified in place, kept here), the per-step log, why it
    stopped, and the metrics after (and, when the caller scored the start, before) the run.

    ``save_pretrained(dir)`` writes a directory that ``transformers`` opens:

        >>> import tempfile, torch
        >>> import pandas as pd
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
        >>> bench = SyntheticFacts(n_entities=20)
        >>> model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer)
        >>> res = UnlearnResult(model, pd.DataFrame({"step": [1]}), steps=1, stop_reason="budget",
        ...                     tokenizer=bench.tokenizer)
        >>> out = res.save_pretrained(tempfile.mkdtemp() + "/run")
        >>> sorted(p.name for p in out.iterdir() if not p.name.startswith("tokenizer"))
        ['config.json', 'generation_config.json', 'log.csv', 'manifest.json', 'model.safetensors']
        >>> again = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
        >>> tok = AutoTokenizer.from_pretrained(out)
        >>> ids = torch.tensor([tok(bench.forget[0].prompt)["input_ids"]])
        >>> torch.equal(again(ids).logits, model(ids).logits)     # the same weights, bit for bit
        True
    """

    model: torch.nn.Module
    log: pd.DataFrame
    steps: int
    stop_reason: str  # "target" | "budget" | "diverged" | "retain-guard"
    metrics: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    metrics_before: Dict[str, float] = field(default_factory=dict)
    tokenizer: Any = None
    note: str = ""  # what stopped a diverged run, e.g. "loss nan at step 3"
    matched: Optional[bool] = None  # match_status against the base model (set by run_unlearn when it scored both)
    match_reason: str = ""

    @property
    def reached_target(self) -> bool:
        return self.stop_reason == "target"

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    # ------------------------------------------------------------------ notebook surface
    def _headline(self) -> str:
        parts = []
        for k in ("forget_acc", "retain_acc", "heldout_acc", "general_ppl"):
            if k in self.metrics:
                b = self.metrics_before.get(k)
                parts.append(f"{k} {b:.3g}→{self.metrics[k]:.3g}" if b is not None else f"{k} {self.metrics[k]:.3g}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        """One line: steps, why it stopped, matched, the headline metrics, cost (never the model).

            >>> import pandas as pd, torch
            >>> r = UnlearnResult(torch.nn.Linear(2, 2), pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5],
            ...                   "n_loss": [2, 4], "n_grad": [0, 0]}), steps=2, stop_reason="target",
            ...                   metrics={"forget_acc": 0.1}, metrics_before={"forget_acc": 1.0}, seconds=1.5,
            ...                   matched=True)
            >>> r
            UnlearnResult(steps=2, stop=target, matched=True, forget_acc 1→0.1, 6 loss / 0 grad passes, 1.5 s, Linear 6 params)
            >>> r.to_frame()[["quantity", "value", "subject"]].values.tolist()
            [['forget_acc', 1.0, 'original'], ['forget_acc', 0.1, 'unlearned']]
        """
        n = sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0
        cost = ""
        if self.log is not None and len(self.log) and "n_loss" in self.log:  # per-step counts: summed
            cost = f", {int(self.log['n_loss'].sum())} loss / {int(self.log['n_grad'].sum())} grad passes"
        head = self._headline()
        return (f"UnlearnResult(steps={self.steps}, stop={self.stop_reason}, matched={self.matched}"
                + (f", {head}" if head else "") + cost + f", {self.seconds:.1f} s, {type(self.model).__name__} "
                f"{n:,} params)")

    def to_frame(self) -> pd.DataFrame:
        """The metrics before ("original") and after ("unlearned") as tidy rows
        (:data:`optigrade._tables.SCHEMA`)."""
        from .._tables import rows_to_frame

        rows = [dict(subject=subj, quantity=k, value=float(v), unit="probability" if k.endswith("_acc") else "")
                for subj, m in (("original", self.metrics_before), ("unlearned", self.metrics)) for k, v in m.items()
                if isinstance(v, (int, float))]
        return rows_to_frame(rows, {"steps": self.steps, "stop_reason": self.stop_reason})

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><td>{k}</td><td>{self.metrics_before.get(k, float('nan')):.4g}</td><td>{v:.4g}</td></tr>"
                       for k, v in self.metrics.items() if isinstance(v, (int, float)))
        return (f"<b>UnlearnResult</b>: {self.steps} steps, stopped on <i>{self.stop_reason}</i>, matched = "
                f"{self.matched} {self.match_reason}, {self.seconds:.1f} s<table><tr><th>metric</th><th>before</th>"
                f"<th>after</th></tr>{body}</table>")

    def plot(self):
        """Loss and the evaluated metrics against the step (a Figure that displays inline)."""
        from .._figure import new_figure

        fig = new_figure(figsize=(7.5, 3), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(self.log["step"], self.log["loss"], lw=1)
        ax1.set_xlabel("step")
        ax1.set_ylabel("objective loss (forget batch)")
        ev = self.log.dropna(subset=[c for c in ("forget_acc",) if c in self.log])
        for k, c in (("forget_acc", "#D55E00"), ("retain_acc", "#0072B2")):
            if k in ev:
                ax2.plot(ev["step"], ev[k], marker="o", ms=3, color=c, label=k.replace("_acc", " accuracy"))
        ax2.set_xlabel("step")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(-0.02, 1.02)
        if ev.shape[0]:
            ax2.legend(fontsize=8)
        fig.suptitle(f"{self.steps} steps, stopped on {self.stop_reason}", fontsize=9)
        return fig

    def summary(self) -> dict:
        """The run's outcome as JSON-able values (the default manifest)."""
        out = {"steps": self.steps, "stop_reason": self.stop_reason, "metrics_before": self.metrics_before,
               "metrics_after": self.metrics, "seconds": round(self.seconds, 3)}
        if self.note:
            out["note"] = self.note
        return out

    def save_pretrained(self, path, tokenizer=None, manifest: Optional[dict] = None,
                        overwrite: bool = False) -> Path:
        """Write the model (safetensors), the tokenizer (``tokenizer``, else the benchmark's kept
        here), ``manifest.json`` (``manifest``, default :meth:`summary`) and ``log.csv`` to
        ``path`` atomically (fsynced, then swapped in; see :func:`optigrade._files.atomic_dir`):
        nothing is left half-written, and a non-empty ``path`` is refused unless ``overwrite``
        (and even then unless it holds a ``manifest.json``: only optigrade's own checkpoints are
        replaced).  The manifest's ``files`` records the sha256 and size of every other file,
        which :func:`optigrade.unlearning.models.load` checks.  The directory opens with
        ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` and with
        :func:`optigrade.unlearning.models.load`.

        Raises:
            FileExistsError: ``path`` exists, is not empty and ``overwrite`` is False, or it is
                not an optigrade checkpoint.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite, marker="manifest.json") as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if self.log is not None:
                self.log.to_csv(tmp / "log.csv", index=False)
            doc = dict(manifest if manifest is not None else self.summary())
            doc["files"] = file_hashes(tmp, exclude=("manifest.json",))
            atomic_write_json(tmp / "manifest.json", doc)
        return path


def _finite(params: Sequence[torch.Tensor]) -> bool:
    """Whether every entry of ``params`` is finite (one pass per tensor, no copy of the model)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in params)


def match_status(stop_reason: str, metrics: Dict[str, float], base: Dict[str, float],
                 utility_floor_retain: Optional[float] = 0.5,
                 utility_max_ppl_ratio: Optional[float] = 2.0) -> Tuple[bool, str, str]:
    """``(matched, reason, detail)``: is a run at matched forgetting?

    Matched means the run stopped on the target (``stop_reason == "target"``) *and* its utility
    stayed above the floors, relative to the base (unlearning's starting) model:

    * ``retain_acc >= utility_floor_retain × base retain_acc``
    * ``heldout_acc >= utility_floor_retain × base heldout_acc`` when the benchmark has a
      held-out split (facts no objective trains on: utility measured out of sample)
    * ``general_ppl <= utility_max_ppl_ratio × base general_ppl`` (a NaN perplexity fails)

    A floor that is None, or whose metric is missing from ``metrics`` or ``base``, is not
    applied.  ``reason`` is one of :data:`MATCH_REASONS`: ``"target"`` (matched),
    ``"not-reached"`` (step cap), ``"diverged"``, ``"retain-guard"``, ``"retain-floor"``,
    ``"heldout-floor"``, ``"ppl-floor"``; ``detail`` says it in a few words for tables.

    >>> base = {"retain_acc": 1.0, "general_ppl": 4.8}
    >>> match_status("target", {"retain_acc": 0.9, "general_ppl": 7.0}, base)
    (True, 'target', '')
    >>> match_status("target", {"retain_acc": 0.0, "general_ppl": 399.0}, base)   # a collapsed model
    (False, 'retain-floor', 'retain 0.00 < 0.5 × 1.00')
    >>> match_status("target", {"retain_acc": 0.9, "general_ppl": 30.0}, base)
    (False, 'ppl-floor', 'ppl 6.2× base')
    >>> match_status("target", {"retain_acc": 0.9, "general_ppl": 30.0}, base, utility_max_ppl_ratio=None)
    (True, 'target', '')
    >>> match_status("target", {"retain_acc": 0.9, "heldout_acc": 0.3}, {**base, "heldout_acc": 0.9})
    (False, 'heldout-floor', 'held-out 0.30 < 0.5 × 0.90')
    >>> match_status("budget", {}, base)[1:], match_status("diverged", {}, base)[1:]
    (('not-reached', 'step cap'), ('diverged', 'diverged'))
    """
    if stop_reason != "target":
        reason = {"budget": "not-reached", "diverged": "diverged", "retain-guard": "retain-guard"}.get(
            stop_reason, "not-reached")
        return False, reason, {"not-reached": "step cap", "retain-guard": "retain guard"}.get(reason, reason)
    r, r0 = metrics.get("retain_acc"), base.get("retain_acc")
    if utility_floor_retain is not None and r is not None and r0 is not None and r0 == r0:
        if not r >= utility_floor_retain * r0:
            return False, "retain-floor", f"retain {r:.2f} < {utility_floor_retain:g} × {r0:.2f}"
    h, h0 = metrics.get("heldout_acc"), base.get("heldout_acc")
    if utility_floor_retain is not None and h is not None and h0 is not None and h0 == h0:
        if not h >= utility_floor_retain * h0:
            return False, "heldout-floor", f"held-out {h:.2f} < {utility_floor_retain:g} × {h0:.2f}"
    q, q0 = metrics.get("general_ppl"), base.get("general_ppl")
    if utility_max_ppl_ratio is not None and q is not None and q0 is not None and q0 == q0 and q0 > 0:
        if not q <= utility_max_ppl_ratio * q0:
            return False, "ppl-floor", f"ppl {q / q0:.1f}× base" if q == q else "ppl nan"
    return True, "target", ""


def _int_arg(name: str, v, low: int, meaning: str, fix) -> None:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}; {meaning}, e.g. {name}={fix}")


def _check_args(benchmark, steps, target, metric, eval_every, batch_size, seed, eval_retain, retain_floor) -> str:
    """Refuse bad arguments of :func:`unlearn` before any work (the library twin of the config's
    checks); returns the split the target ``metric`` is computed on."""
    _int_arg("steps", steps, 1, "the step budget", 200)
    _int_arg("eval_every", eval_every, 1, "evaluate (and check the target) every N steps", 5)
    _int_arg("batch_size", batch_size, 1, "forget / retain examples per step", 16)
    _int_arg("seed", seed, 0, "the data-order seed", 0)
    if eval_retain is not None:
        _int_arg("eval_retain", eval_retain, 1, "retain examples scored at each evaluation (None: all)", 200)
    splits = [k for k in getattr(benchmark, "splits", {}) if k.startswith("forget")]
    known = [f"{k}_acc" for k in splits]
    if metric not in known:
        raise ValueError(f"metric must be one of {known}, got {metric!r}; the forget accuracy compared with "
                         "target (lower = more forgotten), e.g. metric='forget_acc'")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0.0 <= target <= 1.0:
            raise ValueError(f"target must be a number in [0, 1] or None, got {target!r}; stop when {metric} <= "
                             "target (matched forgetting), e.g. target=0.1")
    if retain_floor is not None:
        if isinstance(retain_floor, bool) or not isinstance(retain_floor, numbers.Real) \
                or not 0.0 <= retain_floor <= 1.0:
            raise ValueError(f"retain_floor must be a number in [0, 1] or None, got {retain_floor!r}; stop a run "
                             "whose retain accuracy falls below it, e.g. retain_floor=0.75")
    return metric[: -len("_acc")]


def _sampled_label_loss(model, batches: Sequence[dict]):
    """Cross-entropy against labels sampled from the model's own softmax at the answer
    positions (Sophia-G's Gauss-Newton-Bartlett estimator)."""

    def fn(generator=None):
        total = 0.0
        for b in batches:
            logits, _, mask = shifted(lm_logits(model, b), b["labels"])
            probs = torch.softmax(logits.detach(), -1)[mask]
            y = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            total = total + torch.nn.functional.cross_entropy(logits[mask], y)
        return total

    return fn


def _closure_model(model, params, prefix_cache: bool):
    """What the step's closure calls: ``model``, or with ``prefix_cache`` a
    :class:`~optigrade._prefix.PrefixCache` from the first layer holding one of ``params`` (the
    same logits; the frozen prefix runs once per batch instead of once per loss evaluation).  When
    the moved weights leave no frozen prefix (embeddings, layer 0, a tied head) or the model is
    not supported, a warning says why and the full model is used."""
    if not prefix_cache:
        return model
    try:
        return PrefixCache(model, first_layer_of(params, model), max_batches=4)  # this step's forget + retain
    except ValueError as e:
        warnings.warn(f"prefix_cache ignored, the full model runs: {e}", stacklevel=3)
        return model


def unlearn(model, objective: Objective, optimizer: torch.optim.Optimizer, benchmark: Benchmark, *,
            steps: int = 100, target: Optional[float] = None, metric: str = "forget_acc",
            eval_every: int = 5, batch_size: int = 16, seed: int = 0,
            reference: Optional[Reference] = None, params: Optional[Sequence[torch.Tensor]] = None,
            eval_retain: int = 200, retain_floor: Optional[float] = None, final_eval: bool = True,
            progress: bool = True, prefix_cache: bool = False) -> UnlearnResult:
    """Unlearn ``benchmark.forget`` from ``model`` in place.

    Args:
        model: a causal LM (eval mode is used throughout; no dropout).
        objective: e.g. ``NPO()``; its reference is built here when needed and not given.
        optimizer: any optigrade / torch optimizer over (a subset of) ``model``'s parameters.
        benchmark: supplies forget/retain batches and the metrics.
        steps: step budget (a cap when ``target`` is given).
        target: stop when ``metric <= target`` at an evaluation.
        metric: the forget metric compared with ``target`` (lower = more forgotten).
        eval_every: evaluate the forget split (and the first ``eval_retain`` retain examples, a
            fixed subset, as a cheap retain guard) every this many steps.
        batch_size: forget and retain batch size.
        seed: data order (a local ``torch.Generator``; the global RNG is not touched).
        retain_floor: stop (``stop_reason="retain-guard"``) at the first evaluation where
            ``retain_acc`` falls below this value, even if the target is met at that evaluation: a
            run that can only reach the target by damaging the model is reported as such instead
            of as forgetting.
        prefix_cache: the closure's loss evaluations (every query of a zeroth-order step) run
            from a :class:`~optigrade._prefix.PrefixCache`: the frozen layers before the first
            layer holding a moved weight run once per batch.  Same losses, same weights (the
            same operations on the same inputs); when the moved weights leave no frozen prefix
            a warning says so and the full model runs.  Evaluations use the full model.

    A non-finite loss (every step) or non-finite weights (every evaluation and the end) stop
    the run with ``stop_reason="diverged"`` (``note`` says where); the diverged model is not
    scored (``metrics`` stays empty).

    Returns:
        :class:`UnlearnResult` with a per-step log (one row per step; evaluation columns filled
        at evaluation steps).

    Raises:
        ValueError: before any step, for a bad argument (``steps``, ``eval_every``,
            ``batch_size``, ``seed``, ``eval_retain`` not positive integers; ``metric`` not the
            accuracy of a forget split of ``benchmark``; ``target`` / ``retain_floor`` outside
            [0, 1]), naming the value and the fix.

    Example (gradient ascent on an untrained tiny Llama, which knows no fact: the forget
    accuracy is 0 ≤ target at the first check, so the run stops there):

        >>> from optigrade import optimizers
        >>> from optigrade.unlearning import GA, SyntheticFacts, tiny_llama
        >>> bench = SyntheticFacts(n_entities=20)
        >>> model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer)
        >>> opt = optimizers.make("adam", model.parameters(), lr=1e-3)
        >>> res = unlearn(model, GA(), opt, bench, steps=10, target=0.0, eval_every=2, progress=False,
        ...               final_eval=False)
        >>> res.steps, res.stop_reason, res.reached_target, list(res.log["step"])
        (2, 'target', True, [1, 2])
        >>> res.model is model
        True
    """
    msplit = _check_args(benchmark, steps, target, metric, eval_every, batch_size, seed, eval_retain, retain_floor)
    if not isinstance(prefix_cache, bool):
        raise ValueError(f"prefix_cache must be True or False, got {prefix_cache!r}")
    model.eval()
    if params is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    fwd = _closure_model(model, params, prefix_cache)  # what the closure's losses call
    check = getattr(objective, "check_model", None)
    if check is not None:  # e.g. RMU's layer must exist: refused before any step
        check(fwd)
    if objective.needs_reference and reference is None:
        reference = Reference(model)
    gen = torch.Generator().manual_seed(seed)
    dev = model_device(model)
    forget_it = benchmark.batches("forget", batch_size, gen, device=dev)
    retain_it = benchmark.batches("retain", batch_size, gen, device=dev)  # GRU and SAM use it even for GA
    rows, reason, t0 = [], "budget", time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(range(1, steps + 1), desc=f"unlearn {objective.name}/{type(optimizer).__name__}",
               disable=not progress, leave=False)
    step, target_met, note = 0, False, ""
    eval_splits = ["forget", "retain"] + ([msplit] if msplit not in ("forget", "retain") else [])
    for step in bar:
        f, r = next(forget_it), next(retain_it)
        closure = Closure(
            lambda: objective(fwd, f, r, reference), params,
            forget_fn=lambda: objective.forget_term(fwd, f, reference),
            retain_fn=lambda: objective.retain_term(fwd, r, reference),
            retain_loss_fn=lambda: mean_nll(lm_logits(fwd, r), r["labels"]),
            sampled_label_fn=_sampled_label_loss(fwd, [f, r]),
        )
        loss = optimizer.step(closure)
        loss = float(loss) if loss is not None else math.nan
        row = {"step": step, "loss": loss, "lr": optimizer.param_groups[0].get("lr", math.nan),
               "n_loss": closure.n_loss, "n_grad": closure.n_grad}
        if not math.isfinite(loss):
            rows.append(row)
            reason, note = "diverged", f"loss {loss} at step {step}"
            break
        if step % eval_every == 0 or step == steps:
            if not _finite(params):  # NaN weights would score as perfect forgetting
                rows.append(row)
                reason, note = "diverged", f"non-finite weights after step {step} (loss {loss:.4g})"
                break
            m = benchmark.evaluate(model, splits=eval_splits, general=False,
                                   limit={"retain": eval_retain})
            row.update(m)
            bar.set_postfix(loss=f"{loss:.3f}", forget=f"{m['forget_acc']:.2f}", retain=f"{m['retain_acc']:.2f}")
            if retain_floor is not None and m["retain_acc"] < retain_floor:
                # checked first: reaching the target by breaking retention is not forgetting
                rows.append(row)
                reason = "retain-guard"
                break
            if target is not None and m[metric] <= target:
                target_met = True
        if target_met and getattr(optimizer, "at_round_end", True):
            # a hybrid FO/ZO optimizer finishes its round so the run ends on a ZO step
            rows.append(row)
            reason = "target"
            break
        rows.append(row)
    if reason != "diverged" and not _finite(params):  # the steps after the last evaluation
        reason, note = "diverged", f"non-finite weights after step {step}"
    seconds = time.perf_counter() - t0
    log = pd.DataFrame(rows)
    metrics = benchmark.evaluate(model) if final_eval and reason != "diverged" else {}
    return UnlearnResult(model=model, log=log, steps=step, stop_reason=reason, metrics=metrics, seconds=seconds,
                         tokenizer=getattr(benchmark, "tokenizer", None), note=note)
