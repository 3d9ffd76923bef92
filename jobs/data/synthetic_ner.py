"""Deterministic synthetic multilingual NER data (IOB2, PER/ORG/LOC), so the NER pipeline runs offline.

Entities are 1-2 words from per-type lexicons, usually after a per-type cue word ("title"),
among filler words. Target languages replace a growing share of entity, cue and filler words by
words of their own (xx-near 15%, xx-mid 35%, xx-far 55%): a model can still find an unseen
entity from its cue, so transfer degrades gradually. 5% of entities carry a wrong type.
"""
from __future__ import annotations

import random
from functools import lru_cache

from jobs.data.synthetic import LANGUAGES, _word

TYPES = ("PER", "ORG", "LOC")
SIZES = {"train": 2000, "validation": 300, "test": 300}
ENTITY_WORDS = 30
CUES_PER_TYPE = 4
FILLERS = 80
TYPE_NOISE = 0.05


@lru_cache(maxsize=None)
def lexicon(language: str):
    """(entity words per type, cue words per type, filler words) of one language."""
    if language not in LANGUAGES:
        raise KeyError(language)
    base = random.Random("synthetic-ner/lexicon")
    entities = [[_word(base).capitalize() for _ in range(ENTITY_WORDS)] for _ in TYPES]
    cues = [[_word(base) for _ in range(CUES_PER_TYPE)] for _ in TYPES]
    fillers = [_word(base) for _ in range(FILLERS)]
    rng = random.Random(f"synthetic-ner/lexicon/{language}")
    share = LANGUAGES[language]

    def translate(words, cap=False):
        return tuple((_word(rng).capitalize() if cap else _word(rng)) if rng.random() < share else w for w in words)

    return (tuple(translate(w, True) for w in entities), tuple(translate(w) for w in cues), translate(fillers))


def generate(language: str, split: str) -> list[dict]:
    """Examples {tokens, tags} of one language and split (deterministic)."""
    if split not in SIZES:
        raise KeyError(split)
    entities, cues, fillers = lexicon(language)
    rng = random.Random(f"synthetic-ner/{language}/{split}")
    examples = []
    for _ in range(SIZES[split]):
        tokens = [rng.choice(fillers) for _ in range(rng.randint(4, 12))]
        tags = ["O"] * len(tokens)
        for _ in range(rng.randint(1, 3)):
            t = rng.randrange(len(TYPES))
            words = [rng.choice(entities[t]) for _ in range(rng.randint(1, 2))]
            label = TYPES[rng.randrange(len(TYPES))] if rng.random() < TYPE_NOISE else TYPES[t]
            span_tags = [f"B-{label}"] + [f"I-{label}"] * (len(words) - 1)
            if rng.random() < 0.7:
                words, span_tags = [rng.choice(cues[t])] + words, ["O"] + span_tags
            at = rng.randint(0, len(tokens))
            while at < len(tags) and tags[at].startswith("I-"):  # never split an entity
                at += 1
            tokens[at:at] = words
            tags[at:at] = span_tags
        examples.append({"tokens": tokens, "tags": tags})
    return examples
