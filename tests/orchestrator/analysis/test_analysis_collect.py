"""Collecting results files and draw records from a store: concurrency-safe, cached, reading only new files."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from jobs.results import to_parquet_bytes
from orchestrator.analysis.collect import collect_draws, collect_results


class DictStore:
    """An in-memory store that counts reads (thread-safe: collect reads concurrently)."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []
        self._lock = threading.Lock()

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_bytes(self, key: str) -> bytes:
        with self._lock:
            self.reads.append(key)
        return self.objects[key]


class FolderStore:
    """A local folder as a store: keys are '/'-separated paths under the root."""

    def __init__(self, root: Path):
        self.root = root
        self.reads = 0

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def get_bytes(self, key: str) -> bytes:
        self.reads += 1
        return (self.root / key).read_bytes()


def split_by_model(frame: pd.DataFrame) -> dict[str, bytes]:
    """One results file per evaluated model, as the evaluate job writes them."""
    return {f"results/{ref}.parquet": to_parquet_bytes(group) for ref, group in frame.groupby("ref")}


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    order = ["ref", "split", "dataset", "language", "metric"]
    a = a.sort_values(order).reset_index(drop=True)
    b = b.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    return True


def test_collect_reads_only_new_files(experiment, tmp_path):
    frame, draws = experiment(n_draws=2, k=2)
    files = split_by_model(frame)
    keys = sorted(files)
    store = DictStore()
    store.objects = {key: files[key] for key in keys[:-3]}
    store.objects["results/README.txt"] = b"not a results file"
    store.objects["draws/seed-0.json"] = json.dumps(draws[0].to_dict()).encode()
    cache = tmp_path / "cache"

    first = collect_results(store, cache_dir=cache, workers=4)
    assert sorted(store.reads) == keys[:-3]
    assert len(first) == sum(len(pd.read_parquet(io.BytesIO(files[k]))) for k in keys[:-3])

    store.reads.clear()
    again = collect_results(store, cache_dir=cache, workers=4)
    assert store.reads == []  # everything came from the cache
    assert same_rows(first, again)

    store.objects.update({key: files[key] for key in keys[-3:]})
    full = collect_results(store, cache_dir=cache, workers=4)
    assert sorted(store.reads) == keys[-3:]
    assert same_rows(full, frame)

    store.reads.clear()
    collect_results(store, cache_dir=cache, workers=4, refresh=True)
    assert sorted(store.reads) == keys


def test_collect_from_a_folder_without_cache(experiment, tmp_path):
    frame, draws = experiment(n_draws=2, k=2)
    root = tmp_path / "store"
    for key, data in split_by_model(frame).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    for draw in draws:
        (root / "draws").mkdir(exist_ok=True)
        (root / "draws" / f"seed-{draw.seed}.json").write_text(json.dumps(draw.to_dict()))
    store = FolderStore(root)
    assert same_rows(collect_results(store), frame)
    assert collect_draws(store) == draws


def test_collect_empty_and_bad_files(tmp_path):
    store = DictStore()
    empty = collect_results(store, cache_dir=tmp_path)
    assert empty.empty and "run_key" in empty.columns
    store.objects["results/broken.parquet"] = b"garbage"
    with pytest.raises(ValueError, match="results file results/broken.parquet is not a readable results parquet"):
        collect_results(store)
    store.objects["draws/bad.json"] = b'{"seed": 0}'
    with pytest.raises(ValueError, match="draw record draws/bad.json is malformed"):
        collect_draws(store)
