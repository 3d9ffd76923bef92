"""The two ways of scoring one model on one set that bench_evaluate.py times against each other.

- `ours`: what the evaluate job does per model (jobs.evaluate.Evaluator.score): the task's
  `evaluate()` (jobs.tasks.base.predict: length-sorted batches of a token budget, then the
  metric) inside `jobs.train.eval_autocast` of the precision. `ours-fixed` is the same with
  fixed-count batches (`max_tokens=0`), to show what the token budget adds.
- `theirs`: `transformers.Trainer.evaluate` on the same model weights, features, eval batch size,
  precision (fp16/bf16 through TrainingArguments, which Trainer applies with accelerate's
  autocast) and a `compute_metrics` that computes the same metric with the same function; dynamic
  padding (`DataCollatorWithPadding` / `DataCollatorForTokenClassification`), no dataloader
  workers, pinned memory as Trainer's default, no logging or reporting.

Features are tokenised once by the task's own encoder and shared: the evaluate job encodes (and
caches) each set once per job, never per model, so encoding is not part of either timing.
"""
from __future__ import annotations

import copy
import tempfile
import time

import torch

from jobs.tasks.metrics import accuracy, entity_f1
from jobs.train import eval_autocast

IGNORE = -100


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Ours:
    """The evaluate job's scoring call; `max_tokens=0` for fixed-count batches."""

    def __init__(self, task, model, tokenizer, examples, features, batch_size: int, precision: str, device: torch.device,
                 max_tokens: int | None = None):
        self.task, self.model, self.tokenizer = task, model, tokenizer
        self.examples, self.features, self.batch_size = examples, features, batch_size
        self.precision, self.device, self.max_tokens = precision, device, max_tokens

    def run(self, n: int | None = None) -> tuple[float, float]:
        """(seconds, primary metric) over the first n examples (all by default)."""
        examples, features = (self.examples, self.features) if n is None else (self.examples[:n], self.features[:n])
        synchronise(self.device)
        t0 = time.perf_counter()
        with eval_autocast(self.device, self.precision):
            values = self.task.evaluate(self.model, self.tokenizer, examples, features, self.batch_size, self.max_tokens)
        synchronise(self.device)
        return time.perf_counter() - t0, next(iter(values.values()))


class Theirs:
    """`Trainer.evaluate` with the task's metric; owns a copy of the model (accelerate patches the
    forward of the model it prepares with its autocast, which must not leak into ours)."""

    def __init__(self, task, model, tokenizer, examples, features, batch_size: int, precision: str, device: torch.device):
        from transformers import (DataCollatorForTokenClassification, DataCollatorWithPadding, PrinterCallback,
                                  Trainer, TrainingArguments)

        self.task, self.device = task, device
        self.workdir = tempfile.TemporaryDirectory(prefix="bench-evaluate-trainer-")
        args = TrainingArguments(
            output_dir=self.workdir.name,
            per_device_eval_batch_size=batch_size,
            dataloader_num_workers=0,
            use_cpu=device.type == "cpu",
            fp16=precision == "fp16",
            bf16=precision == "bf16",
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            logging_strategy="no",
        )
        token_level = task.name == "ner"
        if token_level and getattr(task, "label_scheme", "all-subtokens") != "all-subtokens":
            raise SystemExit("bench_evaluate: the Trainer metric mirrors the all-subtokens NER scheme only")
        collator = (DataCollatorForTokenClassification if token_level else DataCollatorWithPadding)(tokenizer)
        self.dataset = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        self.trainer = Trainer(model=copy.deepcopy(model), args=args, data_collator=collator,
                               processing_class=tokenizer, compute_metrics=self._metric(task))
        self.trainer.remove_callback(PrinterCallback)  # prints each evaluate's metrics dict to stdout

    @staticmethod
    def _metric(task):
        labels = task.labels

        def nli(pred) -> dict:
            return {"acc": accuracy(pred.label_ids.tolist(), pred.predictions.argmax(-1).tolist())}

        def ner(pred) -> dict:  # the labelled sub-tokens of each sentence, as the all-subtokens scheme scores
            best = pred.predictions.argmax(-1)
            gold, predicted = [], []
            for row_labels, row_best in zip(pred.label_ids.tolist(), best.tolist()):
                kept = [(g, p) for g, p in zip(row_labels, row_best) if g != IGNORE]
                gold.append([labels[g] for g, _ in kept])
                predicted.append([labels[p] for _, p in kept])
            return {"f1": entity_f1(gold, predicted)}

        return ner if task.name == "ner" else nli

    def run(self, n: int | None = None) -> tuple[float, float]:
        dataset = self.dataset if n is None else self.dataset[:n]
        synchronise(self.device)
        t0 = time.perf_counter()
        metrics = self.trainer.evaluate(dataset)
        synchronise(self.device)
        return time.perf_counter() - t0, metrics[f"eval_{self.task.metric}"]

    def close(self) -> None:
        self.trainer = None
        self.workdir.cleanup()


def padded_tokens(features, batches) -> int:
    """Tokens the model computes on: each batch's count x its longest sequence."""
    return sum(len(idx) * max(len(features[i]["input_ids"]) for i in idx) for idx in batches)


def batch_plans(features, batch_size: int) -> dict[str, list[list[int]]]:
    """The batches each contender runs: ours by token budget, ours-fixed by count (both length
    sorted), Trainer's in input order (its eval sampler is sequential)."""
    from jobs.tasks.base import sorted_batches, token_budget

    order = list(range(len(features)))
    return {
        "ours": list(sorted_batches(features, batch_size, token_budget(features, batch_size))),
        "ours-fixed": list(sorted_batches(features, batch_size)),
        "theirs": [order[i: i + batch_size] for i in range(0, len(order), batch_size)],
    }
