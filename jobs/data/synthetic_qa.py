"""Deterministic synthetic multilingual extractive QA data (SQuAD form), so QA runs offline.

A context holds one answer span of each of three answer types (1-3 words from per-type
lexicons) among filler words; the question names the wanted type by a cue word. Contexts of up
to ~70 words overflow a 128-token window, so the windowing and cross-window decoding are used.
Target languages replace a growing share of answer, cue and filler words (xx-near 15%, xx-mid
35%, xx-far 55%), so transfer degrades with distance.
"""
from __future__ import annotations

import random
from functools import lru_cache

from jobs.data.synthetic import LANGUAGES, _word

ANSWER_TYPES = 3
SIZES = {"train": 1500, "validation": 200, "test": 200}
ANSWER_WORDS = 25
CUES_PER_TYPE = 4
FILLERS = 80


@lru_cache(maxsize=None)
def lexicon(language: str):
    """(answer words per type, cue words per type, filler words, question words) of one language."""
    if language not in LANGUAGES:
        raise KeyError(language)
    base = random.Random("synthetic-qa/lexicon")
    answers = [[_word(base) for _ in range(ANSWER_WORDS)] for _ in range(ANSWER_TYPES)]
    cues = [[_word(base) for _ in range(CUES_PER_TYPE)] for _ in range(ANSWER_TYPES)]
    fillers = [_word(base) for _ in range(FILLERS)]
    qwords = [_word(base) for _ in range(3)]
    rng = random.Random(f"synthetic-qa/lexicon/{language}")
    share = LANGUAGES[language]

    def translate(words):
        return tuple(_word(rng) if rng.random() < share else w for w in words)

    return (tuple(translate(w) for w in answers), tuple(translate(w) for w in cues), translate(fillers), translate(qwords))


def generate(language: str, split: str) -> list[dict]:
    """Examples {id, question, context, answers: [{text, answer_start}]} (deterministic)."""
    if split not in SIZES:
        raise KeyError(split)
    answers, cues, fillers, qwords = lexicon(language)
    rng = random.Random(f"synthetic-qa/{language}/{split}")
    examples = []
    for n in range(SIZES[split]):
        words = [rng.choice(fillers) for _ in range(rng.randint(15, 60))]
        spans = {}
        for t in rng.sample(range(ANSWER_TYPES), ANSWER_TYPES):
            span = [rng.choice(answers[t]) for _ in range(rng.randint(1, 3))]
            at = rng.randint(0, len(words))
            words[at:at] = [f"<{t}>"]  # placeholder, one word wide
            spans[t] = span
        wanted = rng.randrange(ANSWER_TYPES)
        context, answer_start = [], None
        for w in words:
            if w.startswith("<"):
                t = int(w[1:-1])
                if t == wanted:
                    answer_start = len(" ".join(context)) + (1 if context else 0)
                context.extend(spans[t])
            else:
                context.append(w)
        text = " ".join(spans[wanted])
        question = " ".join([rng.choice(qwords), rng.choice(cues[wanted])] + [rng.choice(fillers) for _ in range(rng.randint(1, 3))])
        examples.append({"id": f"{language}-{split}-{n}", "question": question, "context": " ".join(context),
                         "answers": [{"text": text, "answer_start": answer_start}]})
    return examples
