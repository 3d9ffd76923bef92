"""The local backend with real job processes (`python -m jobs`): at most `parallelism` at once,
a temporary failure (exit 75) retried, a permanent one (exit 3) not, one log file per job, the
outcomes in request order and every failure reported in one line.

The jobs fail on purpose, fast: a spec of the wrong kind exits 3 while the spec is read; a train
job whose store path runs through a regular file exits 75 at its first write (ENOTDIR)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from orchestrator import plan
from orchestrator.backends.base import JobOutcome
from orchestrator.backends.local import LocalBackend
from orchestrator.config import load_config


class Lines:
    """A Reporter that keeps the lines a backend says (the CLI's prints them with click)."""

    def __init__(self):
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line.strip())

    def bar(self, title: str, total: int):
        raise AssertionError("show_progress=False: no bar")


def job_processes() -> int:
    """Live `python -m jobs` children of this process."""
    me, n = os.getpid(), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(ppid) == me and state != "Z" and argv[1:3] == [b"-m", b"jobs"]:
            n += 1
    return n


class MostAtOnce(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.most, self.done = 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.most = max(self.most, job_processes())
            time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts job processes through /proc")
def test_parallel_jobs_retry_a_temporary_failure_not_a_permanent_one_and_log_each(tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    cfg = load_config(None, {"task": "nli", "base_model": "tiny"})
    temporary = plan.head_request(cfg, f"file://{tmp_path / 'not-a-folder' / 'exp'}")
    permanent = [plan.JobRequest("evaluate", "evaluate", f"wrong-kind-{i}", temporary.spec) for i in range(3)]
    requests = [temporary, *permanent]
    lines = Lines()
    backend = LocalBackend(parallelism=2, log_dir=tmp_path / "logs", show_progress=False, retries=1, retry_delay=0.05, reporter=lines)
    watch = MostAtOnce()
    watch.start()
    try:
        outcomes = backend.run(requests, "mixed")
    finally:
        watch.done.set()
        watch.join()

    assert [o.request for o in outcomes] == requests and all(isinstance(o, JobOutcome) for o in outcomes)
    assert watch.most == 2  # the three quick jobs ran beside the slow one, one at a time
    slow, *quick = outcomes
    assert (slow.exit_code, slow.attempts, slow.ok, slow.state) == (75, 2, False, "Failed")
    log = (tmp_path / "logs" / f"{temporary.name}.log").read_text()
    first, marker, second = log.partition("--- exit 75: retry 1 of 1 in 0.05 s ---")
    assert marker and "Not a directory" in first and "Not a directory" in second
    assert "Not a directory" in slow.last_error() and " ERROR " in slow.last_error()
    for outcome in quick:
        assert (outcome.exit_code, outcome.attempts) == (3, 1)  # exit 3 is never retried
        assert outcome.log_path == tmp_path / "logs" / f"{outcome.request.name}.log"
        assert "retry" not in outcome.log_path.read_text() and "unknown field" in outcome.last_error()
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(f"{r.name}.log" for r in requests)
    assert sorted(lines.lines) == sorted(
        [f"{temporary.name} failed (exit 75 after 2 attempts): {slow.last_error()}"]
        + [f"{o.request.name} failed (exit 3): {o.last_error()}" for o in quick]
    )


def test_nothing_to_run_starts_nothing(tmp_path):
    backend = LocalBackend(log_dir=tmp_path / "logs", show_progress=False, reporter=Lines())
    assert backend.run([], "empty") == [] and not (tmp_path / "logs").exists()
    assert backend.dry_run([], "empty") == ["empty: 0 job(s) planned"]
    assert backend.log_location == f"logs in {tmp_path / 'logs'}/" and backend.estimates_cost is False
