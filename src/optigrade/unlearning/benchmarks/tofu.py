"""TOFU (locuslab/TOFU, "TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al. 2024) read
from a local directory in the hub's layout (registered as ``"tofu"``).

Layout (one file per hub configuration, ``NAME.json`` JSON lines as the hub ships them, or
``NAME.jsonl`` / ``NAME.parquet``; see :mod:`._layout`):

=============================  ==========================================================  ==========
file                           columns read                                                used for
=============================  ==========================================================  ==========
``forget01/05/10``             question, answer                                            forget
``retain99/95/90``             question, answer                                            retain
``forget01/05/10_perturbed``   question, answer, paraphrased_answer, perturbed_answer      forget eval
``retain_perturbed``           question, answer, paraphrased_answer, perturbed_answer      retain eval
``real_authors_perturbed``     question, answer, perturbed_answer                          utility
``world_facts_perturbed``      question, answer, perturbed_answer                          utility
=============================  ==========================================================  ==========

``perturbed_answer`` is a list of wrong answers.  ``split="forget10"`` pairs forget10 with
retain90 (forget05 ↔ retain95, forget01 ↔ retain99), as TOFU does; ``full``, ``real_authors``
and ``world_facts`` (no perturbations) are part of the hub layout but not read.  An optional
``author`` column groups questions (otherwise every 20 consecutive rows are one author, as in
TOFU); ``paraphrased_question`` is needed only with ``para="question"``.

Splits (:class:`~optigrade.unlearning.benchmarks.Benchmark`): ``forget`` / ``retain`` are the
question/answer pairs of the two files; ``forget_para`` / ``retain_para`` are TOFU's paraphrase
probes from the perturbed sets: each question with its ``paraphrased_answer`` (``para="answer"``,
the default, what TOFU's truth ratio scores) or the ``paraphrased_question`` with the answer
(``para="question"``).  ``retain_para`` comes from ``retain_perturbed`` (TOFU's 400-question
retain evaluation subset).  ``general`` is the packaged general-text sample of
``smollm2-facts`` (perplexity).  The TOFU metrics themselves are
:func:`optigrade.unlearning.metrics.tofu.tofu_metrics` (:meth:`TOFU.benchmark_metrics`).

Prompts: ``prompt_format="qa"`` (default) is TOFU's own template for base models,
``"Question: {q}\\nAnswer:"`` followed by ``" {answer}"`` (TOFU's question_start_tag "Question: ",
question_end_tag "\\n", answer_tag "Answer: "); ``"chat"`` puts the question through the model
tokenizer's chat template (``add_generation_prompt=True``, optional ``system_prompt``), as
open-unlearning does for instruct models.  One end-of-sequence token follows every answer
(``eos_after_answer``): TOFU's labels include it, so it is trained on and counts in the answer
probability, and generation stops on it.

With the model ``"tiny"`` there is no model tokenizer: a word-level tokenizer is built from the
data (every word of every question and answer, paraphrase, perturbation and general sentence),
and :meth:`TOFU.statements` gives the pretraining text.

:func:`write_layout_from_facts` writes this layout from any list of question/answer facts (by
default the packaged real facts), so the benchmark runs where the hub cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..._files import atomic_dir
from . import _layout
from .base import BENCHMARKS, QA, Benchmark

__all__ = ["TOFU", "SPLITS", "PAIRS", "write_layout_from_facts", "EVAL_SETS"]

LAYOUT = "TOFU"
HUB = "locuslab/TOFU"
#: forget split → the retain split TOFU pairs it with
PAIRS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
SPLITS = tuple(PAIRS)
#: TOFU's evaluation sets, in the order the metrics report them
EVAL_SETS = ("forget", "retain", "real_authors", "world_facts")
PROMPT_FORMATS = ("qa", "chat")
PARA = ("answer", "question")
QA_COLS = ("question", "answer")
PERT_COLS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
WORLD_COLS = ("question", "answer", "perturbed_answer")
#: TOFU: 20 questions per fictitious author
PER_AUTHOR = 20

EXPECTED = ("the TOFU layout (as on the hub, locuslab/TOFU): forgetNN.json and retainMM.json (columns question, "
            "answer) for the split pair (forget01/retain99, forget05/retain95, forget10/retain90), forgetNN_perturbed.json "
            "and retain_perturbed.json (question, answer, paraphrased_answer, perturbed_answer: a list), "
            "real_authors_perturbed.json and world_facts_perturbed.json (question, answer, perturbed_answer); JSON lines, "
            ".jsonl or .parquet; optigrade.unlearning.benchmarks.tofu.write_layout_from_facts writes one")


def _required(split: str, para: str) -> Dict[str, Sequence[str]]:
    pert = PERT_COLS + (("paraphrased_question",) if para == "question" else ())
    return {split: QA_COLS, PAIRS[split]: QA_COLS, f"{split}_perturbed": pert, "retain_perturbed": pert,
            "real_authors_perturbed": WORLD_COLS, "world_facts_perturbed": WORLD_COLS}


def _check_settings(split, para, prompt_format) -> None:
    if split not in PAIRS:
        raise _layout.LayoutError(f"TOFU: split {split!r} is not a TOFU forget split; choose one of {list(SPLITS)} "
                                  "(each pairs with its retain split: forget01/retain99, forget05/retain95, "
                                  "forget10/retain90)")
    if para not in PARA:
        raise ValueError(f"TOFU: para must be one of {list(PARA)}, got {para!r}: 'answer' scores each question with "
                         "its paraphrased_answer (TOFU), 'question' asks the paraphrased_question")
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"TOFU: prompt_format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}: 'qa' is "
                         "TOFU's 'Question: ...\\nAnswer:' template, 'chat' the model tokenizer's chat template")


def _as_list(v, path: str, i: int) -> List[str]:
    if hasattr(v, "tolist") and not isinstance(v, str):  # parquet: numpy arrays
        v = v.tolist()
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) for x in v):
        raise _layout.LayoutError(f"TOFU: {path} record {i}: perturbed_answer must be a non-empty list of strings, got "
                                  f"{v!r:.80}; {EXPECTED}")
    return list(v)


def _read(data_dir, name: str, cols: Sequence[str]) -> List[dict]:
    if data_dir is None:
        return _layout.hub_records(HUB, name, "train", cols, LAYOUT)
    rows = _layout.read_records(data_dir, name, cols, LAYOUT, EXPECTED)
    for i, r in enumerate(rows):
        for c in cols:
            if c == "perturbed_answer":
                r[c] = _as_list(r[c], f"{name} in {data_dir}", i)
            elif not isinstance(r[c], str):
                raise _layout.LayoutError(f"TOFU: {name} in {str(data_dir)!r} record {i}: column {c!r} must be a string, "
                                          f"got {type(r[c]).__name__}; {EXPECTED}")
    return rows


def _read_all(data_dir, split: str, para: str) -> Dict[str, List[dict]]:
    if data_dir is not None:
        _layout.check_dir(data_dir, LAYOUT, EXPECTED)
    return {name: _read(data_dir, name, cols) for name, cols in _required(split, para).items()}


@BENCHMARKS.register("tofu")
class TOFU(Benchmark):
    """TOFU from a local directory in the hub layout (see the module docstring).

    Args:
        data_dir: the directory (None: read ``locuslab/TOFU`` through ``datasets``, when the hub can
            be reached).
        split: ``"forget01"``, ``"forget05"`` or ``"forget10"`` (TOFU's 1/5/10% of the 200 authors;
            it fixes the retain split too).
        forget_fraction: accepted because every benchmark is given one, and **ignored**: the TOFU
            split defines the forget set.
        para: ``"answer"`` (``*_para`` = question + paraphrased_answer, TOFU's probe) or
            ``"question"`` (paraphrased_question + answer; needs that column).
        prompt_format: ``"qa"`` (TOFU's "Question: {q}\\nAnswer:") or ``"chat"`` (the tokenizer's
            chat template).
        system_prompt: with ``"chat"``, an optional system message.
        max_new_tokens: greedy generation length for ROUGE (TOFU / open-unlearning: 200).
        eos: one end-of-sequence token after every answer, trained on and counted in the answer
            probability and the exact match (TOFU's labels have it; default).  ``False`` for a model
            never fine-tuned on the answers' endings (e.g. facts an instruct model states in its own
            words, which it would continue with "."): a deviation from TOFU, recorded in settings.
        tokenizer: the model's tokenizer (given by :func:`~optigrade.unlearning.run.build` on a real
            model); None builds a word-level one from the data (the tiny model).

    Example (a layout written from the packaged real facts; the tiny tokenizer):

        >>> import tempfile
        >>> d = write_layout_from_facts(tempfile.mkdtemp() + "/tofu")
        >>> b = TOFU(d, split="forget10")
        >>> len(b.forget), len(b.retain), b.forget[0].prompt.startswith("Question: ")
        (34, 306, True)
        >>> sorted(b.eval_sets), len(b.eval_sets["forget"][0]["perturbed"])
        (['forget', 'real_authors', 'retain', 'world_facts'], 3)
    """

    name = "tofu"
    tokenizer_from_model = True
    runtime_args = ("model", "tokenizer", "progress")
    eos_after_answer = True

    @classmethod
    def check_kwargs(cls, kwargs: Dict[str, Any]) -> None:
        """The split, ``para`` and ``prompt_format`` are known and ``data_dir`` has every file the
        run reads, non-empty, with its columns (no model is loaded)."""
        split, para = kwargs.get("split", "forget10"), kwargs.get("para", "answer")
        _check_settings(split, para, kwargs.get("prompt_format", "qa"))
        mnt = kwargs.get("max_new_tokens", 200)
        if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt < 1:
            raise ValueError(f"TOFU: max_new_tokens must be a positive integer, got {mnt!r} (TOFU generates up to 200)")
        _read_all(kwargs.get("data_dir"), split, para)

    def __init__(self, data_dir=None, split: str = "forget10", forget_fraction: Optional[float] = None,
                 para: str = "answer", prompt_format: str = "qa", system_prompt: Optional[str] = None,
                 max_new_tokens: int = 200, eos: bool = True, model=None, tokenizer=None,
                 progress: bool = False) -> None:
        super().__init__()
        if not isinstance(eos, bool):
            raise ValueError(f"TOFU: eos must be true or false, got {eos!r}")
        self.eos_after_answer = eos
        _check_settings(split, para, prompt_format)
        self.data_dir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
        self.split, self.para, self.prompt_format = split, para, prompt_format
        self.system_prompt, self.max_new_tokens = system_prompt, int(max_new_tokens)
        rows = _read_all(self.data_dir, split, para)
        self.data_sha256 = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
        fr, rr = rows[split], rows[PAIRS[split]]
        fp, rp = rows[f"{split}_perturbed"], rows["retain_perturbed"]
        self._own_tokenizer = tokenizer is None
        if prompt_format == "chat" and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
            raise ValueError("TOFU: prompt_format='chat' needs the model's tokenizer with a chat template (the tiny "
                             "model has none: use prompt_format='qa')")
        from .real_facts import _data  # the packaged general text, shared with smollm2-facts

        sentences = json.loads(_data("general_text.json"))["sentences"]
        self.general = {"train": sentences[: len(sentences) // 2], "test": sentences[len(sentences) // 2 :]}
        # TOFU's evaluation sets: base = the answer the truth ratio compares with the perturbed ones
        self.eval_sets: Dict[str, List[dict]] = {
            "forget": [dict(question=r["question"], answer=r["answer"], base=r["paraphrased_answer"],
                            perturbed=r["perturbed_answer"]) for r in fp],
            "retain": [dict(question=r["question"], answer=r["answer"], base=r["paraphrased_answer"],
                            perturbed=r["perturbed_answer"]) for r in rp],
            **{k: [dict(question=r["question"], answer=r["answer"], base=r["answer"], perturbed=r["perturbed_answer"])
                   for r in rows[f"{k}_perturbed"]] for k in ("real_authors", "world_facts")},
        }
        self._pert = {"forget": fp, "retain": rp}
        self._rows = {"forget": fr, "retain": rr}
        if tokenizer is None:
            tokenizer = self.build_tokenizer()
        self.tokenizer = tokenizer
        self.splits = {"forget": self._qa(fr, "forget"), "retain": self._qa(rr, "retain"),
                       "forget_para": self._qa_para(fp, "forget"), "retain_para": self._qa_para(rp, "retain")}

    # ------------------------------------------------------------------ format
    def prompt(self, question: str) -> str:
        """The prompt the model sees before an answer (``prompt_format``)."""
        if self.prompt_format == "chat":
            msgs = [{"role": "user", "content": question}]
            if self.system_prompt is not None:
                msgs.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return f"Question: {question}\nAnswer:"

    def _answer_text(self, answer: str) -> str:
        return answer if self.prompt_format == "chat" else " " + answer

    def _use_bos(self) -> bool:
        """BOS as the tokenizer itself adds it (TOFU tokenizes with ``add_special_tokens=True``);
        never before a chat template, which carries its own start tokens."""
        if self.prompt_format == "chat" or self.tokenizer.bos_token_id is None:
            return False
        ids = self.tokenizer("x")["input_ids"]
        return bool(ids) and ids[0] == self.tokenizer.bos_token_id

    @staticmethod
    def _group(r: dict, name: str, i: int) -> str:
        return str(r["author"]) if "author" in r else f"{name}-author{i // PER_AUTHOR}"

    def _qa(self, rows: List[dict], name: str) -> List[QA]:
        return [QA(self.prompt(r["question"]), r["answer"], self._group(r, name, i), name) for i, r in enumerate(rows)]

    def _qa_para(self, rows: List[dict], name: str) -> List[QA]:
        if self.para == "question":
            return [QA(self.prompt(r["paraphrased_question"]), r["answer"], self._group(r, name, i), name)
                    for i, r in enumerate(rows)]
        return [QA(self.prompt(r["question"]), r["paraphrased_answer"], self._group(r, name, i), name)
                for i, r in enumerate(rows)]

    # ------------------------------------------------------------ tiny model
    def statements(self) -> List[str]:
        """Pretraining text for the tiny model: every fact as one line, question then answer
        (forget, retain, and the real-authors / world-facts sets a pretrained model knows;
        never a perturbed answer)."""
        out = [f"{r['question']} {r['answer']}" for k in ("forget", "retain") for r in self._rows[k]]
        return out + [f"{e['question']} {e['answer']}" for k in ("real_authors", "world_facts")
                      for e in self.eval_sets[k]]

    def vocabulary(self) -> List[str]:
        words = set("Question: Answer:".split())
        texts = list(self.general["train"]) + list(self.general["test"]) + self.statements()
        for k in ("forget", "retain"):
            texts += [f"{r['question']} {r['answer']}" for r in self._rows[k]]
            for r in self._pert[k]:
                texts += [r["question"], r["answer"], r["paraphrased_answer"], *r["perturbed_answer"],
                          r.get("paraphrased_question", "")]
        for k in EVAL_SETS:
            for e in self.eval_sets[k]:
                texts += [e["question"], e["answer"], e["base"], *e["perturbed"]]
        for t in texts:
            words.update(str(t).split())
        return sorted(words)

    def build_tokenizer(self):
        """A word-level tokenizer over :meth:`vocabulary` that adds BOS by itself (so a saved and
        reloaded copy tokenizes exactly as this one)."""
        from tokenizers import processors

        from .synthetic import word_level_tokenizer

        tok = word_level_tokenizer(self.vocabulary(), model_max_length=2048)
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.bos_token_id)])
        return tok

    # ------------------------------------------------------------- records
    def settings(self) -> dict:
        tok = "word-level" if self._own_tokenizer else getattr(self.tokenizer, "name_or_path", "model")
        return {**super().settings(), "data_dir": self.data_dir or HUB, "split": self.split,
                "retain_split": PAIRS[self.split], "para": self.para, "prompt_format": self.prompt_format,
                "system_prompt": self.system_prompt, "max_new_tokens": self.max_new_tokens,
                "eos": self.eos_after_answer,
                **{f"n_eval_{k}": len(v) for k, v in self.eval_sets.items()},
                "data_sha256": self.data_sha256, "tokenizer": tok}

    def fingerprint(self) -> str:
        """Hash of the settings (the data's content hash included), for the tiny-model cache."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def benchmark_metrics(self, model, **kwargs) -> Dict[str, float]:
        """TOFU's metrics of ``model`` (:func:`optigrade.unlearning.metrics.tofu.tofu_metrics`;
        keyword arguments go through: ``reference_truth_ratios``, ``limit``, ``per_example``, ...)."""
        from ..metrics.tofu import tofu_metrics

        return tofu_metrics(model, self, **kwargs)


# ----------------------------------------------------------------------- writing a layout
def _fact(f, i: int) -> dict:
    """One fact as ``{question, answer, group, topic, paraphrase}`` from a dict (keys ``question``,
    ``answer``; optional ``group`` / ``entity``, ``topic``, ``paraphrase`` / ``paraphrased_question``)
    or a :class:`QA` (prompt = the question)."""
    if isinstance(f, QA):
        f = {"question": f.prompt, "answer": f.answer, "group": f.group, "topic": f.attribute}
    if not isinstance(f, dict) or not isinstance(f.get("question"), str) or not isinstance(f.get("answer"), str):
        raise ValueError(f"write_layout_from_facts: fact {i} needs a string question and answer (a dict with keys "
                         f"question/answer, or a QA), got {f!r:.120}")
    q, a = f["question"].strip(), f["answer"].strip()
    if not q or not a:
        raise ValueError(f"write_layout_from_facts: fact {i} has an empty question or answer: {f!r:.120}")
    topic = str(f.get("topic") or "")
    group = f.get("group") or (f"{topic}:{f['entity']}" if f.get("entity") else f"fact{i}")
    para = f.get("paraphrase") or f.get("paraphrased_question") or q
    return {"question": q, "answer": a, "group": str(group), "topic": topic, "paraphrase": str(para).strip()}


def write_layout_from_facts(out_dir, facts: Optional[Sequence] = None, heldout_fraction: float = 0.15,
                            n_perturbed: int = 3, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a TOFU-layout directory from question/answer facts; returns its path.

    ``facts``: dicts with ``question`` and ``answer`` (optional ``topic``, ``group`` or
    ``entity``, ``paraphrase``) or :class:`QA` objects; default the packaged real facts
    (``data/real_facts.json``, as :class:`RealFacts` reads them).  For the facts SmolLM2 actually
    verified pass ``RealFacts(...).verified`` (dicts with those keys).

    * Groups play TOFU's authors: ``group``, else ``topic:entity``, else one group per fact.
      ``heldout_fraction`` of the groups (drawn with ``seed``) are held out of ``full``: those of
      topics ``authors`` / ``people`` form ``real_authors``, the others ``world_facts`` (so neither
      is ever trained on or forgotten; with no such topic the held-out groups are split in two).
    * The other groups form ``full``; ``forget10`` / ``forget05`` / ``forget01`` are the first 10% /
      5% / 1% of them (at least one group each) in one seeded order, so forget01 ⊂ forget05 ⊂
      forget10 as in TOFU; ``retainNN`` is the rest of ``full``.
    * Perturbed answers: up to ``n_perturbed`` other answers of the same topic (all topics when the
      topic has no other answer).  Short factual answers have no rewording, so
      ``paraphrased_answer`` is the answer itself; the fact's paraphrased question is in
      ``paraphrased_question`` (use ``TOFU(..., para="question")`` for a held-out probe).
    * ``retain_perturbed`` is (as in TOFU) a subset of the largest retain split: its first
      max(1, len(forget10)) questions.
    * Every file is JSON lines; the directory is written atomically, with ``tofu_layout.json``
      recording how (and ``overwrite`` replaces only a directory written here).

        >>> import tempfile, json
        >>> d = write_layout_from_facts(tempfile.mkdtemp() + "/t")
        >>> sorted(p.name for p in d.iterdir())[:4]
        ['forget01.json', 'forget01_perturbed.json', 'forget05.json', 'forget05_perturbed.json']
        >>> json.loads(d.joinpath("tofu_layout.json").read_text())["n_groups"]["forget10"]
        34
    """
    if facts is None:
        from .real_facts import _data

        facts = json.loads(_data("real_facts.json"))["facts"]
    if not 0.0 < float(heldout_fraction) < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}: the share of groups held out "
                         "as real_authors / world_facts")
    if not isinstance(n_perturbed, int) or n_perturbed < 1:
        raise ValueError(f"n_perturbed must be a positive integer, got {n_perturbed!r}")
    rows = [_fact(f, i) for i, f in enumerate(facts)]
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    names = list(groups)
    if len(names) < 10:
        raise ValueError(f"write_layout_from_facts needs at least 10 groups (TOFU's authors) to make forget01 ⊂ "
                         f"forget05 ⊂ forget10 and held-out sets; got {len(names)} from {len(rows)} facts")
    if len({r["answer"] for r in rows}) < 2:
        raise ValueError("write_layout_from_facts needs at least two distinct answers (perturbed answers are other "
                         "facts' answers)")
    rng = random.Random(f"optigrade-tofu-layout-{seed}")
    rng.shuffle(names)
    n_held = max(2, round(len(names) * float(heldout_fraction)))
    held, kept = names[:n_held], names[n_held:]
    by_topic: Dict[str, List[dict]] = {}
    for r in rows:
        by_topic.setdefault(r["topic"], []).append(r)

    def words(text: str) -> set:
        return set(text.lower().replace("?", " ").split())

    def perturbed(r) -> List[str]:
        """Wrong answers as plausible as the facts allow: other answers of the same topic, those
        whose questions share the most words first (ties in a seeded order)."""
        pool = [o for o in by_topic[r["topic"]] if o["answer"] != r["answer"]] or \
            [o for o in rows if o["answer"] != r["answer"]]
        prng = random.Random(f"{seed}-{r['group']}-{r['question']}")
        prng.shuffle(pool)
        mine = words(r["question"])
        pool.sort(key=lambda o: -len(mine & words(o["question"])) / max(1, len(mine | words(o["question"]))))
        out: List[str] = []
        for o in pool:
            if o["answer"] not in out:
                out.append(o["answer"])
            if len(out) == n_perturbed:
                break
        return out

    def qa(r) -> dict:
        return {"question": r["question"], "answer": r["answer"], "author": r["group"]}

    def pert(r, para: bool = True) -> dict:
        d = {"question": r["question"], "answer": r["answer"], "perturbed_answer": perturbed(r)}
        if para:
            d.update(paraphrased_answer=r["answer"], paraphrased_question=r["paraphrase"], author=r["group"])
        return d

    def facts_of(gs) -> List[dict]:
        return [r for g in gs for r in groups[g]]

    sizes = {pct: max(1, round(len(kept) * pct / 100)) for pct in (1, 5, 10)}
    files: Dict[str, List[dict]] = {"full": [qa(r) for r in facts_of(kept)]}
    for pct, k in sizes.items():
        f, rest = facts_of(kept[:k]), facts_of(kept[k:])
        files[f"forget{pct:02d}"] = [qa(r) for r in f]
        files[f"forget{pct:02d}_perturbed"] = [pert(r) for r in f]
        files[f"retain{100 - pct}"] = [qa(r) for r in rest]
    retain90 = facts_of(kept[sizes[10]:])
    files["retain_perturbed"] = [pert(r) for r in retain90[: max(1, len(files["forget10"]))]]
    authors = [g for g in held if groups[g][0]["topic"] in ("authors", "people")]
    world = [g for g in held if g not in set(authors)]
    if not authors or not world:  # no author-like topic (or only that): split the held-out groups in two
        authors, world = held[: len(held) // 2], held[len(held) // 2 :]
    for name, gs in (("real_authors", authors), ("world_facts", world)):
        files[name] = [{"question": r["question"], "answer": r["answer"]} for r in facts_of(gs)]
        files[f"{name}_perturbed"] = [pert(r, para=False) for r in facts_of(gs)]
    meta = {"what": "a TOFU-layout directory written by optigrade.unlearning.benchmarks.tofu.write_layout_from_facts "
                    "from question/answer facts (groups play TOFU's authors)",
            "seed": seed, "heldout_fraction": heldout_fraction, "n_perturbed": n_perturbed, "n_facts": len(rows),
            "n_groups": {"all": len(names), "full": len(kept), **{f"forget{p:02d}": k for p, k in sizes.items()},
                         "real_authors": len(authors), "world_facts": len(world)},
            "n_rows": {k: len(v) for k, v in files.items()},
            "facts_sha256": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()}
    with atomic_dir(Path(out_dir).expanduser(), overwrite=overwrite, marker="tofu_layout.json") as tmp:
        for name, recs in files.items():
            (tmp / f"{name}.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs),
                                              encoding="utf-8")
        (tmp / "tofu_layout.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out_dir).expanduser()
