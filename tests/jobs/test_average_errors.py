"""Bad inputs fail with one clear error before anything is written to the store."""
from __future__ import annotations

import os

import pytest
import torch

from jobs import layout
from jobs.average import AverageError, run_average
from jobs.draws import Draw, DrawError, draw_runs
from jobs.snapshots import SnapshotError, read_manifest
from jobs.spec import AverageSpec, SpecError, spec_from_dict
from jobs.store import LocalStore

from average_support import commit_run, make_runs, random_state, run_spec, small_shapes

CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]


@pytest.fixture
def runs(tmp_path):
    store = LocalStore(tmp_path / "store")
    runs, states = make_runs(store, tmp_path / "src", CONFIGS, snapshots=2)
    return store, runs, states


def _spec(store, keys, methods=("r-last", "r-dev", "r-ca", "soup-2")):
    return AverageSpec(experiment_uri=store.uri, task="nli", methods=methods, run_keys=tuple(keys), draw_seed=0)


def _nothing_written(store):
    assert store.list_keys("averages") == [] and store.list_keys("draws") == []


def _add_run(store, tmp_path, lr, states, head_sha="h" * 64):
    spec = run_spec(store.uri, lr, 64, 1)
    key, _ = commit_run(store, tmp_path / "bad", spec, states, [0.5] * len(states), head_sha=head_sha)
    return key


def test_a_tensor_of_another_shape_names_the_tensor_and_both_models(runs, tmp_path):
    store, infos, states = runs
    g = torch.Generator().manual_seed(5)
    shapes = dict(small_shapes(), **{"encoder.layer.0.dense.bias": (9,)})
    head = {k: v for k, v in next(iter(states.values())).items() if k.startswith("classifier.")}
    bad = _add_run(store, tmp_path, 9e-5, [random_state(shapes, g, head) for _ in range(2)])
    with pytest.raises(AverageError, match=r"tensor encoder\.layer\.0\.dense\.bias has shape \(8,\) in runs/.* but \(9,\) in runs/"):
        run_average(_spec(store, [infos[0].run_key, bad]), tmp_path / "scratch", store=store)
    _nothing_written(store)


def test_a_missing_tensor_a_dtype_change_and_a_different_integer_buffer_are_refused(runs, tmp_path):
    store, infos, states = runs
    base = next(iter(states.values()))
    missing = {k: v for k, v in base.items() if k != "encoder.layer.0.scale"}
    recast = dict(base, **{"encoder.layer.0.dense.weight": base["encoder.layer.0.dense.weight"].half()})
    shifted = dict(base, **{"embeddings.position_ids": base["embeddings.position_ids"] + 1})
    cases = [
        (missing, r"tensor encoder\.layer\.0\.scale is in runs/\S+ but not in runs/"),
        (recast, r"tensor encoder\.layer\.0\.dense\.weight has dtype F32 in .* but F16 in"),
        (shifted, r"integer buffer embeddings\.position_ids differs between runs/\S+ and runs/"),
    ]
    for i, (state, pattern) in enumerate(cases):
        bad = _add_run(store, tmp_path, 5e-5 + i * 1e-5, [state, state])
        with pytest.raises(AverageError, match=pattern):
            run_average(_spec(store, [infos[0].run_key, bad], ("r-last",)), tmp_path / f"s{i}", store=store)
    _nothing_written(store)


def test_runs_with_different_frozen_heads_are_refused(runs, tmp_path):
    store, infos, states = runs
    state = next(iter(states.values()))
    bad = _add_run(store, tmp_path, 9e-5, [state, state], head_sha="0" * 64)
    with pytest.raises(AverageError, match="frozen heads differ"):
        run_average(_spec(store, [infos[0].run_key, bad]), tmp_path / "scratch", store=store)
    _nothing_written(store)


def test_missing_uncommitted_truncated_and_corrupted_snapshots(runs, tmp_path):
    store, infos, _ = runs
    key = infos[1].run_key
    last = max(read_manifest(store, layout.run_sum_ref(key))["snapshots"], key=lambda s: s["step"])["ref"]
    weights = store.local_path(layout.weights_key(last))
    data = weights.read_bytes()
    spec = _spec(store, [infos[0].run_key, key], ("r-last",))

    weights.write_bytes(data[:-100])
    with pytest.raises(SnapshotError, match=r"has \d+ bytes, manifest says \d+ \(truncated\?\)"):
        run_average(spec, tmp_path / "a", store=store)
    corrupted = bytearray(data)
    corrupted[-5] ^= 0xFF  # same size, one flipped byte in the last tensor
    weights.write_bytes(bytes(corrupted))
    with pytest.raises(SnapshotError, match="sha256 differs from its manifest"):
        run_average(spec, tmp_path / "b", store=store)
    os.unlink(weights)
    with pytest.raises(SnapshotError, match="manifest exists but model.safetensors is missing"):
        run_average(spec, tmp_path / "c", store=store)
    weights.write_bytes(data)
    store.delete(layout.manifest_key(last))
    with pytest.raises(SnapshotError, match="missing or not committed"):
        run_average(spec, tmp_path / "d", store=store)
    _nothing_written(store)


def test_a_corrupted_file_is_caught_even_when_its_hash_was_recorded(runs, tmp_path):
    """The per-machine sha256 record must not hide a file changed after it was verified."""
    store, infos, _ = runs
    spec = _spec(store, [infos[0].run_key], ("r-last",))
    run_average(spec, tmp_path / "a", store=store)  # verifies and records every input
    last = max(read_manifest(store, layout.run_sum_ref(infos[0].run_key))["snapshots"], key=lambda s: s["step"])["ref"]
    weights = store.local_path(layout.weights_key(last))
    st = os.stat(weights)
    corrupted = bytearray(weights.read_bytes())
    corrupted[-5] ^= 0xFF
    with open(weights, "r+b") as f:
        f.write(bytes(corrupted))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime still moves
    for ref in store.list_keys("averages"):
        store.delete(ref)
    with pytest.raises(SnapshotError, match="sha256 differs"):
        run_average(_spec(store, [infos[0].run_key], ("r-last",)), tmp_path / "b", store=store)


def test_unfinished_runs_too_large_draws_and_bad_methods(runs, tmp_path):
    store, infos, _ = runs
    with pytest.raises(AverageError, match="is not finished"):
        run_average(_spec(store, [infos[0].run_key, "f" * 16]), tmp_path / "a", store=store)
    with pytest.raises(DrawError, match="only 3 exist"):
        draw_runs(infos, seed=0, k=4)
    with pytest.raises(SpecError, match="soup-0"):
        spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": ["soup-0"], "run_keys": ["a"], "draw_seed": 0})
    with pytest.raises(SpecError, match="output_dtype"):
        spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": ["r-ca"], "run_keys": ["a"], "draw_seed": 0, "output_dtype": "int8"})
    _nothing_written(store)
