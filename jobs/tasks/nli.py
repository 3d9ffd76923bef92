"""NLI: premise/hypothesis pairs, 3 labels, sequence classification, accuracy."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from jobs.data import synthetic
from jobs.errors import PermanentError
from jobs.spec import DatasetRef
from jobs.tasks.base import predict

LABELS = ("entailment", "neutral", "contradiction")

# Hub datasets (today's identifiers); hubs are unreachable on offline machines, so local
# files or the synthetic set are the tested paths.
HUB = {
    "xnli": ("facebook/xnli", "{language}"),
    "mnli": ("nyu-mll/glue", "mnli"),
}


class DataError(PermanentError):
    """Input data that does not fit the task; the message names the file and line."""


class NLITask:
    name = "nli"
    metric = "acc"
    labels = LABELS
    head_prefixes = ("classifier.",)

    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict:
        return {
            "num_labels": len(LABELS),
            "id2label": dict(enumerate(LABELS)),
            "label2id": {label: i for i, label in enumerate(LABELS)},
        }

    # ---- data ----
    def load(self, ref: DatasetRef) -> list[dict]:
        if ref.path:
            examples = load_local(Path(ref.path), ref.format)
        elif ref.dataset == "synthetic-nli":
            try:
                examples = synthetic.generate(ref.language, ref.split)
            except KeyError:
                raise DataError(
                    f"synthetic-nli has no language {ref.language!r} or split {ref.split!r}; languages: "
                    f"{', '.join(synthetic.LANGUAGES)}; splits: {', '.join(synthetic.SIZES)}"
                ) from None
        elif ref.dataset in HUB:
            examples = load_hub(ref)
        else:
            raise DataError(
                f"unknown NLI dataset {ref.dataset!r}: use synthetic-nli, {', '.join(HUB)}, or give a local path"
            )
        return examples[: ref.limit] if ref.limit else examples

    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
        enc = tokenizer(
            [e["premise"] for e in examples],
            [e["hypothesis"] for e in examples],
            truncation=True,
            max_length=max_length,
        )
        label_ids = {label: i for i, label in enumerate(LABELS)}
        return [{"input_ids": ids, "labels": label_ids[e["label"]]} for ids, e in zip(enc["input_ids"], examples)]

    def score(self, model, tokenizer, examples, features, batch_size: int) -> float:
        outputs = predict(model, features, batch_size, tokenizer.pad_token_id)
        correct = sum(int(out[0].argmax()) == f["labels"] for out, f in zip(outputs, features))
        return correct / len(features)


def _check_label(label: str, where: str) -> str:
    label = label.strip()
    if label not in LABELS:
        raise DataError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
    return label


def load_local(path: Path, fmt: str | None = None) -> list[dict]:
    """XTREME-style TSV (premise, hypothesis, label; no header), CSV with a header
    (sentence1/sentence2/gold_label or premise/hypothesis/label), JSON lines, or parquet."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    fmt = fmt or {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix)
    examples = []
    if fmt == "tsv":
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    raise DataError(f"{path}:{n}: expected 3 tab-separated columns (premise, hypothesis, label), got {len(parts)}")
                examples.append({"premise": parts[0], "hypothesis": parts[1], "label": _check_label(parts[2], f"{path}:{n}")})
    elif fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                premise = row.get("sentence1", row.get("premise"))
                hypothesis = row.get("sentence2", row.get("hypothesis"))
                label = row.get("gold_label", row.get("label"))
                if premise is None or hypothesis is None or label is None:
                    raise DataError(f"{path}:{n}: needs columns sentence1/sentence2/gold_label or premise/hypothesis/label")
                examples.append({"premise": premise, "hypothesis": hypothesis, "label": _check_label(label, f"{path}:{n}")})
    elif fmt in ("jsonl", "parquet"):
        if fmt == "jsonl":
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            import pandas as pd

            rows = pd.read_parquet(path).to_dict("records")
        for n, row in enumerate(rows, 1):
            label = row.get("label")
            if isinstance(label, int) and 0 <= label < 3:
                label = LABELS[label]
            examples.append({"premise": row["premise"], "hypothesis": row["hypothesis"], "label": _check_label(str(label), f"{path}:{n}")})
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; use tsv, csv, jsonl or parquet")
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def load_hub(ref: DatasetRef) -> list[dict]:
    import datasets

    name, config = HUB[ref.dataset]
    split = {"validation": "validation_matched"}.get(ref.split, ref.split) if ref.dataset == "mnli" else ref.split
    try:
        data = datasets.load_dataset(name, config.format(language=ref.language), split=split)
    except Exception as e:  # offline, unknown config: one line
        raise DataError(f"cannot load {name} ({ref.label}) from the hub: {str(e).splitlines()[0]}") from None
    return [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": LABELS[r["label"]]} for r in data]
