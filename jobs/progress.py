"""Progress lines for logs nobody watches live: pods (`kubectl logs`), CI, the local backend's
`.logs/<job>.log`. On an interactive terminal the tqdm bar (jobs.common.progress) shows instead.

When the bar is off (stderr is not a terminal, or XLT_PROGRESS=0) a job logs one line every
XLT_PROGRESS_SECONDS (default 60; 0 turns the lines off), always in this one format:

    progress <kind> <unit> <done>/<total> (<percent>%)[ <field>]... ETA <eta>

    progress train step 1200/9000 (13%) loss 0.4123 38.2 ex/s ETA 1h02m
    progress evaluate models 3/10 (34%) sets 45/132 ETA 5m10s
    progress average averages 0/20 (41%) read 10.1 GB of 22.0 GB ETA 2m00s
    progress average averages 3/20 (57%) read 22.0 GB ETA 1m10s

`percent` and `ETA` are of the whole job (from the finest counter it has: sets of an evaluate
job; for an average job the bytes its pass has read, then the averages scored and committed,
the pass counting for 90% of the job, 50% with fused evaluation); ETA is `?` until something
is done. `loss` is the mean loss of
the steps since the previous line and `ex/s` their rate. `parse_line` reads the format back.

Each line is also written, from a background thread (the job never waits on it), to the store
at `logs/<job>.progress` (JSON: job, kind, time, line), so `orchestrator status` shows the last
line of every running job whatever the backend (`running_jobs`). The key is deleted when the
job ends; a job killed by a signal leaves its last line behind, which status shows with its age.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import time
from typing import Callable

from jobs import layout

log = logging.getLogger("jobs")

SECONDS_ENV = "XLT_PROGRESS_SECONDS"
DEFAULT_SECONDS = 60.0
LINE = re.compile(
    r"progress (?P<kind>\S+) (?P<unit>\S+) (?P<done>\d+)/(?P<total>\d+) \((?P<percent>\d+)%\)"
    r"(?P<fields>(?: \S+)*?) ETA (?P<eta>\S+)$"
)


def interval_seconds() -> float:
    """Seconds between lines, from $XLT_PROGRESS_SECONDS (0: no lines)."""
    raw = os.environ.get(SECONDS_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        value = -1.0
    if not (0 <= value < math.inf):
        log.warning("%s=%r: expected a number of seconds >= 0; using %g", SECONDS_ENV, raw, DEFAULT_SECONDS)
        return DEFAULT_SECONDS
    return value


def tqdm_bar_shown() -> bool:
    """The rule of jobs.common.progress: a bar on an interactive terminal or with XLT_PROGRESS=1."""
    return os.environ.get("XLT_PROGRESS", "1" if sys.stderr.isatty() else "0") == "1"


def job_name(kind: str, ident: object = None) -> str:
    """The job's name: $JOB_NAME (set by both backends), else kind-ident (kind-pid): its log and progress keys."""
    return os.environ.get("JOB_NAME") or f"{kind}-{ident or os.getpid()}"


def format_duration(seconds: float) -> str:
    """42s, 5m10s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_line(kind: str, unit: str, done: int, total: int, fraction: float, fields: tuple[str, ...], eta: float | None) -> str:
    percent = int(100 * min(max(fraction, 0.0), 1.0))
    extra = "".join(f" {f}" for f in fields)
    return f"progress {kind} {unit} {done}/{total} ({percent}%){extra} ETA {format_duration(eta) if eta is not None else '?'}"


def parse_line(text: str) -> dict | None:
    """The parts of a progress line (a log line's prefix allowed), or None if it is not one."""
    m = LINE.search(text.rstrip())
    if m is None:
        return None
    out = m.groupdict()
    out.update(done=int(out["done"]), total=int(out["total"]), percent=int(out["percent"]), fields=out["fields"].strip())
    out["line"] = text[m.start():].rstrip()
    return out


class Progress:
    """One job's progress lines: `update(done, *fields)` logs a line when one is due.

    `fields` are preformatted (`"loss 0.4123"`, `"38.2 ex/s"`); a caller whose fields cost
    something (a GPU loss read is a host sync) checks `due()` first. `fraction` (default
    done/total) drives the percent and ETA. Never raises over the store: progress is a
    convenience, and a store that is down must not slow or stop the job."""

    def __init__(self, kind: str, total: int, unit: str, *, store=None, job: str | None = None, initial: int = 0,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic, enabled: bool | None = None):
        self.kind, self.total, self.unit = kind, max(0, int(total)), unit
        self.interval = interval_seconds() if interval is None else interval
        self.enabled = (not tqdm_bar_shown() if enabled is None else enabled) and self.interval > 0
        self.clock = clock
        self.start = clock()
        self.next_at = self.start + self.interval
        self.initial_fraction = initial / self.total if self.total else 0.0
        self.last_line: str | None = None
        self._publisher = _Publisher(store, layout.progress_key(job or job_name(kind)), job or job_name(kind), kind) \
            if store is not None and self.enabled else None

    def due(self) -> bool:
        return self.enabled and self.clock() >= self.next_at

    def eta(self, fraction: float) -> float | None:
        """Seconds left at the rate of this process so far (a resumed job's earlier work left out)."""
        made = fraction - self.initial_fraction
        if made <= 0:
            return None
        return (self.clock() - self.start) * (1 - fraction) / made

    def update(self, done: int, *fields: str, fraction: float | None = None, force: bool = False) -> str | None:
        """Log (and publish) a line if one is due (or `force`); returns it, else None."""
        if not self.enabled or not (force or self.due()):
            return None
        fraction = (done / self.total if self.total else 1.0) if fraction is None else fraction
        line = format_line(self.kind, self.unit, done, self.total, fraction, fields, self.eta(fraction))
        self.next_at = self.clock() + self.interval
        self.last_line = line
        log.info("%s", line)
        if self._publisher is not None:
            self._publisher.publish(line)
        return line

    def close(self) -> None:
        """The job is over (however it ended): remove its progress key from the store."""
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


class _Publisher:
    """Writes the latest line to the store from one daemon thread; a line that arrives while the
    previous one is still being written replaces it (only the newest matters)."""

    def __init__(self, store, key: str, job: str, kind: str):
        self.store, self.key, self.job, self.kind = store, key, job, kind
        self._latest: str | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def publish(self, line: str) -> None:
        with self._wake:
            self._latest = line
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        from jobs.store import retry_budget

        while True:
            with self._wake:
                while self._latest is None and not self._closed:
                    self._wake.wait()
                line, self._latest = self._latest, None
                if line is None:  # closed, nothing left to write
                    return
            record = {"job": self.job, "kind": self.kind, "time": time.time(), "line": line}
            try:
                with retry_budget(2.0):
                    self.store.put_bytes(self.key, json.dumps(record).encode())
            except Exception as e:  # noqa: BLE001 - a convenience: never fail or stall the job over it
                log.debug("progress: cannot write %s: %s", self.key, e)

    def close(self) -> None:
        from jobs.store import retry_budget

        with self._wake:
            self._closed = True
            self._latest = None
            self._wake.notify()
            thread = self._thread
        if thread is None:
            return  # nothing was ever written
        thread.join(timeout=10)
        try:
            with retry_budget(2.0):
                self.store.delete(self.key)
        except Exception as e:  # noqa: BLE001
            log.debug("progress: cannot delete %s: %s", self.key, e)


def running_jobs(store, now: float | None = None) -> list[dict]:
    """The last progress line of every job that has one in the store (running, or killed by a
    signal): dicts with job, kind, age (seconds), line and its parsed parts; unreadable records
    are returned with `line` saying so (never an error: this is a display)."""
    now = time.time() if now is None else now
    out = []
    for key in sorted(k for k in store.list_keys("logs/") if k.endswith(layout.PROGRESS_SUFFIX)):
        job = key[len("logs/"): -len(layout.PROGRESS_SUFFIX)]
        try:
            record = json.loads(store.get_bytes(key))
            line, when = str(record["line"]), float(record["time"])
        except Exception:  # noqa: BLE001 - gone meanwhile, or not ours
            out.append({"job": job, "kind": None, "age": None, "line": f"(unreadable progress record {key})", "parsed": None})
            continue
        out.append({"job": job, "kind": record.get("kind"), "age": max(0.0, now - when), "line": line, "parsed": parse_line(line)})
    return out
