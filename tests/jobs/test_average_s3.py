"""A draw average against a real S3 server (SeaweedFS): fetched concurrently, verified, exact."""
from __future__ import annotations

import json
import uuid

import pytest

from jobs import layout
from jobs.average import run_average
from jobs.draws import Draw
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec, short_hash
from jobs.store import ReadCounter, open_store

from average_support import load, make_runs, max_abs_diff, naive_mean


@pytest.mark.s3
def test_a_draw_average_from_s3_equals_the_naive_average(s3_env, tmp_path):
    uri = f"s3://test/average-{uuid.uuid4().hex[:8]}"
    counter = ReadCounter()
    store = open_store(uri, counter)
    configs = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]
    runs, states = make_runs(store, tmp_path / "src", configs, snapshots=3)
    draw = Draw(seed=3, k=3, run_keys=tuple(r.run_key for r in runs))
    methods = ("r-last", "r-ca", "soup-2")
    spec = AverageSpec(experiment_uri=uri, task="nli", methods=methods, run_keys=draw.run_keys, draw_seed=3)
    counter.bytes_by_key.clear()
    counter.reads_by_key.clear()
    refs = run_average(spec, tmp_path / "scratch", store=store)
    assert len(refs) == 9
    weights = {k: n for k, n in counter.reads_by_key.items() if k.endswith(layout.WEIGHTS)}
    assert weights and max(weights.values()) == 1  # every input downloaded once
    h = short_hash(list(draw.run_keys), 8)
    for method in methods:
        for k in (1, 3):
            m = read_manifest(store, layout.draw_average_ref(3, h, method, k))
            members = [c["ref"] for c in m["constituents"]]
            assert max_abs_diff(load(store, m["ref"]), naive_mean([states[r] for r in members])) < 1e-6
    assert json.loads(store.get_bytes(f"averages/s3-{h}/draw.json"))["run_keys"] == list(draw.run_keys)
    assert store.exists(layout.draw_key(3, h))
