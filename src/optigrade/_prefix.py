r"""Prefix cache for late-layer subsets (private floor module).

When only the last layers of a Llama-family causal LM move (a ZO run on
``layers\.(2[4-9])\.mlp\.down_proj``, a landscape Probe restricted to them), everything before
the first moving layer L is the same at every evaluation of a batch: the token embeddings, layers
0..L−1, the causal mask built from ``attention_mask`` and the rotary position embeddings.
:class:`PrefixCache` computes that once per batch, under ``no_grad``, and afterwards runs only
layers L.., the final norm and ``lm_head``.  It is a module with the causal LM's own ``model`` and
``lm_head`` submodules, so

* ``cache(input_ids=..., attention_mask=...)`` returns an object with ``.logits`` (and ``.loss``
  when ``labels`` are given): existing loss code (:mod:`optigrade._lm`, the unlearning objectives,
  the Probe's ``causal_lm_loss``) runs unchanged with the cache in place of the model;
* its parameter names are the model's (``model.layers.24.mlp.down_proj.weight``), so
  ``torch.func.functional_call(cache, {...})`` substitutes the same tensors.

Exactness.  The prefix is captured from the model's own forward: a forward pre-hook on layer L
records the hidden states entering it and the keyword arguments ``LlamaModel.forward`` passes to
its layers (the causal mask it built from ``attention_mask``, position ids, position
embeddings), then stops the forward.  Padding, masks and rotary embeddings are therefore exactly
what the full forward builds, for whatever ``attn_implementation`` the model uses.  The remaining
layers then run the same operations on the same inputs, so the logits are bit-identical to the
full model's on a deterministic backend (the tests check equality, not closeness).  That includes
the key/value cache: when the full forward makes one (``use_cache``, on by default in the config),
each suffix call gets a fresh empty cache of the same kind, because storing keys in a cache copies
them into another memory layout and the attention matmul then rounds differently (~1e-7 in fp32).

Invalidation.  Every lookup compares the identity, ``_version`` and ``data_ptr`` of every prefix
tensor (the embeddings, a tied ``lm_head``, layers 0..L−1, the rotary buffers, looked up afresh
from the modules) with the values at which the cache was filled; any difference (an in-place
write, ``p.data = ...``, a replaced parameter, a reload) clears the cache and the prefix is
recomputed.  Writes through ``p.data.<op>_()`` bypass PyTorch's version
counter and are not seen: call :meth:`PrefixCache.clear` after those.  Batches are keyed by the
identity of their tensors (the cache keeps a reference, so an identity is never reused) and the
``_version`` of each: a batch edited in place is recomputed.

Which layer L: :func:`first_layer_of` reads it from the moving parameters (their names or the
tensors with ``model=``) and refuses, naming the earliest offender, when no prefix can be cached:
a parameter before layer 0 (the embeddings), an ``lm_head`` tied to the embeddings, or a moving
parameter in layer 0 (an empty prefix).

    >>> import torch, transformers
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...                                num_hidden_layers=3, num_attention_heads=2,
    ...                                tie_word_embeddings=False)
    >>> torch.manual_seed(0) is not None
    True
    >>> model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    >>> first_layer_of(["model.layers.2.mlp.down_proj.weight", "model.layers.1.mlp.up_proj.weight"])
    1
    >>> cache = PrefixCache(model, 2)
    >>> ids = torch.tensor([[1, 5, 7, 2], [3, 4, 0, 0]])
    >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])        # the second row is padded
    >>> with torch.no_grad():
    ...     full = model(input_ids=ids, attention_mask=mask).logits
    ...     cached = cache(input_ids=ids, attention_mask=mask).logits
    ...     again = cache(input_ids=ids, attention_mask=mask).logits
    >>> torch.equal(full, cached), torch.equal(full, again), cache.stats
    (True, True, {'hits': 1, 'misses': 1, 'invalidations': 0})
    >>> first_layer_of(["model.embed_tokens.weight"], model)
    Traceback (most recent call last):
    ...
    ValueError: model.embed_tokens.weight sits before layer 0 (the token embeddings feed every layer), so no prefix can be cached; select parameters of layers >= 1 only, e.g. r'layers\.(2[4-9])\.mlp\.down_proj'
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ._lm import IGNORE, mean_nll

__all__ = ["SUPPORTED_MODEL_TYPES", "PrefixCache", "PrefixOutput", "first_layer_of", "check_architecture"]

#: ``config.model_type`` values whose causal-LM forward is ``lm_head(norm(layers(embed(ids))))``
#: with one shared mask and position embedding for every layer (checked against transformers 5.x)
SUPPORTED_MODEL_TYPES = ("llama",)

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXAMPLE = r"r'layers\.(2[4-9])\.mlp\.down_proj'"


class _Stop(Exception):
    """Raised by the pre-hook to end the model's forward once the prefix is captured."""


@dataclass(frozen=True)
class PrefixOutput:
    """What :class:`PrefixCache` returns: ``logits`` [B, T, V] and, when ``labels`` were given,
    ``loss`` (the token-mean next-token NLL, :func:`optigrade._lm.mean_nll`)."""

    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None


@dataclass
class _Entry:
    refs: Tuple[Tuple[str, Any], ...]       # the call's arguments, kept so their ids stay unique
    versions: Tuple[int, ...]               # _version of each tensor argument
    hidden: torch.Tensor                    # hidden states entering layer L (no graph)
    layer_kwargs: Dict[str, Any]            # what LlamaModel.forward passes to every layer
    cache_arg: Optional[str] = None         # the layers' KV-cache argument, when the forward made a cache


# ----------------------------------------------------------------------------- checks
def check_architecture(model) -> None:
    """Refuse, naming what is missing, a model whose prefix this module cannot cache: it needs a
    transformers causal LM with ``model.embed_tokens``, ``model.layers``, ``model.norm``,
    ``model.rotary_emb`` and ``lm_head``, and a ``config.model_type`` in
    :data:`SUPPORTED_MODEL_TYPES`.

        >>> check_architecture(torch.nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        ValueError: prefix cache: Linear has no model.embed_tokens, model.layers, model.norm, model.rotary_emb, lm_head; it needs a Llama-family transformers causal LM (model_type one of ('llama',))
    """
    inner = getattr(model, "model", None)
    missing = [f"model.{a}" for a in ("embed_tokens", "layers", "norm", "rotary_emb")
               if inner is None or not hasattr(inner, a)]
    if not hasattr(model, "lm_head"):
        missing.append("lm_head")
    if missing:
        raise ValueError(f"prefix cache: {type(model).__name__} has no {', '.join(missing)}; it needs a "
                         f"Llama-family transformers causal LM (model_type one of {SUPPORTED_MODEL_TYPES})")
    if not isinstance(inner.layers, torch.nn.ModuleList) or len(inner.layers) == 0:
        raise ValueError("prefix cache: model.model.layers must be a non-empty ModuleList of decoder layers")
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    if mtype not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"prefix cache: model_type {mtype!r} is not supported (only {SUPPORTED_MODEL_TYPES}, "
                         "whose head is lm_head(norm(h)) with one causal mask for every layer); run the full "
                         "model instead (prefix_cache=False)")
    types = getattr(model.config, "layer_types", None)
    if types is not None and len(set(types)) > 1:
        raise ValueError(f"prefix cache: the layers use different attention types {sorted(set(types))} (one "
                         "mask per type); only models with one mask for every layer are supported")


def _layer_positions(model) -> Tuple[Dict[int, int], Dict[int, str], int]:
    """(id(tensor) → layer index (−1 before layer 0, n for the final norm / head, −2 for a head tied
    to the embeddings),
    id(tensor) → a name, n layers)."""
    inner = model.model
    n = len(inner.layers)
    pos: Dict[int, int] = {}
    for i, layer in enumerate(inner.layers):
        for p in layer.parameters():
            pos[id(p)] = i
    for p in inner.norm.parameters():
        pos[id(p)] = n
    embed = {id(p) for p in inner.embed_tokens.parameters()}
    for p in model.lm_head.parameters():
        pos[id(p)] = -2 if id(p) in embed else n
    names: Dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), name)
    return pos, names, n


def first_layer_of(params: Iterable, model=None) -> int:
    r"""The index L of the first decoder layer holding one of ``params``: the prefix (embeddings,
    layers 0..L−1) is then frozen and can be cached.

    ``params`` are parameter names (``model.layers.24.mlp.down_proj.weight``: the index after
    ``layers.``) or, with ``model``, the parameter tensors themselves.  With ``model`` the
    parameters are located by identity: the final norm and an untied ``lm_head`` lie after every
    layer (L = the layer count when nothing else moves).

    Raises:
        ValueError: naming the earliest parameter that forbids a prefix: one before layer 0 (the
            embeddings, or any name outside ``layers.<i>.`` without ``model``), an ``lm_head``
            tied to the embeddings, a parameter in layer 0 (the prefix would be empty); a tensor
            that is not ``model``'s, or tensors without ``model``; no parameters.

        >>> first_layer_of(["model.layers.27.mlp.down_proj.weight", "model.layers.24.mlp.down_proj.weight"])
        24
        >>> first_layer_of(["model.layers.0.mlp.down_proj.weight", "model.layers.3.self_attn.q_proj.weight"])
        Traceback (most recent call last):
        ...
        ValueError: model.layers.0.mlp.down_proj.weight sits in layer 0: the prefix before it is empty, nothing to cache; select parameters of layers >= 1 only, e.g. r'layers\.(2[4-9])\.mlp\.down_proj'
    """
    items = list(params)
    if not items:
        raise ValueError("no parameters given: the prefix ends at the first layer holding one of them")
    if model is None:
        if not all(isinstance(x, str) for x in items):
            raise ValueError("first_layer_of got tensors without model=: pass the model to locate them, or "
                             "parameter names")
        located = []
        for name in items:
            m = _LAYER.search(name)
            if m is None:
                raise ValueError(f"{name} is not in a decoder layer (no 'layers.<i>.' in its name): without "
                                 "model= it is taken to sit before layer 0 (embeddings, or a head that may be "
                                 "tied to them), so no prefix can be cached; pass model= to locate it, or "
                                 f"select parameters of layers >= 1 only, e.g. {_EXAMPLE}")
            located.append((int(m.group(1)), name))
    else:
        check_architecture(model)
        pos, names, _ = _layer_positions(model)
        by_name = dict(model.named_parameters(remove_duplicate=False))
        located = []
        for x in items:
            t = by_name.get(x) if isinstance(x, str) else x
            if t is None:
                raise ValueError(f"{x!r} is not a parameter name of {type(model).__name__}")
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"expected parameter names or tensors, got {type(t).__name__}")
            name = x if isinstance(x, str) else names.get(id(t))
            if name is None:
                raise ValueError(f"a tensor of shape {tuple(t.shape)} is not a parameter of "
                                 f"{type(model).__name__}")
            at = pos.get(id(t), -1)
            if at == -2 and not name.startswith("lm_head."):
                at = -1  # the embedding itself (tied to the head), selected under its own name
            located.append((at, name))
    at, name = min(located, key=lambda pn: (pn[0] if pn[0] != -2 else -1.5, pn[1]))
    if at == -1:
        raise ValueError(f"{name} sits before layer 0 (the token embeddings feed every layer), so no prefix "
                         f"can be cached; select parameters of layers >= 1 only, e.g. {_EXAMPLE}")
    if at == -2:
        raise ValueError(f"{name} is tied to model.embed_tokens.weight (tie_word_embeddings=True): moving it "
                         "moves the embeddings every layer starts from, so no prefix can be cached; leave "
                         f"lm_head frozen, e.g. {_EXAMPLE}")
    if at == 0:
        raise ValueError(f"{name} sits in layer 0: the prefix before it is empty, nothing to cache; select "
                         f"parameters of layers >= 1 only, e.g. {_EXAMPLE}")
    return at


def _llama_layer(layer) -> bool:
    """True for transformers' own LlamaDecoderLayer, whose forward :func:`_last_layer_at` follows."""
    try:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    except ImportError:  # pragma: no cover - transformers without Llama
        return False
    return type(layer) is LlamaDecoderLayer and all(
        hasattr(layer, a) for a in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))


def _last_layer_at(layer, h: torch.Tensor, layer_kwargs: Dict[str, Any], at) -> torch.Tensor:
    """The last decoder layer's output at the positions ``at`` only ([|M|, d]).

    ``LlamaDecoderLayer.forward`` is h + attn(norm₁(h)), then x + mlp(norm₂(x)); the attention
    needs every position (its keys and values), but after it each position is its own row and,
    in the last layer, only rows that reach the head are read.  So the attention runs as in the
    layer, and the residual, norm₂ and MLP run on the counted rows: the same operations per row,
    a matrix product over fewer rows (equal to float tolerance)."""
    x = layer.input_layernorm(h)
    out = layer.self_attn(hidden_states=x, **layer_kwargs)
    x = h + (out[0] if isinstance(out, tuple) else out)
    x = x[at]
    return x + layer.mlp(layer.post_attention_layernorm(x))


# ----------------------------------------------------------------------------- the cache
class PrefixCache(torch.nn.Module):
    r"""A causal LM run from layer ``first_layer`` on, its frozen prefix computed once per batch.

    Args:
        model: a Llama-family transformers causal LM (:func:`check_architecture`); shared, not
            copied: its ``model`` and ``lm_head`` become this module's submodules.
        first_layer: L, the first layer that may change (:func:`first_layer_of`); 1 <= L <= the
            layer count (L = the layer count caches every layer: only norm and head run).
        max_batches: how many batches' prefixes are kept (least recently used dropped first).
        head: ``"counted"`` (default): a call with ``logits_at=labels`` (what
            :func:`optigrade._lm.lm_logits` passes, since ``sparse_head`` is True) runs the final
            norm and ``lm_head`` only at the positions t whose next label ``labels[:, t+1]`` is
            counted (not −100) and returns zeros at every other position, which no loss reads.
            On a QA batch that is 1-3 answer tokens of ~34 per row, and the head (V × d) is the
            larger part of a late-layer evaluation.  The counted rows equal the full head's to
            float tolerance (one matrix product over fewer rows may round differently, ~1e-7
            relative in fp32), not bitwise.  ``"all"``: ``logits_at`` is ignored, every position
            is computed, bit-identical to the full model.

    ``cache(input_ids=..., attention_mask=..., labels=None, **kwargs)`` is the model's forward
    (the keyword arguments go to the model as they would in a full call); :meth:`forward_from_prefix`
    takes a batch dict.  ``stats`` counts hits, misses (prefix computed) and invalidations (a
    prefix tensor changed, every cached prefix dropped).

    Raises:
        ValueError: an unsupported architecture (naming what is missing), L out of range, a model
            in training mode with attention dropout (the prefix would freeze one dropout draw).
    """

    def __init__(self, model, first_layer: int, *, max_batches: int = 32, head: str = "counted"):
        check_architecture(model)
        n = len(model.model.layers)
        if isinstance(first_layer, bool) or not isinstance(first_layer, int) or not 1 <= first_layer <= n:
            raise ValueError(f"first_layer must be an integer in [1, {n}] (the model has {n} layers), got "
                             f"{first_layer!r}; the first layer whose parameters may change, from first_layer_of")
        if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
            raise ValueError(f"max_batches must be a positive integer, got {max_batches!r}; e.g. 32")
        if head not in ("counted", "all"):
            raise ValueError(f"head must be 'counted' (the head only where a label is counted) or 'all' "
                             f"(every position, bit-identical to the full model), got {head!r}")
        super().__init__()
        self.model = model.model
        self.lm_head = model.lm_head
        object.__setattr__(self, "_lm", model)  # not a submodule: names stay model.* / lm_head.*
        self.first_layer = first_layer
        self.max_batches = max_batches
        self.head = head
        self._entries: "OrderedDict[tuple, _Entry]" = OrderedDict()
        self._signature: Optional[tuple] = None
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0}

    # ------------------------------------------------------------------ model-like surface
    @property
    def sparse_head(self) -> bool:
        """True when calls with ``logits_at`` compute the head at counted positions only."""
        return self.head == "counted"

    @property
    def config(self):
        return self._lm.config

    @property
    def device(self):
        return self.lm_head.weight.device

    @property
    def dtype(self):
        return self.lm_head.weight.dtype

    def __repr__(self) -> str:
        return (f"PrefixCache({type(self._lm).__name__}, first_layer={self.first_layer} of "
                f"{len(self.model.layers)}, {len(self._entries)} cached)")

    def clear(self) -> None:
        """Drop every cached prefix (after writes the version counter does not see)."""
        self._entries.clear()
        self._signature = None

    # ------------------------------------------------------------------ internals
    def _prefix_tensors(self) -> List[torch.Tensor]:
        """Every parameter and buffer the prefix reads, looked up afresh (a module attribute may
        have been replaced): all of the model's except layers L.., the final norm and an untied head."""
        embed = {id(t) for t in self.model.embed_tokens.parameters()}
        suffix = {id(t) for m in list(self.model.layers[self.first_layer:]) + [self.model.norm, self.lm_head]
                  for t in list(m.parameters()) + list(m.buffers()) if id(t) not in embed}
        return [t for t in list(self._lm.parameters()) + list(self._lm.buffers()) if id(t) not in suffix]

    def _current_signature(self) -> tuple:
        return tuple((id(t), t._version, t.data_ptr()) for t in self._prefix_tensors())

    def _key(self, kwargs: dict) -> Tuple[tuple, tuple, tuple]:
        key, refs, versions = [], [], []
        for k in sorted(kwargs):
            v = kwargs[k]
            if isinstance(v, torch.Tensor):
                key.append((k, "tensor", id(v)))
                versions.append(v._version)
            else:
                try:
                    hash(v)
                except TypeError:
                    raise ValueError(f"prefix cache: argument {k}={type(v).__name__} is neither a tensor nor "
                                     "hashable, so cached prefixes cannot be matched to it") from None
                key.append((k, "value", v))
            refs.append((k, v))
        return tuple(key), tuple(refs), tuple(versions)

    def _compute(self, kwargs: dict) -> Tuple[torch.Tensor, Dict[str, Any], Optional[str]]:
        L = self.first_layer
        layers = self.model.layers
        target = layers[L] if L < len(layers) else self.model.norm
        captured: Dict[str, Any] = {}

        def hook(module, args, kw):
            captured["hidden"] = args[0] if args else kw["hidden_states"]
            captured["kwargs"] = {k: v for k, v in kw.items() if k != "hidden_states"}
            raise _Stop

        handle = target.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                self.model(**kwargs)  # exactly what LlamaForCausalLM.forward passes on
        except _Stop:
            pass
        finally:
            handle.remove()
        if "hidden" not in captured:
            raise RuntimeError("prefix cache: the model's forward never reached layer "
                               f"{L}; its forward is not the Llama layout this cache supports")
        lk = dict(captured["kwargs"])
        cache_arg = None
        for name in ("cache", "past_key_values", "past_key_value"):
            if lk.get(name) is not None:  # holds the prefix's keys: each suffix call gets a fresh one
                from transformers.cache_utils import DynamicCache

                if type(lk[name]) is not DynamicCache:
                    raise ValueError(f"prefix cache: the forward made a {type(lk[name]).__name__} key/value cache; "
                                     "only DynamicCache (the default) is supported: pass use_cache=False")
                cache_arg, lk[name] = name, None
        return captured["hidden"].detach(), lk, cache_arg

    def _entry(self, kwargs: dict) -> _Entry:
        sig = self._current_signature()
        if self._signature is not None and sig != self._signature:
            self._entries.clear()
            self.stats["invalidations"] += 1
        self._signature = sig
        key, refs, versions = self._key(kwargs)
        e = self._entries.get(key)
        if e is not None and e.versions == versions:
            self._entries.move_to_end(key)
            self.stats["hits"] += 1
            return e
        self.stats["misses"] += 1
        hidden, lk, cache_arg = self._compute(kwargs)
        e = _Entry(refs=refs, versions=versions, hidden=hidden, layer_kwargs=lk, cache_arg=cache_arg)
        self._entries[key] = e
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_batches:
            self._entries.popitem(last=False)
        return e

    def _suffix(self, e: _Entry, at: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = e.hidden
        lk = e.layer_kwargs
        if e.cache_arg is not None:  # as the full forward: an empty cache the layers write their keys to
            from transformers.cache_utils import DynamicCache

            lk = {**lk, e.cache_arg: DynamicCache(config=self.config)}
        layers = list(self.model.layers[self.first_layer: self.config.num_hidden_layers])
        rows_only = at is not None and bool(layers) and _llama_layer(layers[-1])
        for i, layer in enumerate(layers):
            if rows_only and i == len(layers) - 1:
                h = _last_layer_at(layer, h, lk, at)  # [|M|, d]
                break
            h = layer(h, **lk)
            if isinstance(h, tuple):  # older decoder layers return (hidden, ...)
                h = h[0]
        if at is None:
            return self.lm_head(self.model.norm(h))
        rows = self.lm_head(self.model.norm(h if rows_only else h[at]))  # [|M|, V]: per-position ops
        logits = rows.new_zeros(*e.hidden.shape[:2], rows.shape[-1])
        return logits.index_put(at, rows)

    # ------------------------------------------------------------------ public
    def prefix(self, **kwargs) -> torch.Tensor:
        """The hidden states entering layer L for the model call ``kwargs`` (computed or cached)."""
        return self._entry(kwargs).hidden

    def forward(self, input_ids=None, attention_mask=None, labels=None, logits_at=None, **kwargs) -> PrefixOutput:
        """Logits as ``model(input_ids=..., attention_mask=..., **kwargs).logits``, from the cached
        prefix; with ``labels``, also the token-mean NLL as ``.loss``.  With ``logits_at`` (labels
        [B, T], −100 = not counted) and ``head="counted"``, the head runs only at positions t with
        ``logits_at[:, t+1] != -100`` and the logits are zero elsewhere."""
        if input_ids is None:
            raise ValueError("prefix cache: input_ids is required (inputs_embeds would bypass the embeddings "
                             "the prefix is keyed on)")
        if self._lm.training and float(getattr(self.config, "attention_dropout", 0.0) or 0.0) > 0:
            raise ValueError("prefix cache: the model is in training mode with attention_dropout > 0, so a "
                             "cached prefix would freeze one dropout draw; call model.eval()")
        call = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        call = {k: v for k, v in call.items() if v is not None}
        at = None
        if logits_at is not None and self.sparse_head:
            if not isinstance(logits_at, torch.Tensor) or tuple(logits_at.shape) != tuple(input_ids.shape):
                raise ValueError(f"prefix cache: logits_at must be a labels tensor shaped like input_ids "
                                 f"{tuple(input_ids.shape)}, got "
                                 f"{tuple(logits_at.shape) if isinstance(logits_at, torch.Tensor) else type(logits_at).__name__}")
            keep = torch.zeros(logits_at.shape, dtype=torch.bool, device=logits_at.device)
            keep[:, :-1] = logits_at[:, 1:] != IGNORE
            at = keep.nonzero(as_tuple=True)
        logits = self._suffix(self._entry(call), at)
        loss = mean_nll(logits, labels) if labels is not None else None
        return PrefixOutput(logits=logits, loss=loss)

    def forward_from_prefix(self, batch: dict) -> torch.Tensor:
        """Logits [B, T, V] of a batch dict (``input_ids``, optional ``attention_mask``; other
        keys such as ``labels`` and ``index`` are not passed to the model)."""
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ValueError("forward_from_prefix needs a batch dict with input_ids (and attention_mask)")
        return self(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
