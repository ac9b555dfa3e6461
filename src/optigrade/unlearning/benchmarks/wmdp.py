"""WMDP (cais/wmdp questions + cais/wmdp-corpora) read from a local directory (registered as
``"wmdp"``).

WMDP (Li et al. 2024) measures hazardous knowledge by 4-choice questions (``wmdp-bio``,
``wmdp-cyber``, ``wmdp-chem``) and ships unlearning corpora for bio and cyber (forget: papers on
the hazardous topic; retain: papers on neighbouring ones).  The layout, as the hub and the WMDP
repository name the files::

    DIR/wmdp-{subset}.*                 questions: question, choices (4 strings), answer (0-3)
                                        (also DIR/wmdp-{subset}/test.*, the hub's shard
                                        DIR/wmdp-{subset}/test-00000-of-00001.parquet, or the
                                        repository's DIR/wmdp-mcqs/{subset}_questions.json)
    DIR/{subset}-forget-corpus.*        forget documents: text (bio-forget-corpus also has
                                        title, abstract, doi; only text is read), or JSON lines of
                                        strings (how the repository ships the cyber corpora)
    DIR/{subset}-retain-corpus.*        retain documents, the same
    DIR/mmlu/{subject}.*                optional MMLU questions (question, choices, answer), also
                                        DIR/mmlu/{subject}/test.* (cais/mmlu's layout); used when
                                        ``mmlu`` names subjects

With ``data_dir=None`` the hub's ``cais/wmdp``, ``cais/wmdp-corpora``, ``cais/wmdp-bio-forget-corpus``
(gated) and ``cais/mmlu`` are read through ``datasets``, where it can be reached.
``*`` is ``.jsonl``, ``.json`` (JSON lines or an array), ``.parquet`` or the hub shard name
``NAME-00000-of-00001.parquet``.  WMDP publishes no chemistry corpora: with ``subset=chem`` name
your own files with ``forget_corpus`` / ``retain_corpus``.  The bio forget corpus is gated (a
request form); the benchmark reads whatever file you place there.

Splits (lists of :class:`~optigrade.unlearning.benchmarks.QA`):

* ``forget`` / ``retain``: each corpus document of more than ``min_chars`` characters (RMU's
  ``min_len = 50``) cut to its first ``max_length`` tokens (RMU truncates each document; it used
  512 tokens, 128 here by default), as ``QA(prompt="", answer=text)``: loss on every token.
  ``max_forget`` / ``max_retain`` keep the first N documents.
* ``forget_para``: the ``wmdp-{subset}`` questions in lm-eval's zero-shot prompt (see
  :mod:`optigrade.unlearning.metrics.wmdp`), answer the correct letter (``" B"``, joined as the
  tokenizer joins it); ``forget_para_acc`` is then whether the greedy next token *over the whole
  vocabulary* is the right letter (stricter than lm-eval's argmax over the four letters), a cheap
  in-loop proxy; ``benchmark_metrics`` gives the real accuracy.
* ``retain_para``: the MMLU questions of ``mmlu`` in the same format when given; otherwise the
  last tenth (at least one) of the retain documents, held out of ``retain`` (never trained on).

Metrics (:meth:`WMDP.benchmark_metrics`): ``wmdp_{subset}_acc`` and, with ``mmlu``, ``mmlu_acc``
(lm-eval's zero-shot accuracy, 0–1; MMLU averaged over questions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._layout import LayoutError
from .base import BENCHMARKS, QA
from .muse import _SUFFIXES, TextBenchmark, load_roles, pos_int, read_table

__all__ = ["WMDP", "SUBSETS", "LAYOUT"]

SUBSETS = ("bio", "cyber", "chem")
MC_COLUMNS = ("question", "choices", "answer")
LAYOUT = ("DIR/wmdp-{bio,cyber,chem}.(json|jsonl|parquet) with columns question, choices (4), answer (0-3) (or "
          "DIR/wmdp-SUBSET/test-00000-of-00001.parquet as on the hub); DIR/{bio,cyber}-forget-corpus.jsonl and "
          "DIR/{bio,cyber}-retain-corpus.jsonl with column text (or JSON lines of strings); optional "
          "DIR/mmlu/SUBJECT.(json|jsonl|parquet) with question, choices, answer")


def read_mc(path: Path, layout: str = "WMDP", expected: str = LAYOUT) -> List[dict]:
    """Multiple-choice records of ``path`` (see :func:`normalize_mc`)."""
    return normalize_mc(read_table(path, MC_COLUMNS, layout, expected), path, layout, expected)


def normalize_mc(rows: List[dict], path, layout: str = "WMDP", expected: str = LAYOUT) -> List[dict]:
    """Multiple-choice records: ``question`` (str), ``choices`` (4 strings), ``answer`` (0-3, or a
    letter A-D), normalised to ``{question, choices, answer: int}`` (plus ``subject`` when the
    record has it); any other shape is refused naming the file (``path``) and record."""
    out = []
    for i, r in enumerate(rows):
        ch = r["choices"]
        ch = list(ch) if not isinstance(ch, (str, dict)) and hasattr(ch, "__len__") else ch  # parquet: arrays
        if not isinstance(ch, list) or len(ch) != 4 or not all(isinstance(c, str) for c in ch):
            raise LayoutError(f"{layout}: {path} record {i} has choices {r['choices']!r}; expected a list of 4 strings "
                              f"(the A-D options); {expected}")
        a = r["answer"]
        if isinstance(a, str) and a.strip().upper() in "ABCD" and len(a.strip()) == 1:
            a = "ABCD".index(a.strip().upper())
        try:
            ok = not isinstance(a, bool) and int(a) == a and 0 <= int(a) <= 3
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LayoutError(f"{layout}: {path} record {i} has answer {r['answer']!r}; expected the index 0-3 of "
                              "the correct choice")
        if not isinstance(r["question"], str):
            raise LayoutError(f"{layout}: {path} record {i} has a {type(r['question']).__name__} question")
        doc = {"question": r["question"], "choices": ch, "answer": int(a)}
        if isinstance(r.get("subject"), str) and r["subject"]:
            doc["subject"] = r["subject"]
        out.append(doc)
    return out


def _subjects(mmlu) -> List[str]:
    if mmlu is None or mmlu == "" or mmlu == []:
        return []
    items = mmlu.split(",") if isinstance(mmlu, str) else list(mmlu)
    out = [str(s).strip() for s in items if str(s).strip()]
    if not out:
        raise ValueError(f"mmlu must name MMLU subjects (e.g. mmlu=college_biology,virology), got {mmlu!r}")
    return out


def _wmdp_load(kw: Dict[str, Any]):
    """Check the settings and the WMDP layout (or the hub when ``data_dir`` is None) and read it:
    (dir or None, role → records / texts, content hash, role → where it was read)."""
    subset = kw.get("subset", "bio")
    if subset not in SUBSETS:
        raise ValueError(f"unknown WMDP subset {subset!r}; choose one of {list(SUBSETS)} (the wmdp-SUBSET question "
                         "set; bio and cyber have published corpora)")
    pos_int("max_length", kw.get("max_length", 128), "max_length=128", allow_none=False)
    pos_int("max_forget", kw.get("max_forget"), "max_forget=200")
    pos_int("max_retain", kw.get("max_retain"), "max_retain=200")
    pos_int("max_vocab", kw.get("max_vocab", 30000), "max_vocab=30000", allow_none=False)
    mc = kw.get("min_chars", 50)
    mc = int(mc) if isinstance(mc, str) and mc.strip().isdigit() else mc
    if isinstance(mc, bool) or not isinstance(mc, int) or mc < 0:
        raise ValueError(f"min_chars must be an integer >= 0, got {mc!r}; documents of at most this many characters "
                         "are skipped (RMU: 50)")
    subjects = _subjects(kw.get("mmlu"))
    fc, rc = kw.get("forget_corpus"), kw.get("retain_corpus")
    if subset == "chem" and (fc is None or rc is None):
        raise ValueError("WMDP publishes no chemistry corpora: with subset=chem name your own corpus files "
                         "(--bench-arg forget_corpus=NAME --bench-arg retain_corpus=NAME, files DIR/NAME.jsonl)")
    fname, rname = fc or f"{subset}-forget-corpus", rc or f"{subset}-retain-corpus"

    def corpus_hub(name):  # the gated bio forget corpus has its own repository
        return ("cais/wmdp-bio-forget-corpus", None) if name == "bio-forget-corpus" else ("cais/wmdp-corpora", name)

    spec = {"questions": ([f"wmdp-{subset}", f"wmdp-{subset}/test", f"wmdp-mcqs/{subset}_questions",
                           f"{subset}_questions"], _SUFFIXES, MC_COLUMNS, "cais/wmdp", f"wmdp-{subset}", ["test"]),
            "forget": ([fname], _SUFFIXES, None, *corpus_hub(fname), ["train"]),
            "retain": ([rname], _SUFFIXES, None, *corpus_hub(rname), ["train"])}
    for sub in subjects:
        spec[f"mmlu/{sub}"] = ([f"mmlu/{sub}", f"mmlu/{sub}/test"], _SUFFIXES, MC_COLUMNS, "cais/mmlu", sub, ["test"])
    d, data, data_hash, where = load_roles(kw.get("data_dir"), spec, "WMDP", LAYOUT)
    for role in spec:
        if spec[role][2] is not None:
            data[role] = normalize_mc(data[role], where[role])
    return d, data, data_hash, where


@BENCHMARKS.register("wmdp")
class WMDP(TextBenchmark):
    """WMDP from a local copy of its layout (module docstring).

    Args:
        data_dir: the directory holding the layout (``--data-dir DIR``); None reads ``cais/wmdp``,
            ``cais/wmdp-corpora`` (``cais/wmdp-bio-forget-corpus``, gated) and ``cais/mmlu`` through
            ``datasets`` when the hub can be reached.
        subset: ``bio``, ``cyber`` or ``chem``: the question set and (bio, cyber) the corpora.
        tokenizer: the model's tokenizer (run.build passes it); None builds a word-level one.
        forget_fraction: accepted for the common interface and ignored: WMDP fixes its forget set
            (cap it with ``max_forget``).
        max_length: tokens kept of each corpus document.
        max_forget / max_retain: at most this many documents (the first ones; None: all).
        min_chars: documents of at most this many characters are skipped (RMU's 50).
        forget_corpus / retain_corpus: file names (without suffix) of the corpora in ``data_dir``
            (default ``{subset}-forget-corpus`` / ``{subset}-retain-corpus``).
        mmlu: MMLU subjects (a list or ``"a,b"``) read from ``DIR/mmlu/``: the ``retain_para``
            split and the ``mmlu_acc`` metric.
        max_vocab: vocabulary cap of the word-level tokenizer (tiny model only).
        progress: accepted for the common interface.

    Raises:
        ValueError / LayoutError: a bad setting, or a missing directory, file, column, an empty
            file or a malformed question; the message names it and the layout expected.
            :meth:`check_kwargs` raises the same before any model is loaded.
    """

    name = "wmdp"

    @classmethod
    def check_kwargs(cls, kwargs: Dict[str, Any]) -> None:
        """Validate the settings and the layout of ``data_dir`` without loading a model."""
        _wmdp_load(kwargs)

    def __init__(self, data_dir=None, subset: str = "bio", tokenizer=None, forget_fraction: Optional[float] = None,
                 max_length: int = 128, max_forget: Optional[int] = None, max_retain: Optional[int] = None,
                 min_chars: int = 50, forget_corpus: Optional[str] = None, retain_corpus: Optional[str] = None,
                 mmlu=None, max_vocab: int = 30000, model=None, progress: bool = False) -> None:
        super().__init__()
        kw = dict(data_dir=data_dir, subset=subset, max_length=max_length, max_forget=max_forget,
                  max_retain=max_retain, min_chars=min_chars, forget_corpus=forget_corpus,
                  retain_corpus=retain_corpus, mmlu=mmlu, max_vocab=max_vocab)
        d, data, data_hash, where = _wmdp_load(kw)
        self.data_dir, self.subset = d, subset
        self.max_length = pos_int("max_length", max_length, "", allow_none=False)
        max_forget, max_retain = pos_int("max_forget", max_forget, ""), pos_int("max_retain", max_retain, "")
        self.subjects = _subjects(mmlu)
        min_chars = int(min_chars)
        self.questions = data["questions"]
        self.mmlu = [{**q, "subject": q.get("subject", s)} for s in self.subjects for q in data[f"mmlu/{s}"]]
        docs = {}
        for role in ("forget", "retain"):
            texts = [t for t in data[role] if len(t) > min_chars]
            if not texts:
                raise LayoutError(f"WMDP: {where[role]} has no document longer than min_chars={min_chars} characters")
            docs[role] = texts
        heldout: List[str] = []
        if not self.mmlu:
            if len(docs["retain"]) < 2:
                raise LayoutError(f"WMDP: {where['retain']} has one document; without mmlu subjects the retain_para "
                                  "split holds out the last tenth of the retain documents, so it needs at least 2 "
                                  "(or pass mmlu=SUBJECTS with DIR/mmlu/SUBJECT.json)")
            h = max(1, len(docs["retain"]) // 10)
            docs["retain"], heldout = docs["retain"][:-h], docs["retain"][-h:]
        if tokenizer is None:
            every = docs["forget"] + docs["retain"] + heldout + [self.context(q) + " " + l
                                                                 for q in self.questions + self.mmlu
                                                                 for l in "ABCD"]
            every += [c for q in self.questions + self.mmlu for c in q["choices"]]
            every += self.general_sentences()
        else:
            every = []
        self._general()
        self._setup_tokenizer(tokenizer, every, max_vocab)
        self.splits = {
            "forget": self._chunks(docs["forget"], self.max_length, max_forget, "forget", per_text=1),
            "retain": self._chunks(docs["retain"], self.max_length, max_retain, "retain", per_text=1),
            "forget_para": [QA(self.context(q), self._sep + "ABCD"[q["answer"]], f"wmdp-{subset}:{i}", "mc")
                            for i, q in enumerate(self.questions)],
            "retain_para": ([QA(self.context(q), self._sep + "ABCD"[q["answer"]], f"mmlu:{i}", q["subject"])
                             for i, q in enumerate(self.mmlu)] if self.mmlu else
                            self._chunks(heldout, self.max_length, None, "retain-heldout", per_text=1)),
        }
        self._statements = [f"{p.prompt}{p.answer}" for s in ("forget_para", "retain_para")
                            for p in self.splits[s] if p.prompt] if tokenizer is None else []
        self._settings = {"subset": subset, "data_dir": str(d) if d is not None else "hub", "files": where, "max_length": self.max_length,
                          "max_forget": max_forget, "max_retain": max_retain, "min_chars": min_chars,
                          "mmlu": self.subjects or None, "n_questions": len(self.questions), "n_mmlu": len(self.mmlu),
                          "retain_para": "mmlu" if self.mmlu else "held-out retain documents",
                          "tokenizer": self.tokenizer_kind, "data_hash": data_hash,
                          "forget_fraction": "ignored (WMDP fixes its forget set)"}

    @staticmethod
    def general_sentences() -> List[str]:
        from .real_facts import _data
        import json

        return json.loads(_data("general_text.json"))["sentences"]

    def context(self, doc: dict) -> str:
        """lm-eval's zero-shot context of a WMDP or MMLU document."""
        from ..metrics.wmdp import TOPICS, mc_context

        topic = doc["subject"].replace("_", " ") if "subject" in doc else TOPICS[self.subset]
        return mc_context(doc, topic)

    def benchmark_metrics(self, model, limit: Optional[int] = None, batch_size: int = 16,
                          per_example: Optional[Dict[str, list]] = None, **kwargs) -> Dict[str, float]:
        """lm-eval's zero-shot accuracy (0–1): ``wmdp_{subset}_acc`` and, with ``mmlu`` subjects,
        ``mmlu_acc`` (over all their questions).  ``limit`` scores the first N questions of each;
        ``per_example`` (a dict) receives ``wmdp_{subset}`` / ``mmlu``: 0/1 per question."""
        from ..metrics.wmdp import TOPICS, mc_accuracy

        if kwargs:
            raise TypeError(f"WMDP.benchmark_metrics got unexpected arguments {sorted(kwargs)}")
        out: Dict[str, float] = {}
        qs = self.questions[:limit] if limit else self.questions
        acc, correct, _ = mc_accuracy(model, self.tokenizer, qs, TOPICS[self.subset], batch_size)
        out[f"wmdp_{self.subset}_acc"] = acc
        if per_example is not None:
            per_example[f"wmdp_{self.subset}"] = correct.tolist()
        if self.mmlu:
            ms = self.mmlu[:limit] if limit else self.mmlu
            acc, correct, _ = mc_accuracy(model, self.tokenizer, ms, [q["subject"].replace("_", " ") for q in ms],
                                          batch_size)
            out["mmlu_acc"] = acc
            if per_example is not None:
                per_example["mmlu"] = correct.tolist()
        return out
