"""Committed models in the store: a safetensors file plus a JSON manifest written last.

`commit_model` uploads weights, then the manifest with the file's sha256 and size, so a reader
that finds the manifest finds a complete file. Both are created only where nothing exists yet
(`store.create_file` / `create_bytes`: S3 If-None-Match, a hard link on a local folder), so
no stored file is ever overwritten: committing the same bytes again returns the committed
manifest (a retry, or a duplicate job that computed the same thing); committing other bytes
raises AlreadyCommitted. A writer that finds a plain file name taken by other, uncommitted bytes
(a duplicate job still writing, or one killed before its manifest) stores its own file under an
alternate name carrying its sha256 (`layout.alternate_name`) and its manifest names it, so
whichever manifest wins names the winner's own bytes; the loser deletes the files it stored.
Readers find files through `layout.file_key`. `WeightsCache` materialises committed weights as local files and verifies them
against their manifest.

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
import logging
import mmap
import os
import re
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from jobs import layout
from jobs.errors import JobError, MalformedFile, PermanentError, TemporaryError
from jobs.faults import failpoint
from jobs.store import NotFound, ObjectStore, StoreError, decode_json, iter_chunks, with_retries

log = logging.getLogger("jobs")
EPHEMERAL = "ephemeral"  # extra_files[name]["ephemeral"]: a file a later commit may delete (trainer.pt)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

if TYPE_CHECKING:  # torch is imported where tensors are saved: the orchestrator CLI starts without it
    import torch


class SnapshotError(PermanentError):
    """A missing, uncommitted, truncated or corrupted model in the store."""


class MalformedManifest(SnapshotError, MalformedFile):
    """A manifest that is not UTF-8 JSON, or lacks (or mistypes) sha256, size or extra_files."""


class AlreadyCommitted(TemporaryError):
    """Another writer committed other bytes under this ref first; nothing of ours is committed.

    `existing` is the committed manifest; `sha256` and `size` describe the bytes this writer
    offered. Temporary (exit 75) if uncaught: a retry finds the model committed and adopts it."""

    def __init__(self, ref: str, existing: dict, sha256: str, size: int):
        self.ref, self.existing, self.sha256, self.size = ref, existing, sha256, size
        super().__init__(
            f"model {ref} is already committed with other bytes (sha256 {existing['sha256'][:12]}, {existing['size']} bytes; "
            f"this job made sha256 {sha256[:12]}, {size} bytes): another job wrote it first"
        )


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
    ephemeral: Iterable[str] = (),
) -> dict:
    """Upload `weights_path` (and extra files) under `ref`, then the manifest: the commit point.

    `sha256` may be given when the writer hashed the file while writing it (no second pass);
    `move` lets a local store rename the file in instead of copying it. Names in `ephemeral`
    (a subset of `extra_files`) are marked `"ephemeral": true` in the manifest: files a later
    commit may delete (the trainer state of all but the newest snapshot), which status does not
    require. If `ref` is already committed: the same weights (sha256 and size) return the
    committed manifest; other weights raise AlreadyCommitted (and this writer's own files,
    which the winner's manifest does not name, are deleted)."""
    ephemeral = set(ephemeral)
    if not ephemeral <= set(extra_files):
        raise ValueError(f"ephemeral files {sorted(ephemeral - set(extra_files))} are not among the extra files")
    sha = sha256 or sha256_file(weights_path)
    size = os.path.getsize(weights_path)
    existing = committed_manifest(store, ref)
    if existing is not None:
        return _same_or_raise(ref, existing, sha, size)
    failpoint("commit.before-weights")
    placed: list[str] = []  # names this writer stored: its own bytes, whoever else is writing
    weights_name = _place(store, ref, layout.WEIGHTS, weights_path, sha, size, move, placed)
    if weights_name is None:  # the plain name holds other bytes: committed, or not (yet)
        existing = committed_manifest(store, ref)
        if existing is not None:
            return _same_or_raise(ref, existing, sha, size)
        weights_name = _place_alternate(store, ref, layout.WEIGHTS, weights_path, sha, size, move, placed)
    extra = {}
    for name, path in extra_files.items():
        extra_sha, extra_size = sha256_file(path), os.path.getsize(path)
        stored = (_place(store, ref, name, path, extra_sha, extra_size, False, placed)
                  or _place_alternate(store, ref, name, path, extra_sha, extra_size, False, placed))
        extra[name] = {"sha256": extra_sha, "size": extra_size}
        if stored != name:
            extra[name]["file"] = stored
        if name in ephemeral:
            extra[name][EPHEMERAL] = True
    full = dict(manifest, ref=ref, file=weights_name, sha256=sha, size=size, extra_files=extra)
    data = json.dumps(full, indent=1, sort_keys=True).encode()
    failpoint("commit.before-manifest")
    create = getattr(store, "create_bytes", None)
    if create is not None:
        created = create(layout.manifest_key(ref), data)
    else:  # a store without conditional writes (test doubles): best effort
        created = not store.exists(layout.manifest_key(ref))
        if created:
            store.put_bytes(layout.manifest_key(ref), data)
    if not created:
        winner = read_manifest(store, ref)
        try:
            return _same_or_raise(ref, winner, sha, size)
        except AlreadyCommitted:
            _delete_unnamed(store, ref, winner, placed)
            raise
    failpoint("commit.after-manifest")
    return full


def _holds(store: ObjectStore, key: str, sha: str, size: int) -> bool:
    """Whether the object at `key` has these bytes (size first: most mismatches cost no read)."""
    try:
        return store.size(key) == size and sha256_key(store, key) == sha
    except NotFound:
        return False


def _place(store: ObjectStore, ref: str, name: str, path, sha: str, size: int, move: bool, placed: list[str]) -> str | None:
    """Store one file of a model under its plain name, never over another writer's file.

    Returns `name` if the file is there now with these bytes (this call wrote it, or an earlier
    attempt or a duplicate writer stored the same bytes), None if the name holds other bytes.
    Objects only ever appear whole (a hard link of a finished file; S3 If-None-Match on the
    completed upload), so what is found is a complete file of some writer."""
    key = f"{ref}/{name}"
    create_file = getattr(store, "create_file", None)
    if create_file is None:  # a store without conditional writes (test doubles): best effort
        store.put_file(key, path, move=move)
    elif not create_file(key, path, move=move):
        return name if _holds(store, key, sha, size) else None
    placed.append(name)
    return name


def _place_alternate(store: ObjectStore, ref: str, name: str, path, sha: str, size: int, move: bool, placed: list[str]) -> str:
    """Store a file under its sha-carrying name: its plain name holds another writer's bytes
    (a duplicate job still running, or one killed before its manifest)."""
    alternate = layout.alternate_name(name, sha)
    log.warning("model %s: %s holds another writer's uncommitted bytes; this writer stores its own as %s", ref, name, alternate)
    key = f"{ref}/{alternate}"
    if store.create_file(key, path, move=move):
        placed.append(alternate)
    elif not _holds(store, key, sha, size):  # 64 bits of sha256 alike, other bytes: never expected
        raise SnapshotError(f"model {ref}: {alternate} exists with other bytes than its name says; delete it and retry")
    return alternate


def _delete_unnamed(store: ObjectStore, ref: str, winner: dict, placed: list[str]) -> None:
    """After losing the manifest race: delete what this writer stored that the winner does not use."""
    used = {layout.file_key(ref, winner)} | {layout.file_key(ref, winner, n) for n in winner.get("extra_files", {})}
    for name in placed:
        if f"{ref}/{name}" not in used:
            try:
                store.delete(f"{ref}/{name}")
            except StoreError as e:  # left behind: an orphan costs space, not correctness
                log.warning("model %s: could not delete this writer's %s: %s", ref, name, e)


def _same_or_raise(ref: str, existing: dict, sha: str, size: int) -> dict:
    if existing["sha256"] == sha and existing["size"] == size:
        log.info("model %s was already committed with the same bytes: kept as it is", ref)
        return existing
    raise AlreadyCommitted(ref, existing, sha, size)


def committed_manifest(store: ObjectStore, ref: str) -> dict | None:
    """The manifest of `ref` if it is committed, else None."""
    try:
        data = store.get_bytes(layout.manifest_key(ref))
    except NotFound:
        return None
    return parse_manifest(data, ref)


def adopt_committed(store: ObjectStore, error: AlreadyCommitted) -> dict:
    """The loser of a commit race keeps the winner's model if its files check out (size and
    sha256 against its manifest); otherwise a TemporaryError (a retry looks again)."""
    problems = check_committed(store, error.ref, error.existing, verify=True)
    if problems:
        raise TemporaryError(f"model {error.ref}: another job committed it first, but {problems[0]}") from None
    log.warning("%s; its committed file checks out: kept it", error)
    return error.existing


def is_committed(store: ObjectStore, ref: str) -> bool:
    return store.exists(layout.manifest_key(ref))


def is_average_done(store: ObjectStore, ref: str) -> bool:
    """An average is done once committed, or once evaluated (gc, or keep_averages: false, may
    then have left no weights)."""
    return is_committed(store, ref) or store.exists(layout.results_key(ref))


def _bad(where: str, what: str) -> MalformedManifest:
    return MalformedManifest(f"manifest {where}: {what}")


def parse_manifest(data: bytes, ref: str) -> dict:
    """A manifest's JSON, checked for what readers rely on: sha256 (64 hex digits), size (a
    byte count) and, if present, extra_files (name -> sha256 and size)."""
    key = layout.manifest_key(ref)
    try:
        m = decode_json(data, f"manifest {key}")
    except MalformedFile as e:
        raise MalformedManifest(str(e)) from None
    if not isinstance(m, dict):
        raise _bad(key, f"expected a JSON object, found {type(m).__name__}")

    def check_file(entry, where):
        if not isinstance(entry, dict):
            raise _bad(key, f"{where}: expected an object with sha256 and size")
        if not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
            raise _bad(key, f"{where}sha256 is missing or not 64 hex digits")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(key, f"{where}size is missing or not a byte count")

    check_file(m, "")
    extra = m.get("extra_files", {})
    if not isinstance(extra, dict):
        raise _bad(key, "extra_files: expected an object")
    for name, entry in extra.items():
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise _bad(key, f"extra_files: {name!r} is not a file name")
        check_file(entry, f"extra_files.{name}.")
    return m


def read_manifest(store: ObjectStore, ref: str) -> dict:
    try:
        data = store.get_bytes(layout.manifest_key(ref))
    except NotFound:
        raise SnapshotError(
            f"model {ref} is missing or not committed (no {layout.MANIFEST} under {store.uri}/{ref})"
        ) from None
    return parse_manifest(data, ref)


def kept_files(manifest: dict) -> dict[str, tuple[str, int]]:
    """The files a committed model must keep: name -> (sha256, size); ephemeral files left out
    (and trainer.pt in manifests written before files were marked)."""
    files = {layout.WEIGHTS: (manifest["sha256"], manifest["size"])}
    for name, entry in manifest.get("extra_files", {}).items():
        if entry.get(EPHEMERAL) or name == layout.TRAINER_STATE:
            continue
        files[name] = (entry["sha256"], entry["size"])
    return files


def sha256_key(store: ObjectStore, key: str) -> str:
    """sha256 of a stored object: hashed in place on a local store, streamed from S3."""
    local = getattr(store, "local_path", lambda k: None)(key)
    if local is not None:
        return sha256_file(local)

    def stream() -> str:
        h = hashlib.sha256()
        body = store.open_read(key)
        try:
            for chunk in iter_chunks(body):
                h.update(chunk)
        except JobError:
            raise
        except Exception as e:  # a connection dropped mid-stream: hash again from the start
            raise StoreError(f"reading {key} failed: {e}") from None
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
        return h.hexdigest()

    return with_retries("read", stream)


def check_committed(store: ObjectStore, ref: str, manifest: dict, verify: bool = False, sizes: Mapping[str, int] | None = None) -> list[str]:
    """What is wrong with a committed model's files: missing, another size than its manifest
    says, and with `verify` another sha256. `sizes` (key -> size, from one listing) saves a
    request per file."""
    problems = []
    for name, (sha, size) in kept_files(manifest).items():
        key = layout.file_key(ref, manifest, name)
        if sizes is not None:
            actual = sizes.get(key)
        else:
            try:
                actual = store.size(key)
            except NotFound:
                actual = None
        if actual is None:
            problems.append(f"{name} is missing")
        elif actual != size:
            problems.append(f"{name} has {actual} bytes, manifest says {size} (truncated or partial)")
        elif verify and sha256_key(store, key) != sha:
            problems.append(f"{name} sha256 differs from its manifest (corrupted)")
    return problems


def check_run_sum(store: ObjectStore, run_key: str, info: dict) -> None:
    """Before a run-sum is used: the snapshots it was summed from are the run's snapshots now.

    Every snapshot manifest of the run still in the store must be listed in the run-sum with
    the same sha256, and the run-sum must list no snapshot twice (snapshots deleted by gc are
    fine: their sha256 is in the run-sum). No re-summing: a few small manifest reads."""
    listed: dict[str, str] = {}
    for s in info.get("snapshots") or []:
        if not isinstance(s, dict) or not isinstance(s.get("ref"), str) or not isinstance(s.get("sha256"), str):
            raise _bad(layout.manifest_key(layout.run_sum_ref(run_key)), "snapshots: each entry needs ref and sha256")
        if s["ref"] in listed:
            raise SnapshotError(f"run-sum of run {run_key} lists {s['ref']} twice: the run-sum is inconsistent; re-run the train job after deleting {layout.run_sum_ref(run_key)}")
        listed[s["ref"]] = s["sha256"]
    prefix = f"{layout.run_prefix(run_key)}/snapshots/"
    present = sorted(k[: -len(layout.MANIFEST) - 1] for k in store.list_keys(prefix) if k.endswith("/" + layout.MANIFEST))
    stale = f"the run-sum of run {run_key} does not match its snapshots (delete {layout.run_sum_ref(run_key)} and re-run the train job)"
    for ref in present:
        if ref not in listed:
            raise SnapshotError(f"snapshot {ref} is committed but not in {stale}")
        sha = read_manifest(store, ref)["sha256"]
        if sha != listed[ref]:
            raise SnapshotError(f"snapshot {ref} has sha256 {sha[:12]}, but {stale}: it was summed from {listed[ref][:12]}")


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

    def cancel(self) -> None:
        """The caller gives up (an error elsewhere): stop what can be stopped."""
        for f in self._futures:
            f.cancel()


class _DownloadVerification(Verification):
    """A pipelined download: `wait()` waits for its last byte, checks every sha256 against the
    manifests and only then registers the files as materialised and verified."""

    def __init__(self, cache: "WeightsCache", download, items: list[tuple[str, dict]]):
        super().__init__([])
        self._cache, self._download, self._items = cache, download, items
        self._done = False

    def wait(self) -> None:
        if self._done:
            return
        shas = self._download.finish()
        for (ref, manifest), target, sha in zip(self._items, self._download.targets, shas):
            if sha != manifest["sha256"]:
                raise SnapshotError(f"model {ref}: {layout.WEIGHTS} sha256 differs from its manifest (corrupted file)")
            self._cache.verified.remember(target.path, sha)
            self._cache._materialised[(ref, layout.WEIGHTS)] = target.path
            self._cache._verified[(ref, layout.WEIGHTS)] = target.path
        self._done = True

    def cancel(self) -> None:
        if not self._done:
            self._download.close()


def _missing(ref: str, name: str) -> SnapshotError:
    return SnapshotError(f"model {ref}: manifest exists but {name} is missing")


def _wrong_size(ref: str, name: str, actual: int, expected: int) -> SnapshotError:
    return SnapshotError(f"model {ref}: {name} has {actual} bytes, manifest says {expected} (truncated?)")


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
        if cache_dir is None:
            from jobs.scratch import new_dir

            cache_dir = new_dir("weights")  # named for this process: swept once it is gone
        self.cache_dir = Path(cache_dir)
        self.workers = workers
        self.verified = verified or VerifiedFiles()
        self._verified: dict[tuple[str, str], Path] = {}  # (ref, name) -> local file
        self._materialised: dict[tuple[str, str], Path] = {}

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
        key = layout.file_key(ref, manifest, name)
        if (ref, name) in self._materialised:
            return self._materialised[(ref, name)]
        _, expected_size = self._expected(manifest, name)
        local = getattr(self.store, "local_path", lambda k: None)(key)
        if local is None:
            local = self.cache_dir / key
            local.parent.mkdir(parents=True, exist_ok=True)
            if not (local.exists() and local.stat().st_size == expected_size):
                try:
                    self.store.get_file(key, local)
                except NotFound:
                    raise _missing(ref, name) from None
        else:
            if not os.path.exists(local):
                raise _missing(ref, name)
            counter = getattr(self.store, "counter", None)
            if counter is not None:
                counter.add(key, local.stat().st_size, True)
        size = local.stat().st_size
        if size != expected_size:
            raise _wrong_size(ref, name, size, expected_size)
        self._materialised[(ref, name)] = local
        return local

    def verify(self, ref: str, manifest: dict, local: Path, name: str = layout.WEIGHTS) -> Path:
        if (ref, name) in self._verified:
            return local
        expected_sha, _ = self._expected(manifest, name)
        if self.verified.sha256(local) != expected_sha:
            raise SnapshotError(f"model {ref}: {name} sha256 differs from its manifest (corrupted file)")
        self._verified[(ref, name)] = local
        return local

    def path(self, ref: str, manifest: dict | None = None, name: str = layout.WEIGHTS) -> Path:
        """The verified local file of one committed model."""
        if (ref, name) in self._verified:
            return self._verified[(ref, name)]
        manifest = manifest or read_manifest(self.store, ref)
        return self.verify(ref, manifest, self.materialise(ref, manifest, name), name)

    def stream(self, items: Iterable[tuple[str, dict]]) -> tuple[dict[str, Path], dict[str, Callable[[int], int]] | None, Verification]:
        """The weights of many models as local files a reader can use while they download.

        From a remote store the files come in part by part (jobs.store.pipelined): returns their
        local paths, a `ready(end)` per ref that blocks until a file's first `end` bytes are
        there (for `MappedFile`), and a Verification whose `wait()` returns once every file has
        landed and matches its manifest's sha256 (call it before trusting anything computed;
        `cancel()` on an error). On a local store: `fetch(background=True)` and no waiting."""
        manifests = dict(items)
        refs = list(manifests)
        local_path = getattr(self.store, "local_path", None)
        remote = bool(refs) and (local_path is None or local_path(layout.file_key(refs[0], manifests[refs[0]])) is None)
        todo = [r for r in refs if (r, layout.WEIGHTS) not in self._verified]
        if not remote or not todo or not hasattr(self.store, "open_range"):
            paths, verification = self.fetch(manifests.items(), background=True)
            return paths, None, verification
        from jobs.store.pipelined import PipelinedDownload, Target

        targets = []
        for r in todo:  # one HEAD each: a missing or truncated object is said so before any download
            key, expected = layout.file_key(r, manifests[r]), manifests[r]["size"]
            try:
                actual = self.store.size(key)
            except NotFound:
                raise _missing(r, layout.WEIGHTS) from None
            if actual != expected:
                raise _wrong_size(r, layout.WEIGHTS, actual, expected)
            targets.append(Target(key, self.cache_dir / key, expected))
        download = PipelinedDownload(self.store, targets).start()
        paths = {r: self._verified[(r, layout.WEIGHTS)] for r in refs if r not in todo}
        ready: dict[str, Callable[[int], int]] = {}
        for i, r in enumerate(todo):
            paths[r] = download.part_path(i)
            ready[r] = lambda end, i=i: download.wait(i, end)
        return {r: paths[r] for r in refs}, ready, _DownloadVerification(self, download, [(r, manifests[r]) for r in todo])

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
        downloads = local_path is None or local_path(layout.file_key(refs[0], manifests[refs[0]])) is None
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
