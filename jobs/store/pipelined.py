"""Download many objects into local files part by part, so readers can start before they land.

The averaging pass walks all its inputs at the same offset (tensor-major), so the download is
part-major: part p of every file is requested before part p+1 of any, by a pool of threads
making ranged GETs (one connection each). Each file is preallocated at its full size under
`<path>.part`; `wait(i, end)` blocks until the first `end` bytes of file i have landed (a
contiguous watermark per file), so a reader that memory-maps the file reads only bytes that
are there. A hasher thread follows each file's watermark and hashes its bytes in order while
they are still in the page cache; `finish()` waits for the last part and the last hash and
renames each file to its final name. Nothing is trusted by this module: the caller compares
the sha256s it returns against the manifests before using anything computed from the files.

A part that fails mid-stream is fetched again from its start (the store's retry budget per
part); the first error that survives its retries stops the download and is raised by every
`wait` and by `finish`.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from jobs.errors import DiskFull, is_disk_full
from jobs.store.base import StoreError, with_retries

log = logging.getLogger("jobs")

PART_BYTES = 32 << 20  # one ranged GET: large enough that request overhead is small, small enough that the pass starts early
WORKERS = 8  # concurrent GETs (each thread blocks on its socket with the GIL released)
READ_BYTES = 1 << 20  # bytes per read from a response body before it is written out
HASH_BYTES = 8 << 20


@dataclass
class Target:
    key: str
    path: Path  # the final local path; bytes land in `<path>.part` until `finish()`
    size: int


class _Cancelled(Exception):
    pass


class PipelinedDownload:
    """`start()` it, `wait(i, end)` for bytes of file i, `finish()` for the sha256s (or `close()`)."""

    def __init__(self, store, targets: Sequence[Target], part_bytes: int | None = None, workers: int | None = None,
                 hash_files: bool = True):
        self.store = store
        self.hash_files = hash_files  # False: bytes only, `finish()` returns no hashes (to time the transfer alone)
        self.targets = list(targets)
        self.part_bytes = max(1, part_bytes or PART_BYTES)
        self.workers = max(1, workers or WORKERS)
        self._lock = threading.Condition()
        self._parts = [max(1, -(-t.size // self.part_bytes)) for t in self.targets]
        self._done: list[set[int]] = [set() for _ in self.targets]  # parts landed, beyond the watermark
        self._next_part = [0] * len(self.targets)  # the first part not yet landed (watermark = its offset)
        self._hashed = [0] * len(self.targets)
        self._sha: list[str | None] = [None] * len(self.targets)
        self._error: BaseException | None = None
        self._queue = [(p, i) for i in range(len(self.targets)) for p in range(self._parts[i])]
        heapq.heapify(self._queue)  # part-major: (part, file)
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "PipelinedDownload":
        for t in self.targets:
            part = self._part_path(t)
            part.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            if t.size:
                try:  # blocks reserved once (ext4 then writes the parts without re-allocating)
                    os.posix_fallocate(fd, 0, t.size)
                except OSError:
                    os.ftruncate(fd, t.size)
        for n in range(min(self.workers, len(self._queue))):
            th = threading.Thread(target=self._worker, name=f"download-{n}", daemon=True)
            th.start()
            self._threads.append(th)
        if self.hash_files:
            hasher = threading.Thread(target=self._hasher, name="download-hash", daemon=True)
            hasher.start()
            self._threads.append(hasher)
        return self

    def part_path(self, index: int) -> Path:
        """The local file of target `index` while it downloads (its final name after `finish`)."""
        return self._part_path(self.targets[index])

    @staticmethod
    def _part_path(t: Target) -> Path:
        return t.path.with_name(t.path.name + ".part")

    def watermark(self, index: int) -> int:
        with self._lock:
            return self._watermark(index)

    def _watermark(self, index: int) -> int:
        return min(self.targets[index].size, self._next_part[index] * self.part_bytes)

    def wait(self, index: int, end: int) -> int:
        """Block until bytes [0, end) of file `index` have landed (raising the download's error
        if it fails first); returns how many bytes from the start have landed."""
        end = min(end, self.targets[index].size)
        with self._lock:
            while self._error is None and self._watermark(index) < end:
                self._lock.wait()
            if self._error is not None:
                raise self._error
            return self._watermark(index)

    def finish(self) -> list[str | None]:
        """Wait for every byte and hash; rename the files to their final names; the sha256s
        (None each without `hash_files`)."""
        try:
            with self._lock:
                while self._error is None and (None in self._sha if self.hash_files else
                                               any(self._watermark(i) < t.size for i, t in enumerate(self.targets))):
                    self._lock.wait()
                if self._error is not None:
                    raise self._error
            for th in self._threads:
                th.join()
        finally:
            self._close_fds()
        for t in self.targets:
            os.replace(self._part_path(t), t.path)
        return list(self._sha)

    def close(self) -> None:
        """Stop (after an error, or when the caller gives up); partial files are removed."""
        self._fail(_Cancelled())
        for th in self._threads:
            th.join()
        self._close_fds()
        for t in self.targets:
            self._part_path(t).unlink(missing_ok=True)

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            self._queue.clear()
            self._lock.notify_all()

    # --- threads ---------------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queue or self._error is not None:
                        return
                    part, index = heapq.heappop(self._queue)
                t = self.targets[index]
                start = part * self.part_bytes
                stop = min(t.size, start + self.part_bytes)
                if stop > start:
                    with_retries("download", lambda: self._fetch(index, start, stop))
                with self._lock:
                    self._done[index].add(part)
                    while self._next_part[index] in self._done[index]:
                        self._done[index].discard(self._next_part[index])
                        self._next_part[index] += 1
                    self._lock.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self._fail(e)

    def _fetch(self, index: int, start: int, stop: int) -> None:
        t, fd = self.targets[index], self._fds[index]
        body = self.store.open_range(t.key, start, stop)
        offset = start
        try:
            while offset < stop:
                if self._error is not None:
                    raise _Cancelled()
                try:
                    chunk = body.read(min(READ_BYTES, stop - offset))
                except Exception as e:  # a connection dropped mid-body: this part again, from its start
                    raise StoreError(f"reading {t.key} bytes {start}-{stop} failed: {e}") from None
                if not chunk:
                    break
                view = memoryview(chunk)
                try:
                    while view:
                        n = os.pwrite(fd, view, offset)
                        offset += n
                        view = view[n:]
                except OSError as e:  # the local side: the job's scratch disk
                    if is_disk_full(e):
                        raise DiskFull(f"cannot write {self._part_path(t)}: No space left on device (free space on the job's scratch disk)") from None
                    raise
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
        if offset != stop:
            raise StoreError(f"reading {t.key} bytes {start}-{stop}: the server sent {offset - start} bytes; retrying")

    def _hasher(self) -> None:
        """Hash every file in order behind its watermark (one thread: 1+ GB/s, above any download)."""
        try:
            hashes = [hashlib.sha256() for _ in self.targets]
            maps: list[mmap.mmap | None] = [None] * len(self.targets)
            pending = set(range(len(self.targets)))
            try:
                while pending:
                    with self._lock:
                        while self._error is None and not any(self._hashed[i] < self._watermark(i) or self.targets[i].size == 0 for i in pending):
                            self._lock.wait()
                        if self._error is not None:
                            return
                        ready = [(i, self._hashed[i], self._watermark(i)) for i in sorted(pending)]
                    for i, begin, end in ready:
                        if end > begin:
                            if maps[i] is None:
                                maps[i] = mmap.mmap(self._fds[i], self.targets[i].size, access=mmap.ACCESS_READ)
                            view = memoryview(maps[i])
                            try:
                                for a in range(begin, end, HASH_BYTES):
                                    hashes[i].update(view[a : min(end, a + HASH_BYTES)])
                            finally:
                                view.release()
                        with self._lock:
                            self._hashed[i] = end
                            if end >= self.targets[i].size:
                                self._sha[i] = hashes[i].hexdigest()
                                pending.discard(i)
                                self._lock.notify_all()
            finally:
                for m in maps:
                    if m is not None:
                        m.close()
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
