"""Committed models in the store: a safetensors file plus a JSON manifest written last.

`commit_model` uploads weights, then the manifest with the file's sha256 and size, so a reader
that finds the manifest finds a complete file. `read_manifest`/`fetch_weights` verify it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file

from jobs import layout
from jobs.errors import PermanentError
from jobs.store import NotFound, ObjectStore


class SnapshotError(PermanentError):
    """A missing, uncommitted, truncated or corrupted model in the store."""


def sha256_file(path: str | os.PathLike, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def commit_model(
    store: ObjectStore, ref: str, weights_path: str | os.PathLike, manifest: dict, extra_files: Mapping[str, str] = {}
) -> dict:
    """Upload `weights_path` (and extra files) under `ref`, then the manifest: the commit point."""
    sha = sha256_file(weights_path)
    size = os.path.getsize(weights_path)
    store.put_file(layout.weights_key(ref), weights_path)
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


class WeightsCache:
    """Materialises committed weights as local files (verified once), for memory mapping.

    On a local store the file is used in place; from S3 it is downloaded into `cache_dir`.
    """

    def __init__(self, store: ObjectStore, cache_dir: str | os.PathLike | None = None):
        self.store = store
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="xlt-weights-"))
        self._verified: dict[str, Path] = {}

    def path(self, ref: str, manifest: dict | None = None, name: str = layout.WEIGHTS) -> Path:
        key = f"{ref}/{name}"
        if key in self._verified:
            return self._verified[key]
        manifest = manifest or read_manifest(self.store, ref)
        if name == layout.WEIGHTS:
            expected_sha, expected_size = manifest["sha256"], manifest["size"]
        else:
            expected_sha, expected_size = manifest["extra_files"][name]["sha256"], manifest["extra_files"][name]["size"]
        local = getattr(self.store, "local_path", lambda k: None)(key)
        if local is None:
            local = self.cache_dir / key
            local.parent.mkdir(parents=True, exist_ok=True)
            if not (local.exists() and local.stat().st_size == expected_size):
                try:
                    self.store.get_file(key, local)
                except NotFound:
                    raise SnapshotError(f"model {ref}: manifest exists but {name} is missing") from None
        size = local.stat().st_size
        if size != expected_size:
            raise SnapshotError(f"model {ref}: {name} has {size} bytes, manifest says {expected_size} (truncated?)")
        if sha256_file(local) != expected_sha:
            raise SnapshotError(f"model {ref}: {name} sha256 differs from its manifest (corrupted file)")
        self._verified[key] = local
        return local
