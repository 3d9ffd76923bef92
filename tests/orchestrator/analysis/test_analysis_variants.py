"""Per-run variants and selection scores built from hand-made project results (orchestrator/analysis/variants.py)."""

from __future__ import annotations

import math

import pytest

from jobs.draws import Draw
from orchestrator.analysis.inputs import IncompleteResultsError
from orchestrator.analysis.tables import cumulative_table
from orchestrator.analysis.variants import build_inputs

DE, FR = ("xnli", "de", "acc"), ("xnli", "fr", "acc")
EN_TEST = ("xnli", "en", "acc")
AMERICAS = ("americasnli", "quy", "acc")


def one_run(rows):
    builder = rows()
    # written out of step order on purpose: "last" is the highest step, not the last row
    builder.snapshot("a", 300, 0.85, {DE: (0.64, 0.63), FR: (0.72, 0.73), EN_TEST: 0.9, AMERICAS: 0.4})
    builder.snapshot("a", 100, 0.80, {DE: (0.60, 0.61), FR: (0.70, 0.71), EN_TEST: 0.9, AMERICAS: 0.4})
    builder.snapshot("a", 200, 0.85, {DE: (0.65, 0.66), FR: (0.69, 0.68), EN_TEST: 0.9, AMERICAS: 0.4})
    builder.run_average("a", 0.90, {DE: (0.7, 0.70), FR: (0.7, 0.75), EN_TEST: 0.9, AMERICAS: 0.4})
    return builder


def scores_of(inputs, variant):
    frame = inputs.variant_scores[inputs.variant_scores["variant"] == variant]
    return {(d, lang): round(v, 6) for d, lang, v in zip(frame["dataset"], frame["language"], frame["value"])}


def selection_of(inputs, variant):
    frame = inputs.selection.set_index(["run_key", "variant"])["selection_score"]
    return round(float(frame[("a", variant)]), 6)


def test_variants_of_one_run(rows):
    inputs = build_inputs(one_run(rows).frame(), [Draw(0, 1, ("a",))])
    assert inputs.incomplete == ()
    # last: the highest step (300)
    assert scores_of(inputs, "last") == {("xnli", "de"): 0.63, ("xnli", "fr"): 0.73}
    assert selection_of(inputs, "last") == 0.85
    # src-dev: English dev ties at steps 200 and 300: the earliest step wins
    assert scores_of(inputs, "src-dev") == {("xnli", "de"): 0.66, ("xnli", "fr"): 0.68}
    assert selection_of(inputs, "src-dev") == 0.85
    # trg-dev: de is best at step 200 (val 0.65), fr at step 300 (val 0.72); reported on test
    assert scores_of(inputs, "trg-dev") == {("xnli", "de"): 0.66, ("xnli", "fr"): 0.73}
    assert selection_of(inputs, "trg-dev") == round((0.65 + 0.72) / 2, 6)
    # ca: the run-average model
    assert scores_of(inputs, "ca") == {("xnli", "de"): 0.70, ("xnli", "fr"): 0.75}
    assert selection_of(inputs, "ca") == 0.90
    # English is never a target; the NLI tables leave AmericasNLI out
    assert "en" not in set(inputs.variant_scores["language"])
    assert "americasnli" not in set(inputs.variant_scores["dataset"])
    assert dict(inputs.runs.iloc[0][["run_key", "batch_size", "seed"]]) == {"run_key": "a", "batch_size": 32, "seed": 1}


def test_trg_dev_ties_pick_the_earliest_step(rows):
    builder = rows()
    builder.snapshot("a", 100, 0.8, {DE: (0.7, 0.50)})
    builder.snapshot("a", 200, 0.8, {DE: (0.7, 0.60)})
    inputs = build_inputs(builder.frame(), [Draw(0, 1, ("a",))])
    assert scores_of(inputs, "trg-dev") == {("xnli", "de"): 0.5}


def test_cumulative_from_project_results(rows):
    builder = rows()
    for run, dev, score in (("a", 0.8, 0.6), ("b", 0.9, 0.7)):
        builder.snapshot(run, 100, dev, {DE: score, FR: score})
        builder.run_average(run, dev, {DE: score, FR: score})
    builder.draw_average("r-ca", 0, 1, 0.8, {DE: 0.6, FR: 0.6})
    builder.draw_average("r-ca", 0, 2, 0.9, {DE: 0.8, FR: 0.7})
    inputs = build_inputs(builder.frame(), [Draw(0, 2, ("a", "b"))])
    assert inputs.incomplete == ()
    frame = cumulative_table(inputs, "nli", ["s-dev", "r-ca"]).frame
    assert frame.loc[1, ("S-DEV", "mean")] == pytest.approx(0.6)
    assert frame.loc[2, ("S-DEV", "mean")] == pytest.approx(0.7)
    assert frame.loc[2, ("R-CA", "mean")] == pytest.approx(0.75)
    assert math.isnan(frame.loc[2, ("R-CA", "std")])  # one draw: no std


def incomplete_experiment(rows):
    builder = rows()
    builder.snapshot("a", 100, 0.8, {DE: 0.6, FR: 0.6})
    builder.snapshot("a", 200, 0.9, {DE: 0.7, FR: 0.7})
    builder.snapshot("b", 100, 0.7, {DE: 0.5, FR: 0.5})
    builder.snapshot("b", 200, 0.95, {DE: 0.9, FR: (0.9, None)})  # no fr test result
    for run in ("a", "b"):
        builder.run_average(run, 0.8, {DE: 0.6, FR: 0.6})
    for seed in (0, 1):
        builder.draw_average("r-ca", seed, 1, 0.8, {DE: 0.6, FR: 0.6})
    builder.draw_average("r-ca", 0, 2, 0.8, {DE: 0.7, FR: 0.7})  # draw 1, k=2 never evaluated
    draws = [Draw(0, 2, ("a", "b")), Draw(1, 2, ("b", "a"))]
    return builder.frame(), draws


def test_incomplete_results_are_reported(rows):
    frame, draws = incomplete_experiment(rows)
    inputs = build_inputs(frame, draws)
    notes = "\n".join(inputs.incomplete)
    assert "run b: last snapshot step 200 lacks test results for xnli/fr (acc)" in notes
    assert "run b: src-dev snapshot step 200 lacks test results for xnli/fr (acc)" in notes
    assert "run b: trg-dev is incomplete: xnli/fr (acc): snapshot step 200 lacks a test score" in notes
    assert "draw seed 1: r-ca k=2 averaged model has no results" in notes
    assert "run a" not in notes

    table = cumulative_table(inputs, "nli", ["s-last", "s-dev", "r-ca"])
    frame = table.frame
    # k=1: draw 0 selects a (complete), draw 1 selects b (incomplete): no mean over fewer draws
    assert math.isnan(frame.loc[1, ("S-DEV", "mean")])
    assert frame.loc[1, ("R-CA", "mean")] == pytest.approx(0.6)
    assert math.isnan(frame.loc[2, ("R-CA", "mean")])  # draw 1 lacks it; draw 0 alone is not the mean
    assert math.isnan(frame.loc[2, ("S-L", "mean")])
    assert any("S-DEV k=1 draw seed 1: selected run b lacks src-dev target results" in n for n in table.notes)


def test_strict_mode_raises(rows):
    frame, draws = incomplete_experiment(rows)
    with pytest.raises(IncompleteResultsError, match=r"incomplete results: run b: last .* \(and \d+ more\)") as error:
        build_inputs(frame, draws, strict=True)
    assert len(error.value.notes) == 4


def test_missing_english_dev_blocks_src_dev(rows):
    builder = rows()
    builder.snapshot("a", 100, None, {DE: 0.6})
    builder.snapshot("a", 200, 0.9, {DE: 0.7})
    builder.run_average("a", 0.9, {DE: 0.7})
    inputs = build_inputs(builder.frame(), [Draw(0, 1, ("a",))])
    assert any(
        "src-dev cannot be chosen: snapshot step(s) 100 lack an English dev score" in n for n in inputs.incomplete
    )
    assert "src-dev" not in set(inputs.variant_scores["variant"])
    assert math.isnan(inputs.selection.set_index("variant").loc["src-dev", "selection_score"])


def test_missing_runs_and_snapshots_are_reported(rows):
    builder = rows()
    builder.snapshot("a", 100, 0.8, {DE: 0.6})
    builder.snapshot("a", 200, 0.8, {DE: 0.6})
    builder.snapshot("b", 100, 0.8, {DE: 0.6})
    for run in ("a", "b"):
        builder.run_average(run, 0.8, {DE: 0.6})
    inputs = build_inputs(builder.frame(), [Draw(0, 3, ("a", "b", "c"))])
    notes = "\n".join(inputs.incomplete)
    assert "run c: drawn but has no results at all" in notes
    assert "run b: 1 snapshots evaluated, other runs have 2" in notes


def test_selection_metric_is_chosen_per_task(rows):
    builder = rows(task="tydiqa")
    for metric, value in (("f1", 0.7), ("exact_match", 0.5)):
        builder._model(
            "runs/a/step-100",
            None,
            {("tydiqa", "en", metric): (value, None)},
            kind="snapshot",
            run_key="a",
            step=100,
            learning_rate=1e-5,
            batch_size=32,
            seed=1,
        )
    builder.snapshot("a", 100, None, {("tydiqa", "fi", "f1"): 0.6, ("tydiqa", "fi", "exact_match"): 0.4})
    builder.run_average("a", 0.8, {("tydiqa", "fi", "f1"): 0.6, ("tydiqa", "fi", "exact_match"): 0.4})
    frame = builder.frame()
    frame = frame[~((frame["dataset"] == "xnli") & (frame["language"] == "en"))]  # TyDiQA's own English dev
    inputs = build_inputs(frame, [Draw(0, 1, ("a",))])
    selection = inputs.selection.set_index("variant")["selection_score"]
    assert selection["last"] == pytest.approx(0.7)  # f1, not exact match
    assert set(inputs.variant_scores["metric"]) == {"f1"}


def test_bad_frames_are_refused(rows):
    with pytest.raises(ValueError, match="lacks columns"):
        build_inputs(rows().frame().drop(columns=["ref"]), [])
    builder = rows()
    builder.snapshot("a", 100, None, {DE: 0.6})
    with pytest.raises(ValueError, match="no English dev score"):
        build_inputs(builder.frame(), [])
