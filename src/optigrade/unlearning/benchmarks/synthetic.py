"""The embedded default: a deterministic synthetic-facts benchmark in the spirit of TOFU.

``n_entities`` fictitious people (names built from syllables, so no real model knows them),
each with one value of each of five attributes (birth city, occupation, favourite colour, pet,
favourite food).  Three natural statement templates and one question form per attribute are
used for pretraining; a *paraphrased* question form, never trained on, is the held-out set.
Splits are by entity: ``forget_fraction`` of the entities (10% by default) form the forget
set, the rest the retain set.  A small grammar produces general text for utility
(perplexity).  The tokenizer is a real word-level ``PreTrainedTokenizerFast`` built from the
benchmark's vocabulary and saved with every checkpoint.

Everything is a pure function of ``(n_entities, forget_fraction, seed)``.  Registered as the
benchmark ``"synthetic"``; ``n_entities`` and the others are its settings
(``benchmark_kwargs("synthetic")``).
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Dict, List

from ..._validate import int_at_least
from .base import BENCHMARKS, QA, Benchmark

__all__ = ["SyntheticFacts", "ATTRIBUTES", "word_level_tokenizer"]

# attribute -> (values, statement templates, question, paraphrased question)
ATTRIBUTES: Dict[str, tuple] = {
    "city": (
        ["velmora", "ostrava", "kirendal", "tashmoor", "brevik", "quillon", "marrowby", "zentha",
         "holmgard", "pellucid", "arkhaven", "dunmere", "solvang", "cairnby", "ebonreach", "fallow",
         "glimmerton", "hasketh", "ivydale", "jorvik", "lanthorn", "moorfield", "norwick", "orlen"],
        ["{n} was born in {v} .", "the birthplace of {n} is {v} .", "{n} grew up in the city of {v} ."],
        "where was {n} born ?",
        "in which city did {n} come into the world ?",
    ),
    "job": (
        ["baker", "pilot", "surgeon", "painter", "farmer", "sailor", "lawyer", "chemist", "teacher",
         "architect", "jeweler", "librarian", "carpenter", "astronomer", "tailor", "potter"],
        ["{n} works as a {v} .", "by profession {n} is a {v} .", "{n} earns a living as a {v} ."],
        "what is the job of {n} ?",
        "what does {n} do for work ?",
    ),
    "color": (
        ["crimson", "azure", "amber", "violet", "emerald", "ivory", "scarlet", "teal", "ochre", "indigo"],
        ["the favorite color of {n} is {v} .", "{n} likes the color {v} best .", "{n} always wears {v} ."],
        "which color does {n} like most ?",
        "what is the color that {n} prefers ?",
    ),
    "pet": (
        ["parrot", "tortoise", "ferret", "hamster", "beagle", "iguana", "goldfish", "rabbit",
         "falcon", "gecko", "poodle", "canary"],
        ["{n} keeps a {v} as a pet .", "the pet of {n} is a {v} .", "{n} lives with a {v} ."],
        "what pet does {n} have ?",
        "which animal lives with {n} at home ?",
    ),
    "food": (
        ["lasagna", "dumplings", "paella", "risotto", "curry", "sushi", "tacos", "goulash", "falafel",
         "pierogi", "ramen", "couscous", "moussaka", "gnocchi"],
        ["the favorite food of {n} is {v} .", "{n} loves to eat {v} .", "{n} cooks {v} every week ."],
        "what food does {n} like best ?",
        "which dish does {n} enjoy the most ?",
    ),
}

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io"]
_CODAS = ["", "n", "r", "s", "l", "th", "x"]

# General text: "the ADJ NOUN VERB the ADJ NOUN PLACE ."
_ADJ = ["old", "quiet", "small", "bright", "heavy", "young", "tall", "green", "cold", "happy",
        "dark", "gentle", "narrow", "busy", "empty"]
_NOUN = ["river", "child", "teacher", "dog", "garden", "train", "window", "letter", "village",
         "market", "storm", "horse", "bridge", "lamp", "forest", "boat", "song", "road", "cat", "tower"]
_VERB = ["sees", "follows", "finds", "carries", "watches", "reaches", "crosses", "remembers",
         "opens", "paints", "builds", "hears"]
_PLACE = ["in the morning", "at night", "near the hill", "by the sea", "after the rain",
          "before winter", "in the valley", "under the moon"]


def _names(n: int, rng: random.Random) -> List[str]:
    names, seen = [], set()
    while len(names) < n:
        k = rng.choice([2, 2, 3])
        s = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(_CODAS)
        if s not in seen and 4 <= len(s) <= 11:
            seen.add(s)
            names.append(s)
    return names


def word_level_tokenizer(words, model_max_length: int = 64):
    """A word-level ``PreTrainedTokenizerFast``: ids 0-3 are ``<pad> <unk> <s> </s>``, then
    ``words`` in the order given; text is split on whitespace, unknown words become ``<unk>``,
    decoding joins words with spaces.  (The synthetic benchmark's tokenizer; TOFU on the tiny
    model builds one from its data the same way.)

        >>> tok = word_level_tokenizer(["cat", "the"])
        >>> tok("the cat sat", add_special_tokens=False)["input_ids"], tok.decode([5, 4])
        ([5, 4, 1], 'the cat')
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + list(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        model_max_length=model_max_length,
    )


@BENCHMARKS.register("synthetic")
class SyntheticFacts(Benchmark):
    """Deterministic fictitious-people facts (see module docstring).

    Args:
        n_entities: number of people (>= 20; the defaults give 200 × 5 = 1000 facts).
        forget_fraction: share of entities in the forget split, in (0, 1).
        seed: fixes names, attribute values and the split.
        n_general: general-text sentences (80% train, 20% test).

    Example (one QA per person and attribute in :data:`ATTRIBUTES`):
        >>> sorted(ATTRIBUTES)
        ['city', 'color', 'food', 'job', 'pet']
        >>> b = SyntheticFacts(n_entities=40, seed=0)
        >>> len(b.forget), len(b.retain), b.forget[0].prompt.startswith("question :")
        (20, 180, True)
    """

    name = "synthetic-facts"

    def __init__(self, n_entities: int = 200, forget_fraction: float = 0.1, seed: int = 0,
                 n_general: int = 1500) -> None:
        super().__init__()
        int_at_least("n_entities", n_entities, 20, "the number of fictitious people", 200)
        if not (0.0 < float(forget_fraction) < 1.0):
            raise ValueError(
                f"forget_fraction must be in (0, 1), got {forget_fraction!r}; e.g. 0.1 forgets 10% of entities"
            )
        n_forget = round(n_entities * forget_fraction)
        if n_forget < 1 or n_forget >= n_entities:
            raise ValueError(
                f"forget_fraction={forget_fraction} of {n_entities} entities leaves an empty split; "
                f"choose a fraction between {1 / n_entities:.3f} and {1 - 1 / n_entities:.3f}"
            )
        self.n_entities, self.forget_fraction, self.seed = n_entities, float(forget_fraction), seed
        rng = random.Random(f"optigrade-synthetic-{seed}")
        self.entities = _names(n_entities, rng)
        self.facts = {
            e: {a: rng.choice(spec[0]) for a, spec in ATTRIBUTES.items()} for e in self.entities
        }
        order = list(range(n_entities))
        rng.shuffle(order)
        forget_ents = [self.entities[i] for i in sorted(order[:n_forget])]
        retain_ents = [self.entities[i] for i in sorted(order[n_forget:])]
        self.splits = {
            "forget": self._qa(forget_ents, para=False),
            "retain": self._qa(retain_ents, para=False),
            "forget_para": self._qa(forget_ents, para=True),
            "retain_para": self._qa(retain_ents, para=True),
        }
        self.forget_entities, self.retain_entities = forget_ents, retain_ents
        general = self._general(n_general, rng)
        n_test = max(1, n_general // 5)
        self.general = {"train": general[n_test:], "test": general[:n_test]}
        self.tokenizer = self.build_tokenizer()

    # ------------------------------------------------------------------ text
    def _qa(self, ents: List[str], para: bool) -> List[QA]:
        out = []
        for e in ents:
            for a, (_, _, q, qp) in ATTRIBUTES.items():
                question = (qp if para else q).format(n=e)
                out.append(QA(f"question : {question} answer :", self.facts[e][a], e, a))
        return out

    @staticmethod
    def _general(n: int, rng: random.Random) -> List[str]:
        return [
            f"the {rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_VERB)} the "
            f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_PLACE)} ."
            for _ in range(n)
        ]

    def statements(self) -> List[str]:
        """Every statement template filled for every entity (pretraining text)."""
        return [t.format(n=e, v=self.facts[e][a])
                for e in self.entities for a, (_, temps, _, _) in ATTRIBUTES.items() for t in temps]

    def pretrain_texts(self) -> List[str]:
        """Statements, question/answer lines for every fact (forget facts included: the model
        must know them before it can unlearn them), and general training text."""
        qa = [f"{x.prompt} {x.answer}" for s in ("forget", "retain") for x in self.splits[s]]
        return self.statements() + qa + list(self.general["train"])

    def vocabulary(self) -> List[str]:
        words = set()
        for t in self.pretrain_texts() + self.general["test"]:
            words.update(t.split())
        for s in self.splits.values():
            for x in s:
                words.update(x.prompt.split())
                words.update(x.answer.split())
        return sorted(words)

    def build_tokenizer(self):
        return word_level_tokenizer(self.vocabulary())

    def settings(self) -> dict:
        return {**super().settings(), "n_entities": self.n_entities,
                "forget_fraction": self.forget_fraction, "seed": self.seed}

    def fingerprint(self) -> str:
        """Hash of everything the pretrained model depends on (for the model cache)."""
        blob = json.dumps([self.settings(), self.pretrain_texts()[:50], len(self.pretrain_texts()),
                           self.vocabulary()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
