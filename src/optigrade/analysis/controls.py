"""Controls that tell grade from magnitude (SCIENCE.md §3): checkpoints built from the original
model θ₀ and another run's update, which then go through the same attacks, geometry,
diagnostics and explain stage as every optimizer's run.

A study's ``controls:`` list holds :class:`ControlSpec` entries; each is run for every objective
and seed of the study, after the optimizer runs it refers to (same objective and seed):

===========  ==================================================================================
kind         checkpoint
===========  ==================================================================================
noise        C1 — θ₀ + n: Gaussian noise on the tensors the ``match`` run moved, each tensor's
             ‖n_t‖ equal to that run's ‖Δ_t‖ (``per_tensor``; else one global norm ‖Δ‖ spread
             isotropically over them), or of norm ``norm``, or per-weight std
             ``sigma_half_steps`` × half a quantization step
fo_noise     C2 / C7 — θ_src + n: the ``source`` run's checkpoint plus noise sized as above
             (``match``: the ZO run's ‖Δ_t‖ — C2; ``sigma_half_steps`` ∈ {¼, ½, 1} — C7, whose
             expectation over noise draws is the mean over the study's seeds)
scale        C4 — θ₀ + c·(θ_src − θ₀), c = ``scale`` (the magnitude ladder), or with ``match``
             c = ‖Δ_match‖ / ‖Δ_src‖: the source's direction moved as far as the match run
===========  ==================================================================================

C3 (FO + noise during training: ``sgld`` / ``noisy-adam``), C5 (FO-RS / SAM against FO + noise
and ZO) and C6 (the ZO μ / q sweep) are ordinary ``optimizers:`` entries; see
``configs/smollm2_controls_extended.yaml``.  A control has no steps: it "reaches the target" when its forget
metric is at or below the study's target, and is then judged against the same utility floors.

The half-step is half the RTN step s_i of weight i on θ₀'s grid for the study's first quantize
attack (else 4 bits, per output channel, symmetric); for a model loaded from a GGUF file this is
RTN's grid, not the file's block scales (the quantization diagnostics report both).
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, Literal, Optional

import torch
from pydantic import model_validator

from .._select import linear_weights
from ..unlearning.config import F, Spec

__all__ = ["ControlSpec", "CONTROL_KINDS", "build_control", "noise_seed", "update_norms_per_tensor"]

CONTROL_KINDS = ("noise", "fo_noise", "scale")


class ControlSpec(Spec):
    """One control entry of a study (module docstring).

    >>> ControlSpec(kind="noise", label="noise-like-zo", match="zo-sgd").kind
    'noise'
    >>> ControlSpec(kind="scale", label="adam x10", source="adam")
    Traceback (most recent call last):
    ...
    optigrade._validate.ConfigError: control 'adam x10' (kind scale): scale is missing; give the factor c of θ₀ + c·(θ_src − θ₀), e.g. scale: 10, or match: an optimizer label (c = ‖Δ_match‖ / ‖Δ_src‖: the source's direction at the match run's displacement)
    """

    kind: Literal["noise", "fo_noise", "scale"] = F(..., "noise (C1) | fo_noise (C2, C7) | scale (C4)", "noise")
    label: str = F(..., "the control's name in tables (distinct from every optimizer label)", "noise-like-zo")
    source: Optional[str] = F(None, "fo_noise / scale: the optimizer entry (label) whose checkpoint it starts from",
                              "adam")
    match: Optional[str] = F(None, "noise / fo_noise: the optimizer entry whose update norms the noise matches; "
                             "scale: the one whose ‖Δ‖ the scaled update matches",
                             "zo-sgd")
    norm: Optional[float] = F(None, "noise / fo_noise: an explicit ‖n‖ (instead of match)", 10.0, gt=0)
    sigma_half_steps: Optional[float] = F(None, "noise / fo_noise: per-weight std in half quantization steps", 0.5,
                                          gt=0)
    per_tensor: bool = F(True, "with match: each tensor's ‖n_t‖ = ‖Δ_t‖ (else one global norm)", True)
    scale: Optional[float] = F(None, "scale: the factor c of θ₀ + c·Δ_src", 10.0)
    params: Optional[str] = F(None, "noise on these weights only (pattern; default: the tensors the match run "
                              "moved, or with sigma_half_steps every RTN-quantized weight)", r"mlp\.down_proj")

    @model_validator(mode="after")
    def _kind_fields(self):
        where = f"control {self.label!r} (kind {self.kind})"
        sizes = [k for k in ("match", "norm", "sigma_half_steps") if getattr(self, k) is not None]
        if self.kind in ("noise", "fo_noise"):
            if len(sizes) != 1:
                raise ValueError(f"{where}: give exactly one of match (an optimizer label: noise with that run's "
                                 f"update norms), norm or sigma_half_steps, got {sizes or 'none'}")
            if self.scale is not None:
                raise ValueError(f"{where}: scale belongs to kind scale; remove it")
        if self.kind in ("fo_noise", "scale") and not self.source:
            raise ValueError(f"{where}: source is missing; name the optimizer entry whose checkpoint it starts "
                             "from, e.g. source: adam")
        if self.kind == "noise" and self.source:
            raise ValueError(f"{where}: a noise control starts from θ₀; remove source (or use kind fo_noise)")
        if self.kind == "scale":
            if (self.scale is None) == (self.match is None):
                raise ValueError(f"{where}: scale is missing; give the factor c of θ₀ + c·(θ_src − θ₀), e.g. "
                                 "scale: 10, or match: an optimizer label (c = ‖Δ_match‖ / ‖Δ_src‖: the source's "
                                 "direction at the match run's displacement)" if self.scale is None else
                                 f"{where}: give scale or match, not both")
            if self.scale is not None and not math.isfinite(self.scale):
                raise ValueError(f"{where}: scale must be finite, got {self.scale}")
            extra = [k for k in ("norm", "sigma_half_steps") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{where}: {', '.join(extra)} belong to the noise kinds; remove them")
        return self

    @property
    def key(self) -> str:
        return self.label

    def to_dict(self) -> dict:
        return {k: v for k, v in self.model_dump(mode="python").items() if v is not None}


def noise_seed(label: str, seed: int) -> int:
    """The noise draw's seed for control ``label`` in study seed ``seed`` (stable across runs
    and machines: a sha256, not Python's salted hash).

    >>> noise_seed("c1", 0) == noise_seed("c1", 0) != noise_seed("c1", 1)
    True
    """
    return int.from_bytes(hashlib.sha256(f"{label}\0{seed}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def update_norms_per_tensor(base, model) -> Dict[str, float]:
    """‖θ_model,t − θ_base,t‖ for every tensor t that moved (bit-level comparison)."""
    pb = dict(base.named_parameters())
    out = {}
    for n, p in model.named_parameters():
        if not torch.equal(p, pb[n]):
            out[n] = float((p.detach().double() - pb[n].detach().double()).norm())
    return out


def _half_steps(model, names, bits: int, group_size, symmetric: bool) -> Dict[str, torch.Tensor]:
    """Half the RTN step s_i/2 per weight (float64) for the ``names`` that RTN quantizes."""
    from .attacks.rtn import _grouped, quant_step

    lin = {n for n, _ in linear_weights(model)}
    named = dict(model.named_parameters())
    out = {}
    for n in names:
        if n in lin:
            w = named[n].detach()
            s, _ = quant_step(w, bits, group_size, symmetric)
            out[n] = (s.expand_as(_grouped(w, group_size)).reshape(w.shape) / 2).double()
    return out


@torch.no_grad()
def build_control(spec: ControlSpec, base, seed: int, *, source=None, match_norms: Optional[Dict[str, float]] = None,
                  grid=(4, None, True)):
    """The control checkpoint (a new model; ``base`` and ``source`` are not modified) and a dict
    of what it is (``ctrl_noise_norm``, ``ctrl_tensors`` ...) for the run's rows.

    Args:
        spec: the control.  base: θ₀.  seed: the study seed (the noise draw is
            :func:`noise_seed` of the label and it).
        source: the source run's checkpoint θ_src (fo_noise, scale).
        match_norms: the match run's :func:`update_norms_per_tensor` (noise kinds with match).
        grid: (bits, group_size, symmetric) of the half-step (sigma_half_steps).

    C1's noise has exactly the matched per-tensor norms; C4 scales the update exactly:

    >>> import copy
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> moved = copy.deepcopy(net)
    >>> _ = moved[0].weight.data.add_(0.1)
    >>> norms = update_norms_per_tensor(net, moved)
    >>> c1, info = build_control(ControlSpec(kind="noise", label="c1", match="m"), net, 0, match_norms=norms)
    >>> round(update_norms_per_tensor(net, c1)["0.weight"], 6) == round(norms["0.weight"], 6), info["ctrl_tensors"]
    (True, 1)
    >>> c4, _ = build_control(ControlSpec(kind="scale", label="x3", source="m", scale=3), net, 0, source=moved)
    >>> torch.allclose(c4[0].weight - net[0].weight, 3 * (moved[0].weight - net[0].weight))
    True
    >>> far = {"0.weight": 5 * norms["0.weight"]}                       # C4 matched: c = ‖Δ_match‖ / ‖Δ_src‖
    >>> c4m, info = build_control(ControlSpec(kind="scale", label="xm", source="m", match="z"), net, 0,
    ...                           source=moved, match_norms=far)
    >>> round(info["ctrl_scale"], 6), round(update_norms_per_tensor(net, c4m)["0.weight"] / norms["0.weight"], 6)
    (5.0, 5.0)
    """
    from .._select import matcher

    start = source if spec.kind in ("fo_noise", "scale") else base
    if start is None:
        raise ValueError(f"control {spec.label!r} (kind {spec.kind}) needs the source run's checkpoint")
    model = __import__("copy").deepcopy(start)
    named = dict(model.named_parameters())
    pb = dict(base.named_parameters())
    info: Dict[str, float] = {}
    if spec.kind == "scale":
        c = spec.scale
        if c is None:  # match: the source's direction at the match run's global displacement
            if match_norms is None:
                raise ValueError(f"control {spec.label!r}: match_norms (the match run's update norms) are needed")
            src = update_norms_per_tensor(base, start)
            if not src:
                raise ValueError(f"control {spec.label!r}: the source run {spec.source!r} moved no weight; nothing "
                                 "to scale")
            c = math.sqrt(sum(v * v for v in match_norms.values())) / math.sqrt(sum(v * v for v in src.values()))
        for n, p in named.items():
            if not torch.equal(p, pb[n]):
                d = p.detach().double() - pb[n].detach().double()
                p.copy_((pb[n].detach().double() + c * d).to(p.dtype))
        info["ctrl_scale"] = float(c)
        return model, info
    # ---------------------------------------------------------------- noise kinds
    gen = torch.Generator().manual_seed(noise_seed(spec.label, seed))
    pick = matcher(spec.params) if spec.params else None
    if spec.match is not None:
        if match_norms is None:
            raise ValueError(f"control {spec.label!r}: match_norms (the match run's update norms) are needed")
        names = [n for n in named if n in match_norms and (pick is None or pick(n, named[n]))]
        target = {n: match_norms[n] for n in names}
        if not spec.per_tensor:
            total = math.sqrt(sum(v * v for v in target.values()))
            sizes = {n: named[n].numel() for n in names}
            tot_n = sum(sizes.values())
            target = {n: total * math.sqrt(sizes[n] / tot_n) for n in names}  # isotropic: norm ∝ √numel
    elif spec.norm is not None:
        names = [n for n in named if pick is None or pick(n, named[n])]
        sizes = {n: named[n].numel() for n in names}
        tot_n = sum(sizes.values())
        target = {n: spec.norm * math.sqrt(sizes[n] / tot_n) for n in names}
    else:
        half = _half_steps(base, [n for n in named if pick is None or pick(n, named[n])], *grid)
        names, target = list(half), None
    if not names:
        raise ValueError(f"control {spec.label!r}: no tensor to put noise on (match run moved nothing, or params "
                         f"{spec.params!r} selects none of them)")
    sq = 0.0
    for n in names:
        p = named[n]
        z = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if target is not None:
            z = z * (target[n] / max(float(z.norm()), 1e-300))
        else:
            z = z * spec.sigma_half_steps * half[n]
        sq += float(z.pow(2).sum())
        p.copy_((p.detach().double() + z.to(p.device)).to(p.dtype))
    info.update(ctrl_noise_norm=math.sqrt(sq), ctrl_tensors=len(names))
    if spec.sigma_half_steps is not None:
        info["ctrl_sigma_half_steps"] = float(spec.sigma_half_steps)
    return model, info
