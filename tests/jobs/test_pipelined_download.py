"""The pipelined download (jobs/store/pipelined.py) against a real S3 server and a local folder:
part-major order, a reader never sees bytes that have not landed, sha256s of what landed, parts
retried from their start after a dropped connection, and the first lasting error handed to
every reader; and the average job from S3 reading its inputs while they download."""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest

from jobs.store import S3Store, StoreError, open_store
from jobs.store.pipelined import PipelinedDownload, Target


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://test/pipelined-{uuid.uuid4().hex[:8]}")


def _objects(store, sizes: list[int]) -> dict[str, bytes]:
    objects = {f"m{i}/model.safetensors": os.urandom(n) for i, n in enumerate(sizes)}
    for key, data in objects.items():
        store.put_bytes(key, data)
    return objects


class Recording:
    """A store whose ranged reads are recorded and can be made to fail."""

    def __init__(self, store, fail=None):
        self.store, self.fail, self.calls = store, fail, []
        self._lock = threading.Lock()

    def open_range(self, key, start, stop):
        with self._lock:
            self.calls.append((key, start))
            attempt = sum(1 for c in self.calls if c == (key, start))
        body = self.store.open_range(key, start, stop)
        return self.fail(key, start, attempt, body) if self.fail else body


def _targets(objects, tmp_path):
    return [Target(key, tmp_path / "dl" / key, len(data)) for key, data in objects.items()]


def test_a_reader_only_ever_sees_landed_bytes_and_gets_every_sha256(store, tmp_path):
    objects = _objects(store, [10_000, 7_777, 1, 0, 12_345])
    targets = _targets(objects, tmp_path)
    download = PipelinedDownload(store, targets, part_bytes=1000, workers=4).start()
    seen = []
    for i, t in enumerate(targets):  # what the averaging pass does: wait, then read from the file
        data = objects[t.key]
        fd = os.open(download.part_path(i), os.O_RDONLY)  # unbuffered: what the file holds now
        try:
            for end in range(0, len(data) + 1, 333):
                landed = download.wait(i, end)
                assert landed >= end
                seen.append(os.pread(fd, landed, 0) == data[:landed])
        finally:
            os.close(fd)
    shas = download.finish()
    assert all(seen)
    assert shas == [hashlib.sha256(d).hexdigest() for d in objects.values()]
    for t in targets:  # renamed to their final names, whole
        assert t.path.read_bytes() == objects[t.key]
        assert not t.path.with_name(t.path.name + ".part").exists()


def test_parts_are_requested_part_major(store, tmp_path):
    objects = _objects(store, [3000, 2500, 3000])
    recording = Recording(store)
    PipelinedDownload(recording, _targets(objects, tmp_path), part_bytes=1000, workers=1).start().finish()
    keys = list(objects)
    assert recording.calls == [(k, p * 1000) for p in range(3) for k in keys]


class _Dropping:
    """A body that sends a few bytes, then fails like a dropped connection."""

    def __init__(self, body):
        self.body, self.sent = body, False

    def read(self, n=-1):
        if self.sent:
            raise ConnectionResetError("connection reset by peer")
        self.sent = True
        return self.body.read(10)

    def close(self):
        self.body.close()


def test_a_part_dropped_mid_body_is_fetched_again_from_its_start(store, tmp_path):
    objects = _objects(store, [5000, 4000])
    flaky = Recording(store, fail=lambda key, start, attempt, body: _Dropping(body) if start == 2000 and attempt == 1 else body)
    targets = _targets(objects, tmp_path)
    shas = PipelinedDownload(flaky, targets, part_bytes=1000, workers=3).start().finish()
    assert shas == [hashlib.sha256(d).hexdigest() for d in objects.values()]
    assert sum(1 for c in flaky.calls if c[1] == 2000) == 4  # two files, part 2 twice each
    assert [t.path.read_bytes() for t in targets] == list(objects.values())


def test_a_lasting_error_reaches_every_reader_and_finish(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_STORE_RETRY_SECONDS", "0.2")
    objects = _objects(store, [6000, 6000])

    def refuse(key, start, attempt, body):
        if start >= 3000:
            body.close()
            raise StoreError(f"S3 get of {key} failed (503); retry later")
        return body

    targets = _targets(objects, tmp_path)
    download = PipelinedDownload(Recording(store, fail=refuse), targets, part_bytes=1000, workers=2).start()
    assert download.wait(0, 3000) == 3000  # what landed before the failure can be read
    with pytest.raises(StoreError, match="503"):
        download.wait(1, 6000)
    with pytest.raises(StoreError, match="503"):
        download.finish()
    download.close()
    assert not any(t.path.exists() or t.path.with_name(t.path.name + ".part").exists() for t in targets)


@pytest.mark.s3
def test_the_average_job_reads_s3_inputs_while_they_download_and_checks_them(s3_env, tmp_path, monkeypatch):
    from jobs import layout
    from jobs.average import run_average
    from jobs.snapshots import SnapshotError, is_committed, read_manifest
    from jobs.spec import AverageSpec
    from jobs.store import pipelined

    from average_support import load, make_runs, max_abs_diff, naive_mean

    monkeypatch.setattr(pipelined, "PART_BYTES", 256)  # about ten parts per tiny input
    waits = []  # (bytes asked for, bytes landed, file size) of each wait of the pass
    real_wait = PipelinedDownload.wait

    def wait(self, i, end):
        landed = real_wait(self, i, end)
        waits.append((end, landed, self.targets[i].size))
        return landed

    monkeypatch.setattr(PipelinedDownload, "wait", wait)
    real_range = S3Store.open_range

    def slow_tail(self, key, start, stop):  # the last parts arrive late: the pass must not wait for them to start
        if stop >= self.size(key):
            time.sleep(0.3)
        return real_range(self, key, start, stop)

    monkeypatch.setattr(S3Store, "open_range", slow_tail)
    uri = f"s3://test/pipelined-avg-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    runs, states = make_runs(store, tmp_path / "src", [(1e-5, 16), (2e-5, 16)], snapshots=2)
    spec = AverageSpec(experiment_uri=uri, task="nli", methods=("ca",), run_keys=tuple(r.run_key for r in runs))
    ca_refs = [layout.run_average_ref(r.run_key) for r in runs]

    # an input whose bytes differ from its manifest (same size): found before anything is committed
    victim = layout.run_sum_ref(runs[0].run_key)  # a CA's one input: the run-sum
    good = store.get_bytes(layout.weights_key(victim))
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    store.put_bytes(layout.weights_key(victim), bytes(bad))
    with pytest.raises(SnapshotError, match="sha256 differs from its manifest"):
        run_average(spec, tmp_path / "bad", store=store)
    assert not any(is_committed(store, r) for r in ca_refs)
    store.put_bytes(layout.weights_key(victim), bad[:-10])  # truncated: said so, not retried
    with pytest.raises(SnapshotError, match="truncated"):
        run_average(spec, tmp_path / "short", store=store)

    store.put_bytes(layout.weights_key(victim), good)
    waits.clear()
    assert sorted(run_average(spec, tmp_path / "scratch", store=store)) == sorted(ca_refs)
    assert all(landed >= end for end, landed, _ in waits) and len(waits) >= 4
    assert any(landed < size for _, landed, size in waits)  # it read inputs that had not all landed
    for ref in ca_refs:
        m = read_manifest(store, ref)
        assert max_abs_diff(load(store, ref), naive_mean([states[c["ref"]] for c in m["constituents"]])) < 1e-6
