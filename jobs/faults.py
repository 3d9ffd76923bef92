"""Fail points for fault tests: pause a real job process at a named point, so a test can kill
it there (kill -9), stop the store under it, or release several at once (races).

Off unless XLT_FAILPOINTS is set (one environment lookup per point, nothing else):

    XLT_FAILPOINTS="commit.before-manifest@2,evaluate.model"   XLT_FAILPOINT_DIR=/some/dir

`NAME@N` pauses the N-th time the process reaches NAME (default: the first). A paused process
writes `DIR/NAME.PID.paused` and waits until `DIR/NAME.go` exists (then goes on) or it is
killed. `NAME@N=kill` sends the process SIGKILL there instead. Points: commit.before-weights, commit.before-manifest, commit.after-manifest
(jobs/snapshots.py commit_model), evaluate.model (before each model of an evaluate job).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "XLT_FAILPOINTS"
DIR_ENV = "XLT_FAILPOINT_DIR"
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    for item in spec.split(","):
        item, _, action = item.strip().partition("=")
        point, _, nth = item.partition("@")
        if point == name and _hits[name] == int(nth or 1):
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            _pause(name)


def _pause(name: str) -> None:
    directory = Path(os.environ.get(DIR_ENV) or ".")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.{os.getpid()}.paused").write_text(str(os.getpid()))
    go = directory / f"{name}.go"
    while not go.exists():
        time.sleep(0.02)
