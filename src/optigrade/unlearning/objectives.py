"""Unlearning objectives (SPEC §5): a scalar to *minimise*, split into forget and retain terms.

Notation: ℓ(D) = token-weighted mean answer NLL on batch D; NLL_seq(y|x) = summed answer-token
NLL of one sequence; log π(y|x) = −NLL_seq; π_ref = the frozen model at the start of unlearning.

=========  ====================================================================  ==========
name       forget term L_f                                                       retain L_r
=========  ====================================================================  ==========
ga         −ℓ(forget)                                                            0
graddiff   −γ·ℓ(forget)                                                          α·ℓ(retain)
npo        (2/β)·mean −log σ(−β·[log π_θ(y|x) − log π_ref(y|x)])                 α·ℓ(retain)
simnpo     γ·(2/β)·mean −log σ(β·(NLL_seq/|y| − δ))   (no reference)             α·ℓ(retain)
wga        −mean_tokens(p^β · ℓ_tok),  p = exp(−ℓ_tok) detached                   α·ℓ(retain)
=========  ====================================================================  ==========

Defaults follow the reference framework: γ = α = 1; NPO β = 0.1; SimNPO β = 4.5, δ = 0,
γ = 0.125; WGA β = 1.  NPO uses *sequence log-probabilities* (not raw logits, a known bug of
one public implementation).

An objective is called as ``objective(model, forget_batch, retain_batch, reference)`` and
returns the scalar ``L_f + L_r``; ``objective.parts(...)`` returns both terms (SAM and GRU need
them).  ``reference`` provides ``seq_logprob(batch)`` (see :class:`Reference`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict

import torch
import torch.nn.functional as F

from .benchmark import token_nll

__all__ = ["Objective", "GA", "GradDiff", "NPO", "SimNPO", "WGA", "Reference", "make_objective",
           "OBJECTIVES", "mean_nll", "seq_nll"]


def _logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ℓ: token-weighted mean NLL over every unmasked token of the batch."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp_min(1)


def seq_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL_seq [B], |y| [B]): summed answer-token NLL and answer length per sequence."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(1), mask.sum(1)


class Reference:
    """The frozen starting model π_ref, with per-example sequence log-probs cached by
    ``batch["index"]`` (forget sets are small; each example is scored once)."""

    def __init__(self, model) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._cache: Dict[int, float] = {}

    @torch.no_grad()
    def seq_logprob(self, batch) -> torch.Tensor:
        idx = batch["index"].tolist()
        missing = [i for i, k in enumerate(idx) if k not in self._cache]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            nll, _ = seq_nll(_logits(self.model, sub), sub["labels"])
            for j, v in zip(missing, nll.tolist()):
                self._cache[idx[j]] = -v
        dev = batch["input_ids"].device
        return torch.tensor([self._cache[k] for k in idx], dtype=torch.float32, device=dev)


@dataclass
class Objective:
    """Base: subclasses implement :meth:`forget_term`; the retain term is α·ℓ(retain)."""

    alpha: float = 1.0
    name: str = field(default="objective", init=False)
    needs_reference: bool = field(default=False, init=False)
    needs_retain: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_nonneg("alpha", self.alpha, "the retain-loss weight")

    def forget_term(self, model, forget, reference) -> torch.Tensor:
        raise NotImplementedError

    def retain_term(self, model, retain) -> torch.Tensor:
        if not self.needs_retain or self.alpha == 0 or retain is None:
            return torch.zeros((), device=forget_device(model))
        return self.alpha * mean_nll(_logits(model, retain), retain["labels"])

    def parts(self, model, forget, retain=None, reference=None) -> Dict[str, torch.Tensor]:
        return {"forget": self.forget_term(model, forget, reference), "retain": self.retain_term(model, retain)}

    def __call__(self, model, forget, retain=None, reference=None) -> torch.Tensor:
        p = self.parts(model, forget, retain, reference)
        return p["forget"] + p["retain"]

    def settings(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def forget_device(model):
    return next(model.parameters()).device


@dataclass
class GA(Objective):
    """Gradient ascent: L = −ℓ(forget)."""

    alpha: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        self.name, self.needs_retain = "ga", False

    def forget_term(self, model, forget, reference=None):
        return -mean_nll(_logits(model, forget), forget["labels"])


@dataclass
class GradDiff(Objective):
    """L = −γ·ℓ(forget) + α·ℓ(retain)."""

    gamma: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_pos("gamma", self.gamma, "the forget-loss weight")
        self.name = "graddiff"

    def forget_term(self, model, forget, reference=None):
        return -self.gamma * mean_nll(_logits(model, forget), forget["labels"])


@dataclass
class NPO(Objective):
    """Negative preference optimisation: (2/β)·mean −log σ(−β·(log π_θ − log π_ref)) + α·ℓ(retain)."""

    beta: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_pos("beta", self.beta, "NPO's inverse temperature, default 0.1")
        self.name, self.needs_reference = "npo", True

    def forget_term(self, model, forget, reference):
        if reference is None:
            raise ValueError("NPO needs the frozen reference model: pass reference=Reference(model)")
        nll, _ = seq_nll(_logits(model, forget), forget["labels"])
        log_ratio = -nll - reference.seq_logprob(forget)
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()


@dataclass
class SimNPO(Objective):
    """SimNPO: γ·(2/β)·mean −log σ(β·(NLL_seq/|y| − δ)) + α·ℓ(retain); no reference."""

    beta: float = 4.5
    delta: float = 0.0
    gamma: float = 0.125

    def __post_init__(self):
        super().__post_init__()
        _check_pos("beta", self.beta, "SimNPO's inverse temperature, default 4.5")
        _check_pos("gamma", self.gamma, "the forget-loss weight, default 0.125")
        self.name = "simnpo"

    def forget_term(self, model, forget, reference=None):
        nll, n = seq_nll(_logits(model, forget), forget["labels"])
        x = self.beta * (nll / n.clamp_min(1) - self.delta)
        return -self.gamma * (2.0 / self.beta) * F.logsigmoid(x).mean()


@dataclass
class WGA(Objective):
    """Weighted gradient ascent: −mean_tokens(p^β·ℓ_tok) with p = exp(−ℓ_tok) detached."""

    beta: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_pos("beta", self.beta, "WGA's confidence exponent, default 1")
        self.name = "wga"

    def forget_term(self, model, forget, reference=None):
        nll, mask = token_nll(_logits(model, forget), forget["labels"])
        w = torch.exp(-nll.detach()) ** self.beta
        return -(w * nll).sum() / mask.sum().clamp_min(1)


OBJECTIVES = {"ga": GA, "graddiff": GradDiff, "npo": NPO, "simnpo": SimNPO, "wga": WGA}


def make_objective(name: str, **kw) -> Objective:
    """``make_objective("npo", beta=0.1)``; unknown names list the available ones."""
    key = str(name).lower()
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    try:
        return OBJECTIVES[key](**kw)
    except TypeError as e:
        raise ValueError(f"bad settings for objective {name!r}: {e}") from None


def _check_pos(name, value, what):
    if not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r} ({what})")


def _check_nonneg(name, value, what):
    if not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r} ({what})")
