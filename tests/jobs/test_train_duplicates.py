"""Two train jobs for one run at once (a retried pod while the first still runs), as real
processes: both end 0, every committed snapshot's files match its manifest, the run-sum was summed
from exactly the snapshots the run holds, and the run is complete. The two jobs use different
thread counts, so their float sums may differ: then the manifest (created only if absent) decides
who owns each snapshot, and the loser stops instead of overwriting."""
from __future__ import annotations

import json
import subprocess
import sys

from jobs import layout
from jobs.snapshots import check_committed, check_run_sum, read_manifest
from jobs.spec import DatasetRef, TrainSpec, spec_to_json
from jobs.store import open_store


def test_two_jobs_for_one_run_leave_one_consistent_run(tmp_path):
    uri = f"file://{tmp_path}/store"
    spec = TrainSpec(
        experiment_uri=uri, task="nli", base_model="tiny",
        train_data=DatasetRef("synthetic-nli", "en", "train", limit=48),
        dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=16),
        learning_rate=2e-3, batch_size=16, seed=5, epochs=3, snapshot_every="1 epoch",
        precision="fp32", max_length=64, eval_batch_size=32,
    )
    procs = []
    for threads in (1, 2):
        text = spec_to_json(spec.__class__(**{**spec.__dict__, "num_threads": threads}))
        procs.append(subprocess.Popen([sys.executable, "-m", "jobs", "train", "--spec", "-"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        procs[-1].stdin.write(text)
        procs[-1].stdin.close()
    for p in procs:
        p.wait(timeout=300)
        assert p.returncode == 0, p.stderr.read()[-2000:]
    store = open_store(uri)
    key = spec.run_key
    complete = json.loads(store.get_bytes(layout.run_complete_key(key)))
    assert len(complete["snapshots"]) == 3
    for ref in complete["snapshots"]:
        assert check_committed(store, ref, read_manifest(store, ref), verify=True) == []
    run_sum = read_manifest(store, layout.run_sum_ref(key))
    check_run_sum(store, key, run_sum)  # raises if the run-sum lists other bytes than the snapshots
    assert [s["sha256"] for s in run_sum["snapshots"]] == [read_manifest(store, r)["sha256"] for r in complete["snapshots"]]
