"""NLI: premise/hypothesis pairs, 3 labels, sequence classification, accuracy."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from jobs.data.errors import DataError  # noqa: F401  (re-exported: the task's error type)
from jobs.data.loading import load_examples
from jobs.data.local import read_local
from jobs.data.registry import NLI_LABELS as LABELS
from jobs.spec import DatasetRef
from jobs.tasks.base import label_kwargs, predict
from jobs.tasks.metrics import accuracy


class NLITask:
    name = "nli"
    metric = "acc"
    labels = LABELS
    # BERT's sequence classifier reads the pooler (dense + tanh on [CLS]), which the pre-trained
    # checkpoint may lack (multilingual-e5-small has none): it is part of the shared frozen head,
    # so grid runs use the head run's trained pooler, never a fresh random one. No tensor of
    # XLM-R's classifier starts with it (its pooler is unused and not built).
    head_prefixes = ("classifier.", "bert.pooler.")
    encode_version = "nli-1"

    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict:
        return label_kwargs(LABELS)

    def load(self, ref: DatasetRef) -> list[dict]:
        return load_examples(self.name, ref)

    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
        enc = tokenizer(
            [e["premise"] for e in examples],
            [e["hypothesis"] for e in examples],
            truncation=True,
            max_length=max_length,
        )
        label_ids = {label: i for i, label in enumerate(LABELS)}
        return [{"input_ids": ids, "labels": label_ids[e["label"]]} for ids, e in zip(enc["input_ids"], examples)]

    def predictions(self, model, tokenizer, features, batch_size: int, max_tokens: int | None = None) -> list[int]:
        outputs = predict(model, features, batch_size, tokenizer.pad_token_id, max_tokens=max_tokens)
        return [int(out[0].argmax()) for out in outputs]

    def evaluate(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> dict[str, float]:
        predicted = self.predictions(model, tokenizer, features, batch_size, max_tokens)
        return {"acc": accuracy([f["labels"] for f in features], predicted)}

    def score(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> float:
        return self.evaluate(model, tokenizer, examples, features, batch_size, max_tokens)["acc"]


def load_local(path: Path, fmt: str | None = None) -> list[dict]:
    """Examples of a local NLI file (see jobs.data.local)."""
    return read_local("nli", Path(path), fmt)
