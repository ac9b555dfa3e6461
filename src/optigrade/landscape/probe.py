"""A Probe: a model, fixed data and a loss, at the model's current weights.

The loss over all batches is token-weighted, computed once here for every landscape function:

    L(θ) = Σ_b s_b(θ) / Σ_b c_b,

where for a causal LM s_b is the summed next-token NLL of batch b over the positions whose
(shifted) label is not -100 and c_b is the number of such positions; for a plain module
``loss_fn(model, batch)`` returns ``(s_b, c_b)`` (a summed loss and its count) or a scalar
mean (then c_b = 1: batches weighted equally).  Counts must not depend on θ: they are read
once, when the Probe is built.

Curvature is always computed with :func:`torch.autograd.grad` (or torch.func), never through
``.grad`` state, and measurements run in eval mode with the model's training flag restored.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import _weights
from .._lm import summed_nll
from .._prefix import PrefixCache, first_layer_of
from .._select import Pattern, select

HVP_MODES = ("double", "func", "fd")


def flatten(tensors: Sequence[torch.Tensor], dtype=None) -> torch.Tensor:
    """Concatenate tensors into one 1-D vector (a copy): the Probe's flat layout."""
    return torch.cat([t.reshape(-1).to(dtype or t.dtype) for t in tensors])


def split(vec: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Views of a flat vector in the given shapes (inverse of :func:`flatten`)."""
    out, i = [], 0
    for s in shapes:
        n = s.numel()
        out.append(vec[i:i + n].view(s))
        i += n
    return out


@dataclass(frozen=True)
class Cost:
    """Evaluations spent; one evaluation is one pass over *all* the Probe's batches.

    >>> Cost(loss=3, hvp=10) - Cost(loss=1)
    Cost(loss=2, grad=0, hvp=10)
    """

    loss: int = 0
    grad: int = 0
    hvp: int = 0

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(self.loss - other.loss, self.grad - other.grad, self.hvp - other.hvp)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.loss + other.loss, self.grad + other.grad, self.hvp + other.hvp)


def _finite_direction(v: torch.Tensor) -> None:
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"direction has {int((~torch.isfinite(v)).sum())} non-finite entries (nan / inf); "
                         "landscape measurements need a finite direction")


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL and the number of counted tokens for one batch.

    s = Σ_{t: y_{t+1} ≠ -100} −log softmax(logits_t)[y_{t+1}],  c = #{t : y_{t+1} ≠ -100},
    with labels ``y = batch["labels"]`` (-100 = ignore; if absent, input_ids with padding,
    ``attention_mask == 0``, set to -100).  Logits in half precision are upcast to float32.
    The arithmetic is :func:`optigrade._lm.summed_nll` (one fused cross-entropy sum).

    A model whose logits are all zero predicts uniformly over V tokens: s = c·log V.

    >>> import math
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 16)})
    >>> s, c = causal_lm_loss(Uniform(), dict(input_ids=torch.tensor([[1, 2, 3, 4]]),
    ...                                       labels=torch.tensor([[-100, -100, 3, 4]])))
    >>> c, math.isclose(float(s), 2 * math.log(16), rel_tol=1e-6)
    (2, True)
    """
    labels = _labels(batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if getattr(model, "sparse_head", False):  # a PrefixCache: the head at counted positions only
        inputs["logits_at"] = labels
    return summed_nll(model(**inputs).logits, labels)


def _labels(batch: dict) -> torch.Tensor:
    if "labels" in batch:
        return batch["labels"]
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    return labels


def _to_device(batch: Any, device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


NO_DOUBLE_BACKWARD = {"sdpa", "flash_attention_2", "flash_attention_3", "flex_attention",
                      "paged_attention"}


class Probe:
    """Loss, gradient and Hessian-vector products of ``model`` on fixed ``batches``.

    Args:
        model: a transformers causal LM (default loss, see :func:`causal_lm_loss`) or any
            ``nn.Module`` together with ``loss_fn``.
        batches: one batch or a sequence of batches (dicts for causal LMs).
        loss_fn: ``loss_fn(model, batch) -> (summed_loss, count)`` or ``-> mean_loss``.
        params: explicit parameters (names or Parameter objects); default all trainable.
        param_filter / exclude: name patterns (regex, ``glob:``, preset, callable), see
            :mod:`optigrade._select`.
        hvp_mode: ``"double"`` (reverse-over-reverse, default), ``"func"`` (torch.func
            forward-over-reverse) or ``"fd"`` (central finite difference of gradients,
            Hv ≈ (∇L(θ+εv) − ∇L(θ−εv)) / (2ε), ε = fd_eps/‖v‖).
        keep_graph: for ``"double"``, keep the first backward's graph (all batches) so each
            HVP is one extra backward; costs the graphs' memory; rebuilt automatically when
            any parameter changes in place.
        fd_eps: finite-difference step in units of ‖v‖; default 5e-3 (fp32/bf16), 1e-5 (fp64).
        prefix_cache: run every loss, gradient and HVP from a cached frozen prefix
            (:class:`optigrade._prefix.PrefixCache`): when every selected parameter sits in
            decoder layers >= L of a Llama-family causal LM, the embeddings and layers 0..L−1
            run once per batch and only layers L.., the norm and the head run per evaluation.
            The results equal the full model's (the same operations on the same inputs); the
            prefix is recomputed when one of its weights changes.  ``loss_fn``, if given,
            receives the cache in place of the model (it must call ``model(input_ids=...,
            attention_mask=...)``).

    Raises:
        ValueError: empty batches, no counted tokens, non-finite loss at the checkpoint,
            unknown hvp_mode, a pattern that selects nothing; with ``prefix_cache``, a selected
            parameter before layer 1 (embeddings, layer 0, a head tied to the embeddings: the
            earliest is named) or a model the cache does not support.

    Least squares, L(w, b) = ½ Σ_i (x_iᵀw + b − y_i)², has the Hessian H = AᵀA (A = [X, 1])
    at every θ; ``least_squares`` builds ``Probe(nn.Linear(3, 1), [(X, y)], half_sse)``:

    >>> import numpy as np
    >>> from optigrade.landscape._examples import least_squares
    >>> probe, H = least_squares()
    >>> probe
    Probe(Linear, 1 batches, 1 counted, 2 tensors / 4 params, hvp_mode='double')
    >>> v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    >>> [np.allclose(probe.hvp(v, mode=m).numpy(), H @ v.numpy(), atol=1e-6)
    ...  for m in ("double", "func", "fd")]
    [True, True, True]
    >>> X, y = probe.batches[0]
    >>> A = np.c_[X.numpy(), np.ones(8)]
    >>> r = A @ probe.flat_params().numpy() - y.numpy()
    >>> bool(np.isclose(probe.loss(), 0.5 * r @ r)), np.allclose(probe.grad().numpy(), A.T @ r)
    (True, True)
    >>> probe.cost()
    Cost(loss=1, grad=1, hvp=3)
    >>> before = probe.flat_params()
    >>> with probe.perturbed(v, scale=1e-3):
    ...     bool(probe.flat_params()[0] != before[0])
    True
    >>> torch.equal(probe.flat_params(), before)          # restored bit for bit
    True
    """

    def __init__(self, model: torch.nn.Module, batches, loss_fn: Callable | None = None, *,
                 params=None, param_filter: Pattern | Sequence[Pattern] | None = None,
                 exclude: Pattern | Sequence[Pattern] | None = None, hvp_mode: str = "double",
                 keep_graph: bool = False, fd_eps: float | None = None, prefix_cache: bool = False):
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"hvp_mode must be one of {HVP_MODES}, got {hvp_mode!r}")
        if fd_eps is not None and not (fd_eps > 0 and np.isfinite(fd_eps)):
            raise ValueError(f"fd_eps must be a finite number > 0, got {fd_eps}")
        if isinstance(batches, (dict, torch.Tensor)):
            batches = [batches]
        batches = list(batches) if batches is not None else []
        if not batches:
            raise ValueError("batches is empty: give at least one batch (a dict for causal LMs)")
        self.model = model
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache must be True or False, got {prefix_cache!r}")
        self.named_params = select(model, params, param_filter, exclude)
        self.names = [n for n, _ in self.named_params]
        self.prefix_cache = prefix_cache
        self._forward_model = model  # what the loss calls: the model, or its prefix cache
        if prefix_cache:
            try:
                first = first_layer_of(self.names, model)
                self._forward_model = PrefixCache(model, first, max_batches=max(32, len(batches)))
            except ValueError as e:
                raise ValueError(f"prefix_cache=True: {e}") from None
        self.params = [p for _, p in self.named_params]
        self.shapes = [p.shape for p in self.params]
        self.numel = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.batches = [_to_device(b, self.device) for b in batches]
        self.loss_fn = loss_fn
        self.hvp_mode = hvp_mode
        self.keep_graph = keep_graph
        default_eps = 1e-5 if self.dtype == torch.float64 else 5e-3
        self.fd_eps = default_eps if fd_eps is None else fd_eps
        self._spent = {"loss": 0, "grad": 0, "hvp": 0}  # evaluation counters, see cost()
        self._graph = None  # (versions, grads with graph) when keep_graph
        if loss_fn is None and not all(isinstance(b, dict) and "input_ids" in b for b in self.batches):
            raise ValueError("without loss_fn, every batch must be a dict with input_ids "
                             "(and labels, -100 = ignore); otherwise pass loss_fn(model, batch)")
        if loss_fn is None:
            for i, b in enumerate(self.batches):
                shape = tuple(getattr(b["input_ids"], "shape", ()))
                if len(shape) != 2 or 0 in shape:
                    raise ValueError(f"batch {i}: input_ids must be a non-empty (rows, tokens) tensor, got shape "
                                     f"{shape}; drop empty batches")
        with self._measuring(), torch.no_grad():
            parts = [self._batch_loss(b) for b in self.batches]
        self.token_counts = [c for _, c in parts]  # c_b: counted tokens (or loss_fn counts) per batch
        self.total_count = float(sum(self.token_counts))
        if self.total_count <= 0:
            raise ValueError("the batches count no tokens (every label is -100)")
        loss0 = float(sum(float(s) for s, _ in parts)) / self.total_count
        if not np.isfinite(loss0):
            raise ValueError(f"the loss at the checkpoint is not finite ({loss0}); "
                             f"landscape measurements need a finite loss")

    # ---------------------------------------------------------------- internals
    def _batch_loss(self, batch) -> tuple[torch.Tensor, float]:
        if self.loss_fn is None:
            return causal_lm_loss(self._forward_model, batch)
        out = self.loss_fn(self._forward_model, batch)
        if isinstance(out, (tuple, list)):
            s, c = out
            return s, float(c)
        return out, 1.0

    @contextlib.contextmanager
    def _measuring(self):
        """Eval mode and grad enabled for the duration; the training flags restored after."""
        with _weights.eval_mode(self.model), torch.enable_grad():
            yield

    def _batch_grad(self, batch, create_graph: bool = False):
        """(s_b, ∇(s_b / Σc) per parameter, None where unused)."""
        s, _ = self._batch_loss(batch)
        return s, torch.autograd.grad(s / self.total_count, self.params,
                                      create_graph=create_graph, allow_unused=True)

    def _hv(self, grads, vs, retain_graph: bool = False):
        """(∂/∂θ) Σ_i g_iᵀ v_i for per-parameter gradients ``grads`` built with a graph."""
        pairs = [(g, x) for g, x in zip(grads, vs) if g is not None and g.requires_grad]
        return torch.autograd.grad([g for g, _ in pairs], self.params,
                                   grad_outputs=[x for _, x in pairs], retain_graph=retain_graph,
                                   allow_unused=True)

    def _accumulate(self, per_batch) -> torch.Tensor:
        """Σ over batches of per-parameter tensors (None counts as zero), as a flat vector."""
        out = [torch.zeros_like(p) for p in self.params]
        for parts in per_batch:
            for acc, x in zip(out, parts):
                if x is not None:
                    acc.add_(x)
        return flatten(out)

    def _check_curvature(self):
        cfg = getattr(self.model, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        if impl is not None and impl != "eager" and self.hvp_mode != "fd":
            fix = ('model.set_attn_implementation("eager")'
                   if hasattr(self.model, "set_attn_implementation") else
                   'reload the model with from_pretrained(..., attn_implementation="eager")')
            raise RuntimeError(
                f'the model uses attn_implementation="{impl}", which has no double backward or '
                f'forward-mode AD, so Hessian-vector products would fail or be wrong. Fix: load '
                f'it with attn_implementation="eager", or call {fix}; hvp_mode="fd" needs only '
                f'gradients')

    def _as_tensors(self, v) -> list[torch.Tensor]:
        """Accept a flat vector (torch or numpy) or a list of per-parameter tensors."""
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            if v.dim() != 1 or v.numel() != self.numel:
                raise ValueError(f"direction has shape {tuple(v.shape)}; expected a flat vector "
                                 f"of {self.numel} entries (the selected parameters)")
            v = v.to(device=self.device, dtype=self.dtype)
            _finite_direction(v)
            return split(v, self.shapes)
        v = list(v)
        if len(v) != len(self.params) or any(a.shape != p.shape for a, p in zip(v, self.params)):
            raise ValueError("direction list does not match the selected parameters' shapes "
                             f"{[tuple(s) for s in self.shapes][:4]}...")
        out = [a.to(device=self.device, dtype=self.dtype) for a in v]
        for a in out:
            _finite_direction(a)
        return out

    # ---------------------------------------------------------------- evaluations
    def loss(self) -> float:
        """L(θ) = Σ_b s_b / Σ_b c_b (one forward pass over all batches)."""
        self._spent["loss"] += 1
        with self._measuring(), torch.no_grad():
            tot = sum(float(self._batch_loss(b)[0].detach()) for b in self.batches)
        return tot / self.total_count

    def grad(self, return_loss: bool = False):
        """∇L(θ) as a flat detached vector (params' dtype); with ``return_loss`` also L(θ)."""
        self._spent["grad"] += 1
        losses = []

        def per_batch():
            for b in self.batches:
                s, gb = self._batch_grad(b)
                losses.append(float(s.detach()))
                yield gb
        with self._measuring():
            flat = self._accumulate(per_batch())
        return (flat, sum(losses) / self.total_count) if return_loss else flat

    def hvp(self, v, mode: str | None = None) -> torch.Tensor:
        """H(θ)v as a flat vector; ``mode`` overrides the Probe's ``hvp_mode``."""
        mode = mode or self.hvp_mode
        if mode not in HVP_MODES:
            raise ValueError(f"mode must be one of {HVP_MODES}, got {mode!r}")
        if mode != "fd":
            self._check_curvature()
        vs = self._as_tensors(v)
        self._spent["hvp"] += 1
        if mode == "fd":
            return self._hvp_fd(vs)
        with self._measuring():
            if mode == "func":
                return self._hvp_func(vs)
            if self.keep_graph:
                return self._hvp_kept(vs)
            return self._accumulate(self._hv(self._batch_grad(b, create_graph=True)[1], vs)
                                    for b in self.batches)

    def _hvp_kept(self, vs):
        versions = tuple(p._version for p in self.params)
        if self._graph is None or self._graph[0] != versions:
            self._graph = None
            grads = [self._batch_grad(b, create_graph=True)[1] for b in self.batches]
            self._graph = (versions, grads)
        return self._accumulate(self._hv(gb, vs, retain_graph=True) for gb in self._graph[1])

    def release_graph(self):
        """Drop the graph kept by ``keep_graph=True`` (frees its memory)."""
        self._graph = None

    def _hvp_func(self, vs):
        from torch.func import grad, jvp
        primals = {n: p.detach() for n, p in self.named_params}
        tangents = {n: x for n, x in zip(self.names, vs)}

        def per_batch():
            for b in self.batches:
                def f(pd, b=b):
                    s, _ = self._batch_loss_functional(pd, b)
                    return s / self.total_count
                _, hv = jvp(grad(f), (primals,), (tangents,))
                yield [hv[n] for n in self.names]
        return self._accumulate(per_batch())

    def _batch_loss_functional(self, pd, batch):
        from torch.func import functional_call

        class _View(torch.nn.Module):  # lets loss_fn call model(...) with substituted params
            def __init__(s, m):
                super().__init__()
                s.m = m

            def forward(s, *a, **k):
                return functional_call(s.m, pd, a, k, strict=False)

            def __getattr__(s, name):
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    return getattr(super().__getattr__("m"), name)

        view = _View(self._forward_model)  # a PrefixCache keeps the model's parameter names
        if self.loss_fn is None:
            return causal_lm_loss(view, batch)
        out = self.loss_fn(view, batch)
        return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, 1.0)

    def _hvp_fd(self, vs):
        norm = float(torch.sqrt(sum((x.double() ** 2).sum() for x in vs)))
        if norm == 0:
            return torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        eps = self.fd_eps / norm
        self._spent["grad"] -= 2  # counted as one HVP, not two gradients
        with self.perturbed(vs, eps):
            gp = self.grad()
        with self.perturbed(vs, -eps):
            gm = self.grad()
        return (gp - gm) / (2 * eps)

    # ---------------------------------------------------------------- vectors and weights
    def flat_params(self) -> torch.Tensor:
        """θ as a flat detached copy (params' dtype and device)."""
        return flatten([p.detach() for p in self.params])

    @torch.no_grad()
    def set_flat(self, vec) -> None:
        """Write a flat vector into the selected parameters (in place)."""
        for p, x in zip(self.params, self._as_tensors(vec)):
            p.copy_(x)

    def random_vector(self, generator: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
        """A flat random vector drawn on CPU from ``generator`` (never the global RNG)."""
        if kind == "gaussian":
            z = torch.randn(self.numel, generator=generator, dtype=torch.float64)
        elif kind == "rademacher":
            z = torch.randint(0, 2, (self.numel,), generator=generator).to(torch.float64) * 2 - 1
        else:
            raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")
        return z.to(device=self.device, dtype=self.dtype)

    @contextlib.contextmanager
    def moving(self, directions: Sequence, origin=None):
        """Yield ``move(*coeffs)`` that sets θ = θ0 + Σ_i coeffs[i]·d_i
        (:func:`optigrade._weights.moving` on the selected parameters).

        θ0 is ``origin`` (a flat vector) or a saved copy of the current weights.  Every point
        is computed fresh from θ0 (no accumulated steps); on exit, including on exceptions,
        every parameter is restored bit for bit by copying the saved weights back.
        Extra memory: one weight copy (+ the origin if given); directions are used in place
        when they already have the parameters' dtype and device.
        """
        dirs = [self._as_tensors(d) for d in directions]
        base = None if origin is None else self._as_tensors(origin)
        with _weights.moving(self.params, dirs, origin=base) as move:
            yield move

    @contextlib.contextmanager
    def perturbed(self, direction, scale: float = 1.0):
        """θ ← θ + scale·direction inside the block; restored bit for bit (by copy) after
        (:func:`optigrade._weights.perturbed` with ``exact=True``)."""
        d = self._as_tensors(direction)
        if not np.isfinite(float(scale)):
            raise ValueError(f"scale must be a finite number, got {scale}")
        with _weights.perturbed(self.params, d, float(scale), exact=True):
            yield self

    # ---------------------------------------------------------------- views and counters
    def subset(self, param_filter: Pattern | Sequence[Pattern] | None = None, *, params=None,
               exclude=None) -> "Probe":
        """A Probe on the same model and data restricted to a subset of this Probe's params."""
        mine = {id(p) for p in self.params}
        sub = select(self.model, params, param_filter, exclude)
        sub = [p for _, p in sub if id(p) in mine]
        if not sub:
            raise ValueError(f"pattern {param_filter!r} selects none of this Probe's parameters")
        return Probe(self.model, self.batches, self.loss_fn, params=sub, hvp_mode=self.hvp_mode,
                     keep_graph=self.keep_graph, fd_eps=self.fd_eps, prefix_cache=self.prefix_cache)

    def cost(self) -> Cost:
        """Evaluations so far (loss, gradient, HVP passes over all batches)."""
        return Cost(**self._spent)

    def reset_counters(self) -> None:
        """Set the evaluation counters behind :meth:`cost` back to zero."""
        if hasattr(self._spent, "reset"):  # inside progress(): keep the bar's counters
            self._spent.reset()
            return
        self._spent = {"loss": 0, "grad": 0, "hvp": 0}

    def progress(self, total: int | None = None, desc: str = "", enabled: bool = True):
        """Context manager: a tqdm bar on stderr that ticks once per loss / gradient / HVP pass
        this Probe makes inside the block (the passes :meth:`cost` counts; a subset Probe's
        passes are its own), with ETA = (total − done)/rate when ``total`` is given.  Yields
        the bar (``bar.n`` = passes so far); ``enabled=False`` prints nothing.

        >>> import io, contextlib
        >>> from optigrade.landscape._examples import least_squares
        >>> probe, _ = least_squares()
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err), probe.progress(3, "passes") as bar:
        ...     _ = probe.loss(), probe.grad(), probe.hvp(torch.ones(4, dtype=torch.float64))
        >>> bar.n, "3/3" in err.getvalue()
        (3, True)

        Raises:
            ValueError: ``total`` not None or an integer >= 0.
        """
        from ._progress import pass_bar
        return pass_bar(self, total, desc, enabled)

    def as_linear_operator(self, mode: str | None = None):
        """H as a :class:`scipy.sparse.linalg.LinearOperator` (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            x = np.asarray(x, dtype=np.float64).reshape(-1)
            return self.hvp(torch.from_numpy(x), mode=mode).detach().cpu().double().numpy()
        return LinearOperator((self.numel, self.numel), matvec=mv, dtype=np.float64)

    def __repr__(self) -> str:
        return (f"Probe({type(self.model).__name__}, {len(self.batches)} batches, "
                f"{int(self.total_count)} counted, {len(self.params)} tensors / {self.numel} "
                f"params, hvp_mode={self.hvp_mode!r}"
                + (f", prefix from layer {self._forward_model.first_layer}" if self.prefix_cache else "") + ")")
