"""A local folder as an object store (file://): atomic writes by rename, create-if-absent by hard link."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from jobs.errors import DiskFull, is_disk_full
from jobs.store.base import NotFound, ReadCounter, _check_key, _local_error, join_uri, with_retries

log = logging.getLogger("jobs")
T = TypeVar("T")


class LocalStore:
    """A folder on local disk; writes go to a temp file in the same folder, then os.replace."""

    def __init__(self, root: str | os.PathLike, counter: ReadCounter | None = None, _prefix: str = ""):
        self.root = Path(root).resolve()
        self.prefix = _prefix.strip("/")
        self.counter = counter
        self.uri = join_uri(f"file://{self.root}", self.prefix)

    def _path(self, key: str) -> Path:
        key = _check_key(key)
        return self.root / self.prefix / key if self.prefix else self.root / key

    def child(self, prefix: str) -> "LocalStore":
        return LocalStore(self.root, self.counter, join_uri(self.prefix, prefix).strip("/"))

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with_retries("write", lambda: self._atomic_write(path, lambda f: f.write(data)))

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if nothing is there: a hard link of a finished temp file
        (atomic and exclusive). True if this call created it, False if the key existed."""
        path = self._path(key)

        def create() -> bool:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return self._exclusive_write(path, lambda f: f.write(data))
            except OSError as e:
                raise _local_error("write", path, e) from e

        return with_retries("create", create)

    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None:
        """Copy a local file in; with `move`, rename it in when it is on the same file system
        (atomic and free: a 1 GB averaged model is not copied a second time)."""
        target = self._path(key)
        if move:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                return
            except OSError:
                pass  # another file system: copy below

        def copy(f):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 16 << 20)

        with_retries("write", lambda: self._atomic_write(target, copy))

    def create_file(self, key: str, path: str | os.PathLike, move: bool = False) -> bool:
        """`put_file`, but only where nothing is at `key` yet (a hard link: atomic and exclusive).
        True if this call created it, False if the key existed (then `path` is left as it was)."""
        target = self._path(key)

        def create() -> bool:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if move:
                    try:
                        os.link(path, target)
                    except FileExistsError:
                        return False
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                            raise  # else: another file system, or no hard links here: copy below
                    else:
                        os.unlink(path)
                        return True
                def copy(f):
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, f, 16 << 20)

                return self._exclusive_write(target, copy)
            except OSError as e:
                raise _local_error("write", target, e) from e

        return with_retries("create", create)

    @staticmethod
    def _exclusive_write(path: Path, write) -> bool:
        """Write a temp file beside `path`, then hard-link it in only if nothing is there (atomic
        and exclusive). True if this call created `path`, False if it existed."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _atomic_write(self, path: Path, write) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise _local_error("write", path, e) from e

    def _existing(self, key: str, action: str, fn: Callable[[Path], T]) -> T:
        """`fn(path)` on the key's file, retried: NotFound if there is none, StoreError (or a
        permanent error) for the other OSErrors."""
        path = self._path(key)

        def attempt() -> T:
            try:
                return fn(path)
            except FileNotFoundError:
                raise NotFound(f"{self.uri}/{key} does not exist") from None
            except OSError as e:
                raise _local_error(action, path, e) from e

        return with_retries(action, attempt)

    def get_bytes(self, key: str) -> bytes:
        data = self._existing(key, "read", Path.read_bytes)
        if self.counter:
            self.counter.add(key, len(data), True)
        return data

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        def copy() -> None:
            with self.open_read(key) as src:
                try:
                    with open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst, 16 << 20)
                except OSError as e:
                    if is_disk_full(e):
                        raise DiskFull(f"cannot write {path}: No space left on device") from None
                    raise

        with_retries("read", copy)

    def local_path(self, key: str) -> Path | None:
        """The file behind a key (for zero-copy memory mapping), or None if missing."""
        path = self._path(key)
        return path if path.is_file() else None

    def open_read(self, key: str) -> BinaryIO:
        f = self._existing(key, "read", lambda path: open(path, "rb"))
        if self.counter:
            self.counter.add(key, os.fstat(f.fileno()).st_size, True)
        return f

    def open_range(self, key: str, start: int, stop: int) -> BinaryIO:
        """Bytes [start, stop) of an object, as a file positioned at `start` that ends at `stop`."""
        f = self._existing(key, "read", lambda path: open(path, "rb"))
        f.seek(start)
        if self.counter:
            self.counter.add(key, max(0, stop - start), start == 0)
        return _Limited(f, stop - start)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._existing(key, "stat", lambda path: path.stat().st_size)

    def _base(self) -> Path:
        return self.root / self.prefix if self.prefix else self.root

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under `prefix` (unfinished `.part` writes left out)."""
        base = self._base()
        start = base / prefix.strip("/") if prefix.strip("/") else base
        if not start.exists():
            return {}
        sizes = {}
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue  # an unfinished atomic write
                p = Path(dirpath, name)
                try:
                    sizes[p.relative_to(base).as_posix()] = p.stat().st_size
                except FileNotFoundError:
                    pass  # deleted while listing
        return dict(sorted(sizes.items()))

    def list_keys(self, prefix: str = "") -> list[str]:
        return list(self.list_sizes(prefix))

    def part_files(self, prefix: str = "") -> list[Path]:
        """Unfinished atomic writes (`.NAME.XXXX.part`) under `prefix`: left by a killed writer."""
        base = self._base()
        start = base / prefix.strip("/") if prefix.strip("/") else base
        return sorted(Path(d, n) for d, _, files in os.walk(start) for n in files if n.startswith(".") and n.endswith(".part"))

    def delete(self, key: str) -> None:
        path = self._path(key)

        def unlink() -> None:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise _local_error("delete", path, e) from e

        with_retries("delete", unlink)


class _Limited:
    """A file read up to a byte limit (the body of a ranged read)."""

    def __init__(self, f: BinaryIO, limit: int):
        self._f, self._left = f, max(0, limit)

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n) if n else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
