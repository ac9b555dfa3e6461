"""A run's weight update, kept after the study: Δ = θ_u − θ₀ for the tensors that moved.

A study writes one ``runs/<run_id>.delta.safetensors`` per unlearning run (:func:`save_delta`),
so geometry, batch reports and attacks can be computed later from the base model alone
(:func:`load_delta` → :meth:`Delta.apply` / :meth:`Delta.delta`), without re-running unlearning.
The attacked weights need no file of their own: every attack is a deterministic function of
θ_u and the run's seed (:func:`optigrade.analysis.attacks.apply_attack`).

**What is stored, and why values rather than differences.**  The file holds, under their
parameter names, the *unlearned values* θ_u of exactly the parameters whose bits differ from the
base's θ₀ (a parameter with any changed element is stored whole; untouched ones, e.g. outside an
optimizer's ``params`` subset, are not stored at all), and Δ is computed on load.  Storing Δ
itself in the parameters' dtype would not do: θ_u − θ₀ in fp32 is the *correctly rounded*
difference (exact only where θ_u and θ₀ are within a factor two of each other, Sterbenz), so
θ₀ + (θ_u − θ₀) can differ from θ_u in the last bit, and a checkpoint rebuilt from it would not be
the one the study measured.  Values restore θ_u bit for bit, cost the same bytes as Δ, and give
Δ on demand: :meth:`Delta.delta` returns θ_u − θ₀ in the parameters' dtype (each element the
exact difference rounded once; pass ``dtype=torch.float64`` for the exact difference of fp32
weights).

**What guards it.**  The safetensors metadata records the base's full sha256
(:func:`optigrade._files.model_fingerprint` ``full=True``, the ``base_sha256`` of study rows),
the run id, the moved names, counts (tensors moved / total, elements in moved tensors, elements
that changed, parameters in the model) and ``tensors_sha256`` over the stored names, dtypes,
shapes and bytes; :func:`load_delta` checks the last against the tensors it read (a damaged file
is refused, :class:`DeltaError`), and :meth:`Delta.apply` / :meth:`Delta.delta` refuse a base whose
sha256 is not the recorded one, naming both.  The file is written atomically
(:func:`optigrade._files.atomic_file`).

    >>> import copy, tempfile, pathlib, torch
    >>> torch.manual_seed(0) and None
    >>> base = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    >>> model = copy.deepcopy(base)
    >>> with torch.no_grad():
    ...     _ = model[1].weight.add_(0.1)                   # only one tensor moves
    >>> from optigrade._files import model_fingerprint
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.delta.safetensors"
    >>> info = save_delta(base, model, path, model_fingerprint(base, full=True), run_id="r")
    >>> info["names"], info["n_tensors_moved"], info["n_tensors_total"]
    (['1.weight'], 1, 4)
    >>> d = load_delta(path)
    >>> sorted(d.tensors), d.run_id, d.base_sha256 == model_fingerprint(base, full=True)
    (['1.weight'], 'r', True)
    >>> rebuilt = d.apply(base)                             # a new model; base is untouched
    >>> model_fingerprint(rebuilt, full=True) == model_fingerprint(model, full=True)
    True
    >>> torch.allclose(d.delta(base)["1.weight"], torch.full((2, 4), 0.1))
    True
    >>> d.apply(model)                                      # not the base it was computed on
    Traceback (most recent call last):
    ...
    optigrade.analysis.deltas.DeltaError: .../r.delta.safetensors was computed on a base with sha256 ..., but the model given has sha256 ...
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .._files import atomic_file, file_mode, model_fingerprint

__all__ = ["FORMAT", "SUFFIX", "Delta", "DeltaError", "save_delta", "load_delta", "moved_parameters"]

#: the ``format`` metadata value of a delta file (bump when the layout changes)
FORMAT = "optigrade-delta/1"
#: a study's delta file is ``runs/<run_id>`` + SUFFIX
SUFFIX = ".delta.safetensors"
_RESERVED = ("format", "stores", "base_sha256", "run_id", "names", "n_tensors_moved", "n_tensors_total",
             "n_elements_moved", "n_elements_changed", "n_parameters", "tensors_sha256")


class DeltaError(ValueError):
    """A delta file is damaged or not a delta file, or a model is not the base it belongs to."""


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 view on the CPU (what "bitwise equal" compares)."""
    return t.detach().reshape(-1).contiguous().cpu().view(torch.uint8)


def moved_parameters(base, model) -> Dict[str, int]:
    """``{name: elements that changed}`` for every parameter of ``model`` whose bits differ from
    ``base``'s (NaN and −0.0 compared by their bits, so a NaN that stayed a NaN has not moved).

    Raises:
        DeltaError: the two models do not have the same parameter names, shapes and dtypes.

    >>> import copy, torch
    >>> a = torch.nn.Linear(2, 2); b = copy.deepcopy(a)
    >>> with torch.no_grad():
    ...     b.bias[0] = -b.bias[0]
    >>> moved_parameters(a, b)
    {'bias': 1}
    """
    bp = dict(base.named_parameters())
    mp = dict(model.named_parameters())
    if list(bp) != list(mp):
        missing, extra = sorted(set(bp) - set(mp)), sorted(set(mp) - set(bp))
        raise DeltaError(f"the two models have different parameters (only in the base: {missing[:5]}, only in the "
                         f"unlearned model: {extra[:5]})")
    out = {}
    for n, p in mp.items():
        q = bp[n]
        if p.shape != q.shape or p.dtype != q.dtype:
            raise DeltaError(f"parameter {n!r} is {tuple(q.shape)} {q.dtype} in the base but {tuple(p.shape)} "
                             f"{p.dtype} in the unlearned model")
        a, b = p.detach().reshape(-1).cpu(), q.detach().reshape(-1).cpu()
        if torch.equal(_bits(a), _bits(b)):
            continue
        size = a.element_size()
        changed = (a.view(torch.uint8).reshape(-1, size) != b.view(torch.uint8).reshape(-1, size)).any(1)
        out[n] = int(changed.sum())
    return out


def _tensors_sha256(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for n in sorted(tensors):
        t = tensors[n]
        h.update(f"{n}{tuple(t.shape)}{t.dtype}".encode())
        h.update(_bits(t).numpy().tobytes())
    return h.hexdigest()


def save_delta(base, model, path, base_sha256: str, **meta) -> dict:
    """Write ``model``'s update over ``base`` to ``path`` (safetensors, atomically): the values
    θ_u of the parameters whose bits differ from θ₀, under their names (see the module
    docstring for why values), with ``base_sha256`` (the full sha256 of ``base``'s weights,
    :func:`~optigrade._files.model_fingerprint` ``full=True``; not recomputed here) and ``meta``
    (e.g. ``run_id``, ``config_hash``; stored as strings, JSON for non-strings) in the metadata.

    Returns the metadata written, with ``names`` a list and the counts as ints.

    Raises:
        DeltaError: the models' parameters differ in names, shapes or dtypes; ``meta`` uses a
            reserved key other than ``run_id``.
    """
    from safetensors.torch import save_file

    bad = sorted(k for k in meta if k in _RESERVED and k != "run_id")
    if bad:
        raise DeltaError(f"save_delta: {bad} are written by save_delta itself; pass other metadata names")
    moved = moved_parameters(base, model)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().cpu().contiguous().clone() for n in moved}
    info = {"format": FORMAT, "stores": "values", "base_sha256": str(base_sha256),
            "run_id": str(meta.pop("run_id", "")), "names": sorted(moved),
            "n_tensors_moved": len(moved), "n_tensors_total": len(params),
            "n_elements_moved": sum(tensors[n].numel() for n in moved),
            "n_elements_changed": sum(moved.values()),
            "n_parameters": sum(p.numel() for p in params.values()),
            "tensors_sha256": _tensors_sha256(tensors)}
    strings = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
               for k, v in {**meta, **info}.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=strings)
        Path(tmp).chmod(file_mode())  # safetensors may create its file private (0600)
    return {**{k: v for k, v in strings.items() if k not in info}, **info}


def _ints(meta: Dict[str, str]) -> Dict[str, object]:
    out: Dict[str, object] = dict(meta)
    for k in ("n_tensors_moved", "n_tensors_total", "n_elements_moved", "n_elements_changed", "n_parameters"):
        if k in out:
            out[k] = int(out[k])
    out["names"] = json.loads(meta.get("names", "[]"))
    return out


@dataclass
class Delta:
    """A loaded delta file: ``tensors`` (name → θ_u of each moved parameter, on the CPU),
    ``base_sha256`` (the base it was computed on), ``run_id``, ``meta`` (every metadata field;
    ``names`` a list, the counts ints) and the ``path`` it came from."""

    tensors: Dict[str, torch.Tensor]
    base_sha256: str
    run_id: str = ""
    meta: Dict[str, object] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def names(self) -> List[str]:
        return sorted(self.tensors)

    def check_base(self, base) -> None:
        """Raise :class:`DeltaError` naming both hashes when ``base`` is not the model this
        delta was computed on (its full weight sha256 differs from ``base_sha256``)."""
        got = model_fingerprint(base, full=True)
        if got != self.base_sha256:
            where = self.path if self.path is not None else f"the delta of run {self.run_id!r}"
            raise DeltaError(f"{where} was computed on a base with sha256 {self.base_sha256}, but the model given "
                             f"has sha256 {got}; load the base model the run started from")

    def _targets(self, model) -> Dict[str, torch.nn.Parameter]:
        params = dict(model.named_parameters())
        for n, t in self.tensors.items():
            p = params.get(n)
            if p is None or p.shape != t.shape or p.dtype != t.dtype:
                raise DeltaError(f"the delta's tensor {n!r} ({tuple(t.shape)} {t.dtype}) does not fit the model's "
                                 f"({'missing' if p is None else f'{tuple(p.shape)} {p.dtype}'})")
        return params

    def delta(self, base, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
        """``{name: θ_u − θ₀}`` for the moved parameters (CPU; in the parameters' dtype, or
        ``dtype``, e.g. ``torch.float64`` for the exact difference of fp32 weights).  Refuses a
        base with another sha256."""
        self.check_base(base)
        params = self._targets(base)
        out = {}
        for n, t in self.tensors.items():
            w0 = params[n].detach().cpu()
            out[n] = t.to(dtype) - w0.to(dtype) if dtype is not None else t - w0
        return out

    def apply(self, base):
        """A new model (a deep copy of ``base``) holding θ_u: the stored values copied into the
        moved parameters, bit for bit; ``base`` is not modified.  Refuses a base with another
        sha256."""
        self.check_base(base)
        self._targets(base)
        model = copy.deepcopy(base)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in self.tensors.items():
                params[n].copy_(t.to(params[n].device))
        return model


def load_delta(path) -> Delta:
    """Read a delta file written by :func:`save_delta`, checking its tensors against the
    ``tensors_sha256`` it records.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        DeltaError: the file is not a readable delta file (truncated, not safetensors, another
            format) or its tensors do not match their recorded hash or names.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no delta file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own errors for a truncated or foreign file
        raise DeltaError(f"{path} is not a readable delta file ({type(e).__name__}: {e}); recompute the run "
                         f"(`optigrade study CONFIG --out ... --resume` recomputes runs whose delta is damaged)") from e
    if meta.get("format") != FORMAT:
        raise DeltaError(f"{path} is not an optigrade delta file (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        info = _ints(meta)
    except ValueError as e:
        raise DeltaError(f"{path} has damaged metadata ({e})") from e
    if sorted(info["names"]) != sorted(tensors) or _tensors_sha256(tensors) != meta.get("tensors_sha256"):
        raise DeltaError(f"{path} is damaged: its tensors do not match the names and sha256 it records; recompute "
                         f"the run")
    return Delta(tensors=tensors, base_sha256=meta.get("base_sha256", ""), run_id=meta.get("run_id", ""),
                 meta=info, path=path)
