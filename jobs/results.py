"""The results contract: one long-format parquet file per evaluated model.

Columns are fixed here and never renamed; readers (the orchestrator's tables) rely on them.
Every metric value is on a 0-1 scale. The English dev score of a model is one row like any
other (language "en", split "validation"); for snapshots it is copied from the snapshot
manifest (the train job computed it), so selection scores come from one place.
"""
from __future__ import annotations

import io
from typing import Iterable, Mapping

import pandas as pd

# kind of evaluated model
KIND_SNAPSHOT = "snapshot"  # one stored snapshot of a run
KIND_RUN_AVERAGE = "run-average"  # the per-run CA model (method "ca")
KIND_DRAW_AVERAGE = "draw-average"  # an accumulative average over the first k runs of a draw
KINDS = (KIND_SNAPSHOT, KIND_RUN_AVERAGE, KIND_DRAW_AVERAGE)

SPLITS = ("validation", "test")

# column -> pandas dtype; order is the file's column order
COLUMNS: dict[str, str] = {
    "experiment": "string",
    "task": "string",
    "ref": "string",  # model reference, relative to the experiment prefix
    "kind": "string",
    "run_key": "string",  # null for draw averages
    "learning_rate": "Float64",
    "batch_size": "Int64",
    "seed": "Int64",
    "step": "Int64",  # snapshot step; null for averages
    "method": "string",  # PROTOCOL.md id (ca, r-last, r-dev, r-ca, soup-N, greedy); null for snapshots
    "k": "Int64",  # runs averaged (draw averages)
    "draw_seed": "Int64",
    "dataset": "string",
    "language": "string",
    "split": "string",
    "metric": "string",
    "value": "Float64",
    "n_examples": "Int64",
    # NER label scheme the scores were computed with (all-subtokens | first-subtoken); null for
    # other tasks. Results written before the column existed read as null (first-subtoken).
    "label_scheme": "string",
    # snapshots averaged into the model (its manifest's count: a soup-N over runs holding fewer
    # than N snapshots says so here); null for snapshots and in results written before the column
    "n_snapshots": "Int64",
}
# columns added after the first results were written: an older file lacks them (read as null)
OPTIONAL_COLUMNS: tuple[str, ...] = ("label_scheme", "n_snapshots")


def results_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Build a results frame with exactly the contract's columns and dtypes."""
    frame = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[list(COLUMNS)]
    return frame.astype(COLUMNS)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    """A results file as a frame with every contract column (a column added after the file was
    written reads as null)."""
    frame = pd.read_parquet(io.BytesIO(data))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame.astype(COLUMNS)
