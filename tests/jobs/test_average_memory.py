"""Memory of the averaging job does not grow with the number of inputs.

The measurements run in a fresh subprocess: it imports everything and warms up on a tiny
model, then for each N records its anonymous memory (RssAnon: heap and buffers, not the page cache behind the
memory-mapped inputs), then averages N snapshots of ~50 MB through the whole job (fetch,
verify, stream, commit) while a thread samples RssAnon every 2 ms.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from jobs.snapshots import save_state_dict, sha256_file

REPO = Path(__file__).resolve().parents[2]

SHAPES = {"embeddings.word_embeddings.weight": (20000, 256)}  # the largest tensor: 20.5 MB
for i in range(12):
    SHAPES[f"encoder.layer.{i}.up.weight"] = (1024, 256)
    SHAPES[f"encoder.layer.{i}.up.bias"] = (1024,)
    SHAPES[f"encoder.layer.{i}.down.weight"] = (256, 1024)

CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    def anon():
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'):
                return int(line.split()[1]) * 1024
    import torch
    from jobs.average import run_average
    from jobs.spec import AverageSpec
    from jobs.store import LocalStore
    def average(store_dir, refs, out):
        store = LocalStore(store_dir)
        run_average(AverageSpec(experiment_uri=store.uri, task='nli', methods=('uniform',), refs=tuple(refs), output_ref=out), store=store)
    jobs = json.loads(sys.argv[1])
    average(jobs[0][0], ['warm/a', 'warm/b'], 'warm/out')  # imports, thread pools: not what we measure
    report = {}
    for store_dir, refs in jobs:
        base = anon()
        peak = [base]
        stop = threading.Event()
        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], anon()); time.sleep(0.002)
        t = threading.Thread(target=sample, daemon=True); t.start()
        average(store_dir, refs, 'out')
        stop.set(); t.join()
        report[len(refs)] = max(peak[0], anon()) - base
    print('REPORT ' + json.dumps(report))
    """
)


def _commit_linked(store_dir: Path, ref: str, source: Path, sha: str) -> None:
    """A committed model whose weights are a hard link to `source` (no copy, distinct path)."""
    d = store_dir / ref
    d.mkdir(parents=True)
    os.link(source, d / "model.safetensors")
    manifest = {"ref": ref, "file": "model.safetensors", "sha256": sha, "size": source.stat().st_size, "kind": "snapshot", "head_sha256": None}
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_memory_growth_is_flat_in_n_and_below_one_snapshot_plus_largest_tensor(tmp_path):
    g = torch.Generator().manual_seed(0)
    sources = []
    for i in range(2):  # two distinct snapshots, hard-linked into N refs
        path = tmp_path / f"src{i}.safetensors"
        save_state_dict({k: torch.randn(s, generator=g) for k, s in SHAPES.items()}, path)
        sources.append((path, sha256_file(path)))
    tiny = tmp_path / "tiny.safetensors"
    save_state_dict({k: torch.randn(4, generator=g) for k in SHAPES}, tiny)
    snapshot = sources[0][0].stat().st_size
    largest = max(torch.Size(s).numel() for s in SHAPES.values()) * 4
    env = dict(os.environ, XLT_VERIFIED_DIR=str(tmp_path / "verified"), XLT_PROGRESS="0", PYTHONPATH=str(REPO))
    jobs = []
    for n in (2, 8, 32):
        store_dir = tmp_path / f"store{n}"
        for w in ("warm/a", "warm/b"):
            _commit_linked(store_dir, w, tiny, sha256_file(tiny))
        refs = [f"runs/{'a' * 16}/snapshots/{i:08d}" for i in range(n)]
        for i, ref in enumerate(refs):
            _commit_linked(store_dir, ref, *sources[i % 2])
        jobs.append((str(store_dir), refs))
    # one process measures all three, each against its own baseline; a fixed mmap threshold makes
    # every buffer of 64 kB or more go back to the system when freed, so runs do not hide each other
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("REPORT "))[7:])
    growth = {int(n): v for n, v in report.items()}
    mb = {n: round(v / 1e6, 1) for n, v in growth.items()}
    print(f"\nanonymous memory growth (MB) by N: {mb}; one snapshot {snapshot / 1e6:.1f} MB, largest tensor {largest / 1e6:.1f} MB")
    assert max(growth.values()) <= 1.1 * min(growth.values()), mb
    assert max(growth.values()) < 1.1 * (snapshot + largest), mb
