"""The Benchmark interface: forget / retain / held-out data and ``evaluate(model)``, and the
:data:`BENCHMARKS` registry its implementations add themselves to.

A benchmark is a set of question/answer facts split into *forget* and *retain* (and
paraphrased held-out questions for both), a small general-text sample for utility, and the
tokenizer that turns them into batches.  Everything else (the unlearn loop, attacks, the study)
talks to benchmarks only through this class, so the synthetic-facts default and the real
SmolLM2 facts are interchangeable.

Batches are dicts of tensors, right-padded:

* ``input_ids``  [B, T] long
* ``attention_mask`` [B, T] long (1 = token, 0 = padding)
* ``labels`` [B, T] long, ``-100`` where no loss is taken (prompt tokens and padding)
* ``index`` [B] long, the examples' positions in their split (for cached reference values)

Metrics (:meth:`Benchmark.evaluate`):

* ``<split>_acc``: exact match of *all* answer tokens under greedy decoding.  Computed in one
  teacher-forced forward pass: greedy decoding reproduces the answer iff at every answer
  position the argmax given ``prompt + answer[:i]`` is ``answer[i]`` (the prefixes greedy
  decoding would condition on are exactly those), so this is the greedy exact match, not an
  approximation of it.
* ``<split>_nll``: mean answer-token NLL (nats/token, token-weighted over the split).
* ``general_ppl``: perplexity exp(mean token NLL) of the general-text test sample.

Every token NLL is :func:`optigrade._lm.token_nll`.  Tensors are built on the CPU and moved once
to ``device`` (encoding, batches) or to the model's device (evaluation).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from ..._device import model_device
from ..._lm import IGNORE, lm_logits, token_nll
from ..._registry import Registry
from ..._weights import eval_mode

__all__ = ["BENCHMARKS", "QA", "Benchmark", "benchmark_kwargs", "answer_stats"]

#: benchmark name → :class:`Benchmark` subclass; implementations register themselves
#: (``@BENCHMARKS.register("synthetic")``).  The table lives here, next to the base class, not
#: in the package ``__init__``, so an implementation never imports the package that imports it.
BENCHMARKS: Registry = Registry("benchmark")


@dataclass(frozen=True)
class QA:
    """One fact: the prompt the model sees, the answer it should give, and its group
    (entity or topic; splits are made by group so paraphrases never leak across splits).

        >>> qa = QA("question : where was brenna born ? answer :", "velmora", "brenna", "city")
        >>> qa.answer, qa.group
        ('velmora', 'brenna')
    """

    prompt: str
    answer: str
    group: str
    attribute: str = ""



@torch.no_grad()
def answer_stats(model, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per-example exact match (greedy, see module doc), summed answer NLL and answer-token count
    of a batch already on ``model``'s device.

        >>> import torch
        >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
        >>> bench = SyntheticFacts(n_entities=20)
        >>> model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer)
        >>> s = answer_stats(model, bench.encode_qa(bench.forget[:3]))
        >>> s["match"].tolist(), s["count"].tolist()      # an untrained model knows nothing
        ([0.0, 0.0, 0.0], [1, 1, 1])
    """
    logits = lm_logits(model, batch)
    nll, mask = token_nll(logits, batch["labels"])
    pred = logits[:, :-1, :].argmax(-1)
    target = batch["labels"][:, 1:]
    correct = ((pred == target) | ~mask).all(dim=1)
    return {"match": correct.float(), "nll_sum": nll.sum(1), "count": mask.sum(1)}


class Benchmark:
    """Base class: subclasses fill ``splits``, ``general`` and ``tokenizer`` in ``__init__``.

    Attributes:
        name: short identifier recorded in manifests.
        tokenizer: a ``transformers`` tokenizer (saved with every checkpoint).
        splits: ``{"forget": [...], "retain": [...], "forget_para": [...], "retain_para": [...]}``
            lists of :class:`QA`.
        general: ``{"train": [...], "test": [...]}`` plain sentences for utility.
        eos_after_answer: append the EOS token after each answer as a training target (it then
            also counts in the exact match).  Off by default: the match is on the answer.
        needs_model: the constructor takes ``model`` / ``tokenizer`` (it is built against a
            model, e.g. keeps only facts the model knows); ``reference_model`` names the model
            it is normally built against (see :func:`optigrade.unlearning.run.build`).
        runtime_args: constructor arguments that are objects supplied at build time, not
            settings (left out of :func:`benchmark_kwargs`).

    Example (a subclass: the synthetic facts; an untrained model scores 0 and a perplexity of
    the order of the vocabulary size):

        >>> from optigrade.unlearning import SyntheticFacts, tiny_llama
        >>> bench = SyntheticFacts(n_entities=20)
        >>> batch = bench.encode_qa(bench.forget[:2])
        >>> sorted(batch), batch["labels"].shape == batch["input_ids"].shape
        (['attention_mask', 'index', 'input_ids', 'labels'], True)
        >>> model = tiny_llama(len(bench.tokenizer), tokenizer=bench.tokenizer)
        >>> m = bench.evaluate(model, splits=["forget"], general=False)
        >>> sorted(m), m["forget_acc"]
        (['forget_acc', 'forget_nll'], 0.0)
        >>> 0.5 * len(bench.tokenizer) < bench.perplexity(model, bench.general["test"][:8]) < 2 * len(bench.tokenizer)
        True
    """

    name: str = "benchmark"
    eos_after_answer: bool = False
    needs_model: bool = False
    reference_model: Optional[str] = None
    runtime_args: tuple = ("model", "tokenizer", "progress")

    @classmethod
    def check_kwargs(cls, kwargs: Dict[str, Any]) -> None:
        """Check this benchmark's settings before anything is built or loaded (config
        validation calls it); raise ``ValueError`` naming the bad value and the fix.  Benchmarks
        that read a local directory check its layout here.  The base class accepts anything."""

    def __init__(self) -> None:
        self.tokenizer = None
        self.splits: Dict[str, List[QA]] = {}
        self.general: Dict[str, List[str]] = {"train": [], "test": []}

    # ------------------------------------------------------------------ data
    @property
    def forget(self) -> List[QA]:
        return self.splits["forget"]

    @property
    def retain(self) -> List[QA]:
        return self.splits["retain"]

    def __repr__(self) -> str:
        """One line: the class, each split's size, the general sentences, the vocabulary.

            >>> from optigrade.unlearning import SyntheticFacts
            >>> SyntheticFacts(n_entities=20)   # doctest: +ELLIPSIS
            SyntheticFacts(forget 10, retain 90, ..., general train/test ..., vocab ...)
        """
        splits = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        gen = getattr(self, "general", None) or {}
        vocab = len(self.tokenizer) if getattr(self, "tokenizer", None) is not None else "?"
        return (f"{type(self).__name__}({splits}, general train/test {len(gen.get('train', []))}/"
                f"{len(gen.get('test', []))}, vocab {vocab})")

    def settings(self) -> dict:
        """JSON-able description recorded in every manifest."""
        return {"name": self.name, **{f"n_{k}": len(v) for k, v in self.splits.items()}}

    def _ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_qa(self, examples: Sequence[QA], indices: Optional[Sequence[int]] = None,
                  device=None) -> Dict[str, torch.Tensor]:
        """Tokenize prompt + answer (+ EOS); loss only on the answer tokens.  The batch is on
        ``device`` (default: the CPU)."""
        if len(examples) == 0:
            raise ValueError("encode_qa got no examples; check the split is not empty")
        seqs, labs = [], []
        bos = [self.tokenizer.bos_token_id] if self._use_bos() else []
        for qa in examples:
            p = bos + self._ids(qa.prompt)
            a = self._ids(self._answer_text(qa.answer))
            if self.eos_after_answer:
                a = a + [self.tokenizer.eos_token_id]
            seqs.append(p + a)
            labs.append([IGNORE] * len(p) + a)
        batch = _pad(seqs, labs, self.tokenizer.pad_token_id)
        idx = list(indices) if indices is not None else list(range(len(examples)))
        batch["index"] = torch.tensor(idx, dtype=torch.long)
        return _on(batch, device)

    def encode_text(self, texts: Sequence[str], device=None) -> Dict[str, torch.Tensor]:
        """Tokenize plain sentences; loss on every token after the first.  The batch is on
        ``device`` (default: the CPU)."""
        if len(texts) == 0:
            raise ValueError("encode_text got no texts")
        bos = [self.tokenizer.bos_token_id] if self._use_bos() else []
        seqs = [bos + self._ids(t) + [self.tokenizer.eos_token_id] for t in texts]
        batch = _pad(seqs, [list(s) for s in seqs], self.tokenizer.pad_token_id)
        batch["index"] = torch.arange(len(texts))
        return _on(batch, device)

    def _use_bos(self) -> bool:
        return self.tokenizer.bos_token_id is not None

    def _answer_text(self, answer: str) -> str:
        return answer

    def batches(self, split: str, batch_size: int, generator: torch.Generator,
                device=None) -> Iterator[Dict[str, torch.Tensor]]:
        """Endless shuffled batches of a QA split (each epoch a fresh permutation drawn from the
        CPU ``generator``), on ``device`` (default: the CPU)."""
        data = self.splits[split]
        if not data:
            raise ValueError(f"split {split!r} is empty")
        bs = min(batch_size, len(data))
        while True:
            perm = torch.randperm(len(data), generator=generator).tolist()
            for i in range(0, len(perm) - bs + 1, bs):
                idx = perm[i : i + bs]
                yield self.encode_qa([data[j] for j in idx], idx, device=device)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model, splits: Optional[Sequence[str]] = None, batch_size: int = 64,
                 general: bool = True, limit: Optional[Dict[str, int]] = None,
                 per_example: Optional[Dict[str, List[int]]] = None) -> Dict[str, float]:
        """Named metrics of ``model`` (see the module docstring), computed on its device in eval
        mode (every module's training flag is restored afterwards).

        ``limit`` caps the examples scored per split (the first N, a fixed subset), e.g.
        ``{"retain": 200}`` for cheap stopping checks inside the unlearn loop.  With a dict
        ``per_example``, also ``per_example[split]`` = each scored example's exact match (0/1, in
        split order): what a bootstrap over facts resamples."""
        dev = model_device(model)
        with eval_mode(model):
            out: Dict[str, float] = {}
            for split in splits if splits is not None else list(self.splits):
                data = self.splits[split]
                if limit and split in limit:
                    data = data[: limit[split]]
                if not data:
                    continue
                m = n = c = 0.0
                hits: List[int] = []
                for i in range(0, len(data), batch_size):
                    s = answer_stats(model, self.encode_qa(data[i : i + batch_size], device=dev))
                    hits += [int(x) for x in s["match"].tolist()]
                    m += float(s["match"].sum())
                    n += float(s["nll_sum"].sum())
                    c += float(s["count"].sum())
                out[f"{split}_acc"] = m / len(data)
                out[f"{split}_nll"] = n / max(c, 1.0)
                if per_example is not None:
                    per_example[split] = hits
            if general and self.general.get("test"):
                out["general_ppl"] = self.perplexity(model, self.general["test"], batch_size)
        return out

    def benchmark_metrics(self, model, **kwargs) -> Dict[str, float]:
        """The benchmark's own published metrics of ``model``, computed as the benchmark defines
        them (TOFU forget probability / ROUGE / model utility, MUSE VerbMem / KnowMem / PrivLeak,
        WMDP accuracy), flat ``{name: value}``.  These may generate text and cost more than
        :meth:`evaluate`, so the unlearn loop never calls them; ``optigrade evaluate`` and the study's
        final rows do.  The built-in benchmarks have none beyond :meth:`evaluate`: ``{}``."""
        return {}

    @torch.no_grad()
    def perplexity(self, model, texts: Sequence[str], batch_size: int = 64) -> float:
        """exp(token-weighted mean NLL) of ``texts`` under ``model`` (every token after the
        first counts)."""
        tot = cnt = 0.0
        dev = model_device(model)
        for i in range(0, len(texts), batch_size):
            b = self.encode_text(texts[i : i + batch_size], device=dev)
            nll, mask = token_nll(lm_logits(model, b), b["labels"])
            tot += float(nll.sum())
            cnt += float(mask.sum())
        mean = tot / max(cnt, 1.0)
        return math.exp(mean) if mean < 709.0 else math.inf  # a collapsed model: inf, not an OverflowError


def benchmark_kwargs(name: str) -> Dict[str, Any]:
    """The settings the benchmark registered as ``name`` accepts, with their defaults (its
    constructor's keyword arguments, less :attr:`Benchmark.runtime_args`).

        >>> from optigrade.unlearning.benchmarks import benchmark_kwargs
        >>> benchmark_kwargs("synthetic")
        {'n_entities': 200, 'forget_fraction': 0.1, 'seed': 0, 'n_general': 1500}
    """
    cls = BENCHMARKS.get(name)
    skip = set(getattr(cls, "runtime_args", ())) | {"self"}
    return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _pad(seqs: List[List[int]], labs: List[List[int]], pad_id: int) -> Dict[str, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labs)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        att[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def _on(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    if device is None:
        return batch
    return {k: v.to(device) for k, v in batch.items()}
