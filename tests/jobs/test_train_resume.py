"""A train job killed anywhere (SIGKILL, in a real process) and re-run ends bit-identical to an
uninterrupted run: every snapshot, the run-sum and the training curve. The trainer state holds
every RNG (dropout draws from torch's), the optimizer, scheduler and fp16 gradient scaler; the
curve up to a snapshot is committed with it.

Kill points (jobs.faults fail points): mid-epoch, a snapshot written locally but not stored,
between a snapshot's weights and its manifest, right after its manifest (before the run's
curve.parquet is written), before the run-sum, before the completion marker. The snapshot points
fire in the thread that commits snapshots while training goes on (jobs.train_commits).

A commit that fails in that thread (an injected store or data error) stops the job with the
error's exit code before any later snapshot is committed, and the re-run is bit-identical too.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from jobs import layout
from jobs.snapshots import read_manifest
from jobs.spec import DatasetRef, TrainSpec, spec_to_json
from jobs.store import open_store
from jobs.train import committed_snapshots, run_train


def _spec(uri: str, precision: str = "fp32") -> TrainSpec:
    return TrainSpec(
        experiment_uri=uri, task="nli", base_model="tiny",
        train_data=DatasetRef("synthetic-nli", "en", "train", limit=48),
        dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=16),
        learning_rate=2e-3, batch_size=16, seed=5, epochs=3, snapshot_every="1 epoch",
        precision=precision, max_length=64, eval_batch_size=32, num_threads=1,
    )  # 3 steps per epoch, 9 in all, dropout on (the tiny XLM-R's default 0.1)


def _fingerprint(uri: str, key: str) -> dict:
    store = open_store(uri)
    complete = json.loads(store.get_bytes(layout.run_complete_key(key)))
    snapshots = [read_manifest(store, ref)["sha256"] for ref in complete["snapshots"]]
    run_sum = read_manifest(store, layout.run_sum_ref(key))["sha256"]
    curve = pd.read_parquet(io.BytesIO(store.get_bytes(layout.curve_key(key))))
    return {"snapshots": snapshots, "run_sum": run_sum, "curve": curve[["step", "epoch", "loss", "learning_rate"]].to_dict("records")}


def _killed_run(spec: TrainSpec, fault: str) -> None:
    env = dict(os.environ, XLT_FAILPOINTS=f"{fault}=kill")
    proc = subprocess.run([sys.executable, "-m", "jobs", "train", "--spec", "-"], input=spec_to_json(spec), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, (fault, proc.returncode, proc.stderr[-2000:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = {}
    for precision in ("fp32", "fp16"):
        uri = f"file://{tmp_path_factory.mktemp('ref')}/store"
        spec = _spec(uri, precision)
        out[precision] = _fingerprint(uri, run_train(spec))
        assert len(out[precision]["snapshots"]) == 3
    return out


@pytest.mark.parametrize("fault, precision", [
    ("train.step@5", "fp32"),                # mid-epoch 2 (3 steps per epoch)
    ("train.snapshot-written@2", "fp32"),    # the second snapshot written locally, nothing stored
    ("commit.before-manifest@2", "fp32"),    # its weights stored, no manifest
    ("train.after-snapshot@1", "fp32"),      # manifest committed, the run's curve not yet rewritten
    ("train.before-run-sum@1", "fp32"),
    ("train.before-complete@1", "fp32"),
    ("train.step@5", "fp16"),                # the GradScaler's state resumes too
])
def test_a_killed_run_resumes_bit_identical(tmp_path, reference, fault, precision):
    uri = f"file://{tmp_path}/store"
    spec = _spec(uri, precision)
    _killed_run(spec, fault)
    store = open_store(uri)
    assert not store.exists(layout.run_complete_key(spec.run_key))
    key = run_train(spec)  # the retry
    assert _fingerprint(uri, key) == reference[precision]


@pytest.mark.parametrize("fault, code", [
    ("commit.before-manifest@2=fail", 75),          # the second snapshot's upload fails in the commit thread
    ("train.after-snapshot@1=fail-permanent", 3),   # after the first manifest, before the run's curve
])
def test_a_failed_background_commit_stops_the_job_with_its_code_and_the_rerun_is_bit_identical(tmp_path, reference, fault, code):
    uri = f"file://{tmp_path}/store"
    spec = _spec(uri)
    proc = subprocess.run([sys.executable, "-m", "jobs", "train", "--spec", "-"], input=spec_to_json(spec),
                          env=dict(os.environ, XLT_FAILPOINTS=fault), capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    errors = [l for l in proc.stderr.splitlines() if " ERROR " in l]
    assert len(errors) == 1 and "injected" in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    store = open_store(uri)
    assert [m["step"] for m in committed_snapshots(store, spec.run_key)] == [3]  # nothing committed after the failure
    assert not store.exists(layout.run_complete_key(spec.run_key))
    key = run_train(spec)  # the retry
    assert _fingerprint(uri, key) == reference["fp32"]
