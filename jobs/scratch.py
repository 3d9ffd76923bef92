"""Job scratch folders: made under the temp folder ($TMPDIR), removed when the job ends (success
or failure), and swept at the start of the next job if the process that made them died (kill -9,
OOM, node reboot with a kept volume).

A scratch name carries its owner's pid and process start time (`xlt-KIND-PID.START-XXXX`), so a
sweep removes exactly the folders and files whose owner is gone, never a live job's, even when a
restarted container reuses the pid. A full disk (ENOSPC/EDQUOT) inside a scratch folder becomes a
DiskFull error (exit 75) that names the folder.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from jobs.errors import DiskFull, is_disk_full

log = logging.getLogger("jobs")
_NAME = re.compile(r"^xlt-[a-z]+-(\d+)\.(\d+)-")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str) -> bool:
    if Path("/proc/self/stat").exists():
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tag() -> str:
    """PID.START of this process (START is 0 where /proc is missing)."""
    return f"{os.getpid()}.{_start_time(os.getpid()) or 0}"


def root() -> Path:
    return Path(tempfile.gettempdir())


def sweep(directory: str | os.PathLike | None = None) -> int:
    """Remove scratch folders and files of dead processes; returns how many were removed."""
    removed = 0
    base = Path(directory) if directory else root()
    try:
        entries = list(base.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = _NAME.match(entry.name)
        if not m or _alive(int(m.group(1)), m.group(2)):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another job swept it first
        except OSError as e:
            log.warning("cannot remove the leftover scratch %s: %s", entry, e.strerror or e)
    if removed:
        log.info("removed %d leftover scratch folder(s) of dead jobs under %s", removed, base)
    return removed


def new_dir(kind: str) -> Path:
    """A fresh scratch folder named for this process (the caller removes it)."""
    try:
        return Path(tempfile.mkdtemp(prefix=f"xlt-{kind}-{owner_tag()}-"))
    except OSError as e:
        if is_disk_full(e):
            raise DiskFull(f"no space left on device for scratch under {root()} ({e.strerror})") from None
        raise


def new_file(kind: str, suffix: str = "") -> Path:
    fd, path = tempfile.mkstemp(prefix=f"xlt-{kind}-{owner_tag()}-", suffix=suffix)
    os.close(fd)
    return Path(path)


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A scratch folder for one job, removed however the job ends; a full disk inside it is a
    DiskFull naming the folder."""
    path = new_dir(kind)
    try:
        yield path
    except OSError as e:
        if is_disk_full(e):
            where = e.filename or path
            raise DiskFull(f"no space left on device in the job's scratch {where} ({e.strerror}): free space or point TMPDIR elsewhere") from None
        raise
    finally:
        shutil.rmtree(path, ignore_errors=True)
