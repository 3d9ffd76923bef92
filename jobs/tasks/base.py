"""The task interface (a Protocol) and the helpers every task shares: batching and inference."""
from __future__ import annotations

import random
from typing import Any, Iterator, Protocol, Sequence

import torch

from jobs.spec import DatasetRef


class Task(Protocol):
    name: str
    metric: str  # the primary metric (selection and tables): acc | f1
    labels: tuple[str, ...]
    head_prefixes: tuple[str, ...]  # parameter-name prefixes of the classification head
    encode_version: str  # bump when encode() changes: part of the feature-cache key

    def model_class(self) -> Any: ...
    def model_kwargs(self) -> dict: ...
    def load(self, ref: DatasetRef) -> list[dict]: ...
    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]: ...
    def evaluate(self, model, tokenizer, examples: Sequence[dict], features: list[dict], batch_size: int) -> dict[str, float]:
        """Every metric of the task, the primary one first (0-1 scale)."""
    def score(self, model, tokenizer, examples: Sequence[dict], features: list[dict], batch_size: int) -> float:
        """The primary metric."""


def label_kwargs(labels: Sequence[str]) -> dict:
    """`from_pretrained`/`from_config` arguments that give a classifier the task's label names."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def pad_batch(features: Sequence[dict], pad_id: int, label_pad: int = -100) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest sequence of the batch."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list):  # token labels
            labels = torch.full((len(features), width), label_pad, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


def train_batches(features: list[dict], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled index batches of one epoch; a function of (seed, epoch) only, so resumes replay it."""
    order = list(range(len(features)))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def sorted_batches(features: list[dict], batch_size: int) -> Iterator[list[int]]:
    """Length-sorted batches for inference: far less padding than input order."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


@torch.inference_mode()
def predict(model, features: list[dict], batch_size: int, pad_id: int, keys=("logits",), token_level=False) -> list:
    """Run the model over all features in length-sorted batches; per-feature outputs in input
    order, each a tuple of float tensors (trimmed to the feature's length when token-level)."""
    model.eval()
    outputs: list = [None] * len(features)
    for idx in sorted_batches(features, batch_size):
        batch = pad_batch([{"input_ids": features[i]["input_ids"]} for i in idx], pad_id)
        out = model(**batch)
        values = [getattr(out, k).float() for k in keys]
        for j, i in enumerate(idx):
            n = len(features[i]["input_ids"])
            outputs[i] = tuple(v[j, :n] if token_level else v[j] for v in values)
    return outputs
