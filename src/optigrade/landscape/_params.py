"""Selecting parameter subsets by name and the flat-vector layout shared by every Probe.

A *pattern* is one of

* a regular expression, matched with :func:`re.search` against the parameter name
  (``r"layers\\.0\\."``);
* a glob, written with the ``glob:`` prefix (``"glob:*.mlp.*"``), matched with
  :func:`fnmatch.fnmatchcase` against the whole name;
* a preset name from :data:`PRESETS` (``"attention"``, ``"mlp"``, ``"lora"``,
  ``"embeddings"``, ``"norms"``);
* a callable ``(name, parameter) -> bool``.

Tied weights appear once: :meth:`torch.nn.Module.named_parameters` removes duplicates, and
the first name under which a shared tensor is registered is the one used.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, Sequence, Union

import torch

Pattern = Union[str, Callable[[str, torch.nn.Parameter], bool]]

#: Named regular expressions for the blocks users ask about most.
PRESETS = {
    "attention": r"(self_attn|attention|attn)\.",
    "mlp": r"(\.mlp\.|feed_forward|\.ffn\.)",
    "lora": r"lora_",
    "embeddings": r"(embed_tokens|wte|wpe|embeddings|lm_head)",
    "norms": r"(norm|ln_\d|ln_f)",
}


def layer_pattern(i: int) -> str:
    """Regex selecting transformer block ``i`` (Llama ``layers.i.``, GPT-2 ``h.i.``)."""
    return rf"(^|\.)(layers|h|layer|blocks)\.{int(i)}\."


def matcher(pattern: Pattern) -> Callable[[str, torch.nn.Parameter], bool]:
    """Turn a pattern (see module docstring) into a predicate ``(name, param) -> bool``."""
    if callable(pattern):
        return pattern
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(
            f"parameter pattern must be a non-empty str or a callable (name, param) -> bool, "
            f"got {pattern!r}"
        )
    if pattern.startswith("glob:"):
        glob = pattern[len("glob:"):]
        return lambda name, p: fnmatch.fnmatchcase(name, glob)
    rx = re.compile(PRESETS.get(pattern, pattern))
    return lambda name, p: rx.search(name) is not None


def select(
    model: torch.nn.Module,
    params=None,
    param_filter: Pattern | Sequence[Pattern] | None = None,
    exclude: Pattern | Sequence[Pattern] | None = None,
) -> list[tuple[str, torch.nn.Parameter]]:
    """Return ``[(name, parameter)]`` for the parameters a Probe differentiates.

    ``params`` (names or Parameter objects) picks explicitly; otherwise every parameter with
    ``requires_grad``.  ``param_filter`` keeps names matching any of its patterns, ``exclude``
    drops names matching any of its patterns.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        params = list(params)
        if all(isinstance(x, str) for x in params):
            wanted = set(params)
            unknown = wanted - {n for n, _ in model.named_parameters()}
            if unknown:
                raise ValueError(
                    f"unknown parameter names {sorted(unknown)[:5]}; use names from "
                    f"model.named_parameters()"
                )
            named = [(n, p) for n, p in model.named_parameters() if n in wanted]
        else:
            ids = {id(p) for p in params}
            named = [(n, p) for n, p in model.named_parameters() if id(p) in ids]
            if len(named) != len(ids):
                raise ValueError("params contains tensors that are not parameters of model")
        frozen = [n for n, p in named if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"parameters {frozen[:3]} have requires_grad=False; a Probe differentiates "
                f"only trainable parameters (set requires_grad_(True) first)"
            )
    if param_filter is not None:
        pats = [param_filter] if isinstance(param_filter, str) or callable(param_filter) else list(param_filter)
        preds = [matcher(q) for q in pats]
        named = [(n, p) for n, p in named if any(f(n, p) for f in preds)]
    if exclude is not None:
        pats = [exclude] if isinstance(exclude, str) or callable(exclude) else list(exclude)
        preds = [matcher(q) for q in pats]
        named = [(n, p) for n, p in named if not any(f(n, p) for f in preds)]
    if not named:
        raise ValueError(
            f"no trainable parameter matches param_filter={param_filter!r}, exclude={exclude!r}; "
            f"names look like {[n for n, _ in model.named_parameters()][:4]}"
        )
    return named


def flatten(tensors: Sequence[torch.Tensor], dtype=None) -> torch.Tensor:
    """Concatenate tensors into one 1-D vector (a copy)."""
    return torch.cat([t.reshape(-1).to(dtype or t.dtype) for t in tensors])


def split(vec: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Views of a flat vector in the given shapes (inverse of :func:`flatten`)."""
    out, i = [], 0
    for s in shapes:
        n = s.numel()
        out.append(vec[i:i + n].view(s))
        i += n
    return out
