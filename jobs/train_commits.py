"""The train job's snapshot commits, off the training loop.

At a snapshot step the loop scores English dev on the live model (the GPU is the fast place to
score, and scoring a copy would need a second model on it), then takes a `SnapshotCopy` of
what the snapshot needs: weights, optimizer, scheduler, gradient scaler, every RNG state and the
curve so far. On a GPU the tensors go to pinned CPU memory by asynchronous copies queued on the
training stream (so they hold the snapshot step's values whatever the loop does next), and
the loop goes on at once; on a CPU they are plain copies. One worker thread (`CommitWorker`)
then waits for the copies, adds the weights to the run-sum and commits the snapshot (weights,
trainer state, curve part, manifest last: jobs.snapshots.commit_model), deletes the older
trainer state and rewrites the run's curve.parquet, while training goes on.

The rules that keep every guarantee of committing inside the loop:
- one snapshot at a time: the loop takes the next copy only once the previous snapshot is
  committed (memory holds one extra copy at most, and snapshots commit in step order);
- an error in the worker is raised in the loop at its next step, as itself (the job exits with
  its code: 75 temporary, 3 permanent);
- `AlreadyCommitted` (another job owns the snapshot): the worker adopts the winner's model, or
  raises TemporaryError, and the loop stops at its next step;
- the job never ends, nor removes its scratch folder, while a commit is running;
- fail points hit in the worker kill the whole process (SIGKILL is process-wide).
`CommitWorker(background=False)` commits inside the loop instead (the behaviour before; the
benchmark's baseline).
"""
from __future__ import annotations

import io
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from jobs import layout
from jobs.faults import failpoint
from jobs.snapshots import AlreadyCommitted, adopt_committed, commit_model, save_state_dict
from jobs.spec import TrainSpec, to_dict

log = logging.getLogger("jobs")


@dataclass
class SnapshotCopy:
    """One snapshot's state, detached from the live training state."""

    step: int
    epoch: int  # 0-based index of the epoch the step is in
    epochs_done: float
    dev: float
    weights: dict[str, torch.Tensor]
    trainer: dict  # optimizer, scheduler, step, scaler, rng: what trainer.pt holds
    curve: list[dict]
    ready: Callable[[], None] = lambda: None  # waits until the tensors hold their values (a CUDA event)


def _copy_tree(obj, copy_tensor):
    if isinstance(obj, torch.Tensor):
        return copy_tensor(obj)
    if isinstance(obj, dict):
        return {k: _copy_tree(v, copy_tensor) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tree(v, copy_tensor) for v in obj)
    return obj  # numbers, strings, None: immutable


def take_copy(model, optimizer, scheduler, scaler, rng: dict, device: torch.device, copy: bool, **fields) -> SnapshotCopy:
    """The snapshot's state. `copy=False` (a commit inside the loop) takes references on a CPU
    and blocking copies on a GPU, as the loop did before; `copy=True` takes copies the loop may
    run on from: pinned CPU memory filled asynchronously on a GPU, plain clones on a CPU."""
    cuda = device.type == "cuda"
    if not copy:
        tensor_copy = lambda t: t.detach().cpu()  # noqa: E731
    elif cuda:
        def tensor_copy(t: torch.Tensor) -> torch.Tensor:
            if t.device.type != "cuda":
                return t.detach().clone()
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)  # cached and reused by torch's host allocator
            host.copy_(t.detach(), non_blocking=True)
            return host
    else:
        tensor_copy = lambda t: t.detach().clone()  # noqa: E731
    weights = {k: tensor_copy(v) for k, v in model.state_dict().items()}
    trainer = {
        "optimizer": _copy_tree(optimizer.state_dict(), tensor_copy),
        "scheduler": _copy_tree(scheduler.state_dict(), lambda t: t.detach().clone()),
        "step": fields["step"],
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,  # reads the scale: one sync per snapshot
        "rng": rng,
    }
    ready = lambda: None  # noqa: E731
    if copy and cuda:
        event = torch.cuda.Event()
        event.record()  # after every copy on the training stream
        ready = event.synchronize
    return SnapshotCopy(weights=weights, trainer=trainer, ready=ready, **fields)


@dataclass
class CommitTimes:
    """Seconds a snapshot took, for the benchmark (bench/train): `commit` is the worker's (or
    the loop's, inside the loop) weights + trainer state + curve + upload + manifest."""

    step: int
    dev: float = 0.0  # English dev scoring, on the loop
    copy: float = 0.0  # taking the copy, on the loop
    wait: float = 0.0  # the loop waiting for the previous snapshot's commit
    commit: float = 0.0
    background: bool = True


@dataclass
class RunCommitter:
    """What is committed for each snapshot of one run. While training runs it owns the run-sum
    and the list of committed manifests (the worker thread writes them; the loop reads them
    only after `CommitWorker.wait`)."""

    store: object
    spec: TrainSpec
    run_key: str
    head_sha: str | None
    metric: str
    total_steps: int
    scratch: Path
    done: list[dict]  # committed snapshot manifests, by step
    run_sum: dict[str, torch.Tensor] | None = None
    lost: str | None = None  # the snapshot another job committed with other bytes: this job stops
    times: list[CommitTimes] = field(default_factory=list)

    def commit(self, snap: SnapshotCopy) -> None:
        start = time.perf_counter()
        snap.ready()
        self.run_sum = add_to_sum(self.run_sum, snap.weights)
        try:
            commit_snapshot(self.store, self.spec, self.run_key, snap, self.head_sha, self.metric, self.scratch, self.done)
        except AlreadyCommitted as lost:  # a second job trains this run (a retried pod while the first runs)
            adopt_committed(self.store, lost)  # the winner's snapshot checks out, else TemporaryError (exit 75)
            log.warning("run %s: another job committed %s with other bytes first; this job stops and leaves the run to it",
                        self.run_key, lost.ref)
            self.lost = lost.ref
            return
        failpoint("train.after-snapshot")
        self.store.put_bytes(layout.curve_key(self.run_key), parquet(snap.curve))
        if self.times and self.times[-1].step == snap.step:
            self.times[-1].commit = time.perf_counter() - start
        log.info("run %s step %d/%d: English dev %s %.4f", self.run_key, snap.step, self.total_steps, self.metric, snap.dev)


class CommitWorker:
    """Runs one commit at a time on one thread (or inline with `background=False`)."""

    def __init__(self, commit: Callable[[SnapshotCopy], None], background: bool = True):
        self._commit = commit
        self.background = background
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") if background else None
        self._pending: Future | None = None

    def submit(self, snap: SnapshotCopy) -> None:
        """Commit `snap`; the previous commit must be finished (`wait`) first."""
        if self._pending is not None:
            raise RuntimeError("a snapshot commit is still running: wait() for it before the next")
        if self._pool is None:
            self._commit(snap)
        else:
            self._pending = self._pool.submit(self._commit, snap)

    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def check(self) -> None:
        """Raise a finished commit's error now (cheap: called every step)."""
        if self._pending is not None and self._pending.done():
            self.wait()

    def wait(self) -> None:
        """Until the running commit (if any) is done; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for a running commit without raising (the job is already ending with an error of
        its own) and stop the thread."""
        if self._pending is not None:
            try:
                self._pending.result()
            except BaseException:  # noqa: BLE001 - the loop's own error is the one reported
                pass
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def add_to_sum(acc: dict | None, state: dict) -> dict:
    """fp32 running sum of float tensors; integer buffers are copied (and must agree)."""
    if acc is None:
        return {k: (v.float().clone() if v.is_floating_point() else v.clone()) for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point():
            acc[k] += v.float()
    return acc


def parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    import pandas as pd  # imported here: the GPU check script imports jobs.train without pandas

    pd.DataFrame(rows).to_parquet(buffer, index=False)
    return buffer.getvalue()


def commit_snapshot(store, spec: TrainSpec, run_key: str, snap: SnapshotCopy, head_sha, metric: str, scratch: Path, done: list[dict]) -> None:
    ref = layout.snapshot_ref(run_key, snap.step)
    weights = scratch / "snapshot.safetensors"
    trainer = scratch / "trainer.pt"
    curve_part = scratch / layout.CURVE_PART
    save_state_dict(snap.weights, weights)
    torch.save(snap.trainer, trainer)
    curve_part.write_bytes(parquet(snap.curve))
    failpoint("train.snapshot-written")
    manifest = commit_model(
        store,
        ref,
        weights,
        {
            "kind": "snapshot",
            "run_key": run_key,
            "step": snap.step,
            "epoch": snap.epoch,  # 0-based index of the epoch the step is in
            "epochs_done": snap.epochs_done,  # training progress in epochs (4.0: the end of epoch 4)
            "dev_score": snap.dev,
            "dev_metric": metric,
            "dev_set": spec.dev_data.label,
            "head_sha256": head_sha,
            "spec": to_dict(spec),
        },
        extra_files={layout.TRAINER_STATE: str(trainer), layout.CURVE_PART: str(curve_part)},
        ephemeral=(layout.TRAINER_STATE,),  # deleted once the next snapshot is committed
    )
    # only the newest trainer state is needed to resume: drop the older ones
    for old in done:
        store.delete(layout.file_key(old["ref"], old, layout.TRAINER_STATE))
    done.append(manifest)


def commit_run_sum(store, spec: TrainSpec, run_key: str, run_sum, snapshots: list[dict], head_sha, scratch: Path) -> None:
    path = scratch / "run-sum.safetensors"
    save_state_dict(run_sum, path)
    commit_model(
        store,
        layout.run_sum_ref(run_key),
        path,
        {
            "kind": "run-sum",
            "run_key": run_key,
            "count": len(snapshots),
            "snapshots": [{"ref": m["ref"], "sha256": m["sha256"], "dev_score": m["dev_score"], "step": m["step"]} for m in snapshots],
            "head_sha256": head_sha,
            "spec": to_dict(spec),
        },
    )


def commit_head(store, spec: TrainSpec, run_key: str, model, task, scratch: Path) -> None:
    head = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith(task.head_prefixes)}
    path = scratch / "head.safetensors"
    save_state_dict(head, path)
    commit_model(store, layout.head_ref(run_key), path, {"kind": "head", "run_key": run_key, "spec": to_dict(spec)})
