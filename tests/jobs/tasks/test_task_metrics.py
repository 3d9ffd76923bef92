"""The metrics against their definitions: seqeval for NER (on real tags with perturbed
predictions), hand-computed SQuAD v1.1 cases, a plain count for accuracy."""
from __future__ import annotations

import random

import pytest

from jobs.data.local import read_local
from jobs.data.registry import NER_LABELS, NLI_LABELS
from jobs.tasks.metrics import accuracy, entities, entity_f1, normalize_answer, squad_em, squad_f1, squad_scores


def _perturb(tags: list[list[str]], rate: float, seed: int) -> list[list[str]]:
    """Random edits that exercise the chunking rules: any tag at random (I- after O, type
    changes inside entities, B- inside entities), and shifted entity boundaries."""
    rng = random.Random(seed)
    out = []
    for sentence in tags:
        s = list(sentence)
        for i in range(len(s)):
            r = rng.random()
            if r < rate:
                s[i] = rng.choice(NER_LABELS)
            elif r < 1.5 * rate and s[i] != "O":
                s[i] = "I-" + s[i][2:] if s[i].startswith("B-") else "B-" + s[i][2:]
        out.append(s)
    return out


@pytest.mark.parametrize("path", ["panx/dev-de.tsv", "panx/dev-zh.tsv", "masakhaner/yor/test.txt"])
def test_entity_f1_equals_seqeval_on_real_tags(realdata_dir, path):
    seqeval = pytest.importorskip("seqeval.metrics")
    gold = [e["tags"] for e in read_local("ner", realdata_dir / path)][:3000]
    for rate, seed in ((0.0, 0), (0.02, 1), (0.1, 2), (0.3, 3), (0.9, 4)):
        predicted = _perturb(gold, rate, seed)
        assert abs(entity_f1(gold, predicted) - seqeval.f1_score(gold, predicted)) < 1e-9, (path, rate)
    assert entity_f1(gold, gold) == 1.0


def test_entity_chunking_follows_conlleval():
    assert entities(["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == [("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4)]
    assert entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    assert entity_f1([["O", "O"]], [["O", "O"]]) == 0.0  # no entities on either side: seqeval's 0
    seqeval = pytest.importorskip("seqeval.metrics")
    gold, pred = [["B-PER", "I-PER", "O"]], [["O", "I-PER", "O"]]
    assert entity_f1(gold, pred) == seqeval.f1_score(gold, pred) == 0.0


SQUAD_CASES = [
    # (prediction, gold answers, F1, EM)
    ("Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
    ("denver BRONCOS", ["Denver Broncos"], 1.0, 1.0),  # case
    ("Denver Broncos!", ["Denver Broncos."], 1.0, 1.0),  # punctuation
    ("the Denver Broncos", ["Denver Broncos"], 1.0, 1.0),  # articles: the
    ("an apple", ["A apple"], 1.0, 1.0),  # articles: a, an
    ("  Denver \t Broncos ", ["Denver Broncos"], 1.0, 1.0),  # white space
    ("theater", ["theater"], 1.0, 1.0),  # "the" only as a whole word
    ("Denver", ["Denver Broncos"], 2 * 1.0 * 0.5 / 1.5, 0.0),  # P 1, R 1/2
    ("the Denver Broncos team", ["Broncos"], 2 * (1 / 3) * 1.0 / (4 / 3), 0.0),  # P 1/3 after articles, R 1
    ("Carolina", ["Denver Broncos"], 0.0, 0.0),
    ("", ["Denver Broncos"], 0.0, 0.0),
    ("Broncos", ["Denver", "Broncos", "the Broncos team"], 1.0, 1.0),  # maximum over gold answers
    ("a b a", ["a a b c"], 2 * 1.0 * 0.5 / 1.5, 0.0),  # articles removed: "b" vs "b c": P 1, R 1/2
    ("x y y", ["y y z"], 2 * (2 / 3) * (2 / 3) / (4 / 3), 0.0),  # token counts (multiset overlap 2)
    ("1,000 km.", ["1000 km"], 1.0, 1.0),  # punctuation inside tokens is dropped too
]


@pytest.mark.parametrize("prediction,truths,f1,em", SQUAD_CASES)
def test_squad_v11_definitions(prediction, truths, f1, em):
    assert abs(squad_f1(prediction, truths) - f1) < 1e-9
    assert squad_em(prediction, truths) == em


def test_squad_normalisation_and_means():
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    scores = squad_scores(["Denver", "Carolina"], [["Denver"], ["Panthers"]])
    assert scores == {"f1": 0.5, "em": 0.5}


def test_accuracy_is_a_plain_count(realdata_dir):
    gold = [NLI_LABELS.index(e["label"]) for e in read_local("nli", realdata_dir / "xnli/dev-fr.tsv")]
    rng = random.Random(0)
    predicted = [g if rng.random() < 0.6 else rng.randrange(3) for g in gold]
    count = 0
    for g, p in zip(gold, predicted):
        if g == p:
            count += 1
    assert abs(accuracy(gold, predicted) - count / len(gold)) < 1e-9
