"""lm-eval (EleutherAI's evaluation harness) on an already-loaded model: an optional extra.

:func:`run_lm_eval` scores a model and tokenizer held in memory on lm-eval tasks (WMDP's
``wmdp_bio`` / ``wmdp_cyber`` and ``mmlu``, SPEC §6: zero-shot multiple-choice accuracy) through
lm-eval's Python API (``lm_eval.simple_evaluate`` with ``lm_eval.models.huggingface.HFLM``
wrapping the model) and returns tidy rows ``task, metric, value, stderr, n``.

Everything that can be refused is refused before the model is touched, in this order:

1. lm-eval is not installed: ``pip install optigrade[lmeval]``;
2. a task name lm-eval's ``TaskManager`` does not know (with ``include_path``'s tasks): the
   closest known names are listed;
3. a task whose data cannot be read (these machines reach no dataset hub; ``HF_DATASETS_OFFLINE``):
   the message names the dataset (``cais/wmdp``, config ``wmdp-bio``) and how to provide it, a
   local JSON copy plus a task YAML in a directory given as ``include_path``::

       # DIR/wmdp_bio_local.yaml            (the data: DIR/wmdp_bio.jsonl, one question a line)
       task: wmdp_bio_local
       dataset_path: json
       dataset_kwargs: {data_files: {test: DIR/wmdp_bio.jsonl}}
       test_split: test
       output_type: multiple_choice
       doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"
       doc_to_choice: ["A", "B", "C", "D"]
       doc_to_target: answer
       metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]

The command line: ``optigrade evaluate CKPT --lm-eval wmdp_bio,mmlu [--lm-eval-limit N]
[--lm-eval-include DIR] [--lm-eval-fewshot K]``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import pandas as pd

from .._validate import ConfigError

__all__ = ["run_lm_eval", "check_lm_eval", "COLUMNS", "lm_eval_available"]

#: the columns of :func:`run_lm_eval`'s table
COLUMNS = ("task", "metric", "value", "stderr", "n")

_INSTALL = "pip install optigrade[lmeval]"


def lm_eval_available() -> bool:
    """Whether lm-eval can be imported."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError:
        return False
    return True


def _paths(include_path) -> Tuple[str, ...]:
    if include_path is None:
        return ()
    items = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    out = []
    for p in items:
        q = Path(p).expanduser()
        if not q.is_dir():
            raise ConfigError(f"lm-eval include_path {str(p)!r} is not a directory; give the directory holding "
                              "your task YAML files, e.g. --lm-eval-include tasks/")
        out.append(str(q.resolve()))
    return tuple(out)


@lru_cache(maxsize=4)
def _task_manager(paths: Tuple[str, ...], include_defaults: bool):
    """lm-eval's TaskManager (indexing its ~15,000 built-in tasks takes a while: built once per
    include path)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(verbosity="ERROR", include_path=list(paths) or None, include_defaults=include_defaults)


def _task_names(tasks) -> list:
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",")]
    names = list(tasks) if isinstance(tasks, (list, tuple)) else None
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ConfigError(f"lm-eval tasks must be task names, e.g. ['wmdp_bio', 'mmlu'] or 'wmdp_bio,mmlu'; got "
                          f"{tasks!r}")
    return names


def _check_known(names, tm, paths) -> None:
    known = set(tm.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            where = f" (with the tasks under {', '.join(paths)})" if paths else ""
            raise ConfigError(f"unknown lm-eval task {name!r}{where}{hint}; `lm-eval ls tasks` lists every task, "
                              "or write a task YAML in a directory passed as include_path (--lm-eval-include)")


def _dataset_of(name, tm, err: Exception) -> Tuple[str, Optional[str]]:
    """(dataset path, dataset config name) of task ``name``, from its YAML, else from the error."""
    entry = getattr(tm, "task_index", {}).get(name)
    cfg = getattr(entry, "cfg", None) or {}
    path = cfg.get("dataset_path")
    if path:
        return str(path), cfg.get("dataset_name")
    m = re.search(r"'([^']+/[^']+)'", str(err))  # e.g. "Couldn't reach 'cais/wmdp' on the Hub"
    return (m.group(1) if m else "its dataset"), None


def _check_data(names, tm) -> None:
    """Build each task (lm-eval reads its data here), before the model is touched."""
    for name in names:
        try:
            tm.load([name])
        except Exception as e:  # noqa: BLE001 - datasets raises ConnectionError, FileNotFoundError, DatasetNotFoundError...
            path, config = _dataset_of(name, tm, e)
            offline = any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in
                          ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
            why = "the dataset hub is unreachable here (HF_DATASETS_OFFLINE)" if offline else "it could not be read"
            cfg = f" (config {config!r})" if config else ""
            raise ConfigError(
                f"lm-eval task {name!r} needs the dataset {path!r}{cfg}, and {why}: {type(e).__name__}: "
                f"{str(e)[:200]}.  Provide a local copy: on a machine with hub access save it as JSON lines "
                f"(datasets.load_dataset({path!r}{', ' + repr(config) if config else ''})['test'].to_json("
                f"'{name}.jsonl')), then write a task YAML in a directory DIR (task: {name}_local, dataset_path: "
                f"json, dataset_kwargs: {{data_files: {{test: /abs/path/{name}.jsonl}}}}, test_split: test, and "
                f"the original task's doc_to_text / doc_to_choice / doc_to_target / metric_list) and pass "
                f"include_path=DIR (--lm-eval-include DIR) with the task {name}_local") from None


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _tidy(out: dict) -> pd.DataFrame:
    results = out.get("results", {})
    samples = out.get("n-samples", {})
    subtasks = out.get("group_subtasks", {})

    def n_of(task):
        if task in samples:
            return int(samples[task].get("effective", samples[task].get("original", 0)))
        kids = subtasks.get(task)
        if kids:
            ns = [n_of(k) for k in kids]
            return sum(ns) if all(x is not None for x in ns) else None
        return None

    rows = []
    for task, res in results.items():
        for key, value in res.items():
            if key == "alias" or "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            label = metric if filt == "none" else f"{metric},{filt}"
            n = n_of(task)
            rows.append({"task": task, "metric": label, "value": float(value),
                         "stderr": _num(res.get(f"{metric}_stderr,{filt}")),
                         "n": n if n is not None else pd.NA})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n"] = df["n"].astype("Int64")
    return df.sort_values(["task", "metric"], kind="stable").reset_index(drop=True)


def run_lm_eval(model, tokenizer, tasks: Union[str, Sequence[str]], *, limit: Optional[Union[int, float]] = None,
                num_fewshot: Optional[int] = None, include_path=None, batch_size: int = 8,
                device: Optional[str] = None, include_defaults: Optional[bool] = None) -> pd.DataFrame:
    """Score ``model`` (a loaded causal LM) with ``tokenizer`` on lm-eval ``tasks``.

    Args:
        tasks: task or group names (``["wmdp_bio", "mmlu"]`` or ``"wmdp_bio,mmlu"``).
        limit: at most this many documents per task (a fraction in (0, 1) for a share); None: all.
        num_fewshot: few-shot examples per prompt (None: each task's default, 0 for WMDP).
        include_path: a directory (or several) of extra task YAMLs, e.g. local copies of data.
        batch_size: documents per forward pass.
        device: where lm-eval puts inputs (default: the model's device).
        include_defaults: whether lm-eval's built-in tasks are indexed too (~15,000 YAMLs, tens of
            seconds); None (default): not when every task named is one of ``include_path``'s.

    Returns:
        one row per (task, metric): ``task, metric, value, stderr, n`` (``n`` = documents scored;
        a group's row sums its tasks').  Multiple-choice tasks give ``acc`` (argmax of the summed
        log-likelihood of each choice's continuation) and ``acc_norm`` (per-character normalised).

    Raises:
        ConfigError: before the model is touched: lm-eval not installed, an unknown task name (close
            matches listed), a task whose data cannot be read (the dataset named, and how to provide
            a local copy), or a bad argument.
    """
    if not lm_eval_available():
        raise ConfigError(f"lm-eval is not installed; {_INSTALL} (or pip install lm-eval)")
    names = _task_names(tasks)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise ConfigError(f"lm-eval limit must be a positive number of documents per task, got {limit!r}; e.g. 100")
    if num_fewshot is not None and (isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int)
                                    or num_fewshot < 0):
        raise ConfigError(f"lm-eval num_fewshot must be an integer >= 0, got {num_fewshot!r}; e.g. 0 (zero-shot)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"lm-eval batch_size must be a positive integer, got {batch_size!r}; e.g. 8")
    tm = check_lm_eval(names, include_path=include_path, include_defaults=include_defaults)
    return _evaluate(model, tokenizer, names, tm, limit, num_fewshot, batch_size, device)


def check_lm_eval(tasks, *, include_path=None, include_defaults: Optional[bool] = None):
    """Refuse, without a model, what :func:`run_lm_eval` would refuse: lm-eval missing, an unknown
    task name, a task whose data cannot be read (:class:`ConfigError`).  Returns lm-eval's
    ``TaskManager`` for these tasks."""
    if not lm_eval_available():
        raise ConfigError(f"lm-eval is not installed; {_INSTALL} (or pip install lm-eval)")
    names = _task_names(tasks)
    paths = _paths(include_path)
    auto = include_defaults is None
    if auto:  # only the include path's tasks when every name is one of them
        include_defaults = not (paths and set(names) <= set(_task_manager(paths, False).all_tasks))
    tm = _task_manager(paths, bool(include_defaults))
    _check_known(names, tm, paths)
    try:
        _check_data(names, tm)
    except ConfigError:
        if include_defaults or not auto:
            raise
        tm = _task_manager(paths, True)  # a local task may include a built-in one: try the full index
        _check_data(names, tm)
    return tm


def _evaluate(model, tokenizer, names, tm, limit, num_fewshot, batch_size, device) -> pd.DataFrame:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from .._device import model_device

    dev = str(device) if device is not None else str(model_device(model))
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=dev)
        out = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit,
                                      task_manager=tm, log_samples=False, bootstrap_iters=1000,
                                      verbosity="ERROR")
    finally:
        model.train(was_training)
    if out is None:  # non-zero ranks in a distributed run
        return pd.DataFrame(columns=list(COLUMNS))
    return _tidy(out)
