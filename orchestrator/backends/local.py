"""The local backend: each job is `python -m jobs KIND --spec -` in a subprocess, a few at a time.

It is the same entry point a Kubernetes pod runs, so what works here works in a container.
Job logs go to `<log dir>/<job name>.log`; a failing job's last lines are shown. A job that ends
with a temporary failure (exit 75) or is killed by a signal (OOM, kill -9) is run again, up to
`retries` times (default: the Kubernetes Jobs' backoffLimit) after a growing pause, as the Job
controller would; exit 3 (permanent) is never retried.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from jobs.errors import EXIT_TEMPORARY
from jobs.spec import spec_to_json

from orchestrator.backends.base import JobOutcome, Reporter, StderrReporter, last_error_line, no_bar
from orchestrator.plan import JobRequest


def default_retries() -> int:
    from orchestrator.k8s_render import ClusterSettings

    return ClusterSettings().backoff_limit


def retryable(exit_code: int) -> bool:
    """What a Kubernetes Job retries under our podFailurePolicy: anything but exit 3 and 0; here
    the temporary failures (75) and deaths by a signal (negative codes: OOM kill, kill -9)."""
    return exit_code == EXIT_TEMPORARY or exit_code < 0


def log_error(log_path: Path) -> str:
    """Why a local job failed: the last ERROR line of its log, else its last line."""
    try:
        lines = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return last_error_line(lines) or (lines or ["(empty log)"])[-1]


class LocalBackend:
    estimates_cost = False  # nothing to price: the jobs run on this machine

    def __init__(self, parallelism: int = 2, log_dir: str | Path = ".logs", show_progress: bool = True,
                 retries: int | None = None, retry_delay: float = 10.0, reporter: Reporter | None = None):
        self.parallelism = max(1, parallelism)
        self.log_dir = Path(log_dir)
        self.show_progress = show_progress  # the progress bar; failures are always reported
        self.reporter = reporter or StderrReporter()
        self.retries = default_retries() if retries is None else max(0, retries)
        self.retry_delay = retry_delay  # seconds before the first retry, doubled for each next (as the Job controller's 10 s, 20 s, ...)

    @property
    def log_location(self) -> str:
        return f"logs in {self.log_dir}/"

    def dry_run(self, requests: list[JobRequest], title: str) -> list[str]:
        return [f"would run {r.kind:8s} {r.name}" for r in requests] + [f"{title}: {len(requests)} job(s) planned"]

    def _threads_per_job(self, n_jobs: int) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, min(self.parallelism, n_jobs)))

    def _run_one(self, request: JobRequest, threads: int) -> JobOutcome:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{request.name}.log"
        env = dict(os.environ, JOB_NAME=request.name, OMP_NUM_THREADS=str(threads), XLT_PROGRESS="0")
        spec_json = spec_to_json(request.spec)
        env["XLT_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        attempt = 0
        with open(log_path, "wb") as log:
            while True:
                attempt += 1
                proc = subprocess.run(
                    [sys.executable, "-m", "jobs", request.kind, "--spec", "-"],
                    input=spec_json.encode(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                if not retryable(proc.returncode) or attempt > self.retries:
                    break
                delay = self.retry_delay * 2 ** (attempt - 1)
                log.write(f"--- exit {proc.returncode}: retry {attempt} of {self.retries} in {delay:g} s ---\n".encode())
                log.flush()
                time.sleep(delay)
        code = proc.returncode
        return JobOutcome(request, code, time.perf_counter() - start, attempts=attempt, state="Complete" if code == 0 else "Failed",
                          job_name=request.name, log_path=log_path, error_line="" if code == 0 else log_error(log_path))

    def run(self, requests: list[JobRequest], title: str = "jobs") -> list[JobOutcome]:
        """Run all requests (at most `parallelism` at once); returns outcomes in request order."""
        if not requests:
            return []
        threads = self._threads_per_job(len(requests))
        outcomes: list[JobOutcome | None] = [None] * len(requests)
        with ThreadPoolExecutor(self.parallelism) as pool:
            futures = {pool.submit(self._run_one, r, threads): i for i, r in enumerate(requests)}
            with self.reporter.bar(f"{title} ({len(requests)} jobs)", len(requests)) if self.show_progress else no_bar() as bar:
                for future in as_completed(futures):
                    outcome = future.result()
                    outcomes[futures[future]] = outcome
                    bar.update(1, outcome)
                    if not outcome.ok:
                        tries = f" after {outcome.attempts} attempts" if outcome.attempts > 1 else ""
                        self.reporter.say(f"\n{outcome.request.name} failed (exit {outcome.exit_code}{tries}): {outcome.last_error()}")
        return [o for o in outcomes if o is not None]

