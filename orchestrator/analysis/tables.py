"""The paper's tables from `AnalysisInputs`: cumulative (Tables 1/2), per hyperparameter (Tables 3/4), per language.

Tables hold 0-1 scores in a frame with (label, "mean" | "std") columns; `render.py` prints them
times 100. A cell resting on missing results is NaN and a note says why; it is never a mean
over fewer numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from jobs.averaging.methods import DRAWS, Method, MethodIdError, get_method, known_ids, table_order

from orchestrator.analysis.inputs import SOURCE_LANGUAGE, VARIANTS, AnalysisInputs

STATS = ("mean", "std")


@dataclass(frozen=True)
class TargetFilter:
    """Which evaluation sets count as targets of a task (English never does)."""

    excluded_datasets: tuple[str, ...] = ()  # evaluation sets left out of the tables
    metrics: tuple[str, ...] = ()  # metrics kept; empty keeps every metric

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        keep = frame["language"] != SOURCE_LANGUAGE
        keep &= ~frame["dataset"].isin(self.excluded_datasets)
        if self.metrics:
            keep &= frame["metric"].isin(self.metrics)
        return frame[keep.fillna(False).astype(bool)]

    def describe(self) -> str:
        parts = [f"language != {SOURCE_LANGUAGE}"]
        if self.excluded_datasets:
            parts.append(f"datasets not in {list(self.excluded_datasets)}")
        if self.metrics:
            parts.append(f"metric in {list(self.metrics)}")
        return ", ".join(parts)


TARGET_FILTERS: dict[str, TargetFilter] = {
    # the paper leaves AmericasNLI (named anli in its results) out of the NLI tables
    "nli": TargetFilter(excluded_datasets=("americasnli", "anli")),
    "ner": TargetFilter(),
    # TyDiQA is reported in token F1; exact match is recorded but not tabulated
    "tydiqa": TargetFilter(metrics=("f1",)),
}


def target_filter(task: str) -> TargetFilter:
    try:
        return TARGET_FILTERS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TARGET_FILTERS)}") from None


# selection baselines (table-only: they pick a run, they average nothing): method id -> the
# per-run variant whose selection score picks the run. The averaged methods, their labels and
# their order come from the registry (jobs.averaging.methods): one list.
SELECTION_METHODS: dict[str, str] = {"s-last": "last", "s-dev": "src-dev", "s-ca": "ca", "s-tdev": "trg-dev"}
PAPER_METHODS = ("s-last", "s-dev", "s-ca", "s-tdev", "r-last", "r-dev", "r-ca", "soup-5")

_SELECTION_LABELS = {"s-last": "S-L", "s-dev": "S-DEV", "s-ca": "S-CA", "s-tdev": "S-TDEV"}
_VARIANT_LABELS = {"last": "L", "src-dev": "DEV", "trg-dev": "TDEV"}  # per-run variants; ca: the registry's CA


def _known() -> list[str]:
    return [*SELECTION_METHODS, *known_ids(DRAWS)]


def averaged_method(method: str) -> Method | None:
    """The registered draw method named `method`, or None (a selection baseline, or unknown)."""
    try:
        found = get_method(method, where=None)
    except MethodIdError:
        return None
    return found if found.mode == DRAWS else None


def check_method(method: str) -> str:
    """A method id of the tables: a selection baseline or a registered draw method."""
    if method in SELECTION_METHODS or averaged_method(method) is not None:
        return method
    try:
        get_method(method, where=None)
    except MethodIdError as e:
        if e.canonical:
            raise ValueError(f"write method {method!r} as {e.canonical!r} (N without leading zeros)") from None
        if not e.unknown:
            raise ValueError(e.problem) from None
    raise ValueError(f"unknown method {method!r}; known methods: {', '.join(_known())}")


def label(name: str) -> str:
    """The table label of a method or variant id (PROTOCOL.md), e.g. s-dev -> S-DEV, soup-5 -> Soup-5."""
    if name in _SELECTION_LABELS:
        return _SELECTION_LABELS[name]
    if name in _VARIANT_LABELS:
        return _VARIANT_LABELS[name]
    try:
        return get_method(name, where=None).label
    except MethodIdError:
        known = [*_SELECTION_LABELS, *_VARIANT_LABELS, *known_ids()]
        raise ValueError(f"no table label for {name!r}; known: {', '.join(known)}") from None


def _method_order(method: str) -> tuple:
    if method in SELECTION_METHODS:
        return (0, list(SELECTION_METHODS).index(method), 0)
    found = averaged_method(method)
    return (1, *table_order(found)) if found is not None else (2, 0, 0)


def default_methods(inputs: AnalysisInputs) -> tuple[str, ...]:
    """The four selection baselines, then every averaging method found in the inputs (table order)."""
    present = [m for m in pd.unique(inputs.averaged["method"].dropna()) if averaged_method(m) is not None]
    return (*SELECTION_METHODS, *sorted(present, key=_method_order))


@dataclass(frozen=True)
class Table:
    """One table: a frame of 0-1 scores with (label, mean | std) columns, plus notes on missing results."""

    name: str  # file stem, e.g. cumulative-nli
    title: str
    frame: pd.DataFrame
    notes: tuple[str, ...] = field(default=())
    info: tuple[str, ...] = field(default=())  # what the table rests on (draw records, short soups): not missing results


class _Scores:
    """Target-filtered lookups shared by the table functions (one task, one `AnalysisInputs`)."""

    def __init__(self, inputs: AnalysisInputs, task: str):
        targets = target_filter(task)
        self.inputs = inputs
        self.task = task
        self.variant_scores = targets.apply(inputs.variant_scores)
        self.averaged = targets.apply(inputs.averaged)
        cells = pd.concat([self.variant_scores, self.averaged])[["dataset", "language", "metric"]]
        self.cells = sorted(map(tuple, cells.drop_duplicates().itertuples(index=False)))
        metrics_per_set = cells.drop_duplicates().groupby(["dataset", "language"])["metric"].nunique()
        if (metrics_per_set > 1).any():
            dataset, language = metrics_per_set[metrics_per_set > 1].index[0]
            raise ValueError(
                f"target set {dataset}/{language} has several metrics after filtering ({targets.describe()}): "
                f"a mean target score needs one metric per set"
            )
        if not self.cells:
            present = pd.concat([inputs.variant_scores, inputs.averaged])
            raise ValueError(
                f"no target results for task {task!r} ({targets.describe()}); results hold datasets "
                f"{sorted(pd.unique(present['dataset'].dropna()))} and metrics "
                f"{sorted(pd.unique(present['metric'].dropna()))}"
            )
        self.run_score = self._complete_mean(self.variant_scores, ["run_key", "variant"])
        self.averaged_score = self._complete_mean(self.averaged, ["method", "draw_seed", "k"])
        selection = inputs.selection.dropna(subset=["selection_score"])
        self.selection = selection.set_index(["run_key", "variant"])["selection_score"].astype(float)
        self.selection = self.selection[~self.selection.index.duplicated()]
        self.by_cell_runs = self._by_cell(self.variant_scores, ["run_key", "variant"])
        self.by_cell_averaged = self._by_cell(self.averaged, ["method", "draw_seed", "k"])

    def _complete_mean(self, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
        """Mean over target cells per model; NaN where the model lacks a cell."""
        rows = frame.drop_duplicates([*keys, "dataset", "language", "metric"])
        grouped = rows.groupby(keys, dropna=False)["value"]
        means = grouped.mean().astype(float)
        complete = grouped.count() == len(self.cells)
        return means.where(complete)

    def _by_cell(self, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
        rows = frame.drop_duplicates([*keys, "dataset", "language", "metric"])
        return rows.set_index([*keys, "dataset", "language", "metric"])["value"].astype(float)

    def selected_run(self, prefix: Sequence[str], variant: str) -> tuple[str | None, str | None]:
        """The run of `prefix` whose `variant` has the best selection score (first in draw order on ties).

        Returns (run_key, None) or (None, why) when a selection score is missing.
        """
        best_key, best_score = None, -np.inf
        for run_key in prefix:
            score = self.selection.get((run_key, variant), np.nan)
            if np.isnan(score):
                return None, f"run {run_key} has no {variant} selection score"
            if score > best_score:
                best_key, best_score = run_key, score
        return best_key, None

    def method_score(self, method: str, draw_seed: int, prefix: Sequence[str]) -> tuple[float, str | None]:
        k = len(prefix)
        if method in SELECTION_METHODS:
            variant = SELECTION_METHODS[method]
            run_key, why = self.selected_run(prefix, variant)
            if run_key is None:
                return np.nan, why
            value = self.run_score.get((run_key, variant), np.nan)
            return value, None if not np.isnan(value) else f"selected run {run_key} lacks {variant} target results"
        value = self.averaged_score.get((method, draw_seed, k), np.nan)
        return value, None if not np.isnan(value) else "averaged model missing or lacking target results"

    def method_cells(self, method: str, draw_seed: int, prefix: Sequence[str]) -> pd.Series:
        """Per target cell values of a method's model (NaN where missing), indexed by (dataset, language, metric)."""
        index = pd.MultiIndex.from_tuples(self.cells, names=["dataset", "language", "metric"])
        if method in SELECTION_METHODS:
            variant = SELECTION_METHODS[method]
            run_key, _ = self.selected_run(prefix, variant)
            key: tuple = (run_key, variant)
            source = self.by_cell_runs
        else:
            key = (method, draw_seed, len(prefix))
            source = self.by_cell_averaged
        values = [source.get((*key, *cell), np.nan) if key[0] is not None else np.nan for cell in self.cells]
        return pd.Series(values, index=index, dtype=float)


def _methods(inputs: AnalysisInputs, methods: Iterable[str] | None) -> tuple[str, ...]:
    if methods is None:
        return default_methods(inputs)
    methods = tuple(check_method(m) for m in methods)
    present = set(inputs.averaged["method"].dropna())
    absent = [m for m in methods if m not in SELECTION_METHODS and m not in present]
    if absent:
        raise ValueError(
            f"no averaged results for method(s) {', '.join(absent)}; present: {', '.join(sorted(present)) or 'none'}"
        )
    return methods


def _stats(per_draw: pd.DataFrame, index_name: str | list[str], labels: dict[str, str]) -> pd.DataFrame:
    """Mean and std (ddof=1) over draws; NaN (not a smaller mean) where any draw lacks a value."""
    grouped = per_draw.groupby(index_name)
    mean = grouped.agg(lambda values: values.mean(skipna=False))
    std = grouped.agg(lambda values: values.std(ddof=1, skipna=False))
    columns = pd.MultiIndex.from_tuples([(labels[m], stat) for m in labels for stat in STATS])
    frame = pd.DataFrame(index=mean.index, columns=columns, dtype=float)
    for method, name in labels.items():
        frame[(name, "mean")] = mean[method]
        frame[(name, "std")] = std[method]
    return frame


def cumulative_table(inputs: AnalysisInputs, task: str, methods: Iterable[str] | None = None) -> Table:
    """Tables 1/2: for each k, mean and std over draws of each method's mean target score."""
    scores = _Scores(inputs, task)
    methods = _methods(inputs, methods)
    if not inputs.draws:
        raise ValueError("no draws: a cumulative table needs at least one draw of runs")
    max_k = max(len(runs) for runs in inputs.draws.values())
    rows, notes = [], []
    for draw_seed, run_keys in sorted(inputs.draws.items()):
        for k in range(1, max_k + 1):
            row = {"draw_seed": draw_seed, "k": k}
            for method in methods:
                if k > len(run_keys):
                    row[method], why = np.nan, f"the draw has only {len(run_keys)} runs"
                else:
                    row[method], why = scores.method_score(method, draw_seed, run_keys[:k])
                if why:
                    notes.append(f"{task} {label(method)} k={k} draw seed {draw_seed}: {why}")
            rows.append(row)
    per_draw = pd.DataFrame(rows).drop(columns="draw_seed")
    frame = _stats(per_draw, "k", {m: label(m) for m in methods})
    return Table(
        name=f"cumulative-{task}",
        title=f"{task}: mean target score over {len(inputs.draws)} draws, by number of runs k",
        frame=frame,
        notes=(*inputs.incomplete, *notes),
        info=(*inputs.info, *soup_shortfalls(inputs, methods)),
    )


def soup_shortfalls(inputs: AnalysisInputs, methods: Iterable[str], k: int | None = None) -> list[str]:
    """One line per soup-N whose averages hold fewer than N snapshots (the first k runs held
    fewer), from the results' n_snapshots (unknown in results written before it existed)."""
    if "n_snapshots" not in inputs.averaged.columns:
        return []
    lines = []
    for method in methods:
        found = averaged_method(method)
        n = found.nominal_count if found is not None else None
        if n is None:
            continue
        rows = inputs.averaged[(inputs.averaged["method"] == method) & inputs.averaged["n_snapshots"].notna()]
        if k is not None:
            rows = rows[rows["k"] == k]
        rows = rows.drop_duplicates(["draw_seed", "k"])
        short = rows[rows["n_snapshots"].astype(int) < n]
        if short.empty:
            continue
        parts = []
        for kk, group in short.groupby("k"):
            counts = group["n_snapshots"].astype(int)
            held = str(counts.min()) if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
            parts.append(f"k={kk} ({held} snapshots in {len(group)} of {len(inputs.draws)} draws)")
        lines.append(f"{label(method)} averages fewer than {n} snapshots where the first k runs hold fewer: {', '.join(parts)}")
    return lines


def hyperparameter_table(inputs: AnalysisInputs, task: str, by: str) -> Table:
    """Tables 3/4: per learning rate or batch size, mean and std over runs of each variant's mean target score."""
    if by not in ("learning_rate", "batch_size"):
        raise ValueError(f"hyperparameter table by {by!r}: use learning_rate or batch_size")
    scores = _Scores(inputs, task)
    runs = inputs.runs.drop_duplicates("run_key").set_index("run_key")
    rows, notes = [], []
    for run_key, run in runs.iterrows():
        row = {by: run[by]}
        for variant in VARIANTS:
            row[variant] = scores.run_score.get((run_key, variant), np.nan)
            if np.isnan(row[variant]):
                notes.append(f"{task} run {run_key}: {variant} lacks target results")
        rows.append(row)
    per_run = pd.DataFrame(rows, columns=[by, *VARIANTS])
    per_run[by] = per_run[by].astype(float if by == "learning_rate" else int)
    frame = _stats(per_run, by, {v: label(v) for v in VARIANTS})
    what = "learning rate" if by == "learning_rate" else "batch size"
    return Table(
        name=f"by-{by.replace('_', '-')}-{task}",
        title=f"{task}: mean target score of each run variant by {what} (over runs)",
        frame=frame,
        notes=(*inputs.incomplete, *notes),
    )


def per_language_table(inputs: AnalysisInputs, task: str, methods: Iterable[str], k: int | None = None) -> Table:
    """Per target set: mean and std over draws of each method's score at k runs (default: the largest k)."""
    scores = _Scores(inputs, task)
    methods = _methods(inputs, methods)
    if not inputs.draws:
        raise ValueError("no draws: a per-language table needs at least one draw of runs")
    max_k = max(len(runs) for runs in inputs.draws.values())
    k = max_k if k is None else k
    if not 1 <= k <= max_k:
        raise ValueError(f"k={k} is outside 1..{max_k}")
    frames, notes = [], []
    for draw_seed, run_keys in sorted(inputs.draws.items()):
        columns = {}
        for method in methods:
            if k > len(run_keys):
                values = pd.Series(np.nan, index=pd.MultiIndex.from_tuples(scores.cells), dtype=float)
            else:
                values = scores.method_cells(method, draw_seed, run_keys[:k])
            missing = values[values.isna()].index
            if len(missing):
                cells = ", ".join("/".join(cell[:2]) for cell in missing[:3])
                notes.append(
                    f"{task} {label(method)} k={k} draw seed {draw_seed}: no value for {cells}"
                    + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                )
            columns[method] = values.to_numpy()
        frame = pd.DataFrame(columns)
        frame["dataset"] = [c[0] for c in scores.cells]
        frame["language"] = [c[1] for c in scores.cells]
        frames.append(frame)
    per_draw = pd.concat(frames, ignore_index=True)
    frame = _stats(per_draw, ["dataset", "language"], {m: label(m) for m in methods})
    return Table(
        name=f"per-language-{task}-k{k}",
        title=f"{task}: target score per evaluation set at k={k} (over {len(inputs.draws)} draws)",
        frame=frame,
        notes=(*inputs.incomplete, *notes),
        info=(*inputs.info, *soup_shortfalls(inputs, methods, k)),
    )
