"""The tasks' metrics, written out here so that no evaluation library is needed at runtime.

- accuracy: share of equal labels.
- entity_f1: entity-level micro F1 with seqeval's default (conlleval-style) chunking of IOB tags,
  equal to `seqeval.metrics.f1_score(y_true, y_pred)` (tested against seqeval).
- squad_f1 / squad_em: the official SQuAD v1.1 evaluation (lower case, drop punctuation and the
  articles a/an/the, collapse white space; token-overlap F1; maximum over the gold answers).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence


def accuracy(gold: Sequence, predicted: Sequence) -> float:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0


# ---------------------------------------------------------------- entity F1 (seqeval default mode)
def _split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type) as seqeval reads a tag: 'B-PER' -> ('B', 'PER'), 'O' -> ('O', '_')."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) chunks of one tag sequence, conlleval style: an I- after O or after
    another type starts a chunk."""
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(chunk)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Micro F1 over (sentence, type, first, last) entities; 0 when either side has none."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    true_set, pred_set = set(), set()
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        true_set.update((i, *e) for e in entities(g))
        pred_set.update((i, *e) for e in entities(p))
    correct = len(true_set & pred_set)
    if not correct:
        return 0.0
    precision, recall = correct / len(pred_set), correct / len(true_set)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- SQuAD v1.1
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1(prediction: str, truth: str) -> float:
    pred_tokens, true_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, truths: Sequence[str]) -> float:
    return max((_f1(prediction, t) for t in truths), default=0.0)


def squad_em(prediction: str, truths: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(t)) for t in truths), default=0.0)


def squad_scores(predictions: Sequence[str], truths: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F1 and EM (0-1 scale) over questions."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(truths)} questions but {len(predictions)} predictions")
    n = len(predictions) or 1
    return {
        "f1": sum(squad_f1(p, t) for p, t in zip(predictions, truths)) / n,
        "em": sum(squad_em(p, t) for p, t in zip(predictions, truths)) / n,
    }
