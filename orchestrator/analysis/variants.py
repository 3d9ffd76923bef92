"""Build `AnalysisInputs` from the project's own results (the jobs.results contract) and its recorded draws.

Per run: last = the snapshot with the highest step; src-dev = the snapshot with the best English
dev score (earliest step on ties); trg-dev = per target set, the snapshot with the best
validation score there, reported on test; ca = the run-average model. Missing results are
listed as notes (or raise in strict mode), never averaged over fewer numbers.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pandas as pd

from jobs.draws import Draw, choose_records
from jobs.results import COLUMNS, KIND_DRAW_AVERAGE, KIND_RUN_AVERAGE, KIND_SNAPSHOT, OPTIONAL_COLUMNS
from orchestrator.analysis.inputs import (
    AVERAGED_COLUMNS,
    RUN_COLUMNS,
    SELECTION_COLUMNS,
    SOURCE_LANGUAGE,
    VARIANT_SCORE_COLUMNS,
    AnalysisInputs,
    IncompleteResultsError,
)
from orchestrator.analysis.tables import TARGET_FILTERS, TargetFilter

# the English dev metric that selects (first one present wins)
SELECTION_METRICS: dict[str, tuple[str, ...]] = {
    "nli": ("accuracy", "acc"),
    "ner": ("f1",),
    "tydiqa": ("f1",),
}
CELL = ["dataset", "language", "metric"]


def build_inputs(
    results: pd.DataFrame,
    draws: Iterable[Draw],
    *,
    task: str | None = None,
    selection_metric: str | None = None,
    strict: bool = False,
    runs_per_draw: int | None = None,
) -> AnalysisInputs:
    """Turn one experiment's results frame (all models) plus its draw records into `AnalysisInputs`.

    `task` defaults to the results' task column; it picks the target sets (tables.TARGET_FILTERS)
    and the English dev metric. In strict mode any missing result raises IncompleteResultsError.
    Several records of one seed are fine: `jobs.draws.choose_records` keeps one per seed (of K =
    `runs_per_draw` if given, else the seed's largest K; then the most finished runs, the newest),
    only that record's averages are read, and `info` says which records were used.
    """
    missing = [c for c in COLUMNS if c not in results.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"results frame lacks columns {missing} (see jobs/results.py)")
    results = results.assign(**{c: pd.Series(pd.NA, index=results.index, dtype=COLUMNS[c]) for c in OPTIONAL_COLUMNS if c not in results})
    records = list(draws)
    draws, draw_info = choose_records(records, runs_per_draw)
    task = task or _single_task(results)
    targets = TARGET_FILTERS.get(task, TargetFilter())
    results = results.drop_duplicates(["ref", "kind", "run_key", "step", "method", "k", "draw_seed", "split", *CELL])
    selection_metric = selection_metric or _selection_metric(results, task)

    notes: list[str] = []
    dev = _english_dev(results, selection_metric)
    target_rows = targets.apply(results)
    test = target_rows[target_rows["split"] == "test"]
    cells = sorted(map(tuple, test[CELL].drop_duplicates().itertuples(index=False)))
    test_by_ref = _values_by_ref(test)
    validation_by_ref = _values_by_ref(target_rows[target_rows["split"] == "validation"])

    snapshot_refs: dict[str, dict[int, str]] = {}
    snapshots = results[(results["kind"] == KIND_SNAPSHOT) & results["run_key"].notna() & results["step"].notna()]
    for run_key, step, ref in snapshots[["run_key", "step", "ref"]].drop_duplicates().itertuples(index=False):
        snapshot_refs.setdefault(run_key, {})[int(step)] = ref
    run_averages = results[
        (results["kind"] == KIND_RUN_AVERAGE) & (results["method"] == "ca") & results["run_key"].notna()
    ]
    ca_refs = dict(run_averages[["run_key", "ref"]].drop_duplicates("run_key").itertuples(index=False))
    run_keys = sorted(set(snapshot_refs) | set(ca_refs))
    drawn = {key for draw in draws for key in draw.run_keys}
    for key in sorted(drawn - set(run_keys)):
        notes.append(f"run {key}: drawn but has no results at all")

    most_steps = max((len(steps) for steps in snapshot_refs.values()), default=0)
    scores, selection = [], []
    context = _RunContext(dev, test_by_ref, validation_by_ref, cells)
    for run_key in run_keys:
        n_steps = len(snapshot_refs.get(run_key, {}))
        if n_steps < most_steps:
            notes.append(f"run {run_key}: {n_steps} snapshots evaluated, other runs have {most_steps}")
        for variant, values, score, why in context.variants(snapshot_refs.get(run_key, {}), ca_refs.get(run_key)):
            if why:
                notes.append(f"run {run_key}: {variant} {why}")
            scores.extend((run_key, variant, *cell, value) for cell, value in values.items())
            selection.append({"run_key": run_key, "variant": variant, "selection_score": score})

    averaged, orphans = _of_draws(test[test["kind"] == KIND_DRAW_AVERAGE], draws, records)
    notes.extend(f"averaged results under averages/{name}/ belong to no draw record (ignored)" for name in orphans)
    notes.extend(_check_averaged(averaged, draws, cells))
    if strict and notes:
        raise IncompleteResultsError(notes)

    runs = (
        results[results["run_key"].notna()]
        .drop_duplicates("run_key")[list(RUN_COLUMNS)]
        .sort_values("run_key")
        .reset_index(drop=True)
    )
    variant_scores = pd.DataFrame(scores, columns=VARIANT_SCORE_COLUMNS)
    return AnalysisInputs(
        variant_scores=_plain(variant_scores[list(VARIANT_SCORE_COLUMNS)]),
        selection=_plain(pd.DataFrame(selection, columns=SELECTION_COLUMNS)),
        averaged=_plain(averaged[[*AVERAGED_COLUMNS, "n_snapshots"]]),
        draws={draw.seed: tuple(draw.run_keys) for draw in draws},
        runs=_plain(runs),
        incomplete=tuple(notes),
        info=tuple(draw_info),
    )


_DRAW_REF = re.compile(r"^averages/s(\d+)-([0-9a-f]+)/")


def _of_draws(averaged: pd.DataFrame, chosen: list[Draw], records: list[Draw]) -> tuple[pd.DataFrame, list[str]]:
    """The averaged rows of the chosen draw records, and the names of unrecorded draws found.

    A ref `averages/s<seed>-<hash>/...` is kept only if it names a chosen record (other records
    of a seed are not mixed in); refs of another shape are kept (matched by method, seed, k)."""
    names = {draw.name for draw in chosen}
    known = {draw.name for draw in records}
    orphans: set[str] = set()

    def keep(ref) -> bool:
        m = _DRAW_REF.match(str(ref))
        if m is None:
            return True
        name = f"s{int(m.group(1))}-{m.group(2)}"
        if name not in known:
            orphans.add(name)
        return name in names

    kept = averaged[[keep(ref) for ref in averaged["ref"]]] if len(averaged) else averaged
    return kept, sorted(orphans)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable contract dtypes to plain float/int/object, so NaN means missing everywhere."""
    out = frame.reset_index(drop=True).copy()
    for column in out.columns:
        if column in ("value", "selection_score", "learning_rate"):
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
        elif column in ("k", "draw_seed", "batch_size", "seed", "n_snapshots"):
            out[column] = out[column].astype(object).where(out[column].notna(), None)
            out[column] = [None if v is None else int(v) for v in out[column]]
        else:
            out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def _single_task(results: pd.DataFrame) -> str:
    tasks = sorted(pd.unique(results["task"].dropna()))
    if len(tasks) != 1:
        raise ValueError(f"results hold tasks {tasks}: pass the task to analyse")
    return str(tasks[0])


def _selection_metric(results: pd.DataFrame, task: str) -> str:
    english = results[(results["language"] == SOURCE_LANGUAGE) & (results["split"] == "validation")]
    metrics = sorted(pd.unique(english["metric"].dropna()))
    if len(metrics) == 1:
        return str(metrics[0])
    for metric in SELECTION_METRICS.get(task, ()):
        if metric in metrics:
            return metric
    if not metrics:
        raise ValueError("results hold no English dev score (language 'en', split 'validation'): nothing selects")
    raise ValueError(f"English dev results have metrics {metrics}: name the selection metric")


def _english_dev(results: pd.DataFrame, metric: str) -> dict[str, float]:
    """English dev score per model ref."""
    english = results[
        (results["language"] == SOURCE_LANGUAGE) & (results["split"] == "validation") & (results["metric"] == metric)
    ]
    per_ref = english.groupby("ref")["dataset"].nunique()
    if (per_ref > 1).any():
        ref = per_ref[per_ref > 1].index[0]
        datasets = sorted(english.loc[english["ref"] == ref, "dataset"])
        raise ValueError(f"model {ref} has English dev scores from several datasets {datasets}: which one selects?")
    english = english.drop_duplicates("ref")
    return dict(zip(english["ref"], english["value"].astype(float)))


def _values_by_ref(frame: pd.DataFrame) -> dict[str, dict[tuple, float]]:
    """model ref -> {(dataset, language, metric): value}."""
    out: dict[str, dict[tuple, float]] = {}
    for ref, dataset, language, metric, value in frame[["ref", *CELL, "value"]].itertuples(index=False):
        out.setdefault(ref, {}).setdefault((dataset, language, metric), float(value))
    return out


def _best(values: dict[int, float]) -> int:
    """Step of the highest value; the earliest step wins ties."""
    return max(sorted(values), key=lambda step: (values[step], -step))


def _describe(cells: list[tuple]) -> str:
    shown = ", ".join(f"{d}/{lang} ({m})" for d, lang, m in cells[:3])
    return shown + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")


class _RunContext:
    """The lookups that turn one run's snapshots and CA model into its four variants."""

    def __init__(self, dev: dict[str, float], test: dict, validation: dict, cells: list[tuple]):
        self.dev, self.test, self.validation, self.cells = dev, test, validation, cells

    def variants(self, steps: dict[int, str], ca_ref: str | None):
        """Yield (variant, {cell: test value}, selection score, why-incomplete or None)."""
        if not steps:
            for variant in ("last", "src-dev", "trg-dev"):
                yield variant, {}, np.nan, "has no snapshot results"
        else:
            last = max(steps)
            yield self._model("last", steps[last], f"snapshot step {last}")
            dev_by_step = {step: self.dev.get(ref, np.nan) for step, ref in steps.items()}
            lacking = sorted(step for step, score in dev_by_step.items() if np.isnan(score))
            if lacking:
                why = f"cannot be chosen: snapshot step(s) {', '.join(map(str, lacking))} lack an English dev score"
                yield "src-dev", {}, np.nan, why
            else:
                step = _best(dev_by_step)
                yield self._model("src-dev", steps[step], f"snapshot step {step}")
            yield self._trg_dev(steps)
        if ca_ref is None:
            yield "ca", {}, np.nan, "has no run-average (CA) results"
        else:
            yield self._model("ca", ca_ref, "the run-average model")

    def _model(self, variant: str, ref: str, what: str):
        values = {cell: value for cell, value in self.test.get(ref, {}).items() if cell in self.cells}
        score = self.dev.get(ref, np.nan)
        problems = []
        missing = [cell for cell in self.cells if cell not in values]
        if missing:
            problems.append(f"{what} lacks test results for {_describe(missing)}")
        if np.isnan(score):
            problems.append(f"{what} lacks an English dev score")
        return variant, values, score, "; ".join(problems) or None

    def _trg_dev(self, steps: dict[int, str]):
        """Per target set, the snapshot with the best validation score there; its test score."""
        values, best_scores, problems = {}, [], []
        for cell in self.cells:
            name = _describe([cell])
            by_step = {s: self.validation.get(ref, {}).get(cell) for s, ref in steps.items()}
            lacking = [s for s, v in by_step.items() if v is None]
            if lacking:
                problems.append(f"{name}: {len(lacking)} snapshot(s) lack a validation score")
                continue
            step = _best(by_step)
            value = self.test.get(steps[step], {}).get(cell)
            if value is None:
                problems.append(f"{name}: snapshot step {step} lacks a test score")
                continue
            values[cell] = value
            best_scores.append(by_step[step])
        if problems or not self.cells:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            why = "is incomplete: " + "; ".join(problems[:3]) + more if problems else "has no target sets"
            return "trg-dev", values, np.nan, why
        return "trg-dev", values, float(np.mean(best_scores)), None


def _check_averaged(averaged: pd.DataFrame, draws: list[Draw], cells: list[tuple]) -> list[str]:
    """Every (method, draw, k) averaged model present, with every target set."""
    notes = []
    methods = sorted(pd.unique(averaged["method"].dropna()))
    seeds = {draw.seed for draw in draws}
    for seed in sorted(set(int(s) for s in averaged["draw_seed"].dropna()) - seeds):
        notes.append(f"draw seed {seed}: averaged results exist but the draw is not recorded (ignored)")
    models: dict[tuple, set] = {}
    for method, seed, k, *cell in averaged[["method", "draw_seed", "k", *CELL]].itertuples(index=False):
        models.setdefault((method, int(seed), int(k)), set()).add(tuple(cell))
    for draw in draws:
        for method in methods:
            for k in range(1, draw.k + 1):
                present = models.get((method, draw.seed, k))
                if present is None:
                    notes.append(f"draw seed {draw.seed}: {method} k={k} averaged model has no results")
                    continue
                missing = [cell for cell in cells if cell not in present]
                if missing:
                    notes.append(f"draw seed {draw.seed}: {method} k={k} lacks test results for {_describe(missing)}")
    return notes
