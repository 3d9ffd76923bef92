"""Running a stage's jobs from a command: the backend it asked for, and the stage run (or, with
--dry-run, described) with the lines every command prints.

The backends know nothing of click: `ClickReporter` is how their progress reaches the terminal.
"""
from __future__ import annotations

import sys
from typing import ContextManager

import click

from orchestrator.backends.base import Backend, ProgressBar
from orchestrator.backends.k8s import K8sBackend
from orchestrator.backends.local import LocalBackend
from orchestrator.context import Experiment
from orchestrator.plan import JobRequest


class ClickReporter:
    """Backend progress on stderr: lines through click, a progress bar on a terminal."""

    def say(self, line: str) -> None:
        click.echo(line, err=True)

    def bar(self, title: str, total: int) -> ContextManager[ProgressBar]:
        return click.progressbar(length=total, label=title, file=sys.stderr, show_pos=True,
                                 item_show_func=lambda o: o.request.name if o else None)


def make_backend(exp: Experiment, parallelism: int, backend: str = "local") -> Backend:
    """The backend a command's --backend names, set up from the experiment's options."""
    if backend == "k8s":
        return K8sBackend.from_options(exp.cluster, exp.name, exp.config.base_model, parallelism, reporter=ClickReporter())
    return LocalBackend(parallelism=parallelism, retries=exp.retries, reporter=ClickReporter())


def cluster_backend(exp: Experiment, parallelism: int) -> K8sBackend:
    """The Kubernetes backend, quiet, whatever --backend says: for the commands that ask the
    cluster (render, logs, cancel, the Job states of status)."""
    return K8sBackend.from_options(exp.cluster, exp.name, exp.config.base_model, parallelism, show_progress=False)


def run_stage(backend: Backend, requests: list[JobRequest], title: str, dry_run: bool = False) -> None:
    """Run a stage's jobs; one line if any failed (re-running redoes only what is missing)."""
    if dry_run:
        for line in backend.dry_run(requests, title):
            click.echo(line)
        return
    if not requests:
        click.echo(f"{title}: nothing to do (all done)", err=True)
        return
    outcomes = backend.run(requests, title)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        names = ", ".join(o.request.name for o in failed[:5])
        raise click.ClickException(
            f"{title}: {len(failed)} of {len(outcomes)} job(s) failed ({names}); {backend.log_location}; "
            f"re-run the command to retry only what is missing"
        )
