"""Kubernetes commands: `render` (Jobs as YAML for kubectl), `logs` (pod or stored log), `cancel`.

    orchestrator render sweep --image-prefix ghcr.io/acme | kubectl apply -f -
    orchestrator logs train-nli-7da9abaa-9601fc
    orchestrator cancel --stage train --propagation Foreground
"""
from __future__ import annotations

import click

from jobs import layout
from jobs.errors import SpecError
from jobs.store import NotFound

from orchestrator import k8s_render
from orchestrator.backends.base import BackendError
from orchestrator.context import Experiment, experiment_options
from orchestrator.running import cluster_backend
from orchestrator.stage_plans import STAGES, plan_stage


@click.command()
@click.argument("stage", type=click.Choice(STAGES))
@experiment_options
def render(exp: Experiment, stage: str, parallelism: int, backend: str) -> None:
    """Print the stage's Jobs as YAML for `kubectl apply -f -` (what is complete in the store is left out)."""
    b = cluster_backend(exp, parallelism)
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
    text = None
    if not stored:
        try:
            text = cluster_backend(exp, parallelism).read_pod_log(name, tail_lines=tail)
        except (BackendError, SpecError) as e:  # no cluster, or no usable cluster settings
            click.echo(f"(cluster not available: {e}; reading the stored copy)", err=True)
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
    b = cluster_backend(exp, parallelism)
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
