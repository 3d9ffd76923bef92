"""Deterministic synthetic multilingual NLI-like data, so the whole pipeline runs offline.

The label is carried by "cue" words of three classes in the hypothesis, among filler words.
Target languages replace a growing share of the cue and filler words by words of their own (xx-near 15%, xx-mid 35%, xx-far 55%), so zero-shot transfer degrades with distance, as
between real languages. 10% label noise keeps models below perfect, so snapshots differ.
"""
from __future__ import annotations

import random
from functools import lru_cache

LABELS = ("entailment", "neutral", "contradiction")
LANGUAGES = {"en": 0.0, "xx-near": 0.15, "xx-mid": 0.35, "xx-far": 0.55}  # share of cue words translated
SIZES = {"train": 3000, "validation": 400, "test": 400}
CUES_PER_CLASS = 12
FILLERS_PER_LANGUAGE = 60
LABEL_NOISE = 0.10

_ONSETS = "b c d f g h k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))


@lru_cache(maxsize=None)
def lexicon(language: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """(cue words per label class, filler words) of one language."""
    if language not in LANGUAGES:
        raise KeyError(language)
    base = random.Random("synthetic-nli/lexicon")
    cues = [[_word(base) for _ in range(CUES_PER_CLASS)] for _ in LABELS]
    rng = random.Random(f"synthetic-nli/lexicon/{language}")
    share = LANGUAGES[language]
    cues = tuple(tuple(_word(rng) if rng.random() < share else w for w in words) for words in cues)
    english_fillers = [_word(base) for _ in range(FILLERS_PER_LANGUAGE)]
    fillers = tuple(_word(rng) if rng.random() < share else w for w in english_fillers)
    return cues, fillers


def generate(language: str, split: str) -> list[dict]:
    """Examples {premise, hypothesis, label} of one language and split (deterministic)."""
    if split not in SIZES:
        raise KeyError(split)
    cues, fillers = lexicon(language)
    rng = random.Random(f"synthetic-nli/{language}/{split}")
    examples = []
    for _ in range(SIZES[split]):
        label = rng.randrange(3)
        premise = [rng.choice(fillers) for _ in range(rng.randint(6, 12))]
        for _ in range(2):  # the premise mentions cues of random classes: context, not the answer
            premise.insert(rng.randrange(len(premise) + 1), rng.choice(cues[rng.randrange(3)]))
        hypothesis = [rng.choice(fillers) for _ in range(rng.randint(3, 6))]
        for _ in range(rng.randint(1, 2)):
            hypothesis.insert(rng.randrange(len(hypothesis) + 1), rng.choice(cues[label]))
        if rng.random() < LABEL_NOISE:
            label = rng.randrange(3)
        examples.append({"premise": " ".join(premise), "hypothesis": " ".join(hypothesis), "label": LABELS[label]})
    return examples
