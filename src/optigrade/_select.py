"""Which weights: one vocabulary for choosing parameters by name (private floor module).

A *pattern* is one of

* a regular expression, matched with :func:`re.search` against the name
  (``r"layers\\.0\\."``);
* a glob, written with the ``glob:`` prefix (``"glob:*.mlp.*"``), matched with
  :func:`fnmatch.fnmatchcase` against the whole name;
* a preset name from :data:`PRESETS` (``"attention"``, ``"mlp"``, ``"lora"``,
  ``"embeddings"``, ``"norms"``);
* a callable ``(name, obj) -> bool`` (``obj`` is the parameter, or the module for
  :func:`linear_weights`).

The same vocabulary chooses the weights a Probe measures (:func:`select`), the weights the
unlearning loop trains (:func:`trainable`), the weights the RTN / GGUF attacks quantize
(:func:`linear_weights`), and the coarse blocks diagnostics report (:func:`block_of`,
:func:`layer_of`).  Tied weights appear once: the first name under which a shared tensor is
registered is the one used.

A toy model with transformer-like names:

>>> import torch
>>> nn = torch.nn
>>> block = lambda: nn.ModuleDict(dict(self_attn=nn.Linear(2, 2), mlp=nn.Sequential(nn.Linear(2, 2)),
...                                    input_layernorm=nn.LayerNorm(2)))
>>> toy = nn.ModuleDict(dict(embed_tokens=nn.Embedding(4, 2), layers=nn.ModuleList([block(), block()]),
...                          lm_head=nn.Linear(2, 4, bias=False)))
>>> toy.lm_head.weight = toy.embed_tokens.weight          # tied: listed once
>>> [n for n, _ in select(toy, param_filter="mlp")]
['layers.0.mlp.0.weight', 'layers.0.mlp.0.bias', 'layers.1.mlp.0.weight', 'layers.1.mlp.0.bias']
>>> [n for n, _ in select(toy, param_filter=[layer_pattern(1)], exclude="glob:*.bias")]
['layers.1.self_attn.weight', 'layers.1.mlp.0.weight', 'layers.1.input_layernorm.weight']
>>> [n for n, _ in linear_weights(toy, modules=r"layers\\.0\\.")]
['layers.0.self_attn.weight', 'layers.0.mlp.0.weight']
>>> block_of("layers.1.mlp.0.weight"), layer_of("layers.1.mlp.0.weight"), layer_of("lm_head.weight")
('mlp', 1, None)
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch

__all__ = ["PRESETS", "Pattern", "layer_pattern", "matcher", "select", "trainable",
           "linear_weights", "block_of", "layer_of", "LAYER"]

Pattern = Union[str, Callable[[str, object], bool]]

#: Named regular expressions for the blocks users ask about most.
PRESETS = {
    "attention": r"(self_attn|attention|attn)\.",
    "mlp": r"(\.mlp\.|feed_forward|\.ffn\.)",
    "lora": r"lora_",
    "embeddings": r"(embed_tokens|wte|wpe|embeddings|lm_head)",
    "norms": r"(norm|ln_\d|ln_f)",
}

#: Llama-style transformer block index in a parameter name (``model.layers.3.mlp...`` → 3).
LAYER = re.compile(r"layers\.(\d+)\.")


def layer_pattern(i: int) -> str:
    """Regex selecting transformer block ``i`` (Llama ``layers.i.``, GPT-2 ``h.i.``).

    >>> import re
    >>> bool(re.search(layer_pattern(2), "model.layers.2.mlp.up_proj.weight"))
    True
    >>> bool(re.search(layer_pattern(2), "model.layers.12.mlp.up_proj.weight"))
    False
    """
    return rf"(^|\.)(layers|h|layer|blocks)\.{int(i)}\."


def matcher(pattern: Pattern) -> Callable[[str, object], bool]:
    """Turn a pattern (see module docstring) into a predicate ``(name, obj) -> bool``.

    >>> matcher("glob:*.bias")("layers.0.mlp.bias", None)
    True
    >>> matcher("")
    Traceback (most recent call last):
    ...
    TypeError: parameter pattern must be a non-empty str or a callable (name, param) -> bool, got ''
    """
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


def check_pattern(pattern, what: str = "params", example: str = "'mlp\\.down_proj'"):
    """``pattern`` (None allowed) is a valid pattern; else ``ValueError`` naming ``what``, the
    value and the forms a pattern takes.

    >>> check_pattern("glob:*.mlp.*"), check_pattern(None)
    ('glob:*.mlp.*', None)
    >>> check_pattern("mlp[(")
    Traceback (most recent call last):
    ...
    ValueError: params='mlp[(' is not a valid regular expression (unterminated character set at position 3); ...or a preset (attention, mlp, lora, embeddings, norms)
    """
    if pattern is None or pattern == "":
        return pattern
    try:
        matcher(pattern)
    except re.error as e:
        raise ValueError(f"{what}={pattern!r} is not a valid regular expression ({e}); e.g. {what}: {example}, "
                         f"'glob:*.mlp.*' or a preset ({', '.join(PRESETS)})") from None
    except TypeError as e:
        raise ValueError(f"{what}: {e}") from None
    return pattern


def _predicates(patterns):
    pats = list(patterns) if isinstance(patterns, (list, tuple, set)) else [patterns]
    return [matcher(q) for q in pats]


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

    >>> lin = torch.nn.Linear(3, 2)
    >>> [n for n, _ in select(lin, exclude="bias")]
    ['weight']
    >>> select(lin, param_filter="zzz")
    Traceback (most recent call last):
    ...
    ValueError: no trainable parameter matches param_filter='zzz', exclude=None; names look like ['weight', 'bias']
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
        preds = _predicates(param_filter)
        named = [(n, p) for n, p in named if any(f(n, p) for f in preds)]
    if exclude is not None:
        preds = _predicates(exclude)
        named = [(n, p) for n, p in named if not any(f(n, p) for f in preds)]
    if not named:
        raise ValueError(
            f"no trainable parameter matches param_filter={param_filter!r}, exclude={exclude!r}; "
            f"names look like {[n for n, _ in model.named_parameters()][:4]}"
        )
    return named


def trainable(model: torch.nn.Module, pattern: Optional[Pattern] = None) -> list:
    """The parameters an optimizer trains: those whose name matches ``pattern`` (all when
    None); every other parameter is frozen (``requires_grad_(False)``), the chosen ones set
    trainable.  With ``pattern=None`` nothing is frozen or unfrozen.

    Raises:
        ValueError: the pattern matches no parameter (names one, so the fix is visible).

    >>> lin = torch.nn.Linear(3, 2)
    >>> [p.shape for p in trainable(lin, "weight")], lin.bias.requires_grad
    ([torch.Size([2, 3])], False)
    >>> trainable(lin, "zzz")
    Traceback (most recent call last):
    ...
    ValueError: param pattern 'zzz' matches no parameter; names look like 'weight'
    """
    named = list(model.named_parameters())
    if pattern is None:
        return [p for _, p in named]
    match = matcher(pattern)
    keep = [bool(match(n, p)) for n, p in named]
    chosen = [p for (_, p), k in zip(named, keep) if k]
    if not chosen:
        raise ValueError(f"param pattern {pattern!r} matches no parameter; names look like {named[0][0]!r}")
    for (_, p), k in zip(named, keep):
        p.requires_grad_(k)
    return chosen


def linear_weights(model: torch.nn.Module, modules: Optional[Pattern] = None,
                   include_embeddings: bool = False,
                   include_norms: bool = False) -> Iterator[Tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every ``nn.Linear`` whose *module* name matches ``modules`` (all
    when None or empty), plus ``nn.Embedding`` weights (``include_embeddings``) and the weights
    of modules whose class name contains "norm" (``include_norms``): the weights RTN / GGUF
    quantize.  Modules are visited in ``named_modules()`` order and a tied weight is yielded
    once, under the first module that owns it: a tied ``lm_head`` (an ``nn.Linear``) is
    yielded as ``lm_head.weight`` unless embeddings are included, then as
    ``embed_tokens.weight``.  Biases are never included.

    >>> net = torch.nn.Sequential(torch.nn.Embedding(4, 2), torch.nn.Linear(2, 2))
    >>> [n for n, _ in linear_weights(net)], [n for n, _ in linear_weights(net, include_embeddings=True)]
    (['1.weight'], ['0.weight', '1.weight'])
    """
    match = matcher(modules) if modules else None
    seen = set()
    for name, mod in model.named_modules():
        is_lin = isinstance(mod, torch.nn.Linear)
        is_emb = isinstance(mod, torch.nn.Embedding) and include_embeddings
        is_norm = include_norms and "norm" in type(mod).__name__.lower() and hasattr(mod, "weight")
        if not (is_lin or is_emb or is_norm):
            continue
        if match is not None and not match(name, mod):
            continue
        w = mod.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        yield f"{name}.weight", w


def block_of(name: str) -> str:
    """Coarse block of a parameter name: "embeddings", "lm_head", "attention", "mlp",
    "norm" or "other" (first rule that matches, by substring, in that order).

    >>> [block_of(n) for n in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
    ...                        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight")]
    ['embeddings', 'attention', 'attention', 'norm']
    """
    if "embed" in name:
        return "embeddings"
    if "lm_head" in name:
        return "lm_head"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name:
        return "mlp"
    if "norm" in name:
        return "norm"
    return "other"


def layer_of(name: str) -> Optional[int]:
    """Index of the Llama-style transformer block (``layers.<i>.``) a name is in, else None.

    >>> layer_of("model.layers.11.mlp.down_proj.weight"), layer_of("model.norm.weight")
    (11, None)
    """
    m = LAYER.search(name)
    return int(m.group(1)) if m else None
