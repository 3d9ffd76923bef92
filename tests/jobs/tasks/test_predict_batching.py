"""Inference batching (jobs.tasks.base): token-budget batches cover every feature once within the
budget, and give the same outputs and scores as fixed-size batches and as no batching at all."""
from __future__ import annotations

import math
import random

import pytest
import torch

from jobs.common import build_model
from jobs.models import load_tokenizer
from jobs.tasks import get_task
from jobs.tasks.base import predict, sorted_batches, token_budget

WORDS = "the a city river Mozart lived in Salzburg and played music for many years Vienna".split()


def nli_examples(n: int) -> list[dict]:
    rng = random.Random(0)
    return [{"premise": " ".join(rng.choices(WORDS, k=rng.randint(1, 50))),
             "hypothesis": " ".join(rng.choices(WORDS, k=rng.randint(1, 10))),
             "label": rng.choice(("entailment", "neutral", "contradiction"))} for _ in range(n)]


def ner_examples(n: int) -> list[dict]:
    rng = random.Random(1)
    out = []
    for _ in range(n):
        tokens = rng.choices(WORDS, k=rng.randint(1, 40))
        out.append({"tokens": tokens, "tags": ["B-PER" if t == "Mozart" else "B-LOC" if t == "Salzburg" else "O" for t in tokens]})
    return out


def test_token_budget_batches_hold_every_feature_once_and_fit_the_budget():
    rng = random.Random(2)
    features = [{"input_ids": [0] * rng.randint(3, 120)} for _ in range(300)]
    budget = token_budget(features, 16)
    assert budget == round(16 * sum(len(f["input_ids"]) for f in features) / 300)
    batches = list(sorted_batches(features, 16, budget))
    assert sorted(i for b in batches for i in b) == list(range(300))
    widths = [max(len(features[i]["input_ids"]) for i in b) for b in batches]
    assert all(len(b) * w <= budget for b, w in zip(batches, widths))
    assert widths == sorted(widths)  # length-sorted, as before
    assert len(batches[0]) > 16 > len(batches[-1])  # short sequences share a batch with more of their kind
    assert abs(len(batches) - math.ceil(300 / 16)) <= 3  # about as many batches as fixed-size batching
    # a sequence longer than the budget still gets its own batch; 0 or None: fixed-size batches
    assert list(sorted_batches([{"input_ids": [0] * 50}, {"input_ids": [0] * 5}], 16, 20)) == [[1], [0]]
    assert [len(b) for b in sorted_batches(features, 16, 0)] == [16] * 18 + [12]


@pytest.mark.parametrize("name", ["nli", "ner"])
def test_token_budget_outputs_equal_fixed_batches_and_single_examples(name):
    tok = load_tokenizer("tiny")
    task = get_task(name)
    model = build_model(task, "tiny")
    examples = nli_examples(32) if name == "nli" else ner_examples(32)
    features = task.encode(tok, examples, 128)
    token_level = name == "ner"
    by_budget = predict(model, features, 8, tok.pad_token_id, token_level=token_level)
    by_count = predict(model, features, 8, tok.pad_token_id, token_level=token_level, max_tokens=0)
    alone = predict(model, features, 1, tok.pad_token_id, token_level=token_level, max_tokens=0)  # no padding at all
    small = predict(model, features, 8, tok.pad_token_id, token_level=token_level, max_tokens=40)
    for f, a, b, c, d in zip(features, by_budget, by_count, alone, small):
        if token_level:
            assert a[0].shape == (len(f["input_ids"]), len(task.labels))
        assert a[0].device.type == "cpu" and a[0].dtype == torch.float32
        for other in (b, c, d):
            torch.testing.assert_close(a[0], other[0], atol=1e-5, rtol=1e-4)  # float noise only
    assert task.evaluate(model, tok, examples, features, 8) == task.evaluate(model, tok, examples, features, 8, max_tokens=0)
