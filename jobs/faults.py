"""Fail points for fault tests: pause a real job process at a named point, so a test can kill
it there (kill -9), stop the store under it, or release several at once (races).

Off unless XLT_FAILPOINTS is set (one environment lookup per point, nothing else):

    XLT_FAILPOINTS="commit.before-manifest@2,evaluate.model"   XLT_FAILPOINT_DIR=/some/dir

`NAME@N` pauses the N-th time the process reaches NAME (default: the first). A paused process
writes `DIR/NAME.PID.paused` and waits until `DIR/NAME.go` exists (then goes on) or it is
killed. `NAME@N=kill` sends the process SIGKILL there instead; `NAME@N=fail` raises FailPointError there
(a TemporaryError: exit 75) and `NAME@N=fail-permanent` a PermanentError (exit 3), as a store
or data error at that point would. Points: commit.before-weights, commit.before-manifest, commit.after-manifest
(jobs/snapshots.py commit_model), evaluate.model (before each model of an evaluate job), and the
train job's (jobs/train.py). A point may fire in any thread (the train job commits snapshots
from a worker thread): SIGKILL kills the whole process; a pause holds only the thread that hit
it. Hits are counted per process, across threads.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from jobs.errors import PermanentError, TemporaryError

ENV = "XLT_FAILPOINTS"
DIR_ENV = "XLT_FAILPOINT_DIR"
_hits: dict[str, int] = {}
_lock = threading.Lock()  # the train job's loop and its commit worker may count at once


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    with _lock:
        _hits[name] = hit = _hits.get(name, 0) + 1
    for item in spec.split(","):
        item, _, action = item.strip().partition("=")
        point, _, nth = item.partition("@")
        if point == name and hit == int(nth or 1):
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if action == "fail":
                raise FailPointError(f"fail point {name}: injected temporary failure ({ENV})")
            if action == "fail-permanent":
                raise PermanentFailPointError(f"fail point {name}: injected permanent failure ({ENV})")
            _pause(name)


class FailPointError(TemporaryError):
    """An injected failure (XLT_FAILPOINTS NAME=fail): exit 75, as a store outage would be."""


class PermanentFailPointError(PermanentError):
    """An injected failure (XLT_FAILPOINTS NAME=fail-permanent): exit 3, as bad input would be."""


def _pause(name: str) -> None:
    directory = Path(os.environ.get(DIR_ENV) or ".")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.{os.getpid()}.paused").write_text(str(os.getpid()))
    go = directory / f"{name}.go"
    while not go.exists():
        time.sleep(0.02)
