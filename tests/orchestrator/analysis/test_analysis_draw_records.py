"""Tables over several draw records of one seed (issue 12.6) and soups that averaged fewer than N
snapshots (12.7): one record per seed and K, its numbers only, and a line saying which."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from jobs import layout
from jobs.draws import Draw
from jobs.results import results_frame, to_parquet_bytes
from orchestrator.analysis.collect import collect_draws, collect_results
from orchestrator.analysis.render import render
from orchestrator.analysis.tables import cumulative_table, per_language_table
from orchestrator.analysis.variants import build_inputs

CELLS = [("xnli", "de", "acc"), ("xnli", "fr", "acc")]
RUNS = ("a", "b", "c")


def _rows(rows, draw: Draw, values: dict[str, list[float]], n_snapshots: dict | None = None) -> None:
    """Results of every method and k of `draw`, at its layout refs; values[method][k-1] in every cell."""
    for method, per_k in values.items():
        for k, value in enumerate(per_k, start=1):
            rows._model(
                layout.draw_average_ref(draw.seed, draw.hash, method, k), 0.8,
                {cell: value for cell in CELLS},
                kind="draw-average", method=method, k=k, draw_seed=draw.seed,
                n_snapshots=(n_snapshots or {}).get((method, k)),
            )


def _frame(rows_cls, draws_values):
    rows = rows_cls("nli")
    for key in RUNS:
        rows.snapshot(key, 100, 0.8, {cell: 0.5 for cell in CELLS})
        rows.run_average(key, 0.8, {cell: 0.5 for cell in CELLS})
    for draw, values, counts in draws_values:
        _rows(rows, draw, values, counts)
    return rows.frame()


OLD = Draw(0, 2, ("a", "b"), finished_runs=2, recorded_at="2025-01-01T00:00:00Z")
NEW = Draw(0, 2, ("b", "c"), finished_runs=3, recorded_at="2025-01-02T00:00:00Z")
K3 = Draw(0, 3, ("b", "c", "a"), finished_runs=3, recorded_at="2025-01-03T00:00:00Z")


def test_several_records_of_one_seed_never_mix_and_the_table_says_which_it_used(rows):
    frame = _frame(rows, [
        (OLD, {"r-ca": [0.10, 0.20], "soup-3": [0.11, 0.21]}, None),
        (NEW, {"r-ca": [0.30, 0.40], "soup-3": [0.31, 0.41]}, {("soup-3", 1): 1, ("soup-3", 2): 2}),
        (K3, {"r-ca": [0.50, 0.60, 0.70], "soup-3": [0.51, 0.61, 0.71]}, {("soup-3", 1): 1, ("soup-3", 2): 2, ("soup-3", 3): 3}),
    ])
    draws = [OLD, NEW, K3]

    k2 = cumulative_table(build_inputs(frame, draws, runs_per_draw=2), "nli", ["r-ca", "soup-3"])
    assert k2.frame[("R-CA", "mean")].round(4).tolist() == [0.30, 0.40]  # the record drawn from more runs
    assert k2.frame[("Soup-3", "mean")].round(4).tolist() == [0.31, 0.41]
    assert k2.info[0] == f"draw records used: {NEW.name} (K=2, drawn from 3 finished runs)"
    assert k2.info[1] == f"draw records not used: {OLD.describe()}, {K3.describe()}"
    assert k2.info[2] == "Soup-3 averages fewer than 3 snapshots where the first k runs hold fewer: " \
                         "k=1 (1 snapshots in 1 of 1 draws), k=2 (2 snapshots in 1 of 1 draws)"
    assert not [n for n in k2.notes if "draw" in n]  # nothing incomplete: the other records' results are not stray

    default = cumulative_table(build_inputs(frame, draws), "nli", ["r-ca"])  # the seed's largest K
    assert default.frame[("R-CA", "mean")].round(4).tolist() == [0.50, 0.60, 0.70]
    text = render(default, "text", notes=False)
    assert f"note: draw records used: {K3.name} (K=3, drawn from 3 finished runs)" in text
    per_language = per_language_table(build_inputs(frame, draws), "nli", ["soup-3"])
    assert per_language.frame[("Soup-3", "mean")].round(4).tolist() == [0.71, 0.71]
    assert not any("Soup-3 averages fewer" in line for line in per_language.info)  # 3 snapshots at k=3

    with pytest.raises(ValueError) as error:
        build_inputs(frame, draws, runs_per_draw=4)
    assert str(error.value) == "no draw record has K=4 runs; recorded: K=2 (seeds 0), K=3 (seeds 0)"


def test_stray_averages_of_an_unrecorded_draw_are_named(rows):
    stray = Draw(0, 2, ("c", "a"))
    frame = _frame(rows, [(NEW, {"r-ca": [0.3, 0.4]}, None), (stray, {"r-ca": [0.9, 0.9]}, None)])
    inputs = build_inputs(frame, [NEW])
    assert f"averaged results under averages/{stray.name}/ belong to no draw record (ignored)" in inputs.incomplete
    assert cumulative_table(inputs, "nli", ["r-ca"]).frame[("R-CA", "mean")].round(4).tolist() == [0.3, 0.4]


class DictStore:
    def __init__(self, objects):
        self.objects = objects

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]


def test_results_and_records_written_before_the_change_give_the_same_tables(rows):
    frame = _frame(rows, [(NEW, {"r-ca": [0.3, 0.4], "soup-3": [0.31, 0.41]}, None)])
    new = {f"results/{ref}.parquet": to_parquet_bytes(group) for ref, group in frame.groupby("ref")}
    new[NEW.key] = json.dumps(NEW.to_dict()).encode()
    old = {key: to_parquet_bytes(pd.read_parquet(io.BytesIO(data)).drop(columns=["n_snapshots", "label_scheme"]))
           for key, data in new.items() if key.startswith("results/")}
    old[NEW.key] = json.dumps({"seed": 0, "k": 2, "run_keys": ["b", "c"], "hash": NEW.hash, "methods": ["r-ca", "soup-3"]}).encode()
    tables = []
    for objects in (new, old):
        store = DictStore(objects)
        results = collect_results(store)
        assert results["n_snapshots"].isna().all() and list(results.columns) == list(results_frame([]).columns)
        tables.append(cumulative_table(build_inputs(results, collect_draws(store)), "nli", ["s-dev", "r-ca", "soup-3"]))
    pd.testing.assert_frame_equal(tables[0].frame, tables[1].frame)
    assert tables[0].notes == tables[1].notes
    assert tables[1].info == (f"draw records used: {NEW.name} (K=2, finished runs not recorded)",)
