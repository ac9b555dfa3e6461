"""The relearning attack: AdamW fine-tuning on forget data, cosine learning-rate schedule,
optionally on one half of the forget *entities* only (``protocol="half"``), the other half
being held out for measurement (:func:`forget_halves`, :func:`half_view`).

All randomness (the training pool's order, the halves) comes from local ``torch.Generator``\\ s
seeded by ``seed``; the global RNG is never touched.
"""

from __future__ import annotations

import copy
from typing import List, Literal, Optional, Tuple

import torch

from optigrade import _validate
from optigrade._device import to_device
from optigrade._lm import lm_logits, mean_nll

from ...unlearning.config import SPLITS as _SPLITS
from ._spec import AttackSpec, Number, register

__all__ = ["relearn", "forget_halves", "half_view", "RelearnSpec"]

PROTOCOLS = ("full", "half")
SPLITS = _SPLITS  # the splits every registered benchmark has


def forget_halves(benchmark, seed: int = 0) -> Tuple[List[str], List[str]]:
    """Split the forget *groups* (entities) into two halves (A: fine-tune, B: measure),
    deterministically from ``seed``; A has ⌊n/2⌋ groups, B the rest.

    >>> from types import SimpleNamespace as NS
    >>> bench = NS(splits={"forget": [NS(group=g) for g in "abcde"]})
    >>> a, b = forget_halves(bench, seed=0)
    >>> len(a), len(b), sorted(a + b) == list("abcde"), (a, b) == forget_halves(bench, seed=0)
    (2, 3, True, True)
    """
    groups = sorted({x.group for x in benchmark.splits["forget"]})
    if len(groups) < 2:
        raise ValueError(f"protocol='half' needs at least 2 forget groups, the benchmark has {len(groups)}")
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(int(seed))).tolist()
    k = len(groups) // 2
    return sorted(groups[i] for i in perm[:k]), sorted(groups[i] for i in perm[k:])


def half_view(benchmark, groups: List[str]):
    """A shallow copy of ``benchmark`` whose forget splits keep only ``groups`` (the benchmark
    itself is not modified).

    >>> from types import SimpleNamespace as NS
    >>> bench = NS(splits={"forget": [NS(group=g) for g in "abc"], "retain": [NS(group="z")]})
    >>> v = half_view(bench, ["a", "c"])
    >>> [x.group for x in v.splits["forget"]], len(v.splits["retain"]), len(bench.splits["forget"])
    (['a', 'c'], 1, 3)
    """
    keep = set(groups)
    view = copy.copy(benchmark)
    view.splits = dict(benchmark.splits)
    for s in ("forget", "forget_para"):
        if s in view.splits:
            view.splits[s] = [x for x in benchmark.splits[s] if x.group in keep]
    return view


# ----------------------------------------------------------------------------- checks
# setting -> (the _validate rule, its arguments after (name, value)): one message style
_RULES = {
    "steps": (_validate.int_at_least, 1, "the number of relearning steps", 100),
    "lr": (_validate.positive, "the relearning learning rate (AdamW, cosine-decayed to 0)", "1e-5"),
    "n_samples": (_validate.int_at_least, 1, "how many training examples to use (null: all)", "null"),
    "batch_size": (_validate.int_at_least, 1, "examples per relearning step", 4),
    "protocol": (_validate.choice, PROTOCOLS, "'full' fine-tunes on every forget entity, 'half' on half A only "
                                              "(measured on half B)"),
    "weight_decay": (_validate.non_negative, "AdamW's decoupled weight decay", 0.0),
    "split": (_validate.choice, SPLITS, "the benchmark split the attack fine-tunes on"),
    "warmup": (_validate.int_at_least, 0, "linear warm-up steps before the cosine decay", 0),
}
_NULLABLE = {"n_samples"}


def _check(name: str):
    """``check(value)`` for setting ``name``: the value as given, or ValueError."""
    rule, *args = _RULES[name]

    def check(value):
        if not (value is None and name in _NULLABLE):
            rule(name, value, *args)
        return value

    return check


_CHECKS = {name: _check(name) for name in _RULES}


def relearn(model, benchmark, steps: int = 100, lr: float = 1e-5, n_samples: Optional[int] = None,
            batch_size: int = 4, seed: int = 0, split: str = "forget", protocol: str = "full",
            weight_decay: float = 0.0, warmup: int = 0, progress: bool = False):
    """The relearning attack: a copy of ``model`` fine-tuned with AdamW on ``split`` data
    (answer-token NLL), learning rate ``lr·f(t)`` with the cosine factor
    :func:`~optigrade.unlearning.schedules.cosine_schedule` ``(steps, warmup)`` (from ``lr`` to 0).
    Every parameter is trained, frozen or not; ``model`` is not modified.

    Args:
        n_samples: use only the first ``n_samples`` examples of a seeded permutation of the
            training pool (None: all).
        protocol: "full" fine-tunes on the whole forget split; "half" fine-tunes only on half A
            of the forget entities (:func:`forget_halves` with ``seed``), so the attack can be
            measured on the untouched half B (``half_view(benchmark, B)``).

    Returns the new model (eval mode).

    Raises:
        ValueError: a bad setting (before any work), or a ``split`` the benchmark lacks.

    >>> relearn(None, None, steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 1, got 0; the number of relearning steps, try 100
    >>> from optigrade.unlearning import SyntheticFacts, TinyConfig, tiny_llama
    >>> bench = SyntheticFacts(n_entities=40)
    >>> net = tiny_llama(len(bench.tokenizer), TinyConfig(hidden_size=32, intermediate_size=64,
    ...                  num_hidden_layers=1, num_attention_heads=2), seed=0, tokenizer=bench.tokenizer)
    >>> def nll(m):
    ...     return bench.evaluate(m, splits=["forget"], general=False)["forget_nll"]
    >>> out = relearn(net, bench, steps=6, lr=3e-3, seed=0)
    >>> nll(out) < nll(net)                                # fine-tuning on the forget set relearns it
    True
    """
    for name, value in (("steps", steps), ("lr", lr), ("n_samples", n_samples), ("batch_size", batch_size),
                        ("protocol", protocol), ("weight_decay", weight_decay), ("warmup", warmup),
                        ("split", split)):
        _CHECKS[name](value)
    if split not in benchmark.splits:
        raise ValueError(f"split {split!r} not in the benchmark; choose one of {sorted(benchmark.splits)}")
    from tqdm.auto import tqdm

    from optigrade.unlearning.schedules import cosine_schedule

    pool = list(benchmark.splits[split])
    if protocol == "half":
        a, _ = forget_halves(benchmark, seed)
        keep = set(a)
        pool = [x for x in pool if x.group in keep]
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(pool), generator=gen).tolist()
    if n_samples is not None:
        perm = perm[:n_samples]
    pool = [pool[i] for i in perm]
    out = copy.deepcopy(model)
    out.eval()  # no dropout; gradients still flow
    params = list(out.parameters())  # the attacker fine-tunes the whole model, frozen or not
    for p in out.parameters():
        p.requires_grad_(True)
        p.grad = None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(steps, warmup))
    bs = min(batch_size, len(pool))
    order: List[int] = []
    for _ in tqdm(range(steps), desc="relearn", disable=not progress, leave=False):
        if len(order) < bs:
            order += torch.randperm(len(pool), generator=gen).tolist()
        idx, order = order[:bs], order[bs:]
        batch = to_device(benchmark.encode_qa([pool[i] for i in idx]), out)
        loss = mean_nll(lm_logits(out, batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lrs.step()
    for p in out.parameters():
        p.grad = None
    out.eval()
    return out


class RelearnSpec(AttackSpec):
    """Settings of ``kind: relearn`` (:func:`relearn`; the study passes its benchmark and the
    run seed).

    >>> RelearnSpec(steps=30, lr=1.0e-4, protocol="half").resolved()
    {'steps': 30, 'lr': 0.0001, 'n_samples': None, 'batch_size': 4, 'split': 'forget', 'protocol': 'half', 'weight_decay': 0.0, 'warmup': 0}
    """

    kind: Literal["relearn"] = "relearn"
    steps: int = 100
    lr: Number = 1e-5
    n_samples: Optional[int] = None
    batch_size: int = 4
    split: str = "forget"
    protocol: Literal["full", "half"] = "full"
    weight_decay: Number = 0.0
    warmup: int = 0

    checks = _CHECKS

register("relearn", relearn, RelearnSpec, benchmark=True, seed=True)
