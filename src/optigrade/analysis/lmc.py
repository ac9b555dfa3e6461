"""Linear-mode-connectivity barriers *between* a study's unlearned checkpoints (SPEC §1.1: "sign-
based optimizers land in the same basin as Adam; ZO solutions do not").

For two checkpoints θa, θb of the same objective and seed (each rebuilt bit for bit from the
study's saved Δ, ``runs/<run_id>.delta.safetensors``, on the study's base θ₀):

    B(a, b) = max_α L((1−α)θa + αθb) − [(1−α)L(θa) + αL(θb)],   α on a grid of ``points``

(:func:`optigrade.landscape.mode_connectivity`), L the token-weighted answer NLL on a fixed batch
of the first ``examples`` facts of ``data`` (the geometry stage's batch,
:func:`~optigrade.analysis.geometry.probe_batch`).  The original θ₀ is an endpoint too
("original"), so the matrix holds the θ₀ → θ_u barrier of each run beside the pairwise ones.
A barrier near 0 (within the grid's resolution) says the straight line between the two stays in
one basin; a positive barrier says there is a loss ridge between them.

Rows (tidy, one per pair): ``quantity`` "geo_lmc_barrier", ``value`` (nats/token),
``endpoint_a`` / ``endpoint_b`` (optimizer or control keys, "original" for θ₀), ``run_a`` /
``run_b``, ``objective``, ``seed``, ``data``, ``argmax_alpha``, the losses at both ends, the
settings and the number of loss evaluations.  :func:`lmc_barriers` writes them to
``STUDY/lmc.parquet`` atomically after every pair (an interrupted run keeps its finished pairs;
``resume=True`` computes only the missing ones); ``optigrade figures`` draws the matrix from it.

    >>> from optigrade.analysis.lmc import pairs_of
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"run_id": ["a", "b", "c"], "optimizer": ["adam", "zo-sgd", "adam"],
    ...                      "objective": ["npo"] * 3, "seed": [0, 0, 1], "delta_file": ["x", "y", "z"]})
    >>> [(p[0], p[1]) for p in pairs_of(runs)]          # within (objective, seed); θ₀ joins each group
    [('original', 'a'), ('original', 'b'), ('a', 'b'), ('original', 'c')]
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pandas as pd
import torch

from .._files import atomic_write_parquet
from .._validate import ConfigError

__all__ = ["lmc_barriers", "pairs_of", "checkpoint_plane", "LMC_FILE", "PLANE_FILE"]

LMC_FILE = "lmc.parquet"


def pairs_of(runs: pd.DataFrame, include_original: bool = True) -> List[Tuple[str, str, str, int]]:
    """``(run_a, run_b, objective, seed)`` for every pair of runs sharing objective and seed
    (and θ₀ → each run as ``("original", run)`` when ``include_original``), in table order."""
    out = []
    for (obj, seed), g in runs.groupby(["objective", "seed"], sort=False):
        ids = list(dict.fromkeys(g["run_id"]))
        ends = (["original"] if include_original else []) + ids
        for a, b in itertools.combinations(ends, 2):
            out.append((a, b, str(obj), int(seed)))
    return out


def _runs(study: Path) -> pd.DataFrame:
    from .report import load_study

    results, _ = load_study(study)
    need = {"run_id", "optimizer", "objective", "seed", "delta_file"}
    if not need <= set(results.columns):
        raise ConfigError(f"{study}: results.parquet lacks {sorted(need - set(results.columns))}; rerun the study "
                          "with this optigrade, which saves one Δ per run")
    r = results[(results["delta_file"].astype(str) != "") & (results["optimizer"] != "original")]
    r = r.drop_duplicates("run_id")[["run_id", "optimizer", "objective", "seed", "delta_file"]]
    if "stop_reason" in results:
        diverged = set(results.loc[results["stop_reason"].astype(str) == "diverged", "run_id"])
        r = r[~r["run_id"].isin(diverged)]
    if r.empty:
        raise ConfigError(f"{study}: no run with a saved Δ (runs/<id>.delta.safetensors); nothing to connect")
    return r.reset_index(drop=True)


def _prepared(study: Path, splits: Sequence[str], files: dict, base=None, benchmark=None):
    """``(base, bench, deltas)``: the study's base and benchmark (rebuilt from its config unless
    given), the splits checked, and each run's saved Δ (``files``: run id → its ``delta_file``, relative
    to the study) checked against the base's sha256."""
    from .._quiet import maybe_quiet
    from .config import load_config
    from .deltas import load_delta
    from .study import prepare

    cfg = load_config(study / "config.yaml")
    with maybe_quiet(False):
        base, bench = prepare(cfg, progress=False, base=base, benchmark=benchmark)
    bad = [x for x in splits if x not in bench.splits]
    if bad:
        raise ConfigError(f"data {bad[0]!r} is not a split of the study's benchmark; choose from {sorted(bench.splits)}")
    deltas = {rid: load_delta(study / f) for rid, f in files.items()}
    for d in deltas.values():
        d.check_base(base)
    return base, bench, deltas


def _theta(probe, base_params: dict, delta) -> torch.Tensor:
    """The Probe's parameters of the checkpoint ``delta`` rebuilds (its stored values where it moved
    a weight, the base's elsewhere) as one float64 vector (:func:`~optigrade.analysis.geometry._flat`);
    ``delta`` None: the base itself."""
    from .geometry import _flat

    return _flat(probe, base_params if delta is None else {**base_params, **delta.tensors})


def lmc_barriers(study_dir, *, data="forget", examples: int = 16, points: int = 11,
                 params: Optional[str] = None, objectives: Optional[Sequence[str]] = None,
                 include_original: bool = True, resume: bool = False, progress: bool = True,
                 base=None, benchmark=None) -> pd.DataFrame:
    """Barriers between every pair of a finished study's checkpoints of the same objective and
    seed (module docstring), written to ``study_dir/lmc.parquet`` and returned.

    Args:
        data: the split(s) whose first ``examples`` facts form the loss batch ("forget", "retain",
            a list, or "forget,retain").
        points: α grid on [0, 1] (≥ 3; the barrier's resolution is 1/(points−1)).
        params: which weights the path moves (a pattern); default: every parameter any Δ moved.
        objectives: only these objectives (default: all of the study's).
        resume: keep the pairs already in lmc.parquet computed with the same settings.
        base / benchmark: the study's base model and benchmark when they were given to
            :func:`~optigrade.analysis.study.run_study` (default: rebuilt from its config.yaml);
            every Δ checks the base's sha256.

    Raises:
        ConfigError: before any work: not a finished study, no saved Δ, bad ``points`` /
            ``examples`` / ``data``, lmc.parquet holding other settings without ``resume``.
    """
    from optigrade import landscape as ls

    from .geometry import probe_batch

    study = Path(study_dir)
    if not (study / "config.yaml").is_file():
        raise ConfigError(f"{str(study_dir)!r} is not a study directory (no config.yaml); pass the --out of "
                          "`optigrade study`")
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        raise ConfigError(f"points must be an integer >= 3, got {points!r}; the α grid of each path, try 11")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ConfigError(f"examples must be a positive integer, got {examples!r}; try 16")
    splits = [x.strip() for x in data.split(",") if x.strip()] if isinstance(data, str) else list(data)
    if not splits:
        raise ConfigError(f"data must name at least one split, got {data!r}; e.g. forget or forget,retain")
    runs = _runs(study)
    if objectives is not None:
        bad = sorted(set(objectives) - set(runs["objective"]))
        if bad:
            raise ConfigError(f"objectives {bad} are not in the study; it has {sorted(set(runs['objective']))}")
        runs = runs[runs["objective"].isin(list(objectives))]
    settings = {"data": splits, "examples": examples, "points": points, "params": params,
                "include_original": include_original}
    path = study / LMC_FILE
    done = pd.DataFrame()
    if path.exists():
        old = pd.read_parquet(path)
        old_settings = json.loads(old["settings"].iloc[0]) if len(old) else settings
        if not resume:
            raise ConfigError(f"{path} exists; pass resume=True (--resume) to complete it or delete it to start again")
        if old_settings != settings:
            diff = next(k for k in settings if old_settings.get(k) != settings[k])
            raise ConfigError(f"{path} was computed with {diff}={old_settings.get(diff)!r}, not {settings[diff]!r}; "
                              "use the same settings to resume or delete the file")
        done = old
    base, bench, deltas = _prepared(study, splits, dict(zip(runs["run_id"], runs["delta_file"])), base, benchmark)
    moved = sorted(set().union(*(d.names for d in deltas.values())))
    names = moved if params is None else None
    key = {r.run_id: r.optimizer for r in runs.itertuples()}
    base_params = dict(base.named_parameters())

    todo = [(d, *p) for d in splits for p in pairs_of(runs, include_original)]
    have = set(zip(done["data"], done["run_a"], done["run_b"])) if len(done) else set()
    rows = done.to_dict("records") if len(done) else []
    from tqdm.auto import tqdm

    probes = {}  # data split → its Probe (one per split, the same parameters)
    for data, a, b, obj, seed in tqdm([p for p in todo if p[:3] not in have], desc="mode connectivity",
                                      disable=not progress, leave=False):
        if data not in probes:
            probes[data] = ls.Probe(base, [probe_batch(bench, data, examples)], params=names, param_filter=params)
        probe = probes[data]
        ta, tb = (_theta(probe, base_params, None if r == "original" else deltas[r]) for r in (a, b))
        t0 = time.perf_counter()
        res = ls.mode_connectivity(probe, ta.to(probe.dtype), tb.to(probe.dtype), points=points)
        rows.append({"quantity": "geo_lmc_barrier", "value": res.extras["barrier"], "unit": "loss (nats/token)",
                     "endpoint_a": "original" if a == "original" else key[a],
                     "endpoint_b": "original" if b == "original" else key[b], "run_a": a, "run_b": b,
                     "objective": obj, "seed": seed, "data": data, "argmax_alpha": res.extras["argmax_alpha"],
                     "loss_a": float(res.losses[0]), "loss_b": float(res.losses[-1]),
                     "losses": json.dumps([round(float(x), 6) for x in res.losses]),
                     "n_params": int(ta.numel()), "cost_loss": int(points),
                     "seconds": time.perf_counter() - t0, "settings": json.dumps(settings, sort_keys=True)})
        _write(path, rows)  # after every pair: an interrupted run keeps what it finished
    if not rows:
        _write(path, rows)
    return pd.DataFrame(rows)


def _write(path: Path, rows: List[dict]) -> None:
    atomic_write_parquet(pd.DataFrame(rows), path)


# ----------------------------------------------------------------------------- planes
PLANE_FILE = "plane.parquet"


def checkpoint_plane(study_dir, endpoints: Sequence[str] = ("adam", "zo-sgd"), *, data: str = "forget",
                     examples: int = 16, points: int = 11, margin: float = 0.25, objective: Optional[str] = None,
                     seed: Optional[int] = None, params: Optional[str] = None, progress: bool = True,
                     base=None, benchmark=None) -> pd.DataFrame:
    """The loss on the plane through θ₀ and two of a study's checkpoints (the runs of optimizers
    or controls ``endpoints`` with one objective and seed): origin θ₀, d1 = θa − θ₀, d2 = the
    part of θb − θ₀ orthogonal to d1 scaled to ‖d1‖ (:func:`optigrade.landscape.slice_2d` with
    ``checkpoints``), on a ``points`` × ``points`` grid covering the three points with ``margin``
    (in units of ‖d1‖) around them.  Written to ``study_dir/plane.parquet`` (rows ``geo_slice_2d``
    with coordinates ``a`` / ``b``, and ``plane_point`` rows naming where θ₀, θa and θb lie);
    ``optigrade figures`` draws it as the contour figure.  ``objective`` / ``seed`` default to the
    first ones holding both endpoints."""
    from optigrade import landscape as ls

    from .geometry import probe_batch

    study = Path(study_dir)
    if not (study / "config.yaml").is_file():
        raise ConfigError(f"{str(study_dir)!r} is not a study directory (no config.yaml); pass the --out of "
                          "`optigrade study`")
    if len(endpoints) != 2 or endpoints[0] == endpoints[1]:
        raise ConfigError(f"a plane needs two different endpoints, got {list(endpoints)!r}; e.g. adam,zo-sgd")
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        raise ConfigError(f"points must be an integer >= 3, got {points!r}; grid points per axis, try 11")
    runs = _runs(study)
    for e in endpoints:
        if e not in set(runs["optimizer"]):
            raise ConfigError(f"endpoint {e!r} is not an optimizer or control of the study; it has "
                              f"{sorted(set(runs['optimizer']))}")
    sel = runs if objective is None else runs[runs["objective"] == objective]
    sel = sel if seed is None else sel[sel["seed"] == seed]
    both = [(o, s) for (o, s), g in sel.groupby(["objective", "seed"], sort=False) if set(endpoints) <= set(g["optimizer"])]
    if not both:
        raise ConfigError(f"no objective and seed of the study has runs of both {list(endpoints)} "
                          f"(objective={objective!r}, seed={seed!r})")
    obj, sd = both[0]
    rid = {e: sel[(sel["objective"] == obj) & (sel["seed"] == sd) & (sel["optimizer"] == e)]["run_id"].iloc[0]
           for e in endpoints}
    files = dict(zip(runs["run_id"], runs["delta_file"]))
    base, bench, by_run = _prepared(study, [data], {rid[e]: files[rid[e]] for e in endpoints}, base, benchmark)
    deltas = {e: by_run[rid[e]] for e in endpoints}
    names = sorted(set().union(*(d.names for d in deltas.values()))) if params is None else None
    probe = ls.Probe(base, [probe_batch(bench, data, examples)], params=names, param_filter=params)
    base_params = dict(base.named_parameters())
    t0, ta, tb = (_theta(probe, base_params, d) for d in (None, deltas[endpoints[0]], deltas[endpoints[1]]))
    d1 = ta - t0
    u = tb - t0
    x2 = float(u @ d1 / (d1 @ d1))
    y2 = float((u - x2 * d1).norm() / d1.norm())
    lo_a, hi_a = min(0.0, x2) - margin, max(1.0, x2) + margin
    lo_b, hi_b = min(0.0, y2) - margin, max(0.0, y2) + margin
    start = time.perf_counter()
    s = ls.slice_2d(probe, checkpoints=(t0.to(probe.dtype), ta.to(probe.dtype), tb.to(probe.dtype)),
                    span=((lo_a, hi_a), (lo_b, hi_b)), points=(points, points))
    plane = f"{obj} · seed {sd}: {endpoints[0]} and {endpoints[1]}"
    ctx = {"run_id": plane, "objective": obj, "seed": int(sd), "data": data, "endpoint_a": endpoints[0],
           "endpoint_b": endpoints[1], "run_a": rid[endpoints[0]], "run_b": rid[endpoints[1]]}
    rows = [{**ctx, "quantity": "geo_slice_2d", "a": float(a), "b": float(b), "value": float(s.losses[j, i]),
             "unit": "loss (nats/token)"} for j, b in enumerate(s.ys) for i, a in enumerate(s.xs)]
    rows += [{**ctx, "quantity": "plane_point", "label": lab, "a": a, "b": b, "value": float("nan")}
             for lab, (a, b) in (("original θ₀", (0.0, 0.0)), (endpoints[0], (1.0, 0.0)), (endpoints[1], (x2, y2)))]
    df = pd.DataFrame(rows)
    df["n_params"] = int(t0.numel())
    df["d1_norm"] = float(d1.norm())
    df["seconds"] = time.perf_counter() - start
    df["settings"] = json.dumps({"examples": examples, "points": points, "margin": margin, "params": params},
                                sort_keys=True)
    atomic_write_parquet(df, study / PLANE_FILE)
    return df
