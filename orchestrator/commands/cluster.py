"""Kubernetes commands: `render` (Jobs as YAML for kubectl), `logs` (pod or stored log), `cancel`.

    orchestrator render sweep --image-prefix ghcr.io/acme | kubectl apply -f -
    orchestrator logs train-nli-7da9abaa-9601fc
    orchestrator cancel --stage train --propagation Foreground
"""
from __future__ import annotations

import click

from jobs import layout
from jobs.store import NotFound

from orchestrator import k8s_render, plan
from orchestrator.context import Experiment, experiment_options

RENDER_STAGES = ("sweep", "head", "train", "evaluate", "evaluate-averages", "average")


def _head(exp: Experiment):
    from orchestrator.commands.stages import _head as stage_head

    return stage_head(exp)


def plan_stage(exp: Experiment, stage: str) -> list[plan.JobRequest]:
    """The JobRequests a stage command would run now (what is complete in the store is left out)."""
    cfg, store, uri = exp.config, exp.store, exp.uri
    if stage in ("sweep", "head"):
        head = plan.committed_head(cfg, store, uri) if cfg.head.enabled else None
        if cfg.head.enabled and head is None:
            return [plan.head_request(cfg, uri)]
        if stage == "head":
            return []
        return plan.train_requests(cfg, store, uri, head)
    if stage == "train":
        return plan.train_requests(cfg, store, uri, _head(exp))
    runs = plan.finished_runs(cfg, store, uri, _head(exp))
    if not runs:
        raise click.ClickException(f"no finished runs for the {stage} stage: run `orchestrator sweep` first")
    if stage == "average":
        return plan.average_requests(cfg, uri, runs, plan.make_draws(cfg, runs))
    if stage == "evaluate-averages":
        refs = plan.recorded_average_refs(store, runs)  # what the average stage recorded, not the current flags
        return plan.evaluate_requests(cfg, store, uri, refs)
    refs = [ref for r in runs for ref in plan.snapshot_refs(store, r.run_key)]
    return plan.evaluate_requests(cfg, store, uri, refs)


@click.command()
@click.argument("stage", type=click.Choice(RENDER_STAGES))
@experiment_options
def render(exp: Experiment, stage: str, parallelism: int, backend: str) -> None:
    """Print the stage's Jobs as YAML for `kubectl apply -f -` (what is complete in the store is left out)."""
    from orchestrator.backends.k8s import backend_for

    b = backend_for(exp, parallelism, show_progress=False)
    jobs = b.render(plan_stage(exp, stage))
    if not jobs:
        click.echo(f"# {stage}: nothing to do (all done)", err=True)
        return
    click.echo(k8s_render.to_yaml(jobs), nl=False)


@click.command()
@click.argument("name")
@experiment_options
@click.option("--stored", is_flag=True, help="Read the copy in the store even if the pod still exists.")
@click.option("--tail", type=click.IntRange(1), default=None, help="Only the last N lines.")
def logs(exp: Experiment, name: str, parallelism: int, backend: str, stored: bool, tail: int | None) -> None:
    """Show a Job's log: from its pod while the pod exists, else the copy in the store (logs/NAME.log)."""
    from orchestrator.backends.k8s import backend_for

    text = None
    if not stored:
        try:
            text = backend_for(exp, parallelism, show_progress=False).read_pod_log(name, tail_lines=tail)
        except click.ClickException as e:
            click.echo(f"(cluster not available: {e.message}; reading the stored copy)", err=True)
    if text is None:
        try:
            text = exp.store.get_bytes(layout.log_key(name)).decode("utf-8", errors="replace")
        except NotFound:
            raise click.ClickException(
                f"no log for {name}: no pod left and no {layout.log_key(name)} in {exp.uri} "
                "(the job uploads it when it ends; `kubectl get jobs -l xlt.io/experiment=...` lists the names)"
            ) from None
        if tail:
            text = "\n".join(text.splitlines()[-tail:]) + "\n"
    click.echo(text, nl=not text.endswith("\n"))


@click.command()
@experiment_options
@click.option("--stage", type=click.Choice(k8s_render.STAGES), default=None, help="Only this stage's Jobs.")
@click.option("--propagation", type=click.Choice(["Background", "Foreground"]), default="Background", show_default=True,
              help="Background: delete the Job now, its pods after; Foreground: the Job goes once its pods are gone.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cancel(exp: Experiment, parallelism: int, backend: str, stage: str | None, propagation: str, yes: bool) -> None:
    """Delete the experiment's Jobs (and their pods). What is in the store stays; re-running resumes."""
    from orchestrator.backends.k8s import backend_for

    b = backend_for(exp, parallelism, show_progress=False)
    names = [j["metadata"]["name"] for j in b.list_jobs(stage)]
    if not names:
        click.echo(f"no Jobs of experiment {exp.name} in namespace {b.namespace}")
        return
    if not yes:
        click.confirm(f"delete {len(names)} Job(s) of {exp.name} in {b.namespace}?", abort=True, err=True)
    deleted = [n for n in names if b.delete_job(n, propagation)]
    for n in deleted:
        click.echo(f"deleted Job {n}")
    click.echo(f"{len(deleted)} Job(s) deleted ({propagation} propagation)", err=True)
