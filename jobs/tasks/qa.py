"""Extractive QA (TyDiQA-GoldP): question + context windows, start/end span prediction, the best
valid span over all windows of a question, SQuAD v1.1 F1 (primary) and exact match.

Windows: max_length tokens (384 in the paper) with `stride` tokens of overlap (128 in the paper;
smaller for short models, see `window_settings`). A training window that does not hold the whole
answer points both targets at the CLS token (position 0).

Questions (`TrainSpec.qa_questions`): `full` (default, the paper's code) keeps every question
whole and windows only the context (`truncation="only_second"`). A question so long that a
window would have no room for `stride + 1` context tokens cannot be windowed at all (the Hugging
Face tokenizer refuses it; the paper's code would stop there): such a question, and only such a
question, is cut to the longest length that leaves that room (two tokens to spare), and the job logs how many were
cut. `truncated` cuts every question to 64 tokens (at 384; see `window_settings`) first, as this
project did before.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from jobs.data.loading import load_examples
from jobs.spec import DatasetRef
from jobs.tasks.base import predict
from jobs.tasks.metrics import squad_scores

N_BEST = 20  # start and end candidates per window
QUESTION_MODES = ("full", "truncated")
MAX_ANSWER_TOKENS = 30
log = logging.getLogger("jobs")


def window_settings(max_length: int) -> tuple[int, int]:
    """(max question tokens, stride): 64 and 128 at the paper's 384; scaled down for short models
    so that a window always has room for context (e.g. 64 and 30 at 128)."""
    max_query = min(64, max_length // 2)
    stride = min(128, (max_length - max_query - 4) // 2)
    return max_query, stride


class QATask:
    name = "tydiqa"
    metric = "f1"
    labels = ()
    head_prefixes = ("qa_outputs.",)
    encode_version = "qa-1"

    def __init__(self, questions: str = "full"):
        if questions not in QUESTION_MODES:
            raise ValueError(f"QA question mode must be one of {', '.join(QUESTION_MODES)}, got {questions!r}")
        self.questions = questions

    @property
    def feature_tag(self) -> str:
        """Everything that changes the features (part of the feature-cache key)."""
        return f"{self.encode_version}/questions-{self.questions}"

    @property
    def options(self) -> dict:
        return {"questions": self.questions}

    def model_class(self):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def model_kwargs(self) -> dict:
        return {}

    def load(self, ref: DatasetRef) -> list[dict]:
        return load_examples(self.name, ref)

    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
        if not getattr(tokenizer, "is_fast", False):
            from jobs.errors import PermanentError

            raise PermanentError("extractive QA needs a fast tokenizer (offset mappings)")
        max_query, stride = window_settings(max_length)
        questions = [e["question"].lstrip() for e in examples]
        if self.questions == "truncated":
            questions = _truncate_questions(tokenizer, questions, max_query)
        else:  # only questions that leave no room for a window: <s> q </s></s> context(stride + 1) </s>;
            # two tokens to spare: a question cut at a character offset may re-tokenise one longer
            cut = _truncate_questions(tokenizer, questions, max_length - 4 - stride - 3)
            n_cut = sum(a != b for a, b in zip(cut, questions))
            if n_cut:
                log.warning("%d of %d questions are too long for a %d-token window with stride %d; cut to fit", n_cut, len(questions), max_length, stride)
            questions = cut
        enc = tokenizer(
            questions,
            [e["context"] for e in examples],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        features = []
        for i, ids in enumerate(enc["input_ids"]):
            example_index = enc["overflow_to_sample_mapping"][i]
            sequence_ids = enc.sequence_ids(i)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence_ids)]
            start, end = 0, 0  # CLS: this window does not hold the answer
            answers = examples[example_index]["answers"]
            if answers:
                a_start = answers[0]["answer_start"]
                a_end = a_start + len(answers[0]["text"])
                context_tokens = [t for t, o in enumerate(offsets) if o is not None]
                if context_tokens and offsets[context_tokens[0]][0] <= a_start and offsets[context_tokens[-1]][1] >= a_end:
                    start = next(t for t in context_tokens if offsets[t][1] > a_start)
                    end = next(t for t in reversed(context_tokens) if offsets[t][0] < a_end)
            features.append({"input_ids": ids, "start_positions": start, "end_positions": end,
                             "example_index": example_index, "offsets": offsets})
        return features

    def predictions(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> list[str]:
        outputs = predict(model, features, batch_size, tokenizer.pad_token_id, keys=("start_logits", "end_logits"), token_level=True, max_tokens=max_tokens)
        best: list[tuple[float, str]] = [(float("-inf"), "")] * len(examples)
        for (start_logits, end_logits), f in zip(outputs, features):
            candidate = best_span(start_logits, end_logits, f["offsets"])
            if candidate is None:
                continue
            score, s, e = candidate
            i = f["example_index"]
            if score > best[i][0]:
                best[i] = (score, examples[i]["context"][s:e])
        return [text for _, text in best]

    def evaluate(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> dict[str, float]:
        predicted = self.predictions(model, tokenizer, examples, features, batch_size, max_tokens)
        return squad_scores(predicted, [[a["text"] for a in e["answers"]] for e in examples])

    def score(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> float:
        return self.evaluate(model, tokenizer, examples, features, batch_size, max_tokens)["f1"]


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets, n_best: int = N_BEST,
              max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[float, int, int] | None:
    """(score, char start, char end) of the best valid span of one window: both ends in the
    context, end >= start, at most `max_tokens` tokens; among the n-best starts and ends."""
    k = min(n_best, len(offsets))
    starts = torch.topk(start_logits, k).indices.tolist()
    ends = torch.topk(end_logits, k).indices.tolist()
    best = None
    for s in starts:
        if offsets[s] is None:
            continue
        for e in ends:
            if offsets[e] is None or e < s or e - s + 1 > max_tokens:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, offsets[s][0], offsets[e][1])
    return best


def _truncate_questions(tokenizer, questions: list[str], max_tokens: int) -> list[str]:
    """Cut questions to `max_tokens` tokens (at a token's character end) so that every window has
    room for context."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q if len(offsets) <= max_tokens else q[: offsets[max_tokens - 1][1]])
    return out
