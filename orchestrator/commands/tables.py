"""The `tables` command: print (or write) the paper's tables and plots from an experiment's results or the paper's own.

Run: `orchestrator tables --paper-results ../shared/paper-results --task nli`
  or `orchestrator tables --bucket s3://B --experiment nli-xlm-roberta-large --task nli --out out/ --plot`
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from orchestrator.analysis.inputs import AnalysisInputs, IncompleteResultsError
from orchestrator.analysis.render import EXTENSIONS, FORMATS, render
from orchestrator.analysis.tables import (
    SELECTION_METHODS,
    Table,
    cumulative_table,
    hyperparameter_table,
    per_language_table,
)
from orchestrator.options import bucket_option, experiment_option, task_option

GAIN = ("r-ca", "s-dev")  # the per-language plot: gain of R-CA over S-DEV


def default_cache_dir(bucket: str, experiment: str) -> Path:
    """.cache/results/BUCKET-HASH/EXPERIMENT: one cache per bucket and experiment."""
    return Path(".cache") / "results" / hashlib.sha1(bucket.encode()).hexdigest()[:12] / experiment


def _load_bucket(
    bucket: str, experiment: str, task: str, strict: bool, cache_dir: Path, refresh: bool, runs_per_draw: int | None = None
) -> AnalysisInputs:
    from jobs.errors import JobError
    from jobs.store import open_store
    from orchestrator.analysis.collect import collect_draws, collect_results
    from orchestrator.analysis.variants import build_inputs

    try:
        store = open_store(bucket).child(experiment)
        results = collect_results(store, cache_dir=cache_dir, refresh=refresh)
        draws = collect_draws(store)
    except JobError as error:
        raise click.ClickException(str(error)) from None
    if results.empty:
        raise click.ClickException(f"no results under {bucket}/{experiment}/results/: run the evaluate stage first")
    return build_inputs(results, draws, task=task, strict=strict, runs_per_draw=runs_per_draw)


def build_tables(inputs: AnalysisInputs, task: str, methods: tuple[str, ...] | None) -> list[Table]:
    """The cumulative table, the two hyperparameter tables and the per-language table at the largest k."""
    tables = [cumulative_table(inputs, task, methods)]
    tables.append(hyperparameter_table(inputs, task, "learning_rate"))
    tables.append(hyperparameter_table(inputs, task, "batch_size"))
    present = set(inputs.averaged["method"].dropna())
    per_language = [m for m in ("s-dev", "s-tdev", "r-ca") if m in SELECTION_METHODS or m in present]
    tables.append(per_language_table(inputs, task, per_language))
    return tables


@click.command("tables")
@bucket_option
@experiment_option
@click.option(
    "--paper-results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read the paper's published results (runs/selection/cumulative.parquet) instead of a bucket.",
)
@task_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Table format.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each table (and plots) into this folder instead of printing.",
)
@click.option("--plot", is_flag=True, help="Also write PNG plots (with their CSV points); needs --out.")
@click.option("--strict", is_flag=True, help="Fail on any missing result instead of reporting it.")
@click.option(
    "--methods",
    default=None,
    help="Comma-separated methods for the cumulative table, e.g. s-dev,s-tdev,r-ca,soup-5,greedy. "
    "Default: the selection baselines and every averaging method found.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local cache of results files read from the bucket (default: .cache/results/BUCKET-HASH/EXPERIMENT).",
)
@click.option("--refresh-cache", is_flag=True, help="Re-read every results file, even those already cached.")
@click.option(
    "--runs-per-draw",
    type=click.IntRange(1),
    default=None,
    help="K: use the draw records of K runs (default: each seed's largest K). Of several records of one "
    "seed and K, the one drawn from the most finished runs is used (the newest when equal).",
)
@click.pass_context
def tables(ctx, bucket, experiment, paper_results, task, fmt, out, plot, strict, methods, cache_dir, refresh_cache,
           runs_per_draw):
    """Build the paper's tables (and plots) from an experiment's results or from the paper's published results."""
    bucket_given = ctx.get_parameter_source("bucket") == click.core.ParameterSource.COMMANDLINE
    if paper_results is not None and (bucket_given or experiment):
        raise click.UsageError("use either --paper-results or --bucket/--experiment, not both")
    if plot and out is None:
        raise click.UsageError("--plot writes files: give --out DIR")
    method_list = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None

    try:
        if paper_results is not None:
            from orchestrator.analysis.paper import load_paper_results

            if runs_per_draw is not None:
                raise click.UsageError("--runs-per-draw picks draw records of a bucket; the paper's results have K=10")

            inputs = load_paper_results(paper_results, task)
            if strict and inputs.incomplete:
                raise IncompleteResultsError(inputs.incomplete)
        else:
            if not experiment:
                raise click.UsageError("--experiment is required with --bucket (or use --paper-results DIR)")
            cache = cache_dir or default_cache_dir(bucket, experiment)
            inputs = _load_bucket(bucket, experiment, task, strict, cache, refresh_cache, runs_per_draw)
        built = build_tables(inputs, task, method_list)
        if strict:
            notes = [note for table in built for note in table.notes]
            if notes:
                raise IncompleteResultsError(notes)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None

    if out is None:
        click.echo("\n".join(render(table, fmt, notes=False) for table in built))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for table in built:
            path = out / f"{table.name}.{EXTENSIONS[fmt]}"
            path.write_text(render(table, fmt))
            click.echo(f"wrote {path}")
        if plot:
            from orchestrator.analysis.plots import plot_cumulative

            for path in (*plot_cumulative(built[0], out), *_gain_plot(built[-1], out)):
                click.echo(f"wrote {path}")
    notes = list(dict.fromkeys(note for table in built for note in table.notes))
    for note in notes:
        click.echo(f"incomplete: {note}", err=True)


def _gain_plot(table: Table, out: Path) -> tuple[Path, ...]:
    from orchestrator.analysis.plots import plot_gain
    from orchestrator.analysis.tables import label

    better, baseline = (label(m) for m in GAIN)
    if (better, "mean") not in table.frame.columns:
        return ()
    return plot_gain(table, out, better=better, baseline=baseline)
