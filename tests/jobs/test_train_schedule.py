"""Snapshot schedules ('N epochs', '1/N epochs', 'N steps') and precisions of the train job.

The paper's TyDiQA schedule is 40 epochs with a snapshot every 4 (trident-xtreme
configs/experiment/ofa-tydiqa.yaml); a tiny run of 8 epochs every 4 must write exactly two
snapshots, at the ends of epochs 4 and 8, each with an English dev score. fp16 is autocast with
torch's GradScaler (Lightning's "16-mixed"), which runs on the CPU too.
"""
from __future__ import annotations

import json

import pytest
import torch

from jobs import layout
from jobs.errors import PermanentError
from jobs.snapshots import read_manifest
from jobs.spec import DatasetRef, SpecError, TrainSpec, snapshot_steps, spec_from_dict
from jobs.store import open_store
from jobs.train import run_train


def _spec(uri: str, task: str = "tydiqa", **over) -> TrainSpec:
    data = {
        "tydiqa": ("synthetic-tydiqa", 32, 8),
        "nli": ("synthetic-nli", 64, 16),
    }[task]
    fields = dict(
        experiment_uri=uri, task=task, base_model="tiny",
        train_data=DatasetRef(data[0], "en", "train", limit=data[1]),
        dev_data=DatasetRef(data[0], "en", "validation", limit=data[2]),
        learning_rate=1e-3, batch_size=32, seed=0, epochs=8, snapshot_every="4 epochs",
        max_length=128, eval_batch_size=64, num_threads=2,
    )
    fields.update(over)
    return TrainSpec(**fields)


def test_every_four_epochs_writes_two_snapshots_at_the_ends_of_epochs_4_and_8(tmp_path):
    spec = _spec(f"file://{tmp_path}/store")
    key = run_train(spec)
    store = open_store(spec.experiment_uri)
    refs = json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"]
    manifests = [read_manifest(store, r) for r in refs]
    assert len(manifests) == 2
    steps_per_epoch = manifests[0]["step"] // 4
    assert [m["step"] for m in manifests] == [4 * steps_per_epoch, 8 * steps_per_epoch]
    assert [m["epochs_done"] for m in manifests] == [4.0, 8.0]
    assert all(0.0 <= m["dev_score"] <= 1.0 and m["dev_metric"] == "f1" for m in manifests)
    assert manifests[0]["spec"]["snapshot_every"] == "4 epochs"


def test_schedules_and_their_refusals():
    every = lambda text: spec_from_dict("train", _as_dict(snapshot_every=text)).schedule  # noqa: E731
    assert every("4 epochs") == (4.0, "epochs") and every("1 epoch") == (1.0, "epochs")
    assert every("0.5 epochs") == (0.5, "epochs") and every("500 steps") == (500.0, "steps")
    # one spelling, one run key
    assert spec_from_dict("train", _as_dict(snapshot_every="1 epoch")).run_key == spec_from_dict("train", _as_dict(snapshot_every="1  epochs")).run_key
    assert snapshot_steps((4.0, "epochs"), None, 8, 10) == [40, 80]
    assert snapshot_steps((0.5, "epochs"), None, 2, 10) == [5, 10, 15, 20]
    assert snapshot_steps((5.0, "steps"), None, 2, 10) == [5, 10, 15, 20]
    assert snapshot_steps(None, None, 3, 4) == [4, 8, 12]  # a stored spec without a schedule: one per epoch
    assert snapshot_steps(None, 2, 1, 4) == [2, 4]
    for args, message in [
        (((3.0, "epochs"), None, 8, 10), "does not divide the run of 8 epochs"),
        (((7.0, "steps"), None, 2, 10), "does not divide the run of 20 steps"),
        (((50.0, "steps"), None, 2, 10), "longer than the run"),
        (((16.0, "epochs"), None, 8, 10), "does not divide"),
        (((0.25, "epochs"), None, 2, 2), "only 2 optimizer step"),
        ((None, 5, 1, 2), "5 snapshots per epoch but an epoch has only 2"),
        (((0.3, "epochs"), None, 2, 10), "does not divide an epoch"),
    ]:
        with pytest.raises(SpecError, match=message):
            snapshot_steps(*args)
    for bad in ("4", "four epochs", "-1 epochs", "2 hours", "1.5 steps", "inf epochs"):
        with pytest.raises(SpecError, match="snapshot_every"):
            spec_from_dict("train", _as_dict(snapshot_every=bad))
    with pytest.raises(SpecError, match="either snapshot_every or snapshots_per_epoch"):
        spec_from_dict("train", _as_dict(snapshot_every="1 epoch", snapshots_per_epoch=2))


def _as_dict(**over) -> dict:
    from jobs.spec import to_dict

    return dict(to_dict(_spec("file:///x")), **over)


def test_an_impossible_schedule_fails_at_job_start_before_training(tmp_path):
    spec_bad = _spec(f"file://{tmp_path}/store", task="nli", epochs=2, snapshot_every="3 steps")  # 2 steps per epoch
    with pytest.raises(PermanentError, match="does not divide the run of 4 steps"):
        run_train(spec_bad)
    store = open_store(spec_bad.experiment_uri)
    assert not store.list_keys(f"{layout.run_prefix(spec_bad.run_key)}/snapshots/")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_on_cpu(tmp_path, precision):
    """A few optimizer steps with autocast (and, for fp16, the GradScaler): loss finite and
    falling, the scaler state saved with the trainer state."""
    spec = _spec(f"file://{tmp_path}/store", task="nli", epochs=2, snapshot_every="1 epoch", precision=precision,
                 learning_rate=3e-3, batch_size=8)
    key = run_train(spec)
    store = open_store(spec.experiment_uri)
    import io

    import pandas as pd

    curve = pd.read_parquet(io.BytesIO(store.get_bytes(layout.curve_key(key))))
    losses = curve["loss"].tolist()
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    last = read_manifest(store, json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"][-1])
    state = torch.load(store_path(tmp_path, last["ref"], layout.TRAINER_STATE), weights_only=False)
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0  # GradScaler state, restored on resume
    else:
        assert state["scaler"] is None


def store_path(tmp_path, ref: str, name: str):
    return tmp_path / "store" / ref / name
