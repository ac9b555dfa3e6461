"""Display names for figures (private): what a reader sees instead of code identifiers.

An optimizer label is "<family> (<optimizer>)", e.g. ``zo-sgd`` → "zeroth-order (ZO-SGD)"; a
label with a parameter subset keeps it ("zeroth-order (ZO-SGD, down_proj L24-29)").  A control
of SCIENCE.md §3 is named by what it is, from the table's ``control_kind`` / ``control_source``
/ ``control_match`` columns ("C2: Adam + noise of ZO-SGD's size").  Unknown names fall back to
the identifier itself, never to an error.

>>> optimizer_label("zo-sgd")
'zeroth-order (ZO-SGD)'
>>> optimizer_label("zo-sgd (down_proj L24-29)", family="zeroth-order", name="zo-sgd")
'zeroth-order (ZO-SGD, down_proj L24-29)'
>>> optimizer_label("adam+zo-noise", family="control", control=("fo_noise", "adam", "zo-sgd"))
"C2: Adam + noise of ZO-SGD's size"
>>> attack_label("rtn4"), attack_label("gguf-q4_0"), quantity_label("forget_acc")
('RTN 4-bit', 'GGUF Q4_0 export', 'forget accuracy (fraction of facts)')
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import pandas as pd

__all__ = ["OPTIMIZERS", "FAMILIES", "optimizer_label", "optimizer_labels", "attack_label", "quantity_label",
           "split_label", "checkpoint_optimizer"]

#: registry name → how papers write it
OPTIMIZERS = {"zo-sgd": "ZO-SGD", "zo-sgd-momentum": "ZO-SGD with momentum", "zo-adam": "ZO-Adam",
              "adazo": "AdaZO", "zo-sign": "ZO-signSGD", "zo-conservative": "ZO-conservative",
              "forward-grad": "forward gradient", "hybrid": "FO/ZO hybrid", "lion": "Lion",
              "signadam": "sign-Adam", "signsgd": "signSGD", "signum": "Signum", "adam": "Adam", "adamw": "AdamW",
              "sgd": "SGD", "fo-rs": "FO randomized smoothing", "sam": "SAM", "noisy-adam": "noisy Adam",
              "sgld": "SGLD", "adahessian": "AdaHessian", "sophia-g": "Sophia-G", "sophia-h": "Sophia-H",
              "soul": "SOUL"}
#: registry family → the grade's name in the text
FAMILIES = {"zeroth-order": "zeroth-order", "forward-gradient": "zeroth-order", "compressed-first-order": "sign-based",
            "hybrid": "hybrid", "first-order": "first-order", "fo-smoothing": "first-order smoothing",
            "first-order+noise": "first-order + noise", "second-order": "second-order"}
#: the family of each registry name (for tables without a ``family`` column, e.g. landscape tables)
_FAMILY_OF = {"zo-sgd": "zeroth-order", "zo-sgd-momentum": "zeroth-order", "zo-adam": "zeroth-order",
              "adazo": "zeroth-order", "zo-sign": "zeroth-order", "zo-conservative": "zeroth-order",
              "forward-grad": "forward-gradient", "hybrid": "hybrid", "lion": "compressed-first-order",
              "signadam": "compressed-first-order", "signsgd": "compressed-first-order",
              "signum": "compressed-first-order", "adam": "first-order", "adamw": "first-order", "sgd": "first-order",
              "fo-rs": "fo-smoothing", "sam": "fo-smoothing", "noisy-adam": "first-order+noise",
              "sgld": "first-order+noise", "adahessian": "second-order", "sophia-g": "second-order",
              "sophia-h": "second-order", "soul": "second-order"}
_CONTROLS = {"noise": "C1: noise of {m}'s size on θ₀", "fo_noise": "C2: {s} + noise of {m}'s size",
             "scale": "C4: {s} scaled to {m}'s ‖Δ‖"}
_QUANTITIES = {"forget_acc": "forget accuracy (fraction of facts)", "retain_acc": "retain accuracy (fraction of facts)",
               "heldout_acc": "held-out accuracy (fraction of facts)", "forget_para_acc": "paraphrased forget accuracy",
               "general_ppl": "general perplexity (lower is better)", "forget_nll": "forget NLL (nats/token)",
               "geo_lambda_max": "λmax, top Hessian eigenvalue (loss/param²)",
               "geo_trace": "tr H, Hessian trace (loss/param²)",
               "geo_qnoise_sharpness": "sharpness at the quantization-noise scale (Δloss, nats/token)",
               "geo_adaptive_sharpness": "adaptive sharpness (Δloss, nats/token)",
               "diag_update_norm": "‖Δ‖ = ‖θ_u − θ₀‖₂ (L2 weight norm)",
               "diag_half_steps_mean": "mean |Δ| per weight (half-steps of the grid)"}
_SPLITS = {"all": "", "forget": "forget split", "retain": "retain split", "forget-half-B": "forget half B",
           "forget-half-A": "forget half A", "weights": "weights"}


def _short(name: str) -> str:
    if name.endswith("+gru"):
        return f"{_short(name[:-4])} + GRU"
    return OPTIMIZERS.get(name, name)


def _family(name: str, family: Optional[str]) -> str:
    base = name[:-4] if name.endswith("+gru") else name
    fam = family if isinstance(family, str) and family else _FAMILY_OF.get(base, "")
    m = re.fullmatch(r"gru\((.+)\)", fam)
    if m:
        fam = m.group(1)
    return FAMILIES.get(fam, fam)


def optimizer_label(optimizer: str, family: Optional[str] = None, name: Optional[str] = None,
                    control: Optional[Tuple[str, str, str]] = None) -> str:
    """The reader's name of the study label ``optimizer`` (see the module docstring); ``name`` is
    the registry name when the label differs (``optimizer_name`` column), ``control`` the
    (kind, source, match) of a control."""
    optimizer = str(optimizer)
    if optimizer == "original":
        return "original model θ₀"
    if control is not None and isinstance(control[0], str) and control[0] in _CONTROLS:
        kind, s, m = control
        return _CONTROLS[kind].format(s=_short(str(s)) if isinstance(s, str) else "?",
                                      m=_short(str(m)) if isinstance(m, str) else "?")
    base, _, rest = optimizer.partition(" (")
    reg = name if isinstance(name, str) and name else base
    extra = rest.rstrip(")") if rest else ""
    if reg not in OPTIMIZERS and not reg.endswith("+gru"):
        return optimizer if not (isinstance(family, str) and family) else f"{optimizer} ({family})"
    fam = _family(reg, family)
    inner = _short(reg) + (f", {extra}" if extra else "")
    return f"{fam} ({inner})" if fam else inner


def optimizer_labels(table: pd.DataFrame) -> Dict[str, str]:
    """``{optimizer: label}`` for every optimizer of a results table (its ``family``,
    ``optimizer_name`` and ``control_*`` columns when present)."""
    cols = [c for c in ("optimizer", "family", "optimizer_name", "control_kind", "control_source", "control_match")
            if c in table]
    out = {}
    for r in table[cols].drop_duplicates("optimizer").to_dict("records"):
        ctrl = (r.get("control_kind"), r.get("control_source"), r.get("control_match"))
        out[str(r["optimizer"])] = optimizer_label(r["optimizer"], r.get("family"), r.get("optimizer_name"),
                                                   ctrl if isinstance(ctrl[0], str) and ctrl[0] else None)
    return out


def attack_label(attack: str) -> str:
    """``rtn4`` → "RTN 4-bit", ``gguf`` → "GGUF export", ``relearn-half`` → "relearn on half A"."""
    a = str(attack)
    fixed = {"none": "before attack", "gguf": "GGUF export", "relearn": "relearning", "relearn-half": "relearn on half A",
             "noise": "weight noise"}
    if a in fixed:
        return fixed[a]
    if m := re.fullmatch(r"rtn-?(\d+)(?:bit)?", a):
        return f"RTN {m.group(1)}-bit"
    if m := re.fullmatch(r"gguf-(\w+)", a):
        return f"GGUF {m.group(1).upper()} export"
    return a


def quantity_label(quantity: str) -> str:
    """The axis label (with its unit) of a result quantity; the identifier when unknown."""
    return _QUANTITIES.get(str(quantity), str(quantity))


def split_label(data: str) -> str:
    """``forget-half-B`` → "forget half B"; "" for ``all`` (the metric's own split)."""
    return _SPLITS.get(str(data), str(data))


def checkpoint_optimizer(checkpoint: str) -> Tuple[str, str]:
    """``(optimizer, seed)`` of a study checkpoint id "<study>.<objective>__<optimizer>__s<seed>"
    (a batch landscape table's ``checkpoint``); ``(checkpoint, "")`` when it is not one.

    >>> checkpoint_optimizer("demo.npo__adam+gru__s0")
    ('adam+gru', '0')
    """
    m = re.fullmatch(r"(?:.*\.)?[^.]*?__(.+)__s(\d+)", str(checkpoint))
    return (m.group(1), m.group(2)) if m else (str(checkpoint), "")
