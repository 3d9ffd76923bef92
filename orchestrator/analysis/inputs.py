"""The one input shape of the analysis layer: per-run variant scores, selection scores, averaged models and draws.

Both the paper's published results (`paper.py`) and the project's own results parquet files
(`variants.py`) are turned into an `AnalysisInputs`; the table and plot code reads only this.
Every score is on a 0-1 scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

# per-run model variants (PROTOCOL.md ids), in table order
VARIANTS = ("last", "src-dev", "trg-dev", "ca")

VARIANT_SCORE_COLUMNS = ("run_key", "variant", "dataset", "language", "metric", "value")
SELECTION_COLUMNS = ("run_key", "variant", "selection_score")
AVERAGED_COLUMNS = ("method", "draw_seed", "k", "dataset", "language", "metric", "value")
RUN_COLUMNS = ("run_key", "learning_rate", "batch_size", "seed")

SOURCE_LANGUAGE = "en"  # English is the source: never a target


class IncompleteResultsError(ValueError):
    """Some table cell would rest on missing results (raised in strict mode)."""

    def __init__(self, notes: tuple[str, ...] | list[str]):
        self.notes = tuple(notes)
        more = f" (and {len(self.notes) - 1} more)" if len(self.notes) > 1 else ""
        super().__init__(f"incomplete results: {self.notes[0]}{more}" if self.notes else "incomplete results")


@dataclass(frozen=True)
class AnalysisInputs:
    """Everything the tables need, source-independent.

    variant_scores: test-split score of each per-run variant on each evaluation set.
    selection: the score that picks a run among several, per (run, variant).
    averaged: test-split score of each accumulative average (method, draw seed, k) per set.
    draws: draw seed -> ordered run keys (prefix k = the first k runs).
    runs: each run's hyperparameters.
    incomplete: human-readable notes on missing results found while building the inputs.
    info: lines that are not missing results but say what the tables rest on (which draw
    records were used, soups that averaged fewer than N snapshots); printed under the tables.
    `averaged` may also hold `n_snapshots` (snapshots in each averaged model; null if unknown).
    """

    variant_scores: pd.DataFrame
    selection: pd.DataFrame
    averaged: pd.DataFrame
    draws: Mapping[int, tuple[str, ...]]
    runs: pd.DataFrame
    incomplete: tuple[str, ...] = field(default=())
    info: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name, columns in (
            ("variant_scores", VARIANT_SCORE_COLUMNS),
            ("selection", SELECTION_COLUMNS),
            ("averaged", AVERAGED_COLUMNS),
            ("runs", RUN_COLUMNS),
        ):
            missing = [c for c in columns if c not in getattr(self, name).columns]
            if missing:
                raise ValueError(f"AnalysisInputs.{name} lacks columns {missing}")
        unknown = set(self.variant_scores["variant"]) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")

