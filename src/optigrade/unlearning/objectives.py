"""Unlearning objectives (SPEC §5): a scalar to *minimise*, split into forget and retain terms.

Notation: ℓ(D) = token-weighted mean answer NLL on batch D; NLL_seq(y|x) = summed answer-token
NLL of one sequence; log π(y|x) = −NLL_seq; π_ref = the frozen model at the start of unlearning
(every NLL is :mod:`optigrade._lm`'s).

=========  ====================================================================  ==========
name       forget term L_f                                                       retain L_r
=========  ====================================================================  ==========
ga         −ℓ(forget)                                                            0
graddiff   −γ·ℓ(forget)                                                          α·ℓ(retain)
npo        (2/β)·mean −log σ(−β·[log π_θ(y|x) − log π_ref(y|x)])                 α·ℓ(retain)
simnpo     γ·(2/β)·mean −log σ(β·(NLL_seq/|y| − δ))   (no reference)             α·ℓ(retain)
wga        −mean_tokens(p^β · ℓ_tok),  p = exp(−ℓ_tok) detached                   α·ℓ(retain)
rmu        MSE(h_θ^ℓ(x_f), c·u)   (hidden states at layer ℓ; u a random unit      α·MSE(h_θ^ℓ(x_r),
           vector)                                                               h_ref^ℓ(x_r))
=========  ====================================================================  ==========

Defaults follow the reference framework: γ = α = 1; NPO β = 0.1; SimNPO β = 4.5, δ = 0,
γ = 0.125; WGA β = 1; RMU c = 6.5, α = 1200, ℓ = 7 (Zephyr-7B).  NPO uses *sequence log-probabilities* (not raw logits, a known bug of
one public implementation).

An objective is called as ``objective(model, forget_batch, retain_batch, reference)`` and
returns the scalar ``L_f + L_r``; ``objective.parts(...)`` returns both terms (SAM and GRU need
them).  ``reference`` provides ``seq_logprob(batch)`` and the frozen ``model`` (see
:class:`Reference`).  Two hooks let an objective speak before any work: ``check_model(model)``
(the loop calls it before the first step; RMU refuses a layer the model does not have) and
``default_params()`` (the parameter pattern a config uses when the user gives none; RMU's
``mlp.down_proj`` of layers ℓ−2..ℓ).  Build one by
name with :func:`make_objective`; :func:`objective_hyperparameters` lists what it takes.

Closed forms on a tiny Llama whose output layer is zeroed: every next-token distribution is
uniform over the V words, so every token NLL is exactly log V (the synthetic answers are one
token each), p = 1/V, and the model is its own reference (log ratio 0):

    >>> import math
    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts(n_entities=20); V = len(bench.tokenizer); L = math.log(V)
    >>> model = tiny_llama(V, tokenizer=bench.tokenizer); _ = model.lm_head.weight.data.zero_()
    >>> f, r = bench.encode_qa(bench.forget[:4]), bench.encode_qa(bench.retain[:4])
    >>> def close(objective, want, ref=None):
    ...     return math.isclose(objective(model, f, r, ref).item(), want, rel_tol=1e-5)
    >>> close(GA(), -L), close(GradDiff(gamma=2.0, alpha=0.5), -2 * L + 0.5 * L)
    (True, True)
    >>> close(NPO(beta=0.5, alpha=0.0), (2 / 0.5) * math.log(2), Reference(model))
    True
    >>> close(SimNPO(beta=2.0, delta=1.0, gamma=0.5, alpha=0.0),      # −log σ(x) = log(1 + e^−x)
    ...       0.5 * (2 / 2.0) * math.log1p(math.exp(-2.0 * (L - 1.0))))
    True
    >>> close(WGA(beta=1.0, alpha=0.0), -L / V)
    True
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, fields
import hashlib
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .._device import model_device
from .._lm import IGNORE, lm_logits, mean_nll, seq_nll, token_nll
from .._registry import Registry
from .._validate import ConfigError, choice, int_at_least, non_negative, positive

__all__ = ["Objective", "GA", "GradDiff", "NPO", "SimNPO", "WGA", "RMU", "Reference", "OBJECTIVES",
           "make_objective", "objective_hyperparameters"]

#: objective name → :class:`Objective` subclass; each class registers itself
OBJECTIVES: Registry = Registry("objective")

#: how one hyperparameter is checked: (check(name, value, meaning, fix), meaning, value to try)
Rule = Tuple[Callable[..., Any], str, Any]


def _finite(name: str, value, meaning: str, fix) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}; {meaning}, try {fix}")
    return float(value)


class Reference:
    """The frozen starting model π_ref, with per-example sequence log-probs cached by
    ``batch["index"]`` (forget sets are small; each example is scored once).

        >>> import torch
        >>> ref = Reference(torch.nn.Linear(2, 2))        # any module: a frozen copy is kept
        >>> any(p.requires_grad for p in ref.model.parameters()), ref.model.training
        (False, False)
    """

    def __init__(self, model) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._cache: Dict[int, float] = {}

    @torch.no_grad()
    def seq_logprob(self, batch) -> torch.Tensor:
        """log π_ref(y|x) [B] of the batch's examples, on the batch's device."""
        idx = batch["index"].tolist()
        missing = [i for i, k in enumerate(idx) if k not in self._cache]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            nll, _ = seq_nll(lm_logits(self.model, sub), sub["labels"])
            for j, v in zip(missing, nll.tolist()):
                self._cache[idx[j]] = -v
        dev = batch["input_ids"].device
        return torch.tensor([self._cache[k] for k in idx], dtype=torch.float32, device=dev)


@dataclass
class Objective:
    """Base: subclasses implement :meth:`forget_term`; the retain term is α·ℓ(retain).

    Every hyperparameter (dataclass field) has a rule in :attr:`checks` (merged along the class
    hierarchy) and is checked on construction, naming the value and a fix:

        >>> GradDiff(alpha=-1)
        Traceback (most recent call last):
        ...
        ValueError: alpha must be >= 0, got -1; the retain-loss weight, try 1.0
    """

    alpha: float = 1.0

    name: ClassVar[str] = "objective"
    needs_reference: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = True
    #: hyperparameter → (check, meaning, fix); a subclass lists only its own
    checks: ClassVar[Dict[str, Rule]] = {"alpha": (non_negative, "the retain-loss weight", 1.0)}

    def __post_init__(self) -> None:
        rules = _rules(type(self))
        for f in fields(self):
            check, meaning, fix = rules[f.name]
            check(f.name, getattr(self, f.name), meaning, fix)

    def forget_term(self, model, forget, reference) -> torch.Tensor:
        raise NotImplementedError

    def check_model(self, model) -> None:
        """Refuse, before any work, a model this objective cannot run on (the loop calls it
        before the first step).  The base accepts every model."""

    def default_params(self) -> Optional[str]:
        """The parameter pattern (:mod:`optigrade._select`) to train when the user gives none
        (``UnlearnConfig.params`` left null); None: every parameter."""
        return None

    def retain_term(self, model, retain, reference=None) -> torch.Tensor:
        """α·ℓ(retain) (a zero on the model's device when there is no retain term; ``reference``
        is unused here, RMU's retain term needs it)."""
        if not self.needs_retain or self.alpha == 0 or retain is None:
            return torch.zeros((), device=model_device(model))
        return self.alpha * mean_nll(lm_logits(model, retain), retain["labels"])

    def parts(self, model, forget, retain=None, reference=None) -> Dict[str, torch.Tensor]:
        """``{"forget": L_f, "retain": L_r}``."""
        return {"forget": self.forget_term(model, forget, reference),
                "retain": self.retain_term(model, retain, reference)}

    def __call__(self, model, forget, retain=None, reference=None) -> torch.Tensor:
        p = self.parts(model, forget, retain, reference)
        return p["forget"] + p["retain"]

    def settings(self) -> dict:
        """Hyperparameters and capabilities, recorded in every manifest."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "name": self.name,
                "needs_reference": self.needs_reference, "needs_retain": self.needs_retain}


def _rules(cls) -> Dict[str, Rule]:
    out: Dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("checks", {}))
    return out


@OBJECTIVES.register("ga")
@dataclass
class GA(Objective):
    """Gradient ascent: L = −ℓ(forget).

        >>> GA(), GA.needs_retain
        (GA(alpha=0.0), False)
    """

    alpha: float = 0.0

    name: ClassVar[str] = "ga"
    needs_retain: ClassVar[bool] = False

    def forget_term(self, model, forget, reference=None):
        return -mean_nll(lm_logits(model, forget), forget["labels"])


@OBJECTIVES.register("graddiff")
@dataclass
class GradDiff(Objective):
    """Gradient difference: L = −γ·ℓ(forget) + α·ℓ(retain).

        >>> GradDiff(gamma=2.0).settings()
        {'alpha': 1.0, 'gamma': 2.0, 'name': 'graddiff', 'needs_reference': False, 'needs_retain': True}
    """

    gamma: float = 1.0

    name: ClassVar[str] = "graddiff"
    checks: ClassVar[Dict[str, Rule]] = {"gamma": (positive, "the forget-loss weight", 1.0)}

    def forget_term(self, model, forget, reference=None):
        return -self.gamma * mean_nll(lm_logits(model, forget), forget["labels"])


@OBJECTIVES.register("npo")
@dataclass
class NPO(Objective):
    """Negative preference optimisation (Zhang et al., 2024):
    L = (2/β)·mean −log σ(−β·(log π_θ − log π_ref)) + α·ℓ(retain).  At the reference (log ratio 0)
    the forget term is (2/β)·log 2 (module docstring).

        >>> NPO(beta=0.5), NPO.needs_reference
        (NPO(alpha=1.0, beta=0.5), True)
    """

    beta: float = 0.1

    name: ClassVar[str] = "npo"
    needs_reference: ClassVar[bool] = True
    checks: ClassVar[Dict[str, Rule]] = {"beta": (positive, "NPO's inverse temperature", 0.1)}

    def forget_term(self, model, forget, reference):
        if reference is None:
            raise ValueError("NPO needs the frozen reference model: pass reference=Reference(model)")
        nll, _ = seq_nll(lm_logits(model, forget), forget["labels"])
        log_ratio = -nll - reference.seq_logprob(forget)
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()


@OBJECTIVES.register("simnpo")
@dataclass
class SimNPO(Objective):
    """SimNPO (Fan et al., 2024): γ·(2/β)·mean −log σ(β·(NLL_seq/|y| − δ)) + α·ℓ(retain); no
    reference (length-normalised NLL instead of the log ratio).

        >>> SimNPO(), SimNPO.needs_reference
        (SimNPO(alpha=1.0, beta=4.5, delta=0.0, gamma=0.125), False)
    """

    beta: float = 4.5
    delta: float = 0.0
    gamma: float = 0.125

    name: ClassVar[str] = "simnpo"
    checks: ClassVar[Dict[str, Rule]] = {
        "beta": (positive, "SimNPO's inverse temperature", 4.5),
        "delta": (_finite, "SimNPO's reward margin δ", 0.0),
        "gamma": (positive, "the forget-loss weight", 0.125),
    }

    def forget_term(self, model, forget, reference=None):
        nll, n = seq_nll(lm_logits(model, forget), forget["labels"])
        x = self.beta * (nll / n.clamp_min(1) - self.delta)
        return -self.gamma * (2.0 / self.beta) * F.logsigmoid(x).mean()


@OBJECTIVES.register("wga")
@dataclass
class WGA(Objective):
    """Weighted gradient ascent (Wang et al., 2025): −mean_tokens(p^β·ℓ_tok) with
    p = exp(−ℓ_tok) detached (confident tokens weigh more; under a uniform model p = 1/V).

        >>> WGA(beta=2.0).beta
        2.0
    """

    beta: float = 1.0

    name: ClassVar[str] = "wga"
    checks: ClassVar[Dict[str, Rule]] = {"beta": (positive, "WGA's confidence exponent", 1.0)}

    def forget_term(self, model, forget, reference=None):
        nll, mask = token_nll(lm_logits(model, forget), forget["labels"])
        w = torch.exp(-nll.detach()) ** self.beta
        return -(w * nll).sum() / mask.sum().clamp_min(1)


class _Stop(Exception):
    """Raised by the capture hook: the layers after ℓ and the head are not needed."""


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers whose outputs RMU reads: ``model.model.layers`` (Llama family, as the
    WMDP reference hooks them; also a :class:`~optigrade._prefix.PrefixCache`, which keeps the
    causal LM's ``model``), else GPT-2's ``model.transformer.h``."""
    for path in (("model", "layers"), ("transformer", "h")):
        m = model
        for a in path:
            m = getattr(m, a, None)
        if isinstance(m, torch.nn.ModuleList):
            return m
    raise ValueError(f"RMU reads the output of a decoder layer, model.model.layers[ℓ] (Llama family) or "
                     f"model.transformer.h[ℓ] (GPT-2); {type(model).__name__} has neither")


def hidden_at(model, batch, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` [B, T, d] on ``batch`` (a forward hook on
    ``decoder_layers(model)[layer]``, the hidden states the layer hands to the next one; the
    forward stops there, so the later layers and the head are not run).  Under autograd's mode
    as called (no graph under ``torch.no_grad()``)."""
    box = []

    def hook(module, args, out):
        box.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"RMU: decoder layer {layer} did not run in the forward pass (nothing captured)")
    return box[0]


def _layer_index(name, value, meaning, fix):
    return int_at_least(name, value, 0, meaning, fix)


def _seed(name, value, meaning, fix):
    v = int_at_least(name, value, 0, meaning, fix)
    if v >= 2**63:
        raise ValueError(f"{name} must be < 2**63, got {value!r}; {meaning}, try {fix}")
    return v


def _tokens(name, value, meaning, fix):
    return choice(name, value, RMU.TOKENS, meaning)


@OBJECTIVES.register("rmu")
@dataclass
class RMU(Objective):
    """Representation misdirection for unlearning (Li et al., 2024, "The WMDP Benchmark"):

        L = MSE(h_θ^ℓ(x_f), c·u) + α·MSE(h_θ^ℓ(x_r), h_ref^ℓ(x_r))

    ``h^ℓ`` is the output of decoder layer ``layer`` (``model.model.layers[ℓ]``, captured with a
    forward hook; the forward stops there), ``u`` a fixed random unit vector of the hidden size
    (drawn once, from ``seed``: uniform [0, 1) entries normalised to norm 1, as the reference's
    ``torch.rand``), ``c = steering_coeff`` and ``h_ref`` the frozen reference model's hidden
    states (``needs_reference``).  MSE is the mean over the hidden dimension and over the
    selected tokens: ``tokens="all"`` every real (non-padding, ``attention_mask``) token of the
    text, mean over all of them (the WMDP reference, which averages over every position of its
    raw-text batches); ``tokens="answer"`` only the answer tokens (``labels != -100``), averaged
    per sequence and then over the batch (the open-unlearning port).  Only ``mlp.down_proj`` of
    layers ℓ−2..ℓ is trained by default (:meth:`default_params`; the config applies it when
    ``params`` is null).  Defaults are the reference's for Zephyr-7B: ℓ = 7, c = 6.5, α = 1200.

        >>> RMU(layer=1).default_params()
        'layers\\\\.(0|1)\\\\.mlp\\\\.down_proj\\\\.'
        >>> RMU(layer=1, steering_coeff=2.0).control_vector(4).norm().item()    # c·u, |u| = 1
        2.0
        >>> RMU(tokens="prompt")
        Traceback (most recent call last):
        ...
        ValueError: tokens must be one of ['all', 'answer'], got 'prompt'; which hidden states enter the MSE: every real token of the text, or the answer tokens only, try 'all'
    """

    alpha: float = 1200.0
    layer: int = 7
    steering_coeff: float = 6.5
    seed: int = 0
    tokens: str = "all"

    name: ClassVar[str] = "rmu"
    needs_reference: ClassVar[bool] = True
    TOKENS: ClassVar[Tuple[str, ...]] = ("all", "answer")
    checks: ClassVar[Dict[str, Rule]] = {
        "alpha": (non_negative, "the retain-loss weight", 1200.0),
        "layer": (_layer_index, "the decoder layer whose output is steered (7 for 7B models)", 7),
        "steering_coeff": (positive, "the norm c of the target vector c·u", 6.5),
        "seed": (_seed, "the seed of the random direction u", 0),
        "tokens": (_tokens, "which hidden states enter the MSE: every real token of the text, or the answer "
                            "tokens only", "all"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self._u: Optional[torch.Tensor] = None  # u (float32, CPU), drawn at the first use
        self._memo = None  # (retain batch tensors, their versions, reference, h_ref): the last retain batch

    # ------------------------------------------------------------------ hooks
    def default_params(self) -> str:
        """``mlp.down_proj`` of decoder layers ℓ−2..ℓ (those that exist)."""
        ids = "|".join(str(i) for i in range(max(0, self.layer - 2), self.layer + 1))
        return rf"layers\.({ids})\.mlp\.down_proj\."

    def check_num_layers(self, n: int) -> None:
        """Refuse ``layer >= n`` for a model with ``n`` decoder layers."""
        if self.layer >= n:
            raise ValueError(f"RMU layer={self.layer} does not exist: the model has {n} decoder layers "
                             f"(0..{n - 1}); choose layer <= {n - 1}, e.g. --objective-arg layer={max(0, n - 1)} "
                             "(the reference uses 7 of 32 for 7B models)")

    def check_model(self, model) -> None:
        """The model has decoder layers RMU can hook and ``layer`` is one of them."""
        self.check_num_layers(len(decoder_layers(model)))
        first = getattr(model, "first_layer", None)  # a PrefixCache: layers before it run once, without a graph
        if isinstance(first, int) and first > self.layer:
            raise ValueError(f"RMU layer={self.layer} lies in the cached frozen prefix (layers < {first}): no moved "
                             f"weight changes its output; move weights in layers <= {self.layer} or turn "
                             "prefix_cache off")

    # ------------------------------------------------------------------ the target
    def control_vector(self, hidden_size: int) -> torch.Tensor:
        """c·u [hidden_size] (float32, CPU); u is drawn once from ``seed`` and kept."""
        if self._u is None or self._u.numel() != hidden_size:
            g = torch.Generator().manual_seed(self.seed)
            u = torch.rand(hidden_size, generator=g, dtype=torch.float32)
            self._u = u / u.norm()
        return self.steering_coeff * self._u

    def _mse(self, h: torch.Tensor, target: torch.Tensor, batch) -> torch.Tensor:
        sq = (h.float() - target.float()).pow(2).mean(-1)  # [B, T]: mean over the hidden dimension
        if self.tokens == "answer":
            m = (batch["labels"] != IGNORE).to(sq.dtype)
            return ((sq * m).sum(1) / m.sum(1).clamp_min(1)).mean()
        am = batch.get("attention_mask")
        m = torch.ones_like(sq) if am is None else am.to(sq.dtype)
        return (sq * m).sum() / m.sum().clamp_min(1)

    # ------------------------------------------------------------------ terms
    def forget_term(self, model, forget, reference=None):
        self.check_model(model)
        h = hidden_at(model, forget, self.layer)
        cu = self.control_vector(h.shape[-1]).to(device=h.device)
        return self._mse(h, cu.expand_as(h), forget)

    def _reference_hidden(self, reference, retain) -> torch.Tensor:
        """h_ref^ℓ(x_r), recomputed unless it is the same retain batch (same tensors, unmodified)
        and the same reference as the last call (a zeroth-order step scores one batch many times)."""
        keys = tuple(v for v in (retain["input_ids"], retain.get("attention_mask")) if v is not None)
        memo = self._memo
        if memo is not None and memo[2] is reference and len(memo[0]) == len(keys) \
                and all(a is b for a, b in zip(memo[0], keys)) and memo[1] == tuple(k._version for k in keys):
            return memo[3]
        with torch.no_grad():
            h = hidden_at(reference.model, retain, self.layer)
        self._memo = (keys, tuple(k._version for k in keys), reference, h)
        return h

    def retain_term(self, model, retain, reference=None):
        if self.alpha == 0 or retain is None:
            return torch.zeros((), device=model_device(model))
        if reference is None:
            raise ValueError("RMU's retain term needs the frozen reference model: pass reference=Reference(model)")
        h = hidden_at(model, retain, self.layer)
        return self.alpha * self._mse(h, self._reference_hidden(reference, retain).to(h.device), retain)

    def settings(self) -> dict:
        """Hyperparameters, plus the drawn direction u (its distribution, size and sha256)."""
        out = super().settings()
        if self._u is not None:
            out["control_vector"] = {"distribution": "uniform[0,1) normalised to unit norm, torch.Generator(seed)",
                                     "hidden_size": self._u.numel(), "seed": self.seed,
                                     "sha256": hashlib.sha256(self._u.numpy().tobytes()).hexdigest()}
        return out


def objective_hyperparameters(name: str) -> Dict[str, Any]:
    """The hyperparameters the objective registered as ``name`` takes, with their defaults.

        >>> objective_hyperparameters("npo")
        {'alpha': 1.0, 'beta': 0.1}
        >>> objective_hyperparameters("simnpo")
        {'alpha': 1.0, 'beta': 4.5, 'delta': 0.0, 'gamma': 0.125}
    """
    return {f.name: f.default for f in fields(OBJECTIVES.get(name)) if f.init}


def make_objective(name: str, **kwargs) -> Objective:
    """The objective registered as ``name`` with hyperparameters ``kwargs`` (the library form of
    ``--objective npo --objective-arg beta=0.1`` and ``objectives: [{name: npo, beta: 0.1}]``).

    Raises:
        ConfigError: an unknown name (the registered ones are listed), an unknown keyword (the
            accepted ones are listed) or a bad value (the rule and a fix).

        >>> make_objective("npo", beta=0.5)
        NPO(alpha=1.0, beta=0.5)
        >>> make_objective("npo", betta=0.5)
        Traceback (most recent call last):
        ...
        optigrade._validate.ConfigError: objective 'npo' takes alpha, beta; got unknown 'betta' (did you mean 'beta'?)
        >>> make_objective("npo", beta=0)
        Traceback (most recent call last):
        ...
        optigrade._validate.ConfigError: beta must be > 0, got 0; NPO's inverse temperature, try 0.1
        >>> make_objective("dpo")
        Traceback (most recent call last):
        ...
        optigrade._validate.ConfigError: unknown objective 'dpo'; choose one of: ga, graddiff, npo, rmu, simnpo, wga
    """
    cls = OBJECTIVES.get(name)
    allowed = objective_hyperparameters(name)
    bad = [k for k in kwargs if k not in allowed]
    if bad:
        hints = [m[0] for k in bad for m in [difflib.get_close_matches(k, allowed, n=1)] if m]
        hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
        raise ConfigError(f"objective {OBJECTIVES.key(name)!r} takes {', '.join(allowed)}; got unknown "
                          f"{', '.join(map(repr, bad))}{hint}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
