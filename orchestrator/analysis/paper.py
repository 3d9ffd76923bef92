"""Adapter from the paper's published per-run results (paper-results/*.parquet) to `AnalysisInputs`.

It applies only the authors' own data handling (README of paper-results): model
xlm-roberta-large, averaged values rounded to 4 decimals, sample seed 1 dropped, TyDiQA values
divided by 100, names mapped to PROTOCOL.md ids. Everything else is the project's table code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from orchestrator.analysis.inputs import (
    AVERAGED_COLUMNS,
    RUN_COLUMNS,
    SELECTION_COLUMNS,
    VARIANT_SCORE_COLUMNS,
    AnalysisInputs,
)

PAPER_MODEL = "xlm-roberta-large"  # the model of the paper's Tables 1 and 2
SKIPPED_SAMPLE_SEEDS = (1,)  # the authors left sample seed 1 out of their tables
AVERAGED_DECIMALS = 4  # the authors rounded averaged-model values before taking means
PERCENT_TASKS = ("tydiqa",)  # tasks whose published values are on a 0-100 scale

PAPER_VARIANTS = {"last": "last", "src_dev": "src-dev", "trg_dev": "trg-dev", "ca": "ca"}
_PAPER_METHODS = {"ralast-all": "r-last", "rasrcdev-all": "r-dev", "raca-all": "r-ca"}
_PAPER_SOUP = re.compile(r"ratop([1-9][0-9]*)-all")

FILES = ("runs.parquet", "selection.parquet", "cumulative.parquet")


def paper_method(name: str) -> str | None:
    """PROTOCOL.md id of a paper cumulative method (ratop5-all -> soup-5); None for the unused `-val` methods."""
    if name in _PAPER_METHODS:
        return _PAPER_METHODS[name]
    soup = _PAPER_SOUP.fullmatch(name)
    if soup:
        return f"soup-{soup.group(1)}"
    if name.endswith("-val"):
        return None
    raise ValueError(f"unknown paper method {name!r}")


def load_paper_results(directory: str | Path, task: str, model: str = PAPER_MODEL) -> AnalysisInputs:
    """Read runs, selection and cumulative parquet files of one task into `AnalysisInputs`."""
    directory = Path(directory)
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {', '.join(missing)} (expected the paper-results folder)")
    runs = pd.read_parquet(directory / "runs.parquet")
    selection = pd.read_parquet(directory / "selection.parquet")
    cumulative = pd.read_parquet(directory / "cumulative.parquet")
    runs = runs[(runs["task"] == task) & (runs["model"] == model)]
    selection = selection[(selection["task"] == task) & (selection["model"] == model)]
    cumulative = cumulative[(cumulative["task"] == task) & (cumulative["model"] == model)]
    if runs.empty:
        raise ValueError(f"no paper results for task {task!r} and model {model!r}")
    scale = 100.0 if task in PERCENT_TASKS else 1.0

    variant_scores = runs.assign(run_key=runs["run_id"], variant=runs["variant"].map(PAPER_VARIANTS))
    variant_scores = variant_scores.assign(value=variant_scores["value"] / scale)
    selection = selection.assign(
        run_key=selection["run_id"],
        variant=selection["variant"].map(PAPER_VARIANTS),
        selection_score=selection["selection_score"] / scale,
    )

    cumulative = cumulative[~cumulative["sample_seed"].isin(SKIPPED_SAMPLE_SEEDS)]
    cumulative = cumulative.assign(method=cumulative["method"].map(paper_method))
    cumulative = cumulative.dropna(subset=["method"])
    averaged = cumulative.assign(
        draw_seed=cumulative["sample_seed"].astype(int),
        k=cumulative["num_models"].astype(int),
        value=cumulative["value"].round(AVERAGED_DECIMALS) / scale,
    )

    draws = {}
    for draw_seed, group in averaged.groupby("draw_seed"):
        longest = group.loc[group["k"].idxmax(), "run_ids"]
        draws[int(draw_seed)] = tuple(str(run_id) for run_id in longest)

    run_table = runs.drop_duplicates("run_id").assign(run_key=lambda f: f["run_id"])
    return AnalysisInputs(
        variant_scores=variant_scores[list(VARIANT_SCORE_COLUMNS)].reset_index(drop=True),
        selection=selection[list(SELECTION_COLUMNS)].reset_index(drop=True),
        averaged=averaged[list(AVERAGED_COLUMNS)].reset_index(drop=True),
        draws=draws,
        runs=run_table[list(RUN_COLUMNS)].reset_index(drop=True),
        incomplete=tuple(_check_draws(averaged, draws)),
    )


def _check_draws(averaged: pd.DataFrame, draws: dict[int, tuple[str, ...]]) -> list[str]:
    """Each averaged model's run_ids must be the first k runs of its draw."""
    notes = []
    for row in averaged.drop_duplicates(["method", "draw_seed", "k"]).itertuples(index=False):
        if tuple(str(r) for r in row.run_ids) != draws[row.draw_seed][: row.k]:
            notes.append(f"{row.method} draw seed {row.draw_seed} k={row.k}: its runs are not the draw's first k")
    return notes
