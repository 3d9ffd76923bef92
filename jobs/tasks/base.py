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
    def evaluate(self, model, tokenizer, examples: Sequence[dict], features: list[dict], batch_size: int,
                 max_tokens: int | None = None) -> dict[str, float]:
        """Every metric of the task, the primary one first (0-1 scale); batching as `predict`'s."""
    def score(self, model, tokenizer, examples: Sequence[dict], features: list[dict], batch_size: int,
              max_tokens: int | None = None) -> float:
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


def token_budget(features: Sequence[dict], batch_size: int) -> int:
    """The padded tokens per inference batch: `batch_size` x the mean feature length, so a set
    takes as many batches as fixed-size batching would, each about as large; short sequences
    then share a batch with more of their kind, long ones with fewer."""
    if not features:
        return batch_size
    mean = sum(len(f["input_ids"]) for f in features) / len(features)
    return max(1, round(batch_size * mean))


def sorted_batches(features: Sequence[dict], batch_size: int, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Length-sorted batches for inference: far less padding than input order. With `max_tokens`
    a batch holds as many sequences as fit the budget (count x longest, what the model computes
    on; one sequence at least), else `batch_size` of them."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    if not max_tokens:
        for i in range(0, len(order), batch_size):
            yield order[i : i + batch_size]
        return
    batch: list[int] = []
    for i in order:
        width = len(features[i]["input_ids"])  # the longest so far: the order is ascending
        if batch and (len(batch) + 1) * width > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def host_attention_mask(model, batch: dict) -> dict:
    """The batch with the attention mask the model would build from it (transformers'
    create_bidirectional_mask: a 4D boolean mask, or None where nothing is padded), built from
    the host copy: from a device mask transformers reads `mask.all()` back in every forward, a
    host sync; a prepared 4D mask it uses as it is. The same tensors, so the same numbers."""
    mask = batch.get("attention_mask")
    config = getattr(model, "config", None)
    if mask is None or getattr(config, "_attn_implementation", None) != "sdpa" or getattr(config, "is_decoder", False):
        return batch
    from transformers.masking_utils import create_bidirectional_mask

    shape = torch.empty((mask.shape[0], mask.shape[1], 1))  # only its batch size, length, dtype and (CPU) device are read
    return dict(batch, attention_mask=create_bidirectional_mask(config=config, inputs_embeds=shape, attention_mask=mask))


def to_model(model, batch: dict, device: torch.device) -> dict:
    """A padded host batch made ready for `model` on `device` (train and inference alike): the
    attention mask built on the host, then every tensor moved; on a GPU through pinned memory
    without waiting, so the host prepares the next batch while the device computes."""
    batch = host_attention_mask(model, batch)
    if device.type == "cpu":
        return batch
    cuda = device.type == "cuda"
    return {k: None if v is None else (v.pin_memory().to(device, non_blocking=True) if cuda else v.to(device))
            for k, v in batch.items()}


@torch.inference_mode()
def predict(model, features: list[dict], batch_size: int, pad_id: int, keys=("logits",), token_level=False,
            max_tokens: int | None = None) -> list:
    """Run the model over all features in length-sorted batches of about `max_tokens` padded
    tokens (default: `token_budget(features, batch_size)`; 0: `batch_size` sequences each);
    per-feature outputs in input order, each a tuple of float tensors on the CPU (trimmed to the
    feature's length when token-level). Inputs go to the model's device; on a GPU through pinned
    memory without waiting, and outputs come back once at the end, so the host pads the next
    batch while the device computes this one. Autocast is the caller's (jobs.train.eval_autocast)."""
    model.eval()
    device = model_device(model)
    if max_tokens is None:
        max_tokens = token_budget(features, batch_size)
    batches = []
    for idx in sorted_batches(features, batch_size, max_tokens):
        batch = to_model(model, pad_batch([{"input_ids": features[i]["input_ids"]} for i in idx], pad_id), device)
        out = model(**batch)
        batches.append((idx, [getattr(out, k).float() for k in keys]))
    outputs: list = [None] * len(features)
    for idx, values in batches:
        values = [v.cpu() for v in values]
        for j, i in enumerate(idx):
            n = len(features[i]["input_ids"])
            outputs[i] = tuple(v[j, :n] if token_level else v[j] for v in values)
    return outputs
