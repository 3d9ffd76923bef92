"""The hash records of committed models (jobs/snapshots.py): each manifest records the sha256 and
size of every file it commits, and every reader checks them, so a truncated or corrupted file
is never used silently. The machine-local record of verified hashes (VerifiedFiles) is trusted
only while the file is unchanged.

Plain bytes stand in for weights: nothing here parses safetensors, and no torch is imported."""
from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from jobs import layout
from jobs.snapshots import (
    MalformedManifest,
    SnapshotError,
    VerifiedFiles,
    WeightsCache,
    check_committed,
    commit_model,
    parse_manifest,
    read_manifest,
)
from jobs.store import LocalStore

REF = "runs/0123456789abcdef/snapshots/00000004"
WEIGHTS = bytes(range(256)) * 64  # 16 kB
TRAINER = b"optimizer state" * 100
CURVE = b"curve rows" * 10


@pytest.fixture
def committed(tmp_path):
    """A snapshot committed from files outside the store: weights, a curve and an ephemeral trainer state."""
    src = tmp_path / "src"
    src.mkdir()
    for name, data in ((layout.WEIGHTS, WEIGHTS), (layout.TRAINER_STATE, TRAINER), (layout.CURVE_PART, CURVE)):
        (src / name).write_bytes(data)
    store = LocalStore(tmp_path / "store")
    manifest = commit_model(
        store, REF, src / layout.WEIGHTS, {"kind": "snapshot", "step": 4},
        extra_files={layout.TRAINER_STATE: str(src / layout.TRAINER_STATE), layout.CURVE_PART: str(src / layout.CURVE_PART)},
        ephemeral=[layout.TRAINER_STATE],
    )
    return store, manifest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored(store: LocalStore, name: str = layout.WEIGHTS):
    return store.local_path(f"{REF}/{name}")


def _flip_one_byte(path) -> None:
    """Corrupt a file in place: same size, same inode, one byte different."""
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_the_manifest_records_sha256_and_size_of_every_file_it_commits(committed):
    store, manifest = committed
    assert (manifest["sha256"], manifest["size"]) == (_sha(WEIGHTS), len(WEIGHTS))
    extra = manifest["extra_files"]
    assert (extra[layout.CURVE_PART]["sha256"], extra[layout.CURVE_PART]["size"]) == (_sha(CURVE), len(CURVE))
    assert (extra[layout.TRAINER_STATE]["sha256"], extra[layout.TRAINER_STATE]["size"]) == (_sha(TRAINER), len(TRAINER))
    assert extra[layout.TRAINER_STATE]["ephemeral"] is True and "ephemeral" not in extra[layout.CURVE_PART]
    assert read_manifest(store, REF) == manifest  # the manifest in the store is the one returned
    assert check_committed(store, REF, manifest, verify=True) == []


def test_a_truncated_file_is_found_by_its_size_and_a_corrupted_one_by_its_sha256(committed):
    store, manifest = committed
    curve = _stored(store, layout.CURVE_PART)
    curve.write_bytes(CURVE[:-1])
    assert check_committed(store, REF, manifest) == [
        f"{layout.CURVE_PART} has {len(CURVE) - 1} bytes, manifest says {len(CURVE)} (truncated or partial)"
    ]
    curve.write_bytes(CURVE)
    _flip_one_byte(_stored(store))
    assert check_committed(store, REF, manifest) == []  # the size is right: only hashing can tell
    assert check_committed(store, REF, manifest, verify=True) == [f"{layout.WEIGHTS} sha256 differs from its manifest (corrupted)"]


def test_a_missing_file_is_a_problem_unless_the_manifest_marks_it_ephemeral(committed):
    store, manifest = committed
    _stored(store, layout.TRAINER_STATE).unlink()  # a later snapshot's commit deletes it
    assert check_committed(store, REF, manifest, verify=True) == []
    _stored(store, layout.CURVE_PART).unlink()
    assert check_committed(store, REF, manifest, verify=True) == [f"{layout.CURVE_PART} is missing"]


def test_readers_refuse_a_truncated_or_corrupted_weights_file(committed, tmp_path):
    store, manifest = committed
    weights = _stored(store)

    def cache():  # a fresh cache each time, with its own record of verified hashes
        return WeightsCache(store, tmp_path / "cache", verified=VerifiedFiles(tmp_path / f"verified-{time.monotonic_ns()}"))

    assert cache().path(REF, manifest).read_bytes() == WEIGHTS
    weights.write_bytes(WEIGHTS[: len(WEIGHTS) // 2])
    with pytest.raises(SnapshotError, match=f"model {REF}: {layout.WEIGHTS} has {len(WEIGHTS) // 2} bytes, manifest says {len(WEIGHTS)}"):
        cache().path(REF, manifest)
    weights.write_bytes(WEIGHTS)
    _flip_one_byte(weights)
    with pytest.raises(SnapshotError, match="sha256 differs from its manifest"):
        cache().path(REF, manifest)


def test_a_recorded_hash_is_trusted_only_while_the_file_is_unchanged(committed, tmp_path):
    store, manifest = committed
    weights = _stored(store)
    verified = VerifiedFiles(tmp_path / "verified")
    assert WeightsCache(store, tmp_path / "cache", verified=verified).path(REF, manifest) == weights
    assert verified.known_sha(weights) == manifest["sha256"]  # the next job on this machine does not hash again
    time.sleep(0.05)  # past the file system's timestamp granularity: the write below changes ctime
    _flip_one_byte(weights)
    assert verified.known_sha(weights) is None
    with pytest.raises(SnapshotError, match="sha256 differs from its manifest"):
        WeightsCache(store, tmp_path / "cache", verified=verified).path(REF, manifest)


@pytest.mark.parametrize("change, field", [
    ({"sha256": "abc"}, "sha256 is missing or not 64 hex digits"),
    ({"sha256": None}, "sha256 is missing or not 64 hex digits"),
    ({"size": -1}, "size is missing or not a byte count"),
    ({"size": True}, "size is missing or not a byte count"),
    ({"extra_files": {layout.CURVE_PART: {"sha256": "0" * 64}}}, f"extra_files.{layout.CURVE_PART}.size is missing"),
])
def test_a_manifest_with_a_malformed_hash_record_is_refused_naming_it(committed, change, field):
    store, manifest = committed
    bad = json.dumps(dict(manifest, **change)).encode()
    with pytest.raises(MalformedManifest, match=f"manifest {layout.manifest_key(REF)}: .*{field}"):
        parse_manifest(bad, REF)


def test_committing_the_same_bytes_again_keeps_the_record_and_other_bytes_are_refused(committed, tmp_path):
    from jobs.snapshots import AlreadyCommitted

    store, manifest = committed
    again = tmp_path / "again.safetensors"
    again.write_bytes(WEIGHTS)
    assert commit_model(store, REF, again, {"kind": "snapshot", "step": 4}) == manifest
    other = tmp_path / "other.safetensors"
    other.write_bytes(WEIGHTS[::-1])
    with pytest.raises(AlreadyCommitted):
        commit_model(store, REF, other, {"kind": "snapshot", "step": 4})
    assert read_manifest(store, REF) == manifest and _stored(store).read_bytes() == WEIGHTS
    assert os.path.getsize(_stored(store)) == manifest["size"]
