"""What every backend is: it runs planned JobRequests and says what became of each.

A backend knows nothing of the CLI: it reports progress through a `Reporter` (the CLI passes one
that uses click; the default writes lines to stderr), and it fails with a `BackendError`, a
one-line message that names the problem and the fix (the CLI prints it as is).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Protocol, Sequence

from orchestrator.plan import JobRequest


class BackendError(Exception):
    """The backend cannot run the jobs (no cluster, no rights, a bad setting): one line, no traceback."""


@dataclass(frozen=True)
class JobOutcome:
    """What became of one job, whichever backend ran it."""

    request: JobRequest
    exit_code: int  # the job's exit code: 0 done, 3 permanent error, 75 temporary error; < 0 killed by a signal
    seconds: float
    attempts: int = 1  # runs of the job, retries included (the local backend; a Job counts its own)
    state: str = ""  # Complete, Failed, Deleted (a Kubernetes Job's state; the local backend says Complete or Failed)
    job_name: str = ""
    log_path: Path | None = None  # the local log file; Kubernetes logs are in the pods and the store
    reason: str = ""
    message: str = ""
    error_line: str = ""  # the last ERROR line of the job's log, where it could be read

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def last_error(self) -> str:
        if self.error_line:
            return self.error_line
        return f"{self.state} {self.reason}: {self.message}".strip(": ") or "(no message)"


def last_error_line(lines: Sequence[str]) -> str:
    """The line of a job log that says why it failed: the last ERROR line, else "" (no log lines)."""
    lines = [line for line in lines if line.strip()]
    errors = [line for line in lines if " ERROR " in line]
    return (errors or [""])[-1]


class ProgressBar(Protocol):
    def update(self, n: int, outcome: JobOutcome | None = None) -> None: ...


class Reporter(Protocol):
    """Where a backend's progress goes: the CLI's (click) or the default (stderr)."""

    def say(self, line: str) -> None: ...

    def bar(self, title: str, total: int) -> ContextManager[ProgressBar]: ...


class Backend(Protocol):
    """Runs JobRequests. Capabilities are attributes, not probed for."""

    log_location: str  # where the jobs' logs are, said in a failure message ("logs in .logs/")
    estimates_cost: bool  # a dry run prices the plan (GPU-hours, storage) from the cluster settings

    def run(self, requests: list[JobRequest], title: str = "jobs") -> list[JobOutcome]:
        """Run every request; outcomes in request order."""

    def dry_run(self, requests: list[JobRequest], title: str) -> list[str]:
        """What `run` would do, one line per job, then a summary line; runs nothing."""


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int, outcome: JobOutcome | None = None) -> None:
        pass


class StderrReporter:
    """Lines to stderr, no bar: for backends used outside the CLI."""

    def say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def bar(self, title: str, total: int) -> ContextManager[ProgressBar]:
        return _NoBar()


def no_bar() -> ContextManager[ProgressBar]:
    return _NoBar()
