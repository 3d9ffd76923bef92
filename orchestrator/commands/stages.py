"""The stage commands: sweep (head + grid runs), evaluate, average, and pipeline (all of them)."""
from __future__ import annotations

import click

from jobs import layout
from jobs.draws import DrawError

from orchestrator import plan, stage_plans
from orchestrator.backends.base import Backend
from orchestrator.context import Experiment, experiment_options
from orchestrator.running import make_backend, run_stage


def do_sweep(exp: Experiment, backend: Backend, dry_run: bool = False) -> None:
    head = None
    if exp.config.head.enabled:
        head = stage_plans.committed_head(exp)
        if head is None:
            run_stage(backend, [plan.head_request(exp.config, exp.uri)], "head", dry_run)
            head = stage_plans.committed_head(exp)
            if head is None and dry_run:
                click.echo("train: grid runs are planned once the head exists")
                if backend.estimates_cost:  # still show what the grid will cost
                    run_stage(backend, stage_plans.train_requests(exp, None), "train (estimate; names change once the head exists)", dry_run)
                return
    run_stage(backend, stage_plans.train_requests(exp, head), "train", dry_run)


def do_evaluate_snapshots(exp: Experiment, backend: Backend, dry_run: bool = False) -> None:
    runs = stage_plans.finished_runs(exp, "to evaluate")
    run_stage(backend, stage_plans.snapshot_evaluations(exp, runs), "evaluate snapshots", dry_run)


def do_average(exp: Experiment, backend: Backend, dry_run: bool = False) -> list:
    runs = stage_plans.finished_runs(exp, "to average")
    try:
        draws = plan.make_draws(exp.config, runs)
        for line in plan.soup_shortfalls(exp.store, draws, tuple(exp.config.draws.methods)):
            click.echo(f"note: {line}", err=True)
    except DrawError as e:
        raise click.ClickException(str(e)) from None
    if not dry_run:  # the record says what was drawn, from how many finished runs, and when
        draws = plan.record_draws(exp.store, draws, tuple(exp.config.draws.methods))
    run_stage(backend, plan.average_requests(exp.config, exp.uri, runs, draws), "average", dry_run)
    return plan.average_refs(exp.config, runs, draws)


def do_evaluate_averages(exp: Experiment, backend: Backend, dry_run: bool = False) -> None:
    """Evaluate what the average stage recorded (every draw record's averages and the runs' CA),
    not draws re-derived from the current flags."""
    runs = plan.finished_runs(exp.config, exp.store, exp.uri, stage_plans.required_head(exp))
    refs = plan.recorded_average_refs(exp.store, runs)
    if not refs:
        click.echo("evaluate averages: no stored averaged models (run `orchestrator average` first; fused averages are scored there)", err=True)
        return
    run_stage(backend, plan.evaluate_requests(exp.config, exp.store, exp.uri, refs), "evaluate averages", dry_run)


dry_run_option = click.option("--dry-run", is_flag=True, help="Print the jobs that would run; run nothing.")


@click.command()
@experiment_options
@dry_run_option
def sweep(exp: Experiment, parallelism: int, backend: str, dry_run: bool) -> None:
    """Train the head stage (when enabled and missing), then every grid run not yet complete."""
    do_sweep(exp, make_backend(exp, parallelism, backend), dry_run)


@click.command()
@experiment_options
@dry_run_option
@click.option("--ref", "refs", multiple=True, help="Evaluate only these model refs (repeatable).")
@click.option("--averages/--snapshots", "averages", default=False, help="Evaluate averaged models instead of snapshots.")
def evaluate(exp: Experiment, parallelism: int, backend: str, dry_run: bool, refs: tuple[str, ...], averages: bool) -> None:
    """Evaluate snapshots (or averaged models) on English dev and every target set."""
    b = make_backend(exp, parallelism, backend)
    if refs:
        missing = [r for r in refs if not exp.store.exists(layout.manifest_key(r))]
        if missing:
            raise click.ClickException(f"model ref {missing[0]} does not exist in {exp.uri}; `orchestrator status` lists refs")
        run_stage(b, plan.evaluate_requests(exp.config, exp.store, exp.uri, list(refs)), "evaluate", dry_run)
    elif averages:
        do_evaluate_averages(exp, b, dry_run)
    else:
        do_evaluate_snapshots(exp, b, dry_run)


@click.command()
@experiment_options
@dry_run_option
@click.option("--draws", type=click.IntRange(1), default=None, help="Number of draws (sample seeds 0..N-1).")
@click.option("--runs-per-draw", type=click.IntRange(1), default=None, help="K: runs per draw.")
@click.option("--methods", default=None, help="Comma-separated: r-last,r-dev,r-ca,soup-N,greedy.")
@click.option(
    "--output-dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default=None,
    help="Float dtype of the stored averages (bf16/fp16 halve storage; sums stay fp32/fp64). "
    "Averages already stored keep theirs.",
)
@click.option(
    "--fused-evaluate/--no-fused-evaluate",
    default=None,
    help="Score every average inside its average job (on a cluster: the evaluate image and a GPU).",
)
@click.option(
    "--keep-averages/--drop-averages",
    default=None,
    help="With --fused-evaluate: --drop-averages stores only the scores, not the averaged weights.",
)
@click.pass_context
def average(ctx, exp: Experiment, parallelism: int, backend: str, dry_run: bool, draws, runs_per_draw, methods, output_dtype,
            fused_evaluate, keep_averages) -> None:
    """Average snapshots: each run's CA, and every method for every k of every draw."""
    import dataclasses

    d = exp.config.draws
    d = dataclasses.replace(
        d,
        count=draws or d.count,
        runs_per_draw=runs_per_draw or d.runs_per_draw,
        methods=tuple(m.strip() for m in methods.split(",")) if methods else d.methods,
        output_dtype=output_dtype or d.output_dtype,
        fused_evaluate=d.fused_evaluate if fused_evaluate is None else fused_evaluate,
        keep_averages=d.keep_averages if keep_averages is None else keep_averages,
    )
    if not d.keep_averages and not d.fused_evaluate:
        raise click.UsageError("--drop-averages needs --fused-evaluate (or draws.fused_evaluate: true): else the averages would be lost unscored")
    d.validate("--methods")
    exp.config = dataclasses.replace(exp.config, draws=d)
    do_average(exp, make_backend(exp, parallelism, backend), dry_run)


@click.command()
@experiment_options
@click.pass_context
def pipeline(ctx, exp: Experiment, parallelism: int, backend: str) -> None:
    """Run every stage in order: head, sweep, evaluate, average, evaluate averages, tables."""
    b = make_backend(exp, parallelism, backend)
    do_sweep(exp, b)
    do_evaluate_snapshots(exp, b)
    do_average(exp, b)
    do_evaluate_averages(exp, b)
    from orchestrator.report import print_summary_table

    print_summary_table(exp)
