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

Batches are built on the model's device; the data order comes from a CPU ``torch.Generator``
seeded with ``seed``, so the same seed gives the same batches on every device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pandas as pd
import torch

from optigrade.optimizers import Closure

from .._device import model_device
from .._files import atomic_dir, atomic_write_json
from .._lm import lm_logits, mean_nll, shifted
from .benchmarks.base import Benchmark
from .objectives import Objective, Reference

__all__ = ["unlearn", "UnlearnResult"]


@dataclass
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

    @property
    def reached_target(self) -> bool:
        return self.stop_reason == "target"

    def summary(self) -> dict:
        """The run's outcome as JSON-able values (the default manifest)."""
        return {"steps": self.steps, "stop_reason": self.stop_reason, "metrics_before": self.metrics_before,
                "metrics_after": self.metrics, "seconds": round(self.seconds, 3)}

    def save_pretrained(self, path, tokenizer=None, manifest: Optional[dict] = None,
                        overwrite: bool = False) -> Path:
        """Write the model (safetensors), the tokenizer (``tokenizer``, else the benchmark's kept
        here), ``manifest.json`` (``manifest``, default :meth:`summary`) and ``log.csv`` to
        ``path`` atomically: nothing is left half-written, and a non-empty ``path`` is refused
        unless ``overwrite``.  The directory opens with ``AutoModelForCausalLM`` /
        ``AutoTokenizer.from_pretrained`` and with :func:`optigrade.unlearning.models.load`.

        Raises:
            FileExistsError: ``path`` exists, is not empty and ``overwrite`` is False.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if self.log is not None:
                self.log.to_csv(tmp / "log.csv", index=False)
            atomic_write_json(tmp / "manifest.json", manifest if manifest is not None else self.summary())
        return path


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


def unlearn(model, objective: Objective, optimizer: torch.optim.Optimizer, benchmark: Benchmark, *,
            steps: int = 100, target: Optional[float] = None, metric: str = "forget_acc",
            eval_every: int = 5, batch_size: int = 16, seed: int = 0,
            reference: Optional[Reference] = None, params: Optional[Sequence[torch.Tensor]] = None,
            eval_retain: int = 200, retain_floor: Optional[float] = None, final_eval: bool = True,
            progress: bool = True) -> UnlearnResult:
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

    Returns:
        :class:`UnlearnResult` with a per-step log (one row per step; evaluation columns filled
        at evaluation steps).

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
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model.eval()
    if params is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
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
    step, target_met = 0, False
    for step in bar:
        f, r = next(forget_it), next(retain_it)
        closure = Closure(
            lambda: objective(model, f, r, reference), params,
            forget_fn=lambda: objective.forget_term(model, f, reference),
            retain_fn=lambda: objective.retain_term(model, r),
            retain_loss_fn=lambda: mean_nll(lm_logits(model, r), r["labels"]),
            sampled_label_fn=_sampled_label_loss(model, [f, r]),
        )
        loss = optimizer.step(closure)
        loss = float(loss) if loss is not None else math.nan
        row = {"step": step, "loss": loss, "lr": optimizer.param_groups[0].get("lr", math.nan),
               "n_loss": closure.n_loss, "n_grad": closure.n_grad}
        if not math.isfinite(loss):
            rows.append(row)
            reason = "diverged"
            break
        if step % eval_every == 0 or step == steps:
            m = benchmark.evaluate(model, splits=["forget", "retain"], general=False,
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
    seconds = time.perf_counter() - t0
    log = pd.DataFrame(rows)
    metrics = benchmark.evaluate(model) if final_eval else {}
    return UnlearnResult(model=model, log=log, steps=step, stop_reason=reason, metrics=metrics, seconds=seconds,
                         tokenizer=getattr(benchmark, "tokenizer", None))
