"""Committed models in the store: a safetensors file plus a JSON manifest written last.

`commit_model` uploads weights, then the manifest with the file's sha256 and size, so a reader
that finds the manifest finds a complete file. `WeightsCache` materialises committed weights as
local files and verifies them against their manifest.

Verification costs a sha256 pass over every byte (about 0.5-1.4 GB/s per core here, slower
than reading page-cached weights), so a file is hashed once per machine: the verified
(device, inode, size, mtime_ns, ctime_ns, sha256) is recorded in a small sidecar file under
`$XLT_VERIFIED_DIR` (default: the model cache's `verified/`), and a later job that finds the
file unchanged trusts the recorded hash. Any write to the file changes its ctime, which no
user tool can set back, so a modified file is hashed again. Many files are fetched and hashed
concurrently (hashlib releases the GIL).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from jobs import layout
from jobs.errors import PermanentError
from jobs.store import NotFound, ObjectStore

if TYPE_CHECKING:  # torch is imported where tensors are saved: the orchestrator CLI starts without it
    import torch


class SnapshotError(PermanentError):
    """A missing, uncommitted, truncated or corrupted model in the store."""


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """sha256 of a file, hashed from a memory map: no buffer copies, the GIL released per chunk."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return h.hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                for start in range(0, size, chunk):
                    h.update(view[start : start + chunk])
            finally:
                view.release()
    return h.hexdigest()


def save_state_dict(state: Mapping[str, "torch.Tensor"], path: str | os.PathLike, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def commit_model(
    store: ObjectStore,
    ref: str,
    weights_path: str | os.PathLike,
    manifest: dict,
    extra_files: Mapping[str, str] = {},
    sha256: str | None = None,
    move: bool = False,
) -> dict:
    """Upload `weights_path` (and extra files) under `ref`, then the manifest: the commit point.

    `sha256` may be given when the writer hashed the file while writing it (no second pass);
    `move` lets a local store rename the file in instead of copying it."""
    sha = sha256 or sha256_file(weights_path)
    size = os.path.getsize(weights_path)
    store.put_file(layout.weights_key(ref), weights_path, move=move)
    extra = {}
    for name, path in extra_files.items():
        store.put_file(f"{ref}/{name}", path)
        extra[name] = {"sha256": sha256_file(path), "size": os.path.getsize(path)}
    full = dict(manifest, ref=ref, file=layout.WEIGHTS, sha256=sha, size=size, extra_files=extra)
    store.put_bytes(layout.manifest_key(ref), json.dumps(full, indent=1, sort_keys=True).encode())
    return full


def is_committed(store: ObjectStore, ref: str) -> bool:
    return store.exists(layout.manifest_key(ref))


def read_manifest(store: ObjectStore, ref: str) -> dict:
    try:
        data = store.get_bytes(layout.manifest_key(ref))
    except NotFound:
        raise SnapshotError(
            f"model {ref} is missing or not committed (no {layout.MANIFEST} under {store.uri}/{ref})"
        ) from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise SnapshotError(f"manifest of {ref} is not valid JSON: {e.msg}") from None


def verified_dir() -> Path:
    env = os.environ.get("XLT_VERIFIED_DIR")
    if env:
        return Path(env)
    from jobs.models import cache_root

    return cache_root() / "verified"


class VerifiedFiles:
    """Sidecar records of files whose sha256 was computed on this machine (one small JSON each)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else verified_dir()

    @staticmethod
    def _identity(path: Path) -> dict:
        st = os.stat(path)
        return {"device": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}

    def _record_path(self, path: Path) -> Path:
        st = os.stat(path)  # one record per file, whatever path (or hard link) reaches it
        return self.directory / f"{st.st_dev}-{st.st_ino}.json"

    def known_sha(self, path: Path) -> str | None:
        """The recorded sha256 of `path` if the file is unchanged since it was hashed."""
        try:
            record = json.loads(self._record_path(path).read_text())
            sha = record.pop("sha256")
        except (OSError, ValueError, KeyError):
            return None
        return sha if record == self._identity(path) else None

    def remember(self, path: Path, sha: str) -> None:
        record = dict(self._identity(path), sha256=sha)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".rec-", suffix=".part")
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, self._record_path(path))
        except OSError:
            pass  # the record only saves time; never fail a job over it

    def sha256(self, path: Path) -> str:
        sha = self.known_sha(path)
        if sha is None:
            sha = sha256_file(path)
            self.remember(path, sha)
        return sha


class Verification:
    """Hashes still running in the background; `wait()` raises the first SnapshotError."""

    def __init__(self, futures: list[Future]):
        self._futures = futures

    def wait(self) -> None:
        for f in self._futures:
            f.result()


class WeightsCache:
    """Materialises committed weights as local files (verified against their manifest).

    On a local store the file is used in place; from S3 it is downloaded into `cache_dir`,
    several files at once. Every file materialised is counted once in the store's ReadCounter
    (a local file is read through its memory map, which the store cannot see).
    """

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: str | os.PathLike | None = None,
        workers: int = 4,
        verified: VerifiedFiles | None = None,
    ):
        self.store = store
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="xlt-weights-"))
        self.workers = workers
        self.verified = verified or VerifiedFiles()
        self._verified: dict[str, Path] = {}
        self._materialised: dict[str, Path] = {}

    @staticmethod
    def _expected(manifest: dict, name: str) -> tuple[str, int]:
        if name == layout.WEIGHTS:
            return manifest["sha256"], manifest["size"]
        entry = manifest.get("extra_files", {}).get(name)
        if entry is None:
            raise SnapshotError(f"model {manifest.get('ref')}: its manifest lists no file {name}")
        return entry["sha256"], entry["size"]

    def materialise(self, ref: str, manifest: dict, name: str = layout.WEIGHTS) -> Path:
        """A local file with the object's bytes, size-checked but not hashed."""
        key = f"{ref}/{name}"
        if key in self._materialised:
            return self._materialised[key]
        _, expected_size = self._expected(manifest, name)
        local = getattr(self.store, "local_path", lambda k: None)(key)
        if local is None:
            local = self.cache_dir / key
            local.parent.mkdir(parents=True, exist_ok=True)
            if not (local.exists() and local.stat().st_size == expected_size):
                try:
                    self.store.get_file(key, local)
                except NotFound:
                    raise SnapshotError(f"model {ref}: manifest exists but {name} is missing") from None
        else:
            if not os.path.exists(local):
                raise SnapshotError(f"model {ref}: manifest exists but {name} is missing")
            counter = getattr(self.store, "counter", None)
            if counter is not None:
                counter.add(key, local.stat().st_size, True)
        size = local.stat().st_size
        if size != expected_size:
            raise SnapshotError(f"model {ref}: {name} has {size} bytes, manifest says {expected_size} (truncated?)")
        self._materialised[key] = local
        return local

    def verify(self, ref: str, manifest: dict, local: Path, name: str = layout.WEIGHTS) -> Path:
        key = f"{ref}/{name}"
        if key in self._verified:
            return local
        expected_sha, _ = self._expected(manifest, name)
        if self.verified.sha256(local) != expected_sha:
            raise SnapshotError(f"model {ref}: {name} sha256 differs from its manifest (corrupted file)")
        self._verified[key] = local
        return local

    def path(self, ref: str, manifest: dict | None = None, name: str = layout.WEIGHTS) -> Path:
        """The verified local file of one committed model."""
        key = f"{ref}/{name}"
        if key in self._verified:
            return self._verified[key]
        manifest = manifest or read_manifest(self.store, ref)
        return self.verify(ref, manifest, self.materialise(ref, manifest, name), name)

    def fetch(self, items: Iterable[tuple[str, dict]], background: bool = False) -> tuple[dict[str, Path], Verification]:
        """Materialise many models concurrently; hash them concurrently too.

        Returns the local paths (sizes checked) and a Verification: with `background=False` it
        is already complete; with `background=True` the hashes run while the caller works,
        and the caller must `wait()` before trusting (committing) anything computed.
        Downloads hash each file right after it lands, while it is in the page cache."""
        manifests = dict(items)  # one entry per ref
        refs = list(manifests)
        if not refs:
            return {}, Verification([])
        local_path = getattr(self.store, "local_path", None)
        downloads = local_path is None or local_path(layout.weights_key(refs[0])) is None
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(refs))), thread_name_prefix="weights")
        try:
            if downloads:  # fetch and hash in the same worker: the bytes are still cached
                futures = {r: pool.submit(lambda r=r: self.verify(r, manifests[r], self.materialise(r, manifests[r]))) for r in refs}
                paths = {r: f.result() for r, f in futures.items()}
                return paths, Verification([])
            paths = {r: self.materialise(r, manifests[r]) for r in refs}
            hashes = [pool.submit(self.verify, r, manifests[r], paths[r]) for r in refs]
            verification = Verification(hashes)
            if not background:
                verification.wait()
            return paths, verification
        finally:
            pool.shutdown(wait=not background)
