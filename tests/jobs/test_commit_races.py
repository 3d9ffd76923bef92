"""One writer per model: a manifest is created only where none exists (S3 If-None-Match on a real
SeaweedFS server, a hard link on a local folder). The same bytes committed twice return the
committed manifest; other bytes raise AlreadyCommitted and leave the committed model as it was;
two real processes released at the same instant before the manifest: exactly one wins, and the
winner's manifest names files holding its own bytes (no writer overwrites another's file)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from jobs import layout
from jobs.snapshots import AlreadyCommitted, adopt_committed, check_committed, commit_model, read_manifest
from jobs.store import open_store

from tests.fault_support import job_env, release, wait_paused

REF = "averages/s0-00000000/r-ca/k01"

# a writer process: commits FILE under REF; exit 0 and the manifest's sha256, or 10 when it lost
WRITER = textwrap.dedent("""
    import json, sys
    from jobs.snapshots import AlreadyCommitted, commit_model
    from jobs.store import open_store
    uri, ref, path = sys.argv[1:4]
    extra = {"curve.parquet": sys.argv[4]} if len(sys.argv) > 4 else {}
    try:
        m = commit_model(open_store(uri), ref, path, {"kind": "test"}, extra_files=extra)
    except AlreadyCommitted as e:
        print(json.dumps({"lost": e.existing["sha256"]}))
        sys.exit(10)
    print(json.dumps({"sha256": m["sha256"]}))
""")


@pytest.fixture(params=["file", "s3"])
def uri(request, tmp_path):
    if request.param == "file":
        return f"file://{tmp_path}/store"
    s3 = request.getfixturevalue("s3_env")
    return f"s3://{s3.bucket}/races-{uuid.uuid4().hex[:8]}"


def _file(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_same_bytes_are_idempotent_other_bytes_are_refused(uri, tmp_path):
    store = open_store(uri)
    a, b = _file(tmp_path, "a.bin", b"A" * 1000), _file(tmp_path, "b.bin", b"B" * 999)
    first = commit_model(store, REF, a, {"kind": "test", "n": 1})
    manifest_bytes = store.get_bytes(layout.manifest_key(REF))
    again = commit_model(store, REF, a, {"kind": "test", "n": 2})  # a retry of the same work
    assert again == first and again["n"] == 1  # the committed manifest, not a rewrite
    with pytest.raises(AlreadyCommitted) as lost:
        commit_model(store, REF, b, {"kind": "test", "n": 3})
    assert lost.value.existing["sha256"] == first["sha256"] and lost.value.size == 999
    assert lost.value.exit_code == 75  # uncaught: a retry finds the model committed
    assert store.get_bytes(layout.manifest_key(REF)) == manifest_bytes
    assert store.get_bytes(layout.weights_key(REF)) == b"A" * 1000  # the loser uploaded nothing
    assert adopt_committed(store, lost.value) == read_manifest(store, REF)


def test_ephemeral_files_are_marked_and_not_required(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    a, t = _file(tmp_path, "a.bin", b"A" * 10), _file(tmp_path, "trainer.pt", b"state")
    m = commit_model(store, REF, a, {"kind": "test"}, extra_files={"trainer.pt": str(t), "config.json": str(a)}, ephemeral=["trainer.pt"])
    assert m["extra_files"]["trainer.pt"]["ephemeral"] is True and "ephemeral" not in m["extra_files"]["config.json"]
    store.delete(f"{REF}/trainer.pt")  # what the next snapshot's commit does
    assert check_committed(store, REF, read_manifest(store, REF), verify=True) == []
    store.delete(f"{REF}/config.json")
    assert check_committed(store, REF, read_manifest(store, REF)) == ["config.json is missing"]
    with pytest.raises(ValueError, match="not among the extra files"):
        commit_model(store, "x/y", a, {}, ephemeral=["nope"])


def _race(uri, tmp_path, payloads: list[bytes], extras: list[bytes] | None = None):
    """Writer processes paused right before their manifest (all files stored), then released at once."""
    env = job_env(tmp_path, {"XLT_FAILPOINTS": "commit.before-manifest"})
    procs = []
    for i, data in enumerate(payloads):
        args = [str(_file(tmp_path, f"w{i}.bin", data))]
        if extras:
            args.append(str(_file(tmp_path, f"c{i}.parquet", extras[i])))
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, uri, REF, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    for p in procs:
        wait_paused(env, "commit.before-manifest", p)
    release(env, "commit.before-manifest")
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        outs.append((p.returncode, json.loads(out.strip().splitlines()[-1]) if out.strip() else err))
    return outs


def test_two_writers_of_the_same_bytes_both_succeed(uri, tmp_path):
    outs = _race(uri, tmp_path, [b"S" * 5000, b"S" * 5000])
    assert [code for code, _ in outs] == [0, 0], outs
    store = open_store(uri)
    m = read_manifest(store, REF)
    assert {o["sha256"] for _, o in outs} == {m["sha256"]}
    assert check_committed(store, REF, m, verify=True) == []


def test_two_writers_of_other_bytes_one_wins_and_the_other_is_told(uri, tmp_path):
    # both store all their files before either writes its manifest: the second finds the plain
    # names taken and stores its bytes under alternate names, so whoever wins, the manifest
    # names the winner's own bytes; the loser deletes what it stored
    outs = _race(uri, tmp_path, [b"X" * 5000, b"Y" * 4000], extras=[b"cx", b"cy-other"])
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 10], outs
    winner = next(o["sha256"] for code, o in outs if code == 0)
    loser = next(o for code, o in outs if code == 10)
    store = open_store(uri)
    m = read_manifest(store, REF)
    assert m["sha256"] == winner == loser["lost"]  # one manifest, and the loser names it
    assert check_committed(store, REF, m, verify=True) == []
    kept = {layout.manifest_key(REF), layout.file_key(REF, m), layout.file_key(REF, m, "curve.parquet")}
    assert set(store.list_keys(REF + "/")) == kept  # nothing of the loser's is left


def test_same_weights_other_extra_files_commit_consistently(uri, tmp_path):
    # two writers of the same weights whose curve differs (wall-clock columns): both succeed and
    # the committed curve is the one the manifest describes
    outs = _race(uri, tmp_path, [b"W" * 3000, b"W" * 3000], extras=[b"curve one", b"curve two!"])
    assert [code for code, _ in outs] == [0, 0], outs
    store = open_store(uri)
    m = read_manifest(store, REF)
    assert check_committed(store, REF, m, verify=True) == []
    assert store.get_bytes(layout.file_key(REF, m, "curve.parquet")) in (b"curve one", b"curve two!")


def test_a_killed_writers_uncommitted_file_is_never_overwritten(uri, tmp_path):
    store = open_store(uri)
    killed = _file(tmp_path, "killed.bin", b"K" * 800)
    assert store.create_file(layout.weights_key(REF), killed)  # its weights landed, no manifest
    retry = _file(tmp_path, "retry.bin", b"R" * 900)
    m = commit_model(store, REF, retry, {"kind": "test"})
    assert m["file"] == layout.alternate_name(layout.WEIGHTS, m["sha256"])
    assert check_committed(store, REF, m, verify=True) == []
    assert store.get_bytes(layout.weights_key(REF)) == b"K" * 800  # untouched; gc's to delete
    same = _file(tmp_path, "same.bin", b"K" * 800)  # a retry that computed the killed writer's bytes
    other = "runs/0123456789abcdef/snapshots/00000001"
    assert store.create_file(layout.weights_key(other), same)
    assert commit_model(store, other, same, {"kind": "test"})["file"] == layout.WEIGHTS  # adopted, no upload


KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from jobs.store import LocalStore, open_store
    store = open_store(sys.argv[1])
    key = "runs/0123456789abcdef/snapshots/00000010/model.safetensors"
    def die(f):
        f.write(b"x" * 1000)
        f.flush()
        os.kill(os.getpid(), 9)
    if isinstance(store, LocalStore):
        store._atomic_write(store._path(key), die)
    else:  # a multipart upload that never completes, as s3transfer leaves it when killed
        c = store._client
        up = c.create_multipart_upload(Bucket=store.bucket, Key=store._key(key))
        c.upload_part(Bucket=store.bucket, Key=store._key(key), PartNumber=1, UploadId=up["UploadId"], Body=b"x" * 1000)
        os.kill(os.getpid(), 9)
""")


def test_gc_removes_the_partial_writes_of_killed_writers(uri, tmp_path):
    from click.testing import CliRunner

    from orchestrator.commands.gc import gc, partial_writes

    exp_uri = f"{uri}/exp"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, exp_uri], capture_output=True, text=True, env=job_env(tmp_path))
    assert proc.returncode == -9, proc.stderr
    store = open_store(exp_uri)
    assert store.list_keys() == []  # never visible as an object
    [left] = partial_writes(store, 0)
    assert left.what == "partial-write" and "runs/0123456789abcdef/snapshots/00000010/" in left.ref
    args = ["--bucket", uri, "--experiment", "exp", "--base-model", "tiny"]
    kept = CliRunner().invoke(gc, [*args, "--yes"])  # younger than --partial-age (60 min): a writer may still be at it
    assert kept.exit_code == 0 and "partial-write" not in kept.output, kept.output
    assert len(partial_writes(store, 0)) == 1
    gone = CliRunner().invoke(gc, [*args, "--yes", "--partial-age", "0"])
    assert gone.exit_code == 0 and "partial-write" in gone.output, gone.output
    assert partial_writes(store, 0) == []
    if uri.startswith("file://"):
        assert store.part_files() == []


def test_create_file_and_create_bytes_never_overwrite(uri, tmp_path):
    store = open_store(uri)
    a, b = _file(tmp_path, "a.bin", b"A" * 100), _file(tmp_path, "b.bin", b"B" * 50)
    assert store.create_file("m/model.safetensors", a) is True
    assert store.create_file("m/model.safetensors", b, move=True) is False
    assert b.exists() and store.get_bytes("m/model.safetensors") == b"A" * 100
    assert store.create_bytes("m/manifest.json", b"{}") is True
    assert store.create_bytes("m/manifest.json", b"[]") is False
    assert store.get_bytes("m/manifest.json") == b"{}"
    store.put_file("m/model.safetensors", b, move=True)  # the plain put still replaces
    assert store.get_bytes("m/model.safetensors") == b"B" * 50


def test_alternate_names_keep_their_suffix_and_map_back():
    sha = "0123456789abcdef" * 4
    assert layout.alternate_name("model.safetensors", sha) == "model.0123456789abcdef.safetensors"
    assert layout.alternate_name("trainer.pt", sha) == "trainer.0123456789abcdef.pt"
    for name in ("model.safetensors", "trainer.pt", "curve.parquet"):
        assert layout.plain_name(layout.alternate_name(name, sha)) == name and layout.plain_name(name) == name
    manifest = {"file": "model.0123456789abcdef.safetensors", "extra_files": {"trainer.pt": {"file": "trainer.0123456789abcdef.pt"}, "curve.parquet": {}}}
    assert layout.file_key("r/x", manifest) == "r/x/model.0123456789abcdef.safetensors"
    assert layout.file_key("r/x", manifest, "trainer.pt") == "r/x/trainer.0123456789abcdef.pt"
    assert layout.file_key("r/x", manifest, "curve.parquet") == "r/x/curve.parquet"
    assert layout.file_key("r/x", {}) == "r/x/model.safetensors"  # manifests written before alternates
    assert layout.weights_ref("r/x/model.0123456789abcdef.safetensors") == "r/x"
