"""The `tables` command through click's CliRunner: paper results, a file:// bucket, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.results import to_parquet_bytes
from orchestrator.commands.tables import tables

PAPER_RESULTS = Path(__file__).resolve().parents[3] / ".." / "shared" / "paper-results"
needs_paper = pytest.mark.skipif(not (PAPER_RESULTS / "runs.parquet").is_file(), reason=f"{PAPER_RESULTS} is absent")


def invoke(*args):
    return CliRunner().invoke(tables, list(args), catch_exceptions=False)


@needs_paper
def test_paper_results_csv():
    result = invoke(
        "--paper-results",
        str(PAPER_RESULTS),
        "--task",
        "nli",
        "--format",
        "csv",
        "--methods",
        "s-dev,s-tdev,r-ca,soup-5",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "k,S-DEV mean,S-DEV std,S-TDEV mean,S-TDEV std,R-CA mean,R-CA std,Soup-5 mean,Soup-5 std"
    assert lines[10] == "10,77.6,0.2,78.4,0.5,78.3,0.1,77.7,0.1"  # the paper's headline row
    assert "learning_rate,L mean" in result.output and "batch_size,L mean" in result.output
    assert "dataset,language,S-DEV mean" in result.output


@needs_paper
def test_paper_results_out_and_plot(tmp_path):
    result = invoke(
        "--paper-results",
        str(PAPER_RESULTS),
        "--task",
        "tydiqa",
        "--out",
        str(tmp_path),
        "--plot",
        "--format",
        "markdown",
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            "cumulative-tydiqa.md",
            "by-learning-rate-tydiqa.md",
            "by-batch-size-tydiqa.md",
            "per-language-tydiqa-k10.md",
            "plot-cumulative-tydiqa.png",
            "plot-cumulative-tydiqa.csv",
            "plot-gain-per-language-tydiqa-k10.png",
            "plot-gain-per-language-tydiqa-k10.csv",
        ]
    )
    assert (
        "| 10 | 72.0 | 1.1 | 71.7 | 0.7 | 74.2 | 0.5 | 73.9 | 0.3 |" in (tmp_path / "cumulative-tydiqa.md").read_text()
    )


def write_experiment(root: Path, frame, draws, experiment="toy"):
    for ref, group in frame.groupby("ref"):
        path = root / experiment / "results" / f"{ref}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_parquet_bytes(group))
    for draw in draws:
        path = root / experiment / "draws" / f"seed-{draw.seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(draw.to_dict()))


def test_bucket(experiment, tmp_path):
    frame, draws = experiment(n_draws=2, k=2)
    write_experiment(tmp_path / "store", frame, draws)
    args = (
        "--bucket",
        f"file://{tmp_path / 'store'}",
        "--experiment",
        "toy",
        "--task",
        "nli",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--format",
        "csv",
    )
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("k,S-L mean,S-L std,S-DEV mean")
    assert "R-CA mean" in result.output and "Soup-2 mean" in result.output
    assert any((tmp_path / "cache").rglob("*.parquet"))

    # drop one averaged model's results: reported on stderr, refused with --strict
    next((tmp_path / "store" / "toy" / "results" / "averages" / "r-ca" / "draw-1").glob("k-2.parquet")).unlink()
    cache_free = (*args[:6], "--cache-dir", str(tmp_path / "cache2"), "--format", "csv")
    result = CliRunner().invoke(tables, list(cache_free))
    assert result.exit_code == 0
    assert "incomplete: draw seed 1: r-ca k=2 averaged model has no results" in result.stderr
    strict = CliRunner().invoke(tables, [*cache_free, "--strict"])
    assert strict.exit_code == 1
    assert strict.output.startswith("Error: incomplete results: draw seed 1: r-ca k=2 averaged model has no results")
    assert len(strict.output.strip().splitlines()) == 1


def test_usage_errors(tmp_path):
    both = CliRunner().invoke(tables, ["--paper-results", str(tmp_path), "--experiment", "x"])
    assert both.exit_code == 2 and "either --paper-results or --bucket/--experiment" in both.output
    plot = CliRunner().invoke(tables, ["--paper-results", str(tmp_path), "--plot"])
    assert plot.exit_code == 2 and "--plot writes files: give --out DIR" in plot.output
    no_experiment = CliRunner().invoke(tables, ["--bucket", f"file://{tmp_path}"])
    assert no_experiment.exit_code == 2 and "--experiment is required" in no_experiment.output
    missing = CliRunner().invoke(tables, ["--paper-results", str(tmp_path)])
    assert missing.exit_code == 1 and "lacks runs.parquet" in missing.output
    empty = CliRunner().invoke(tables, ["--bucket", f"file://{tmp_path}", "--experiment", "none"])
    assert empty.exit_code == 1 and "no results under" in empty.output


@needs_paper
def test_unknown_method_is_one_line():
    result = CliRunner().invoke(tables, ["--paper-results", str(PAPER_RESULTS), "--methods", "s-dev,best"])
    assert result.exit_code == 1
    known = "s-last, s-dev, s-ca, s-tdev, r-last, r-dev, r-ca, greedy, soup-N"
    assert result.output.strip() == f"Error: unknown method 'best'; known methods: {known}"
