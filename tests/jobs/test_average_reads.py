"""Bytes read through the store for the paper's protocol: each input at most once per draw.

10 draws x K=10 runs, methods r-last, r-dev, r-ca, soup-5, over 12 configurations x 2 seeds of
runs with 10 snapshots each. The original code re-read every snapshot of runs 1..k for every
k and method: 4 methods x (10 + 20 + ... + 100) = 2,200 model reads per draw.
"""
from __future__ import annotations

import os

from jobs import layout
from jobs.average import run_average
from jobs.draws import draw_runs
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec
from jobs.store import LocalStore, ReadCounter

from average_support import make_runs

METHODS = ("r-last", "r-dev", "r-ca", "soup-5")
CONFIGS = [(lr, bs) for lr in (1e-6, 5e-6, 1e-5, 2e-5) for bs in (16, 32, 64)]
SHAPES = {"embeddings.word_embeddings.weight": (64, 16), "encoder.dense.weight": (16, 16), "classifier.weight": (3, 16)}


def original_reads(k_max: int, snapshots: int, methods: int) -> int:
    """Model reads of the original code for one draw: all snapshots of runs 1..k, per k and method."""
    return methods * sum(snapshots * k for k in range(1, k_max + 1))


def test_each_input_is_read_at_most_once_per_draw_and_run_sums_are_shared(tmp_path):
    counter = ReadCounter()
    store = LocalStore(tmp_path / "store", counter)
    runs, _ = make_runs(store, tmp_path / "src", CONFIGS, seeds=(1, 2), snapshots=10, shapes=SHAPES)
    model_bytes = os.path.getsize(store.local_path(layout.weights_key(layout.run_sum_ref(runs[0].run_key))))
    sum_reads: dict[str, int] = {}
    draws_with: dict[str, int] = {}
    total_weight_bytes = 0
    for seed in range(10):
        draw = draw_runs(runs, seed, 10)
        counter.bytes_by_key.clear()
        counter.reads_by_key.clear()
        spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=METHODS, run_keys=draw.run_keys, draw_seed=seed)
        run_average(spec, tmp_path / f"scratch{seed}", store=store)
        weights = {k: n for k, n in counter.reads_by_key.items() if k.endswith("/" + layout.WEIGHTS)}
        assert max(weights.values()) == 1, {k: n for k, n in weights.items() if n > 1}
        # what a draw needs: K run-sums, K last, K src-dev and the soup's extra snapshots, no more
        infos = [read_manifest(store, layout.run_sum_ref(key)) for key in draw.run_keys]
        allowed = {layout.run_sum_ref(i["run_key"]) for i in infos}
        allowed |= {max(i["snapshots"], key=lambda s: s["step"])["ref"] for i in infos}
        allowed |= {max(sorted(i["snapshots"], key=lambda s: s["step"]), key=lambda s: s["dev_score"])["ref"] for i in infos}
        for k in range(1, 11):
            snaps = [s for i in infos[:k] for s in sorted(i["snapshots"], key=lambda s: s["step"])]
            allowed |= {s["ref"] for s in sorted(snaps, key=lambda s: -s["dev_score"])[:5]}
        read_refs = {k[: -len("/" + layout.WEIGHTS)] for k in weights}
        assert read_refs <= allowed, read_refs - allowed
        for key in draw.run_keys:
            ref = layout.weights_key(layout.run_sum_ref(key))
            sum_reads[key] = sum_reads.get(key, 0) + weights.get(ref, 0)
            draws_with[key] = draws_with.get(key, 0) + 1
        total_weight_bytes += sum(counter.bytes_by_key[k] for k in weights)
    # one committed run-sum per run serves every draw that includes the run: no draw rebuilds it
    assert sum_reads == draws_with
    ours = total_weight_bytes / model_bytes
    original = 10 * original_reads(10, 10, len(METHODS))
    print(f"\nreads for 10 draws x K=10 ({', '.join(METHODS)}): {ours:.0f} model sizes; original code: {original} ({original / ours:.0f}x more)")
    assert ours <= 10 * (10 + 10 + 10 + 5 * 10)  # K sums + K last + K dev + at most 5 new soup members per k
    assert ours < original / 20
