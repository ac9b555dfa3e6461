"""MUSE (muse-bench/MUSE-News, muse-bench/MUSE-Books) read from a local directory (registered as
``"muse-news"`` and ``"muse-books"``).

MUSE (Shi et al. 2024, "Machine Unlearning Six-Way Evaluation") unlearns raw text: BBC news
articles (News) or the Harry Potter books (Books).  No hub is reachable on the project's
machines, so the benchmark reads the hub's config/split structure from ``data_dir``::

    DIR/raw/forget.*         text to unlearn                              column text
    DIR/raw/retain1.*        retain text (what MUSE's GDR/KLR baselines use)   column text
    DIR/verbmem/forget.*     VerbMem prompts and true continuations       columns prompt, gt
    DIR/knowmem/forget_qa.*, retain_qa.*, forget_qa_icl.*, retain_qa_icl.*
                             KnowMem questions and few-shot examples      columns question, answer
                             (the hub's later names retain2_qa / retain2_qa_icl are accepted too)
    DIR/privleak/forget.*, holdout.*
                             PrivLeak member / non-member texts           column text

With ``data_dir=None`` the same configs and splits are read from the hub through ``datasets``
(:func:`~optigrade.unlearning.benchmarks._layout.hub_records`), where it can be reached.
``*`` is ``.json`` (a JSON array, or JSON lines), ``.jsonl``, ``.parquet`` (what ``datasets``
exports), the hub's own shard name ``NAME-00000-of-00001.parquet``, or for ``raw`` a plain
``.txt`` (the GitHub repository's ``data/news/raw/forget.txt``: the whole file is one text).  A
text file may also be a JSON array of strings (the GitHub repository's ``privleak/*.json``).  The
repository's ``data/news`` or ``data/books`` folder, or a ``datasets`` export of the hub
configs, therefore works as it is.  ``raw/retain2`` / ``raw/holdout`` and ``privleak/retain``
are not read (no metric here uses them).

Splits (lists of :class:`~optigrade.unlearning.benchmarks.QA`):

* ``forget`` / ``retain``: the raw forget / ``retain_split`` text cut into chunks of about
  ``max_length`` tokens (at token boundaries of the benchmark's tokenizer; a chunk never spans two
  records), as ``QA(prompt="", answer=chunk)``: the loss is on every token, as in MUSE's
  baselines (which cut the corpus into 2048-token chunks; the default here is 128 for CPUs).
  ``forget_acc`` is then the exact greedy reproduction of a whole chunk, which a real model rarely
  achieves: stop on ``forget_para_acc`` (the QA) instead.
* ``forget_para`` / ``retain_para``: the KnowMem ``forget_qa`` / ``retain_qa`` pairs, zero-shot:
  prompt ``"Question: {q}\\nAnswer:"``, answer ``" {a}"`` (the space joined the way the tokenizer
  joins it in running text).  Never trained on.

``general``: the packaged general-text sentences (as :class:`RealFacts`): half train, half test.

The published metrics (:meth:`MUSE.benchmark_metrics`, see
:mod:`optigrade.unlearning.metrics.muse`) are VerbMem, KnowMem on forget and retain, and
PrivLeak against the retrained model's AUC (0.4772 News, 0.5393 Books, MUSE's ``AUC_RETRAIN``).

Tokenizer: run.build gives a real model's tokenizer (``tokenizer_from_model``).  With the
``"tiny"`` model it is None and a word-level tokenizer is built from the data (the
``max_vocab`` most frequent words); the tiny model is then pretrained on the chunks plus
:meth:`statements` (VerbMem texts, KnowMem QA lines and PrivLeak *forget* texts; never the
hold-out texts, which must stay unseen for PrivLeak).

The helpers here (:func:`read_texts`, :func:`read_table`, :func:`word_tokenizer`,
:func:`chunk_text`) are shared with :mod:`~optigrade.unlearning.benchmarks.wmdp`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _layout
from ._layout import LayoutError
from .base import BENCHMARKS, QA, Benchmark

__all__ = ["MUSE", "MUSEBooks", "AUC_RETRAIN", "LAYOUT", "read_texts", "read_table", "word_tokenizer",
           "chunk_text"]

#: MUSE's published AUC of the retrained model (its constants.py, key ``forget_holdout_Min-40%``)
AUC_RETRAIN = {"news": 0.4772, "books": 0.5393}

LAYOUT = ("DIR/raw/{forget,retain1}.(txt|json|jsonl|parquet) with column text; DIR/verbmem/forget.(json|jsonl|"
          "parquet) with columns prompt, gt; DIR/knowmem/{forget_qa,retain_qa,forget_qa_icl,retain_qa_icl}.(json|"
          "jsonl|parquet) with columns question, answer; DIR/privleak/{forget,holdout}.(json|jsonl|parquet) with "
          "column text (or a JSON array of strings); hub shard names NAME-00000-of-00001.parquet are accepted "
          "(e.g. the folders of muse-bench/MUSE-News or data/news of the MUSE repository)")

_SHARD = "-00000-of-00001.parquet"
_SUFFIXES = (".json", ".jsonl", ".parquet", _SHARD)
_TEXT_SUFFIXES = (".txt",) + _SUFFIXES


# ------------------------------------------------------------------ files (shared with wmdp.py)
def locate(data_dir, candidates: Sequence[str], layout: str, expected: str,
           suffixes: Sequence[str] = _SUFFIXES) -> Path:
    """The file of the first of ``candidates`` (paths relative to ``data_dir`` without suffix,
    e.g. ``"knowmem/retain_qa"``) that exists with one of ``suffixes``; else a LayoutError naming
    the first candidate, every accepted name and what the directory holds."""
    d = Path(data_dir)
    for c in candidates:
        for s in suffixes:
            p = d / f"{c}{s}"
            if p.is_file():
                return p
    first = candidates[0]
    parent = (d / first).parent
    try:
        _layout.find_file(parent, Path(first).name, layout, expected, suffixes)
    except LayoutError as e:
        msg = str(e)
        if len(candidates) > 1:
            msg += f" (also accepted: {', '.join(repr(c) for c in candidates[1:])})"
        raise LayoutError(msg) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _raw_rows(path: Path) -> List[Any]:
    """Records of a file: dicts, or strings for a JSON array / JSON lines of strings."""
    if path.suffix in (".parquet", ".txt"):
        return _layout._load(path)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    if text.lstrip()[:1] == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayoutError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(rows, list):
            raise LayoutError(f"{path}: a JSON {type(rows).__name__}, expected an array of records")
        return rows
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LayoutError(f"{path}: line {i} is not JSON ({e}); expected JSON lines (one object or "
                                  "string per line) or one JSON array") from None
    return rows


def read_table(path: Path, columns: Sequence[str], layout: str, expected: str) -> List[dict]:
    """The records of ``path`` with every one of ``columns`` (else a LayoutError naming the file,
    the column and the layout)."""
    rows = _raw_rows(path)
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise LayoutError(f"{layout}: {path} record {bad} is a {type(rows[bad]).__name__}, not an object with "
                          f"columns {', '.join(columns)}; {expected}")
    _layout._check_columns(path, rows, columns, layout, expected)
    return rows


def read_texts(path: Path, layout: str, expected: str, column: str = "text") -> List[str]:
    """The texts of ``path``: a ``.txt`` file (one text), records with ``column``, or JSON strings.
    Empty files, records without ``column`` and non-string texts are refused, naming them."""
    rows = _raw_rows(path)
    if not rows:
        raise LayoutError(f"{layout}: {path} is empty; every split needs at least one record ({expected})")
    if all(isinstance(r, str) for r in rows):
        return list(rows)
    rows = read_table(path, [column], layout, expected)
    bad = next((i for i, r in enumerate(rows) if not isinstance(r[column], str)), None)
    if bad is not None:
        raise LayoutError(f"{layout}: {path} record {bad} has a {type(rows[bad][column]).__name__} {column!r}, "
                          "expected a string")
    return [r[column] for r in rows]


def file_hash(paths: Iterable[Path]) -> str:
    """sha256 (16 hex) of the files' names and bytes, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ tokenizer and chunks
def word_tokenizer(texts: Iterable[str], max_vocab: int = 30000, model_max_length: int = 2048):
    """The project's word-level tokenizer (:func:`~optigrade.unlearning.benchmarks.synthetic.word_level_tokenizer`:
    whitespace-split words, ``<pad> <unk> <s> </s>``, decoding joins words with spaces) over the
    ``max_vocab`` most frequent words of ``texts`` (ties alphabetical), adding BOS by itself as
    Llama's tokenizer does (so a saved and reloaded copy tokenizes the same way).

        >>> tok = word_tokenizer(["the cat sat .", "the dog"])
        >>> tok("the cat")["input_ids"][0] == tok.bos_token_id, tok.decode(tok("the dog .")["input_ids"][1:])
        (True, 'the dog .')
    """
    from tokenizers import processors

    from .synthetic import word_level_tokenizer

    counts: Counter = Counter()
    for t in texts:
        counts.update(t.split())
    specials = {"<pad>", "<unk>", "<s>", "</s>"}
    frequent = [w for w in sorted(counts, key=lambda w: (-counts[w], w)) if w not in specials]
    words = sorted(frequent[: max(int(max_vocab), 1)])
    tok = word_level_tokenizer(words, model_max_length=model_max_length)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.bos_token_id)])
    return tok


def chunk_text(tokenizer, text: str, max_length: int, max_chunks: Optional[int] = None) -> List[str]:
    """``text`` cut into pieces of ``max_length`` tokens of ``tokenizer`` (at token boundaries, by
    the character offsets of a fast tokenizer; a slow one decodes the token slices), stripped,
    empty pieces dropped; at most ``max_chunks`` (the first ones).

        >>> tok = word_tokenizer(["a b c d e f g"])
        >>> chunk_text(tok, "a b c d e f g", 3)
        ['a b c', 'd e f', 'g']
    """
    out: List[str] = []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError):
        offs = None
        enc = tokenizer(text, add_special_tokens=False)
    ids = enc["input_ids"]
    for i in range(0, len(ids), max_length):
        if max_chunks is not None and len(out) >= max_chunks:
            break
        j = min(i + max_length, len(ids))
        piece = text[offs[i][0]: offs[j - 1][1]] if offs is not None else tokenizer.decode(ids[i:j])
        piece = piece.strip()
        if piece:
            out.append(piece)
    return out


def adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer`` starts a text with its BOS token by default (Llama: yes; GPT-2 style
    tokenizers such as SmolLM2's: no).  The benchmarks follow the tokenizer's own convention, as
    MUSE (``tokenizer.encode(text)``) and lm-eval (default special tokens) do."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def answer_sep(tokenizer) -> str:
    """``" "`` when a tokenizer writes the space before an answer into the answer's first token
    (GPT-2 style ``"ĠParis"``), ``""`` when it adds its own (Llama's ``"▁Paris"``): what makes
    ``ids(prompt) + ids(sep + answer)`` equal ``ids(prompt + " " + answer)``."""
    p = tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    joint = tokenizer("Answer: Paris", add_special_tokens=False)["input_ids"]
    for sep in (" ", ""):
        if p + tokenizer(sep + "Paris", add_special_tokens=False)["input_ids"] == joint:
            return sep
    return " "


def pos_int(name: str, value, fix: str, allow_none: bool = True) -> Optional[int]:
    """``value`` as a positive int (``"128"`` from ``--bench-arg`` accepted); None when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}; "
                         f"e.g. {fix}")
    return value


# ------------------------------------------------------------------ shared base
class TextBenchmark(Benchmark):
    """What MUSE and WMDP share: a local layout tokenized by the model's tokenizer (or a word-level
    one for the tiny model), raw text chunks as loss-on-every-token QA, general sentences."""

    tokenizer_from_model = True
    runtime_args = ("model", "tokenizer", "progress")

    def _setup_tokenizer(self, tokenizer, texts: Iterable[str], max_vocab: int) -> None:
        if tokenizer is None:
            tokenizer = word_tokenizer(texts, max_vocab=max_vocab)
            self.tokenizer_kind = f"word-level ({len(tokenizer)} tokens)"
        else:
            if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
                tokenizer.pad_token = tokenizer.eos_token  # batches need a pad id; EOS is the usual stand-in
            self.tokenizer_kind = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        self.tokenizer = tokenizer
        self._bos = adds_bos(tokenizer)
        self._sep = answer_sep(tokenizer)

    def _use_bos(self) -> bool:
        return self._bos

    def _general(self) -> None:
        from .real_facts import _data

        sentences = json.loads(_data("general_text.json"))["sentences"]
        self.general = {"train": sentences[: len(sentences) // 2], "test": sentences[len(sentences) // 2:]}

    def _chunks(self, texts: Sequence[str], max_length: int, max_chunks: Optional[int], group: str,
                per_text: Optional[int] = None) -> List[QA]:
        out: List[QA] = []
        for i, t in enumerate(texts):
            left = None if max_chunks is None else max_chunks - len(out)
            if left is not None and left <= 0:
                break
            cap = per_text if left is None else (left if per_text is None else min(per_text, left))
            out += [QA("", c, f"{group}:{i}", "text") for c in chunk_text(self.tokenizer, t, max_length, cap)]
        return out

    def statements(self) -> List[str]:
        """Extra pretraining text for the tiny model (see the module docstrings)."""
        return list(self._statements)

    def settings(self) -> dict:
        return {**super().settings(), **self._settings}

    def fingerprint(self) -> str:
        """Hash of everything a model pretrained on this benchmark depends on (the tiny cache key)."""
        vocab = sorted(self.tokenizer.get_vocab()) if self.tokenizer_kind.startswith("word-level") else None
        where = {"data_dir", "files"}  # the content hash stands for the data, wherever it lies
        blob = json.dumps([{k: v for k, v in self.settings().items() if k not in where}, vocab, len(self._statements)],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ MUSE
#: the hub repositories read when no ``data_dir`` is given (and ``datasets`` can reach the hub)
HUB = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}


def hub_rows(repo: str, config: Optional[str], splits: Sequence[str], columns: Sequence[str], layout: str) -> List[dict]:
    """:func:`_layout.hub_records` of the first of ``splits`` the hub has (names changed between
    dataset versions, e.g. ``retain_qa`` / ``retain2_qa``); the first split's error otherwise."""
    first = None
    for sp in splits:
        try:
            return _layout.hub_records(repo, config, sp, columns, layout)
        except LayoutError as e:
            first = first or e
    raise first


def load_roles(data_dir, spec: Dict[str, tuple], layout: str, expected: str, repo: Optional[str] = None
               ) -> Tuple[Optional[Path], Dict[str, list], str, Dict[str, str]]:
    """Read every role of ``spec`` (role → (local candidates, suffixes, columns or None for texts,
    hub repo or None, hub config, hub splits)) from ``data_dir``, or from the hub when it is None.
    Returns (dir or None, role → texts / records, content hash, role → where it was read)."""
    data: Dict[str, list] = {}
    where: Dict[str, str] = {}
    if data_dir is None:
        for role, (_, _, cols, rrepo, config, splits) in spec.items():
            rows = hub_rows(rrepo or repo, config, splits, cols or ("text",), layout)
            data[role] = [r["text"] for r in rows] if cols is None else rows
            where[role] = f"{rrepo or repo}/{config}/{splits[0]}"
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return None, data, hashlib.sha256(blob).hexdigest()[:16], where
    d = _layout.check_dir(data_dir, layout, expected)
    paths = {}
    for role, (cands, suffixes, cols, *_) in spec.items():
        p = locate(d, cands, layout, expected, suffixes)
        data[role] = read_texts(p, layout, expected) if cols is None else read_table(p, cols, layout, expected)
        paths[role], where[role] = p, str(p)
    return d, data, file_hash(paths[k] for k in sorted(paths)), where


def _muse_load(data_dir, retain_split: str, corpus: str):
    """The MUSE layout of ``data_dir`` (or the hub), checked and read."""
    qa = ("question", "answer")
    spec = {
        "raw_forget": (["raw/forget"], _TEXT_SUFFIXES, None, None, "raw", ["forget"]),
        "raw_retain": ([f"raw/{retain_split}"], _TEXT_SUFFIXES, None, None, "raw", [retain_split]),
        "verbmem": (["verbmem/forget"], _SUFFIXES, ("prompt", "gt"), None, "verbmem", ["forget"]),
        "forget_qa": (["knowmem/forget_qa"], _SUFFIXES, qa, None, "knowmem", ["forget_qa"]),
        "retain_qa": (["knowmem/retain_qa", "knowmem/retain2_qa"], _SUFFIXES, qa, None, "knowmem",
                      ["retain_qa", "retain2_qa"]),
        "forget_qa_icl": (["knowmem/forget_qa_icl"], _SUFFIXES, qa, None, "knowmem", ["forget_qa_icl"]),
        "retain_qa_icl": (["knowmem/retain_qa_icl", "knowmem/retain2_qa_icl"], _SUFFIXES, qa, None, "knowmem",
                          ["retain_qa_icl", "retain2_qa_icl"]),
        "privleak_forget": (["privleak/forget"], _SUFFIXES, None, None, "privleak", ["forget"]),
        "privleak_holdout": (["privleak/holdout"], _SUFFIXES, None, None, "privleak", ["holdout"]),
    }
    return load_roles(data_dir, spec, "MUSE", LAYOUT, HUB[corpus])


@BENCHMARKS.register("muse-news")
class MUSE(TextBenchmark):
    """MUSE-News from a local copy of its layout (module docstring); :class:`MUSEBooks` is the
    same for MUSE-Books (the class attribute ``corpus``).

    Args:
        data_dir: the directory holding the layout (``--data-dir DIR``); None reads
            ``muse-bench/MUSE-News`` / ``-Books`` through ``datasets`` when the hub can be reached.
        tokenizer: the model's tokenizer (run.build passes it); None builds a word-level one.
        forget_fraction: accepted for the common interface and ignored: MUSE fixes its forget set
            (cap it with ``max_forget``).
        max_length: tokens per raw-text chunk (MUSE trains on 2048; 128 by default on CPUs).
        max_forget / max_retain: at most this many chunks (the first ones; None: all).
        retain_split: the raw split the retain set comes from: ``retain1`` (MUSE's baselines) or
            ``retain2``.
        auc_retrain: the retrained model's forget-vs-holdout Min-40% AUC that PrivLeak compares
            with (None: MUSE's published value for the corpus, :data:`AUC_RETRAIN`).
        max_vocab: vocabulary cap of the word-level tokenizer (tiny model only).
        progress: accepted for the common interface (nothing slow to report).

    Raises:
        LayoutError: (a ``ValueError``) a missing directory, file, column, or an empty file; the
            message names it and the layout expected.  :meth:`check_kwargs` raises the same
            before any model is loaded.
    """

    name = "muse-news"
    corpus = "news"

    @classmethod
    def check_kwargs(cls, kwargs: Dict[str, Any]) -> None:
        """Validate the settings and the layout of ``data_dir`` without loading a model."""
        cls._check_settings(kwargs)
        _muse_load(kwargs.get("data_dir"), kwargs.get("retain_split", "retain1"), cls.corpus)

    @classmethod
    def _check_settings(cls, kw: Dict[str, Any]) -> None:
        pos_int("max_length", kw.get("max_length", 128), "max_length=128", allow_none=False)
        pos_int("max_forget", kw.get("max_forget"), "max_forget=100")
        pos_int("max_retain", kw.get("max_retain"), "max_retain=400")
        pos_int("max_vocab", kw.get("max_vocab", 30000), "max_vocab=30000", allow_none=False)
        rs = kw.get("retain_split", "retain1")
        if rs not in ("retain1", "retain2"):
            raise ValueError(f"retain_split must be 'retain1' or 'retain2', got {rs!r}; MUSE's raw retain splits "
                             "(its baselines regularise on retain1)")
        a = kw.get("auc_retrain")
        if a is not None:
            try:
                a = float(a)
            except (TypeError, ValueError):
                a = -1.0
            if not 0.0 < a <= 1.0:
                raise ValueError(f"auc_retrain must be an AUC in (0, 1], got {kw.get('auc_retrain')!r}; e.g. "
                                 f"auc_retrain={AUC_RETRAIN[cls.corpus]} (MUSE's retrained {cls.corpus} model)")

    def __init__(self, data_dir=None, tokenizer=None, forget_fraction: Optional[float] = None, max_length: int = 128,
                 max_forget: Optional[int] = None, max_retain: Optional[int] = None, retain_split: str = "retain1",
                 auc_retrain: Optional[float] = None, max_vocab: int = 30000, model=None,
                 progress: bool = False) -> None:
        super().__init__()
        kw = dict(max_length=max_length, max_forget=max_forget, max_retain=max_retain, retain_split=retain_split,
                  auc_retrain=auc_retrain, max_vocab=max_vocab)
        self._check_settings(kw)
        self.max_length = pos_int("max_length", max_length, "", allow_none=False)
        max_forget, max_retain = pos_int("max_forget", max_forget, ""), pos_int("max_retain", max_retain, "")
        self.auc_retrain = float(auc_retrain) if auc_retrain is not None else AUC_RETRAIN[self.corpus]
        d, data, data_hash, where = _muse_load(data_dir, retain_split, self.corpus)
        self.data_dir = d
        raw_f, raw_r = data["raw_forget"], data["raw_retain"]
        self.verbmem = [(r["prompt"], r["gt"]) for r in data["verbmem"]]
        self.knowmem = {k: [(r["question"], r["answer"]) for r in data[k]]
                        for k in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")}
        self.privleak = {"forget": data["privleak_forget"], "holdout": data["privleak_holdout"]}
        self._general()
        qa_lines = [self.knowmem_line(q, a) for k in ("forget_qa", "retain_qa") for q, a in self.knowmem[k]]
        if tokenizer is None:
            every = raw_f + raw_r + [p + " " + g for p, g in self.verbmem] + qa_lines + \
                [q + " " + a for k in ("forget_qa_icl", "retain_qa_icl") for q, a in self.knowmem[k]] + \
                self.privleak["forget"] + self.privleak["holdout"] + self.general["train"] + self.general["test"]
            every.append("Question: Answer:")
        else:
            every = []
        self._setup_tokenizer(tokenizer, every, max_vocab)
        self.splits = {
            "forget": self._chunks(raw_f, self.max_length, max_forget, "forget"),
            "retain": self._chunks(raw_r, self.max_length, max_retain, retain_split),
            "forget_para": [QA(self.qa_prompt(q), self._sep + a, f"forget_qa:{i}", "knowmem")
                            for i, (q, a) in enumerate(self.knowmem["forget_qa"])],
            "retain_para": [QA(self.qa_prompt(q), self._sep + a, f"retain_qa:{i}", "knowmem")
                            for i, (q, a) in enumerate(self.knowmem["retain_qa"])],
        }
        for s in ("forget", "retain"):
            if not self.splits[s]:
                raise LayoutError(f"MUSE: the raw {s} text ({where['raw_' + s]}) gives no chunk (only whitespace?)")
        self._statements = [c for t in [p + " " + g for p, g in self.verbmem] + qa_lines + self.privleak["forget"]
                            for c in chunk_text(self.tokenizer, t, self.max_length)] if tokenizer is None else []
        self._settings = {"corpus": self.corpus, "data_dir": str(d) if d is not None else HUB[self.corpus],
                          "files": where, "max_length": self.max_length,
                          "max_forget": max_forget, "max_retain": max_retain, "retain_split": retain_split,
                          "auc_retrain": self.auc_retrain, "tokenizer": self.tokenizer_kind,
                          "n_verbmem": len(self.verbmem), "n_privleak_forget": len(self.privleak["forget"]),
                          "n_privleak_holdout": len(self.privleak["holdout"]),
                          "data_hash": data_hash,
                          "forget_fraction": "ignored (MUSE fixes its forget set)"}

    # -------------------------------------------------------------- formats
    @staticmethod
    def qa_prompt(question: str) -> str:
        """The zero-shot QA prompt of the ``_para`` splits (MUSE's KnowMem format without examples)."""
        return f"Question: {question}\nAnswer:"

    @staticmethod
    def knowmem_line(question: str, answer: str) -> str:
        return f"Question: {question}\nAnswer: {answer}"

    # -------------------------------------------------------------- metrics
    def benchmark_metrics(self, model, metrics: Sequence[str] = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"),
                          limit: Optional[int] = None, batch_size: int = 8, auc_retrain: Optional[float] = None,
                          per_example: Optional[Dict[str, list]] = None, **kwargs) -> Dict[str, float]:
        """MUSE's metrics of ``model`` on MUSE's scale (see :func:`optigrade.unlearning.metrics.muse.muse_metrics`):
        ``verbmem_f``, ``knowmem_f``, ``knowmem_r`` (mean ROUGE-L F1 × 100), ``privleak`` (percent)
        and ``privleak_auc`` (0–1).  ``limit`` scores only the first N examples of each set;
        ``per_example`` (a dict) receives the per-example arrays a bootstrap resamples."""
        from ..metrics.muse import muse_metrics

        return muse_metrics(model, self, metrics=metrics, limit=limit, batch_size=batch_size,
                            auc_retrain=self.auc_retrain if auc_retrain is None else auc_retrain,
                            per_example=per_example, **kwargs)


@BENCHMARKS.register("muse-books")
class MUSEBooks(MUSE):
    """MUSE-Books (the Harry Potter books): the layout, settings and metrics of :class:`MUSE`;
    PrivLeak's reference AUC is 0.5393."""

    name = "muse-books"
    corpus = "books"
