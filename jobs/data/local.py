"""Readers for local data files in the formats of the public dumps, one per task, no renaming needed.

- NLI: XTREME TSV `premise<TAB>hypothesis<TAB>label` (no header) or `label<TAB>premise<TAB>hypothesis`
  (TextFooler), CSV with a header (sentence1/sentence2/gold_label or premise/hypothesis/label),
  JSON lines or parquet with premise/hypothesis/label.
- NER: CoNLL, one `token<TAB>tag` or `token<SPACE>tag` per line, a blank line between sentences
  (`-DOCSTART-` lines skipped); JSON lines or parquet with tokens and ner_tags (tag names, or ids
  into the task's labels).
- QA: SQuAD JSON (v1.1, MLQA, XQuAD, and TyDiQA-GoldP without titles); JSON lines or parquet with
  id/question/context/answers ({text: [...], answer_start: [...]} or a list of {text, answer_start}).

Every example is checked: a label outside the task's label set, or an answer that is not at its
offset in the context, raises DataError naming the file and line (or example id).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Mapping

from jobs.data.errors import DataError
from jobs.data.registry import NER_LABELS, NLI_LABELS

SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".json": "json",
                  ".txt": "conll", ".conll": "conll", ".iob": "conll", ".iob2": "conll"}
FORMATS = {
    "nli": ("tsv", "csv", "jsonl", "parquet"),
    "ner": ("conll", "tsv", "jsonl", "parquet"),
    "tydiqa": ("json", "jsonl", "parquet"),
}


def detect_format(task: str, path: Path, fmt: str | None) -> str:
    fmt = fmt or SUFFIX_FORMATS.get(path.suffix.lower())
    if task == "ner" and fmt == "tsv":
        fmt = "conll"  # PAN-X files are token<TAB>tag
    if fmt not in FORMATS[task]:
        raise DataError(f"{path}: unknown format {fmt!r} for task {task}; use {', '.join(FORMATS[task])} (the format field)")
    return fmt


def read_local(task: str, path: Path, fmt: str | None = None, label_map: Mapping[str, str] | None = None) -> list[dict]:
    """The examples of one local file, in the task's example form."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    fmt = detect_format(task, path, fmt)
    label_map = label_map or {}
    reader: Callable = {"nli": _read_nli, "ner": _read_ner, "tydiqa": _read_qa}[task]
    try:
        examples = reader(path, fmt, label_map)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _rows(path: Path, fmt: str) -> list[tuple[int, dict]]:
    """(line number, record) of a JSON lines or parquet file."""
    if fmt == "jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object per line")
                rows.append((n, row))
        return rows
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable parquet file: {str(e).splitlines()[0]}") from None
    return [(i + 1, r) for i, r in enumerate(frame.to_dict("records"))]


def _need(row: dict, keys: tuple[str, ...], where: str) -> list:
    missing = [k for k in keys if k not in row or row[k] is None]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)} (has {', '.join(map(str, row))})")
    return [row[k] for k in keys]


# ---------------------------------------------------------------- NLI
def nli_label(label, where: str, label_map: Mapping[str, str]) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(NLI_LABELS):
        label = NLI_LABELS[label]
    label = label_map.get(str(label).strip(), str(label).strip())
    if label not in NLI_LABELS:
        raise DataError(f"{where}: label {label!r} is not one of {', '.join(NLI_LABELS)}")
    return label


def _read_nli(path: Path, fmt: str, label_map) -> list[dict]:
    examples = []
    if fmt == "tsv":
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\r\n").split("\t")
                where = f"{path}:{n}"
                if len(parts) != 3:
                    raise DataError(f"{where}: expected 3 tab-separated columns (premise, hypothesis, label), got {len(parts)}")
                if parts[2].strip() not in NLI_LABELS and parts[0].strip() in NLI_LABELS:
                    label, premise, hypothesis = parts  # TextFooler order: label first
                else:
                    premise, hypothesis, label = parts
                examples.append({"premise": premise, "hypothesis": hypothesis, "label": nli_label(label, where, label_map)})
    elif fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                premise = row.get("sentence1", row.get("premise"))
                hypothesis = row.get("sentence2", row.get("hypothesis"))
                label = row.get("gold_label", row.get("label"))
                if premise is None or hypothesis is None or label is None:
                    raise DataError(f"{path}:{n}: needs columns sentence1/sentence2/gold_label or premise/hypothesis/label")
                examples.append({"premise": premise, "hypothesis": hypothesis, "label": nli_label(label, f"{path}:{n}", label_map)})
    else:
        for n, row in _rows(path, fmt):
            where = f"{path}:{n}" if fmt == "jsonl" else f"{path} row {n}"
            premise, hypothesis, label = _need(row, ("premise", "hypothesis", "label"), where)
            examples.append({"premise": str(premise), "hypothesis": str(hypothesis), "label": nli_label(_plain(label), where, label_map)})
    return examples


def _plain(value):
    """numpy scalars from parquet as Python values."""
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------- NER
def ner_tag(tag, where: str, label_map: Mapping[str, str]) -> str:
    if isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag < len(NER_LABELS):
        tag = NER_LABELS[tag]
    tag = str(tag).strip()
    tag = label_map.get(tag, tag)
    if tag not in NER_LABELS:
        raise DataError(f"{where}: tag {tag!r} is not one of {', '.join(NER_LABELS)} (IOB2); map it with the dataset's label map")
    return tag


def _read_ner(path: Path, fmt: str, label_map) -> list[dict]:
    examples: list[dict] = []
    if fmt == "conll":
        tokens: list[str] = []
        tags: list[str] = []
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    if tokens:
                        examples.append({"tokens": tokens, "tags": tags})
                        tokens, tags = [], []
                    continue
                if line.startswith("-DOCSTART-"):
                    continue
                if "\t" in line:
                    parts = line.split("\t")
                else:
                    parts = line.rsplit(" ", 1)
                if len(parts) != 2 or not parts[0]:
                    raise DataError(f"{path}:{n}: expected 'token<TAB>tag' or 'token<SPACE>tag' (CoNLL), got {line[:60]!r}")
                tokens.append(parts[0])
                tags.append(ner_tag(parts[1], f"{path}:{n}", label_map))
        if tokens:
            examples.append({"tokens": tokens, "tags": tags})
    else:
        for n, row in _rows(path, fmt):
            where = f"{path}:{n}" if fmt == "jsonl" else f"{path} row {n}"
            tags_key = "ner_tags" if "ner_tags" in row else "tags"
            tokens, tags = _need(row, ("tokens", tags_key), where)
            tokens, tags = [str(t) for t in tokens], [_plain(t) for t in tags]
            if len(tokens) != len(tags):
                raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            examples.append({"tokens": tokens, "tags": [ner_tag(t, where, label_map) for t in tags]})
    return examples


# ---------------------------------------------------------------- QA
def qa_example(qid, question, context, answers, where: str) -> dict:
    """A checked QA example; `answers` as {text: [...], answer_start: [...]} or [{text, answer_start}]."""
    if isinstance(answers, Mapping):
        texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
        if len(texts) != len(starts):
            raise DataError(f"{where}: question {qid}: {len(texts)} answer texts but {len(starts)} answer_start values")
        answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    out = []
    for a in answers:
        text, start = a.get("text"), _plain(a.get("answer_start"))
        if not isinstance(text, str) or not isinstance(start, int):
            raise DataError(f"{where}: question {qid}: an answer needs text (string) and answer_start (integer)")
        if context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            raise DataError(
                f"{where}: question {qid}: answer {text[:40]!r} is not at answer_start {start} of its context "
                f"(found {found[:40]!r})"
            )
        out.append({"text": text, "answer_start": start})
    return {"id": str(qid), "question": str(question), "context": str(context), "answers": out}


def _read_qa(path: Path, fmt: str, label_map) -> list[dict]:
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise DataError(f"{path}: not SQuAD JSON (expected {{\"data\": [{{\"paragraphs\": ...}}]}})")
        examples = []
        for i, article in enumerate(data["data"]):
            paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
            if not isinstance(paragraphs, list):
                raise DataError(f"{path}: data[{i}] has no paragraphs list (SQuAD JSON)")
            for j, par in enumerate(paragraphs):
                where = f"{path} data[{i}].paragraphs[{j}]"
                context, qas = _need(par, ("context", "qas"), where)
                for qa in qas:
                    qid, question, answers = _need(qa, ("id", "question", "answers"), where)
                    examples.append(qa_example(qid, question, context, answers, str(path)))
        return examples
    examples = []
    for n, row in _rows(path, fmt):
        where = f"{path}:{n}" if fmt == "jsonl" else f"{path} row {n}"
        qid, question, context, answers = _need(row, ("id", "question", "context", "answers"), where)
        if hasattr(answers, "tolist"):
            answers = answers.tolist()
        if isinstance(answers, Mapping):
            answers = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in answers.items()}
        examples.append(qa_example(qid, question, context, answers, where))
    return examples
