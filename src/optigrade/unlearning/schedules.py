"""Learning-rate schedules shared by pretraining (``models.tiny.pretrain``) and the relearning
attack: multiplicative factors for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["cosine_schedule"]


def cosine_schedule(total: int, warmup: int = 0) -> Callable[[int], float]:
    """The factor at step t: linear warm-up (t + 1)/warmup for t < warmup, then a half cosine from
    1 to 0 over the remaining ``total − warmup`` steps:

        f(t) = ½ (1 + cos(π (t − warmup) / max(1, total − warmup)))

    Use as ``LambdaLR(opt, cosine_schedule(steps, warmup))``.

        >>> f = cosine_schedule(total=10, warmup=2)
        >>> [f(0), f(1), f(2), f(6), f(10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor
