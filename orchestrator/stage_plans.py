"""What each stage would run now, for the stage commands and `render` alike: the experiment's
config and what its store holds, through orchestrator.plan (what is complete is left out).

A stage that needs an earlier one (the head, finished runs) stops with one line saying which
command to run first.
"""
from __future__ import annotations

import click

from jobs.draws import DrawError, RunInfo
from jobs.spec import HeadRef

from orchestrator import plan
from orchestrator.context import Experiment

STAGES = ("sweep", "head", "train", "evaluate", "evaluate-averages", "average")  # `render` takes any of them


def committed_head(exp: Experiment) -> HeadRef | None:
    """The committed head, or None (the head stage is off, or it has not run yet)."""
    return plan.committed_head(exp.config, exp.store, exp.uri) if exp.config.head.enabled else None


def required_head(exp: Experiment) -> HeadRef | None:
    """The head the grid runs freeze (None when the head stage is off); stops if it is not committed yet."""
    if not exp.config.head.enabled:
        return None
    head = committed_head(exp)
    if head is None:
        raise click.ClickException("the head stage has not run yet: run `orchestrator sweep` first")
    return head


def head_requests(exp: Experiment) -> list[plan.JobRequest]:
    """The head job while the head stage is on and its head is not committed, else nothing."""
    if exp.config.head.enabled and committed_head(exp) is None:
        return [plan.head_request(exp.config, exp.uri)]
    return []


def train_requests(exp: Experiment, head: HeadRef | None) -> list[plan.JobRequest]:
    return plan.train_requests(exp.config, exp.store, exp.uri, head)


def finished_runs(exp: Experiment, purpose: str) -> list[RunInfo]:
    """The finished grid runs; stops when there are none (`purpose`: "to evaluate", "for the X stage")."""
    runs = plan.finished_runs(exp.config, exp.store, exp.uri, required_head(exp))
    if not runs:
        raise click.ClickException(f"no finished runs {purpose}: run `orchestrator sweep` first")
    return runs


def snapshot_evaluations(exp: Experiment, runs: list[RunInfo]) -> list[plan.JobRequest]:
    """Evaluate jobs for every snapshot of the runs that has no results yet."""
    refs = [ref for r in runs for ref in plan.snapshot_refs(exp.store, r.run_key)]
    return plan.evaluate_requests(exp.config, exp.store, exp.uri, refs)


def average_evaluations(exp: Experiment, runs: list[RunInfo]) -> list[plan.JobRequest]:
    """Evaluate jobs for what the average stage recorded (every draw record's averages and the
    runs' CA), not for draws re-derived from the current flags."""
    refs = plan.recorded_average_refs(exp.store, runs)
    return plan.evaluate_requests(exp.config, exp.store, exp.uri, refs)


def plan_stage(exp: Experiment, stage: str) -> list[plan.JobRequest]:
    """The JobRequests a stage command would run now (`sweep`: the head while it is missing, then the grid)."""
    if stage in ("sweep", "head"):
        pending_head = head_requests(exp)
        if pending_head or stage == "head":
            return pending_head
        return train_requests(exp, committed_head(exp))
    if stage == "train":
        return train_requests(exp, required_head(exp))
    runs = finished_runs(exp, f"for the {stage} stage")
    if stage == "average":
        try:
            draws = plan.make_draws(exp.config, runs)
        except DrawError as e:
            raise click.ClickException(str(e)) from None
        return plan.average_requests(exp.config, exp.uri, runs, draws)
    if stage == "evaluate-averages":
        return average_evaluations(exp, runs)
    return snapshot_evaluations(exp, runs)
