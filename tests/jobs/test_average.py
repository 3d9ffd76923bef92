"""Exactness of the averaging engine: every method and k equals a naive float64 average."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from jobs import layout
from jobs.average import run_average
from jobs.draws import Draw
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec, short_hash
from jobs.store import LocalStore

from average_support import load, make_runs, max_abs_diff, naive_mean

# dev scores per run (3 snapshots each) chosen so that soup-2's top set changes as k grows:
# k=1 {r0@20, r0@30}, k=2 {r1@10, r1@30} (both replaced), k=3 {r2@20, r1@10}, k=4 adds r3@30
SCORES = [[0.5, 0.6, 0.55], [0.7, 0.4, 0.65], [0.3, 0.9, 0.2], [0.1, 0.2, 0.95]]
CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32), (1e-5, 32)]


@pytest.fixture
def draw_store(tmp_path):
    store = LocalStore(tmp_path / "store")
    scores = iter(SCORES)
    runs, states = make_runs(store, tmp_path / "src", CONFIGS, dev=lambda spec, n: next(scores))
    # the commit order as the draw order, so that SCORES line up with k
    draw = Draw(seed=0, k=4, run_keys=tuple(r.run_key for r in runs))
    return store, runs, states, draw, None


def _members(store, method: str, run_keys) -> list[str]:
    infos = [read_manifest(store, layout.run_sum_ref(k)) for k in run_keys]
    snaps = [s for i in infos for s in sorted(i["snapshots"], key=lambda s: s["step"])]
    if method == "r-ca":
        return [s["ref"] for s in snaps]
    if method == "r-last":
        return [max(i["snapshots"], key=lambda s: s["step"])["ref"] for i in infos]
    if method == "r-dev":
        return [max(sorted(i["snapshots"], key=lambda s: s["step"]), key=lambda s: s["dev_score"])["ref"] for i in infos]
    n = int(method.split("-")[1])
    return [s["ref"] for s in sorted(snaps, key=lambda s: -s["dev_score"])[:n]]


def test_every_method_and_k_equals_the_naive_float64_average(draw_store, tmp_path):
    store, runs, states, draw, _ = draw_store
    methods = ("r-last", "r-dev", "r-ca", "soup-2", "soup-5")
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=methods, run_keys=draw.run_keys, draw_seed=0)
    refs = run_average(spec, tmp_path / "scratch", store=store)
    h = short_hash(list(draw.run_keys), 8)
    assert len(refs) == len(methods) * 4
    soup_sets = []
    for method in methods:
        for k in range(1, 5):
            ref = layout.draw_average_ref(0, h, method, k)
            members = _members(store, method, draw.run_keys[:k])
            expected = naive_mean([states[r] for r in members])
            assert max_abs_diff(load(store, ref), expected) < 1e-6, (method, k)
            m = read_manifest(store, ref)
            assert (m["method"], m["k"], m["draw_seed"], m["dtype"]) == (method, k, 0, "fp32")
            assert [c["ref"] for c in m["constituents"]] == members
            assert all(c["sha256"] == read_manifest(store, c["ref"])["sha256"] for c in m["constituents"])
            if method == "soup-2":
                soup_sets.append(set(members))
    assert soup_sets[0].isdisjoint(soup_sets[1])  # the top set really changed (subtractions ran)
    record = {"seed": 0, "k": 4, "run_keys": list(draw.run_keys), "hash": h, "methods": list(methods)}
    written = json.loads(store.get_bytes(layout.draw_key(0, h)))
    assert json.loads(store.get_bytes(f"averages/s0-{h}/draw.json")) == written
    assert written.pop("recorded_at").endswith("Z") and written == record  # the job adds when, if nobody said
    assert run_average(spec, tmp_path / "scratch2", store=store) == []  # a retry finds everything done


def test_a_retry_writes_only_the_missing_outputs(draw_store, tmp_path):
    store, runs, states, draw, _ = draw_store
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("soup-2",), run_keys=draw.run_keys, draw_seed=0)
    run_average(spec, tmp_path / "s1", store=store)
    h = short_hash(list(draw.run_keys), 8)
    k3 = layout.draw_average_ref(0, h, "soup-2", 3)
    before = load(store, k3)
    store.delete(layout.manifest_key(k3))
    store.delete(layout.weights_key(k3))
    # an evaluated average counts as done even after gc removed its weights
    k2 = layout.draw_average_ref(0, h, "soup-2", 2)
    store.delete(layout.manifest_key(k2))
    store.put_bytes(layout.results_key(k2), b"x")
    assert run_average(spec, tmp_path / "s2", store=store) == [k3]
    assert max_abs_diff(load(store, k3), {k: v.double() if v.is_floating_point() else v for k, v in before.items()}) < 1e-7


def test_per_run_ca_uniform_and_bf16_output(draw_store, tmp_path):
    store, runs, states, draw, _ = draw_store
    keys = tuple(r.run_key for r in runs[:2])
    run_average(AverageSpec(experiment_uri=store.uri, task="nli", methods=("ca",), run_keys=keys), tmp_path / "a", store=store)
    for key in keys:
        members = [s["ref"] for s in read_manifest(store, layout.run_sum_ref(key))["snapshots"]]
        assert max_abs_diff(load(store, layout.run_average_ref(key)), naive_mean([states[r] for r in members])) < 1e-6
    refs = tuple(list(states)[:5])
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("uniform",), refs=refs, output_ref="custom/avg", output_dtype="bf16")
    run_average(spec, tmp_path / "b", store=store)
    out = load(store, "custom/avg")
    assert out["encoder.layer.0.dense.weight"].dtype == torch.bfloat16
    assert out["embeddings.position_ids"].dtype == torch.int64
    expected = naive_mean([states[r] for r in refs])
    for name, v in out.items():
        if v.is_floating_point():
            assert torch.allclose(v.double(), expected[name], rtol=1e-2, atol=1e-2)
    assert read_manifest(store, "custom/avg")["dtype"] == "bf16"


def test_chunked_pass_matches_for_any_chunk_size(draw_store, tmp_path):
    """Tensors split across chunks (and chunks spanning few elements) give the same sums."""
    from jobs.averaging.engine import Output, stream_average
    from jobs.snapshots import WeightsCache
    from jobs.tensorio import MappedFile

    store, runs, states, draw, _ = draw_store
    refs = list(states)[:4]
    cache = WeightsCache(store)
    files = {r: MappedFile(cache.path(r)) for r in refs}
    outputs = [
        Output("a", "m", [(r, 1.0) for r in refs[:2]], 2.0),
        Output("b", "m", [(r, 1.0) for r in refs[1:]], 3.0),
        # weighted terms (the first one starts the sum scaled, not added to zeros)
        Output("c", "w", [(refs[3], 0.5), (refs[0], 2.0)], 1.0),
    ]
    weighted = {n: 0.5 * v.double() + 2.0 * states[refs[0]][n].double() if v.is_floating_point() else v for n, v in states[refs[3]].items()}
    expected = {"a": naive_mean([states[r] for r in refs[:2]]), "b": naive_mean([states[r] for r in refs[1:]]), "c": weighted}
    from safetensors.torch import load_file

    for chunk in (1, 7, 64, 1 << 20):  # chunk sizes that split tensors, and one that does not
        paths = {o.ref: tmp_path / f"{o.ref}-{chunk}.safetensors" for o in outputs}
        hashes = stream_average(files, files[refs[0]].infos, outputs, paths, chunk_elements=chunk)
        for o in outputs:
            assert max_abs_diff(load_file(str(paths[o.ref])), expected[o.ref]) < 1e-6, chunk
            assert hashes[o.ref][0] == hashlib.sha256(paths[o.ref].read_bytes()).hexdigest()


def test_read_ahead_asks_for_every_chunk_once_and_before_the_pass_reaches_it():
    from jobs.averaging.engine import PREFETCH_CHUNKS, _prefetch_plan
    from jobs.tensorio import TensorInfo

    infos = {
        "a.big": TensorInfo("F32", (10, 7)),
        "b.bias": TensorInfo("F32", (3,)),
        "c.ids": TensorInfo("I64", (4,)),  # integer buffers are copied, not streamed: no read-ahead
        "d.big": TensorInfo("F32", (25,)),
        "e.empty": TensorInfo("F32", (0,)),
    }
    chunk = 4
    plan = _prefetch_plan(infos, chunk)
    requested = {name: [0] * infos[name].numel for name in infos}
    order = [(n, s) for n in sorted(infos) if infos[n].is_float for s in range(0, infos[n].numel, chunk)]
    for i, (name, start) in enumerate(order):
        for t, lo, hi in plan.get((name, start), ()):
            for e in range(lo, hi):
                requested[t][e] += 1
        stop = min(infos[name].numel, start + chunk)
        assert all(requested[name][e] == 1 for e in range(start, stop)), (name, start)  # asked for by now
    assert all(c == 1 for n, counts in requested.items() if infos[n].is_float for c in counts)  # exactly once
    assert not any(requested["c.ids"])
    windows = -(-len(order) // PREFETCH_CHUNKS)
    assert len(plan) == windows - 1  # one batch of requests per window; the last has nothing left to ask for
