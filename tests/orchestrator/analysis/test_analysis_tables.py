"""Table rules on tiny hand-made `AnalysisInputs`: selection ties, target filters, the other tables, rendering."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from orchestrator.analysis.inputs import AnalysisInputs
from orchestrator.analysis.render import render
from orchestrator.analysis.tables import (
    cumulative_table,
    default_methods,
    hyperparameter_table,
    label,
    per_language_table,
    target_filter,
)

CELLS = [("xnli", "de", "acc"), ("xnli", "fr", "acc")]


def make_inputs(scores, selection, draws, averaged=(), runs=None, cells=CELLS):
    """scores: {(run, variant): value on every cell, or {cell: value}}; selection: {(run, variant): score}."""
    variant_rows = []
    for (run, variant), value in scores.items():
        per_cell = value if isinstance(value, dict) else {cell: value for cell in cells}
        for (dataset, language, metric), v in per_cell.items():
            variant_rows.append(
                {
                    "run_key": run,
                    "variant": variant,
                    "dataset": dataset,
                    "language": language,
                    "metric": metric,
                    "value": v,
                }
            )
    averaged_rows = [
        {"method": m, "draw_seed": s, "k": k, "dataset": d, "language": lang, "metric": metric, "value": v}
        for m, s, k, v in averaged
        for d, lang, metric in cells
    ]
    run_keys = sorted({run for run, _ in scores})
    runs = (
        runs
        if runs is not None
        else pd.DataFrame({"run_key": run_keys, "learning_rate": 1e-5, "batch_size": 32, "seed": range(len(run_keys))})
    )
    return AnalysisInputs(
        variant_scores=pd.DataFrame(variant_rows),
        selection=pd.DataFrame(
            [(r, v, s) for (r, v), s in selection.items()], columns=["run_key", "variant", "selection_score"]
        ),
        averaged=pd.DataFrame(
            averaged_rows, columns=["method", "draw_seed", "k", "dataset", "language", "metric", "value"]
        ),
        draws=draws,
        runs=runs,
    )


def test_selection_ties_go_to_the_first_run_in_draw_order():
    scores = {("r1", "src-dev"): 0.60, ("r2", "src-dev"): 0.70, ("r3", "src-dev"): 0.90}
    selection = {("r1", "src-dev"): 0.8, ("r2", "src-dev"): 0.8, ("r3", "src-dev"): 0.5}
    for order, expected in ((("r1", "r2", "r3"), 0.60), (("r2", "r1", "r3"), 0.70)):
        inputs = make_inputs(scores, selection, {0: order})
        frame = cumulative_table(inputs, "nli", ["s-dev"]).frame
        assert frame.loc[1, ("S-DEV", "mean")] == pytest.approx(scores[(order[0], "src-dev")])
        assert frame.loc[2, ("S-DEV", "mean")] == pytest.approx(expected)
        assert frame.loc[3, ("S-DEV", "mean")] == pytest.approx(expected)  # r3 scores lower on English dev


def test_each_selection_baseline_uses_its_own_variant():
    variants = ("last", "src-dev", "ca", "trg-dev")
    # run b wins every selection; its variants score 0.1, 0.2, 0.3, 0.4
    scores = {("a", v): 0.9 for v in variants} | {("b", v): (i + 1) / 10 for i, v in enumerate(variants)}
    selection = {("a", v): 0.1 for v in variants} | {("b", v): 0.2 for v in variants}
    inputs = make_inputs(scores, selection, {0: ("a", "b"), 2: ("b", "a")})
    frame = cumulative_table(inputs, "nli", ["s-last", "s-dev", "s-ca", "s-tdev"]).frame
    for method, value in (("S-L", 0.1), ("S-DEV", 0.2), ("S-CA", 0.3), ("S-TDEV", 0.4)):
        assert frame.loc[2, (method, "mean")] == pytest.approx(value)
        assert frame.loc[2, (method, "std")] == pytest.approx(0.0)
        assert frame.loc[1, (method, "mean")] == pytest.approx((0.9 + value) / 2)  # draws start with a, then b


def test_averaged_methods_mean_over_targets_and_draws():
    scores = {("a", "src-dev"): 0.5}
    averaged = [("r-ca", 0, 1, 0.6), ("r-ca", 1, 1, 0.8), ("soup-5", 0, 1, 0.5), ("soup-5", 1, 1, 0.5)]
    inputs = make_inputs(scores, {("a", "src-dev"): 0.5}, {0: ("a",), 1: ("a",)}, averaged)
    assert default_methods(inputs) == ("s-last", "s-dev", "s-ca", "s-tdev", "r-ca", "soup-5")
    frame = cumulative_table(inputs, "nli", ["r-ca", "soup-5"]).frame
    assert frame.loc[1, ("R-CA", "mean")] == pytest.approx(0.7)
    assert frame.loc[1, ("R-CA", "std")] == pytest.approx(pd.Series([0.6, 0.8]).std(ddof=1))
    assert frame.loc[1, ("Soup-5", "mean")] == pytest.approx(0.5)


TARGET_ROWS = [
    ("xnli", "de", "acc"), ("indicxnli", "hi", "acc"), ("toynli", "xx", "acc"), ("americasnli", "quy", "acc"),
    ("anli", "quy", "acc"), ("xnli", "en", "acc"), ("wikiann", "sw", "f1"), ("masakhaner2", "zul", "f1"),
    ("wikiann", "en", "f1"), ("tydiqa", "fi", "f1"), ("tydiqa", "fi", "exact_match"), ("tydiqa", "en", "f1"),
]  # fmt: skip
NON_ENGLISH = {row for row in TARGET_ROWS if row[1] != "en"}


@pytest.mark.parametrize(
    "task, kept",
    [
        # NLI leaves AmericasNLI (anli in the paper's results) out and keeps any other set, e.g. a synthetic one
        ("nli", NON_ENGLISH - {("americasnli", "quy", "acc"), ("anli", "quy", "acc")}),
        ("ner", NON_ENGLISH),
        ("tydiqa", {row for row in NON_ENGLISH if row[2] == "f1"}),
    ],
)
def test_target_filters(task, kept):
    frame = pd.DataFrame(TARGET_ROWS, columns=["dataset", "language", "metric"])
    out = target_filter(task).apply(frame)
    assert set(map(tuple, out.itertuples(index=False))) == kept


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown task 'qa'; known tasks: nli, ner, tydiqa"):
        target_filter("qa")
    inputs = make_inputs({("a", "src-dev"): 0.5}, {("a", "src-dev"): 0.5}, {0: ("a",)})
    with pytest.raises(ValueError, match="unknown method 'best'"):
        cumulative_table(inputs, "nli", ["best"])
    with pytest.raises(ValueError, match="no averaged results for method\\(s\\) greedy"):
        cumulative_table(inputs, "nli", ["greedy"])
    assert label("soup-12") == "Soup-12" and label("greedy") == "Greedy" and label("s-tdev") == "S-TDEV"


def test_hyperparameter_tables():
    runs = pd.DataFrame(
        {
            "run_key": ["a", "b", "c"],
            "learning_rate": [1e-5, 1e-5, 2e-5],
            "batch_size": [16, 32, 32],
            "seed": [1, 2, 1],
        }
    )
    variants = ("last", "src-dev", "trg-dev", "ca")
    values = {"a": 0.5, "b": 0.7, "c": 0.9}
    scores = {(run, v): value for run, value in values.items() for v in variants}
    inputs = make_inputs(scores, {}, {0: ("a",)}, runs=runs)
    by_lr = hyperparameter_table(inputs, "nli", "learning_rate").frame
    assert list(by_lr.index) == [1e-5, 2e-5]
    assert by_lr.loc[1e-5, ("DEV", "mean")] == pytest.approx(0.6)
    assert by_lr.loc[1e-5, ("CA", "std")] == pytest.approx(pd.Series([0.5, 0.7]).std(ddof=1))
    assert math.isnan(by_lr.loc[2e-5, ("L", "std")])
    by_bs = hyperparameter_table(inputs, "nli", "batch_size").frame
    assert by_bs.loc[32, ("TDEV", "mean")] == pytest.approx(0.8)
    assert [c[0] for c in by_bs.columns[::2]] == ["L", "DEV", "TDEV", "CA"]


def test_per_language_table():
    scores = {
        ("a", "src-dev"): {CELLS[0]: 0.4, CELLS[1]: 0.6},
        ("b", "src-dev"): {CELLS[0]: 0.5, CELLS[1]: 0.9},
    }
    selection = {("a", "src-dev"): 0.9, ("b", "src-dev"): 0.1}
    averaged = [("r-ca", 0, 2, 0.7), ("r-ca", 1, 2, 0.8)]
    inputs = make_inputs(scores, selection, {0: ("a", "b"), 1: ("b", "a")}, averaged)
    table = per_language_table(inputs, "nli", ["s-dev", "r-ca"], k=2)
    assert table.name == "per-language-nli-k2"
    assert table.frame.loc[("xnli", "fr"), ("S-DEV", "mean")] == pytest.approx(0.6)
    assert table.frame.loc[("xnli", "de"), ("R-CA", "mean")] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="k=3 is outside 1..2"):
        per_language_table(inputs, "nli", ["s-dev"], k=3)


def test_render_formats():
    averaged = [("r-ca", 0, 1, 0.61234), ("r-ca", 1, 1, 0.65)]
    scores = {("a", "src-dev"): 0.5}
    inputs = make_inputs(scores, {("a", "src-dev"): 0.5}, {0: ("a",), 1: ("a",)}, averaged)
    table = cumulative_table(inputs, "nli", ["s-dev", "r-ca"])
    text = render(table, "text")
    assert "S-DEV" in text and "63.1" in text and "50.0" in text
    assert render(table, "csv").splitlines() == [
        "k,S-DEV mean,S-DEV std,R-CA mean,R-CA std",
        "1,50.0,0.0,63.1,2.7",
    ]
    markdown = render(table, "markdown")
    assert "| k | S-DEV mean | S-DEV std | R-CA mean | R-CA std |" in markdown
    assert "| 1 | 50.0 | 0.0 | 63.1 | 2.7 |" in markdown
    latex = render(table, "latex")
    assert r"\multicolumn{2}{c}{S-DEV}" in latex and r"1 & 50.0 & 0.0 & 63.1 & 2.7 \\" in latex
    with pytest.raises(ValueError, match="unknown format"):
        render(table, "html")


def test_missing_values_render_as_na_with_notes():
    inputs = make_inputs(
        {("a", "src-dev"): 0.5}, {("a", "src-dev"): 0.5}, {0: ("a",), 1: ("a",)}, [("r-ca", 0, 1, 0.6)]
    )
    table = cumulative_table(inputs, "nli", ["r-ca"])
    assert "1,n/a,n/a" in render(table, "csv")
    assert "incomplete: nli R-CA k=1 draw seed 1" in render(table, "text")
    assert "incomplete" not in render(table, "text", notes=False)
