"""The unlearn loop: objective × optimizer on a benchmark, to a step budget or a forget target.

The loop owns batching, the closure, stopping, logging and checkpoints; the objective only
scores a (forget, retain) batch pair and the optimizer only moves weights.  Every step builds
one :class:`optimizers.Closure` over a fixed forget/retain batch pair, so a zeroth-order
optimizer that evaluates it several times (at θ+μu and θ−μu) sees the same data, and a
first-order one gets ``.grad`` filled.  ``optimizer.step(closure)`` is the only call, for every
grade.

Stopping: with ``target`` set, the forget metric (``forget_acc`` by default) is evaluated every
``eval_every`` steps and the run stops at the first check where it is ``<= target``
(``stop_reason="target"``); otherwise at ``steps`` (``"budget"``).  An optimizer exposing
``at_round_end`` (the FO/ZO hybrid) is stopped only once its current round is complete, so a
hybrid run always ends on a zeroth-order step (the paper's rule).  Comparing optimizers at
matched forgetting needs the target; the budget acts as a cap that is reported when hit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import pandas as pd
import torch

from optigrade.optimizers import Closure

from .benchmark import IGNORE, Benchmark
from .objectives import Objective, Reference, _logits, mean_nll

__all__ = ["unlearn", "UnlearnResult", "trainable_parameters"]


@dataclass
class UnlearnResult:
    """What a run produced: the (modified in place) model, the per-step log, and why it stopped."""

    model: torch.nn.Module
    log: pd.DataFrame
    steps: int
    stop_reason: str  # "target" | "budget" | "diverged" | "retain-guard"
    metrics: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def reached_target(self) -> bool:
        return self.stop_reason == "target"


def trainable_parameters(model, pattern: Optional[str] = None):
    """Parameters whose name matches the regex ``pattern`` (all when None); the others are
    frozen.  Raises if nothing matches."""
    import re

    named = list(model.named_parameters())
    if pattern is None:
        return [p for _, p in named]
    rx = re.compile(pattern)
    chosen = [p for n, p in named if rx.search(n)]
    if not chosen:
        raise ValueError(f"param pattern {pattern!r} matches no parameter; names look like {named[0][0]!r}")
    for n, p in named:
        p.requires_grad_(bool(rx.search(n)))
    return chosen


def _sampled_label_loss(model, batches: Sequence[dict]):
    """Cross-entropy against labels sampled from the model's own softmax at the answer
    positions (Sophia-G's Gauss-Newton-Bartlett estimator)."""

    def fn(generator=None):
        total = 0.0
        for b in batches:
            logits = _logits(model, b)[:, :-1].float()
            mask = b["labels"][:, 1:] != IGNORE
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
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model.eval()
    if params is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    if objective.needs_reference and reference is None:
        reference = Reference(model)
    gen = torch.Generator().manual_seed(seed)
    forget_it = benchmark.batches("forget", batch_size, gen)
    retain_it = benchmark.batches("retain", batch_size, gen)  # GRU and SAM use it even for GA
    dev = next(model.parameters()).device
    rows, reason, t0 = [], "budget", time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(range(1, steps + 1), desc=f"unlearn {objective.name}/{type(optimizer).__name__}",
               disable=not progress, leave=False)
    step, target_met = 0, False
    for step in bar:
        f = {k: v.to(dev) for k, v in next(forget_it).items()}
        r = {k: v.to(dev) for k, v in next(retain_it).items()}
        closure = Closure(
            lambda: objective(model, f, r, reference), params,
            forget_fn=lambda: objective.forget_term(model, f, reference),
            retain_fn=lambda: objective.retain_term(model, r),
            retain_loss_fn=lambda: mean_nll(_logits(model, r), r["labels"]),
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
    return UnlearnResult(model=model, log=log, steps=step, stop_reason=reason, metrics=metrics, seconds=seconds)
