"""One way from a DatasetRef to a task's examples: local file, synthetic set or the Hub, then half, then limit."""
from __future__ import annotations

import os
from pathlib import Path

from jobs.data import registry
from jobs.data.errors import DataError
from jobs.data.local import read_local, qa_example
from jobs.spec import DatasetRef

DATA_ROOT_ENV = "XLT_DATA_ROOT"  # relative local paths are resolved against it (default: the working directory)


def resolve_path(path: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and os.environ.get(DATA_ROOT_ENV):
        p = Path(os.environ[DATA_ROOT_ENV]) / p
    return p


def take_half(examples: list, half: str | None) -> list:
    """`first`: examples[:n//2]; `second`: examples[n//2:] (file order, so deterministic and disjoint)."""
    if half is None:
        return examples
    cut = len(examples) // 2
    return examples[:cut] if half == "first" else examples[cut:]


def load_examples(task: str, ref: DatasetRef) -> list[dict]:
    info = registry.get(ref.dataset, task)
    registry.check_language(info, ref.language)
    if ref.path:
        examples = read_local(task, resolve_path(ref.path), ref.format, info.label_map)
    elif info.hub_id is None:
        examples = _synthetic(task, info, ref)
    else:
        examples = _hub(task, info, ref)
    examples = take_half(examples, ref.half)
    if not examples:
        raise DataError(f"{ref.label}: no examples (half {ref.half!r})")
    return examples[: ref.limit] if ref.limit else examples


def _synthetic(task: str, info, ref: DatasetRef) -> list[dict]:
    if task == "nli":
        from jobs.data import synthetic as module
    elif task == "ner":
        from jobs.data import synthetic_ner as module
    else:
        from jobs.data import synthetic_qa as module
    if ref.split not in module.SIZES:
        raise DataError(f"{info.name} has no split {ref.split!r}; splits: {', '.join(module.SIZES)}")
    return module.generate(ref.language, ref.split)


def _hub(task: str, info, ref: DatasetRef) -> list[dict]:
    data = registry.load_hub_rows(info, ref.language, ref.split)
    where = f"{info.name} ({info.hub_id} at {info.hub_revision}) {ref.language}/{ref.split}"
    if task == "nli":
        names = _class_names(data, "label", where)
        return [
            {"premise": r["premise"], "hypothesis": r["hypothesis"], "label": info.map_label(names[r["label"]])}
            for r in data
            if r["label"] >= 0  # GLUE test rows carry -1
        ]
    if task == "ner":
        names = _class_names(data, "ner_tags", where)
        out = []
        for i, r in enumerate(data):
            tags = [info.map_label(names[t]) for t in r["ner_tags"]]
            bad = [t for t in tags if t not in registry.NER_LABELS]
            if bad:
                raise DataError(f"{where} row {i}: tag {bad[0]!r} outside {', '.join(registry.NER_LABELS)}")
            out.append({"tokens": list(r["tokens"]), "tags": tags})
        return out
    return [qa_example(r["id"], r["question"], r["context"], r["answers"], where) for r in data]


def _class_names(data, column: str, where: str) -> list[str]:
    """The ClassLabel names of `column` (a list of labels for NER), read from the dataset's features
    (the parquet files' `huggingface` schema metadata); a missing column or plain integers fail here."""
    feature = data.features.get(column)
    inner = getattr(feature, "feature", feature)  # Sequence/List(ClassLabel) for tags
    names = getattr(inner, "names", None)
    if not names:
        raise DataError(f"{where}: column {column!r} carries no ClassLabel names (features: {data.features}); "
                        "the files lack the `huggingface` schema metadata")
    return list(names)
