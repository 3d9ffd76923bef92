"""The train job: fine-tune one run, commit a snapshot (and the English dev score) periodically.

Run it as `python -m jobs train --spec spec.json`. A restarted job resumes from its last
committed snapshot: weights, optimizer, scheduler, gradient scaler, every random number
generator (torch CPU and CUDA, Python, NumPy) and the step (the batch order is a function of
(seed, epoch)), so on the same hardware a resumed run ends bit-identical to an uninterrupted
one. The training curve up to a snapshot is committed with that snapshot. A finished run is
skipped.

The loop never waits on the host: the loss stays on the device and is read only for the curve
(at snapshots and at the end) and for the progress line (jobs.progress, every
XLT_PROGRESS_SECONDS); inputs go to a GPU from pinned memory without blocking; fp32 runs use
TF32 matmuls on a GPU (XLT_TF32=0 turns them off; docs/fidelity.md). Snapshots are committed by
a worker thread while training goes on (jobs.train_commits).

Fail points for fault tests (jobs.faults, e.g. `XLT_FAILPOINTS=train.step@5=kill`):
`train.step` after each optimizer step, `train.snapshot-written` before a snapshot's files are
stored, `commit.before-manifest` (jobs.snapshots) between its weights and its manifest,
`train.after-snapshot` after its manifest (before the run's curve.parquet), `train.before-run-sum`,
`train.before-complete`. The snapshot points fire in the commit worker's thread.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import torch

from jobs import layout
from jobs.common import load_pretrained, log, progress, setup_torch
from jobs.data.cache import encode_cached
from jobs.errors import PermanentError, SpecError
from jobs.faults import failpoint
from jobs.models import load_tokenizer
from jobs.progress import Progress, job_name
from jobs.scratch import scratch_dir, sweep
from jobs.snapshots import AlreadyCommitted, WeightsCache, adopt_committed, read_manifest
from jobs.spec import TrainSpec, spec_to_json, to_dict
from jobs.store import ObjectStore, open_store
from jobs.tasks import get_task
from jobs.tasks.base import pad_batch, to_model, train_batches
from jobs.train_commits import (
    CommitTimes, CommitWorker, RunCommitter, add_to_sum, commit_head, commit_run_sum, parquet, take_copy,
)


def committed_snapshots(store: ObjectStore, run_key: str) -> list[dict]:
    """Manifests of the run's committed snapshots, by step."""
    prefix = f"{layout.run_prefix(run_key)}/snapshots/"
    manifests = []
    for key in store.list_keys(prefix):
        if key.endswith("/" + layout.MANIFEST):
            manifests.append(read_manifest(store, key[: -len("/" + layout.MANIFEST)]))  # malformed: one line naming it
    return sorted(manifests, key=lambda m: m["step"])


def snapshot_steps(spec: TrainSpec, steps_per_epoch: int) -> list[int]:
    """Steps after which a snapshot is taken (the spec's schedule); a schedule the run cannot
    give is a permanent error, raised before any training."""
    try:
        return spec.snapshot_steps(steps_per_epoch)
    except SpecError as e:
        raise PermanentError(f"{e} ({steps_per_epoch} steps per epoch at batch size {spec.batch_size})") from None


def autocast(device: torch.device, precision: str | None):
    """The mixed-precision context of a spec's precision: fp16 (the paper's "16-mixed") or bf16
    autocast; fp32 (or None) runs without one."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision or "fp32")
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def eval_autocast(device: torch.device, precision: str | None):
    """Autocast for scoring: the training precision on a GPU; fp32 on CPUs (CPU fp16 matmuls are
    slow and scores there are for tests and small replications)."""
    return autocast(device, precision if device.type == "cuda" else None)


def rng_state(device: torch.device) -> dict:
    """Every random number generator the run may draw from (dropout uses torch's)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _decay_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_head(store: ObjectStore, spec: TrainSpec, model, task, cache: WeightsCache) -> None:
    """Load the shared head into the model and freeze it."""
    from safetensors.torch import load_file

    manifest = read_manifest(store, spec.head.ref)
    if manifest["sha256"] != spec.head.sha256:
        raise PermanentError(
            f"head {spec.head.ref} has sha256 {manifest['sha256'][:12]}, the spec expects {spec.head.sha256[:12]}"
        )
    head = load_file(str(cache.path(spec.head.ref, manifest)))
    missing = [k for k in head if k not in model.state_dict()]
    if missing:
        raise PermanentError(f"head {spec.head.ref} does not fit the model: unknown tensors {missing[:3]}")
    model.load_state_dict(head, strict=False)
    for name, p in model.named_parameters():
        if name.startswith(task.head_prefixes):
            p.requires_grad_(False)


def allow_tf32(device: torch.device, precision: str | None) -> bool:
    """TF32 matmuls for an fp32 run on a GPU (mixed-precision runs do their matmuls in fp16/bf16
    anyway): about 2x faster fp32 matmuls on Ampere and later, a deviation from the paper's
    setup (docs/fidelity.md); XLT_TF32=0 keeps full fp32."""
    if device.type != "cuda" or (precision or "fp32") != "fp32" or os.environ.get("XLT_TF32", "1") == "0":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True  # the CUDA-only switch (set_float32_matmul_precision also changes CPU matmuls)
    return True


@dataclass
class TrainStats:
    """What a train job measured, for the benchmark (bench/train): pass one to run_train."""

    loop_seconds: float = 0.0  # the training loop, snapshots included
    steps: int = 0  # optimizer steps this job took
    examples: int = 0
    first_snapshot_at: float | None = None  # loop seconds when the first snapshot was reached
    examples_before_snapshot: int = 0
    snapshots: list = field(default_factory=list)  # jobs.train_commits.CommitTimes per snapshot
    final_wait: float = 0.0  # the loop's end waiting for the last commit
    run_sum_seconds: float = 0.0
    total_seconds: float = 0.0


def run_train(spec: TrainSpec, scratch: Path | None = None, *, background_commit: bool = True,
              stats: TrainStats | None = None) -> str:
    """Train (or resume, or skip) one run; its scratch folder is removed however the job ends
    (a dead job's is swept by the next job on the machine). `background_commit=False` commits
    each snapshot inside the loop (the behaviour before; the benchmark's baseline)."""
    stats = stats if stats is not None else TrainStats()
    start = time.perf_counter()
    try:
        if scratch is not None:
            return _run_train(spec, Path(scratch), background_commit, stats)
        sweep()
        with scratch_dir("train") as own:
            return _run_train(spec, own, background_commit, stats)
    finally:
        stats.total_seconds = time.perf_counter() - start


def _run_train(spec: TrainSpec, scratch: Path, background_commit: bool, stats: TrainStats) -> str:
    store = open_store(spec.experiment_uri)
    run_key = spec.run_key
    if store.exists(layout.run_complete_key(run_key)):
        log.info("run %s is complete; nothing to do", run_key)
        return run_key
    if not store.exists(layout.run_spec_key(run_key)):
        store.put_bytes(layout.run_spec_key(run_key), spec_to_json(spec).encode())

    task = get_task(spec.task, **spec.task_options())
    device = setup_torch(spec.num_threads)
    allow_tf32(device, spec.precision)
    cache = WeightsCache(store, scratch / "cache")

    tokenizer = load_tokenizer(spec.base_model)
    train_examples = task.load(spec.train_data)
    dev_examples = task.load(spec.dev_data)
    train_features = encode_cached(task, tokenizer, train_examples, spec.max_length)
    steps_per_epoch = math.ceil(len(train_features) / spec.batch_size)
    snap_steps = set(snapshot_steps(spec, steps_per_epoch))  # refuse an impossible schedule before training
    dev_features = encode_cached(task, tokenizer, dev_examples, spec.max_length)

    model = load_pretrained(task, spec.base_model)
    head_sha = None
    if spec.head:
        load_head(store, spec, model, task, cache)
        head_sha = spec.head.sha256
    if spec.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)

    from transformers import get_linear_schedule_with_warmup

    total_steps = steps_per_epoch * spec.epochs
    optimizer = torch.optim.AdamW(
        _decay_groups(model, spec.weight_decay), lr=spec.learning_rate, fused=True
    )  # fused: ~2x faster than the default on CPU and GPU, and it takes fp16's GradScaler checks without a host sync
    scheduler = get_linear_schedule_with_warmup(optimizer, round(spec.warmup_ratio * total_steps), total_steps)

    # fp16 needs loss scaling (Lightning's "16-mixed" uses torch's GradScaler); bf16 and fp32 don't
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")

    # ---- resume from the last committed snapshot ----
    done = committed_snapshots(store, run_key)
    step = 0
    curve: list[dict] = []
    run_sum: dict[str, torch.Tensor] | None = None
    if done:
        last = done[-1]
        from safetensors.torch import load_file

        ref = last["ref"]
        if layout.TRAINER_STATE not in last.get("extra_files", {}):
            raise PermanentError(f"cannot resume run {run_key}: {ref} has no trainer state")
        model.load_state_dict(load_file(str(cache.path(ref, last))), strict=False)
        state = torch.load(cache.path(ref, last, layout.TRAINER_STATE), map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = last["step"]
        curve_source = layout.file_key(ref, last, layout.CURVE_PART) if layout.CURVE_PART in last.get("extra_files", {}) else layout.curve_key(run_key)
        if store.exists(curve_source):  # the snapshot's own part: what was committed with it
            import pandas as pd

            curve = [r for r in pd.read_parquet(io.BytesIO(store.get_bytes(curve_source))).to_dict("records") if r["step"] <= step]
        for m in done:  # rebuild the running sum from what is committed
            run_sum = add_to_sum(run_sum, load_file(str(cache.path(m["ref"], m))))
        resume_rng = state.get("rng")
        log.info("resuming run %s at step %d (%d snapshots committed)", run_key, step, len(done))
    else:
        resume_rng = None

    if resume_rng is not None:
        set_rng_state(resume_rng, device)
    else:
        if done:  # a trainer state written before RNG states were saved
            log.warning("run %s: the trainer state has no RNG state; later snapshots will differ from an uninterrupted run", run_key)
        torch.manual_seed(spec.seed)
    committer = RunCommitter(store, spec, run_key, head_sha, task.metric, total_steps, scratch, done, run_sum)
    line = Progress("train", total_steps, "step", store=store, job=job_name("train", run_key), initial=step)
    try:
        worker = CommitWorker(committer.commit, background=background_commit)
        try:
            run = _Training(spec, model, tokenizer, task, optimizer, scheduler, scaler, device, train_features, dev_examples,
                            dev_features, steps_per_epoch, total_steps, snap_steps)
            if not _train_loop(run, step, curve, committer, worker, line, stats):
                return run_key  # another job committed a snapshot of this run first: it is that job's now
        finally:
            worker.close()  # never leave (nor drop the scratch folder) while a commit is running
        _finish_run(store, spec, run_key, model, task, committer.run_sum, curve, head_sha, scratch, stats)
    finally:
        line.close()
    return run_key


def _finish_run(store, spec, run_key, model, task, run_sum, curve, head_sha, scratch, stats: TrainStats) -> None:
    """The run-sum (and a head run's head), the whole curve, then the completion marker."""
    snapshots = committed_snapshots(store, run_key)
    failpoint("train.before-run-sum")
    started = time.perf_counter()
    try:
        commit_run_sum(store, spec, run_key, run_sum, snapshots, head_sha, scratch)
        if spec.stage == "head":
            commit_head(store, spec, run_key, model, task, scratch)
    except AlreadyCommitted as lost:
        adopt_committed(store, lost)
        log.warning("run %s: another job committed %s with other bytes first; this job stops and leaves the run to it", run_key, lost.ref)
        return
    stats.run_sum_seconds = time.perf_counter() - started
    store.put_bytes(layout.curve_key(run_key), parquet(curve))  # also after a resume that had nothing left to train
    failpoint("train.before-complete")
    store.put_bytes(
        layout.run_complete_key(run_key),
        json.dumps({"run_key": run_key, "snapshots": [m["ref"] for m in snapshots], "spec": to_dict(spec)}, indent=1).encode(),
    )


@dataclass
class _Training:
    """What the training loop works with."""

    spec: TrainSpec
    model: object
    tokenizer: object
    task: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    device: torch.device
    train_features: list
    dev_examples: list
    dev_features: list
    steps_per_epoch: int
    total_steps: int
    snap_steps: set


def _train_loop(run: _Training, step: int, curve: list[dict], committer: RunCommitter, worker: CommitWorker,
                line: Progress, stats: TrainStats) -> bool:
    """Train from `step` to the end, handing each snapshot to the commit worker; False if another
    job owns the run (a snapshot lost to it). `curve` gets a row every 10 steps and at each
    snapshot; its losses stay device tensors until a snapshot or the end needs their values."""
    spec, model, device, optimizer, scheduler, scaler = run.spec, run.model, run.device, run.optimizer, run.scheduler, run.scaler
    micro = spec.micro_batch_size or spec.batch_size
    mixed = autocast(device, spec.precision)
    cuda = device.type == "cuda"
    bar = progress(total=run.total_steps, initial=step, desc=f"train {spec.run_key[:8]}", unit="step")
    t0, seen, first_step = time.perf_counter(), 0, step
    window = _Window(t0)  # the steps since the last progress line
    trainable = [p for p in model.parameters() if p.requires_grad]
    while step < run.total_steps:
        epoch, in_epoch = divmod(step, run.steps_per_epoch)
        batches = _epoch_batches(run.train_features, spec, epoch)
        for indices in batches[in_epoch:]:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_total = None  # this step's loss, summed on the device in float64 (the float sum of .item()s it replaces)
            for start in range(0, len(indices), micro):
                part = indices[start : start + micro]
                batch = to_model(model, _pad([run.train_features[i] for i in part], run.tokenizer), device)
                with mixed:
                    loss = model(**batch).loss * (len(part) / len(indices))
                scaler.scale(loss).backward()
                term = loss.detach().double()
                loss_total = term if loss_total is None else loss_total + term
            scaler.unscale_(optimizer)  # clip the true gradients (a no-op without fp16)
            torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm)
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed, as in Lightning
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(indices)
            window.add(loss_total, len(indices))
            bar.update(1)
            failpoint("train.step")
            worker.check()  # a failed background commit stops the job here, with its exit code
            if committer.lost:
                return False
            if step % 10 == 0 or step in run.snap_steps:
                elapsed = time.perf_counter() - t0
                curve.append({"step": step, "epoch": epoch, "loss": loss_total, "learning_rate": scheduler.get_last_lr()[0],
                              "examples_per_s": seen / elapsed if elapsed else 0.0})
                if not bar.disable:  # an interactive terminal: a sync every 10 steps is fine there
                    bar.set_postfix(loss=f"{float(loss_total):.3f}")
            if line.due():
                loss_mean, rate = window.take()
                line.update(step, f"loss {loss_mean:.4f}", f"{rate:.1f} ex/s")
            if step in run.snap_steps:
                if stats.first_snapshot_at is None:
                    if cuda:
                        torch.cuda.synchronize()  # the steps' time, not the host's run-ahead (dev scoring syncs next anyway)
                    stats.first_snapshot_at, stats.examples_before_snapshot = time.perf_counter() - t0, seen
                if not _hand_over_snapshot(run, step, epoch, curve, committer, worker, stats):
                    return False
            if step >= run.total_steps:
                break
    started = time.perf_counter()
    worker.wait()
    stats.final_wait = time.perf_counter() - started
    stats.loop_seconds, stats.examples, stats.steps = time.perf_counter() - t0, seen, step - first_step
    bar.close()
    _materialise_losses(curve)
    return not committer.lost


def _hand_over_snapshot(run: _Training, step: int, epoch: int, curve: list[dict], committer: RunCommitter, worker: CommitWorker,
                        stats: TrainStats) -> bool:
    """Score English dev on the live model, wait for the previous commit (one copy at most),
    copy the state and give it to the worker; False if the previous snapshot was lost to
    another job."""
    times = CommitTimes(step, background=worker.background)
    started = time.perf_counter()
    with eval_autocast(run.device, run.spec.precision):
        dev = run.task.score(run.model, run.tokenizer, run.dev_examples, run.dev_features, run.spec.eval_batch_size)
    times.dev = time.perf_counter() - started
    started = time.perf_counter()
    worker.wait()  # the previous snapshot is committed and its copy released
    times.wait = time.perf_counter() - started
    if committer.lost:
        return False
    started = time.perf_counter()
    _materialise_losses(curve)
    snap = take_copy(run.model, run.optimizer, run.scheduler, run.scaler, rng_state(run.device), run.device, copy=worker.background,
                     step=step, epoch=epoch, epochs_done=step / run.steps_per_epoch, dev=dev, curve=list(curve))
    times.copy = time.perf_counter() - started
    committer.times.append(times)
    stats.snapshots.append(times)
    started = time.perf_counter()
    worker.submit(snap)  # the worker holds the only reference to the copy: released once committed
    if not worker.background:
        times.commit = time.perf_counter() - started
    return True


class _Window:
    """Loss and examples of the steps since the last progress line (the loss stays on the device)."""

    def __init__(self, now: float):
        self.start, self.loss, self.steps, self.examples = now, None, 0, 0

    def add(self, loss: torch.Tensor, examples: int) -> None:
        self.loss = loss if self.loss is None else self.loss + loss
        self.steps += 1
        self.examples += examples

    def take(self) -> tuple[float, float]:
        """(mean loss, examples/s) of the window, then a new window: one host sync."""
        now = time.perf_counter()
        mean = float(self.loss) / self.steps if self.steps else float("nan")
        rate = self.examples / (now - self.start) if now > self.start else 0.0
        self.start, self.loss, self.steps, self.examples = now, None, 0, 0
        return mean, rate


def _materialise_losses(curve: list[dict]) -> None:
    """Replace the device-tensor losses of the curve by floats, in one transfer."""
    pending = [i for i, row in enumerate(curve) if isinstance(row["loss"], torch.Tensor)]
    if pending:
        values = torch.stack([curve[i]["loss"] for i in pending]).tolist()
        for i, value in zip(pending, values):
            curve[i]["loss"] = value


def _epoch_batches(features, spec: TrainSpec, epoch: int):
    return train_batches(features, spec.batch_size, spec.seed, epoch)


def _pad(features, tokenizer):
    return pad_batch(features, tokenizer.pad_token_id)


