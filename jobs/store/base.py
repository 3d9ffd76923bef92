"""The store interface, its errors, the retry policy and the helpers both stores share."""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import threading
import time
from typing import BinaryIO, Callable, Iterator, Protocol, TypeVar

from jobs.errors import DiskFull, MalformedFile, PermanentError, TemporaryError, is_disk_full

log = logging.getLogger("jobs")
T = TypeVar("T")

RETRY_ENV = "XLT_STORE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
_FIRST_DELAY = 0.25  # seconds; doubles per attempt, capped, then drawn uniformly below that (full jitter)
_MAX_DELAY = 10.0
# local OSErrors a retry cannot fix soon: reported at once (still exit 75, the job may land elsewhere)
_NO_RETRY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL}


class StoreError(TemporaryError):
    """The store could not be reached or answered with a server error."""

    retryable = True


class StoreDiskFull(DiskFull, StoreError):
    """The local store's disk is full (ENOSPC/EDQUOT): not retried within the job."""

    retryable = False


class StoreConfigError(PermanentError):
    """A malformed URI, a missing bucket, refused credentials: fix the settings, then retry."""


class NotFound(PermanentError):
    """The key does not exist."""


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def create_bytes(self, key: str, data: bytes) -> bool: ...
    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None: ...
    def create_file(self, key: str, path: str | os.PathLike, move: bool = False) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: str | os.PathLike) -> None: ...
    def open_read(self, key: str) -> BinaryIO: ...
    def open_range(self, key: str, start: int, stop: int) -> BinaryIO: ...  # bytes [start, stop)
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def list_sizes(self, prefix: str = "") -> dict[str, int]: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> "ObjectStore": ...


def join_uri(base: str, *parts: str) -> str:
    """Append '/'-separated parts to a store URI."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


_budget_override = threading.local()


class retry_budget:
    """Within this context, store calls of this thread retry for at most `seconds` (0: never)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.saved = getattr(_budget_override, "seconds", None)
        _budget_override.seconds = self.seconds
        return self

    def __exit__(self, *exc):
        _budget_override.seconds = self.saved
        return False


def retry_seconds() -> float:
    """The retry budget of one store call, from $XLT_STORE_RETRY_SECONDS (default 60 s)."""
    override = getattr(_budget_override, "seconds", None)
    if override is not None:
        return override
    raw = os.environ.get(RETRY_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise StoreConfigError(f"{RETRY_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def with_retries(what: str, fn: Callable[[], T], budget: float | None = None) -> T:
    """Call `fn`; retry a retryable StoreError with exponential backoff and full jitter until the
    budget (seconds) is spent, then raise the last error, saying how long it tried."""
    budget = retry_seconds() if budget is None else budget
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except StoreError as e:
            if not getattr(e, "retryable", True):
                raise
            attempt += 1
            elapsed = time.monotonic() - start
            left = budget - elapsed
            if left <= 0:
                if attempt == 1:
                    raise
                raise type(e)(f"{e} (gave up after {attempt} attempts in {elapsed:.1f} s; {RETRY_ENV}={budget:g})") from None
            delay = min(left, random.uniform(0, min(_MAX_DELAY, _FIRST_DELAY * 2 ** attempt)))
            log.warning("store %s failed (%s); retry %d in %.2f s", what, e, attempt, delay)
            time.sleep(delay)


def _local_error(action: str, path, e: OSError) -> StoreError:
    if is_disk_full(e):
        return StoreDiskFull(f"cannot {action} {path}: No space left on device (the store's disk is full: free space, then retry)")
    err = StoreError(f"cannot {action} {path}: {e.strerror or e}")
    if e.errno in _NO_RETRY_ERRNOS:
        err.retryable = False
    return err


def decode_json(data: bytes, where: str, constants: bool = True):
    """Parse UTF-8 JSON bytes, or raise MalformedFile naming `where` (a key or a path) in one
    line. `constants=False` also refuses NaN, Infinity and numbers too large for a float."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedFile(f"{where}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None

    def refuse(token):
        raise ValueError(f"{token} is not a finite number")

    def parse_float(token):
        value = float(token)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"{token} is too large for a float")
        return value

    try:
        if constants:
            return json.loads(text)
        return json.loads(text, parse_constant=refuse, parse_float=parse_float)
    except json.JSONDecodeError as e:
        hint = "; truncated?" if "\n" not in text[e.pos:].rstrip() else ""  # the error is on the last line
        raise MalformedFile(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}{hint})") from None
    except ValueError as e:
        raise MalformedFile(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise MalformedFile(f"{where}: not valid JSON (nested too deeply)") from None


def read_json(store: "ObjectStore", key: str, what: str = "") -> dict:
    """The JSON object at `key`; a malformed one (or not an object) is a MalformedFile naming
    the key, in one line."""
    where = f"{what + ' ' if what else ''}{key}"
    value = decode_json(store.get_bytes(key), where)
    if not isinstance(value, dict):
        raise MalformedFile(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _check_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(p in ("", ".", "..") for p in key.split("/")):
        raise StoreConfigError(f"invalid store key {key!r}")
    return key


class ReadCounter:
    """Counts bytes read through a store (for I/O tests and benchmarks). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_by_key: dict[str, int] = {}
        self.reads_by_key: dict[str, int] = {}

    def add(self, key: str, n: int, new_read: bool) -> None:
        with self._lock:
            self.bytes_by_key[key] = self.bytes_by_key.get(key, 0) + n
            if new_read:
                self.reads_by_key[key] = self.reads_by_key.get(key, 0) + 1




def iter_chunks(f: BinaryIO, size: int = 8 << 20) -> Iterator[bytes]:
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk
