"""The train job: fine-tune one run, commit a snapshot (and the English dev score) periodically.

Run it as `python -m jobs train --spec spec.json`. A restarted job resumes from its last
committed snapshot: weights, optimizer, scheduler, gradient scaler, every random number
generator (torch CPU and CUDA, Python, NumPy) and the step (the batch order is a function of
(seed, epoch)), so on the same hardware a resumed run ends bit-identical to an uninterrupted
one. The training curve up to a snapshot is committed with that snapshot. A finished run is
skipped.

Fail points for fault tests (jobs.faults, e.g. `XLT_FAILPOINTS=train.step@5=kill`):
`train.step` after each optimizer step, `train.snapshot-written` before a snapshot's files are
stored, `commit.before-manifest` (jobs.snapshots) between its weights and its manifest,
`train.after-snapshot` after its manifest (before the run's curve.parquet), `train.before-run-sum`,
`train.before-complete`.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np

import torch

from jobs import layout
from jobs.common import load_pretrained, log, progress, setup_torch
from jobs.data.cache import encode_cached
from jobs.errors import PermanentError, SpecError
from jobs.faults import failpoint
from jobs.models import load_tokenizer
from jobs.scratch import scratch_dir, sweep
from jobs.snapshots import AlreadyCommitted, WeightsCache, adopt_committed, commit_model, read_manifest, save_state_dict
from jobs.spec import TrainSpec, spec_to_json, to_dict
from jobs.store import ObjectStore, open_store
from jobs.tasks import get_task


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


def run_train(spec: TrainSpec, scratch: Path | None = None) -> str:
    """Train (or resume, or skip) one run; its scratch folder is removed however the job ends
    (a dead job's is swept by the next job on the machine)."""
    if scratch is not None:
        return _run_train(spec, Path(scratch))
    sweep()
    with scratch_dir("train") as own:
        return _run_train(spec, own)


def _run_train(spec: TrainSpec, scratch: Path) -> str:
    store = open_store(spec.experiment_uri)
    run_key = spec.run_key
    if store.exists(layout.run_complete_key(run_key)):
        log.info("run %s is complete; nothing to do", run_key)
        return run_key
    if not store.exists(layout.run_spec_key(run_key)):
        store.put_bytes(layout.run_spec_key(run_key), spec_to_json(spec).encode())

    task = get_task(spec.task, **spec.task_options())
    device = setup_torch(spec.num_threads)
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

    micro = spec.micro_batch_size or spec.batch_size
    accumulation = spec.batch_size // micro
    total_steps = steps_per_epoch * spec.epochs
    optimizer = torch.optim.AdamW(
        _decay_groups(model, spec.weight_decay), lr=spec.learning_rate, fused=True
    )  # fused: ~2x faster than the default on CPU and GPU
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
        curve_source = f"{ref}/{layout.CURVE_PART}" if layout.CURVE_PART in last.get("extra_files", {}) else layout.curve_key(run_key)
        if store.exists(curve_source):  # the snapshot's own part: what was committed with it
            import pandas as pd

            curve = [r for r in pd.read_parquet(io.BytesIO(store.get_bytes(curve_source))).to_dict("records") if r["step"] <= step]
        for m in done:  # rebuild the running sum from what is committed
            run_sum = _add_to_sum(run_sum, load_file(str(cache.path(m["ref"], m))))
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
    mixed = autocast(device, spec.precision)
    bar = progress(total=total_steps, initial=step, desc=f"train {run_key[:8]}", unit="step")
    t0, seen = time.perf_counter(), 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        batches = _epoch_batches(train_features, spec, epoch)
        for indices in batches[in_epoch:]:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_total = 0.0
            for start in range(0, len(indices), micro):
                part = indices[start : start + micro]
                batch = {k: v.to(device) for k, v in _pad([train_features[i] for i in part], tokenizer).items()}
                with mixed:
                    loss = model(**batch).loss * (len(part) / len(indices))
                scaler.scale(loss).backward()
                loss_total += loss.item()
            scaler.unscale_(optimizer)  # clip the true gradients (a no-op without fp16)
            torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm)
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed, as in Lightning
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(indices)
            bar.update(1)
            failpoint("train.step")
            if step % 10 == 0 or step in snap_steps:
                elapsed = time.perf_counter() - t0
                curve.append({"step": step, "epoch": epoch, "loss": loss_total, "learning_rate": scheduler.get_last_lr()[0], "examples_per_s": seen / elapsed if elapsed else 0.0})
                bar.set_postfix(loss=f"{loss_total:.3f}")
            if step in snap_steps:
                with eval_autocast(device, spec.precision):
                    dev = task.score(model, tokenizer, dev_examples, dev_features, spec.eval_batch_size)
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                run_sum = _add_to_sum(run_sum, state)
                try:
                    _commit_snapshot(store, spec, run_key, step, epoch, step / steps_per_epoch, dev, head_sha, state, optimizer,
                                     scheduler, scaler, rng_state(device), curve, scratch, done)
                except AlreadyCommitted as lost:  # a second job trains this run (a retried pod while the first runs)
                    adopt_committed(store, lost)  # the winner's snapshot checks out, else TemporaryError (exit 75)
                    log.warning("run %s: another job committed %s with other bytes first; this job stops and leaves the run to it", run_key, lost.ref)
                    return run_key
                failpoint("train.after-snapshot")
                store.put_bytes(layout.curve_key(run_key), _parquet(curve))
                log.info("run %s step %d/%d: English dev %s %.4f", run_key, step, total_steps, task.metric, dev)
            if step >= total_steps:
                break
    bar.close()

    snapshots = committed_snapshots(store, run_key)
    failpoint("train.before-run-sum")
    try:
        _commit_run_sum(store, spec, run_key, run_sum, snapshots, head_sha, scratch)
        if spec.stage == "head":
            _commit_head(store, spec, run_key, model, task, scratch)
    except AlreadyCommitted as lost:
        adopt_committed(store, lost)
        log.warning("run %s: another job committed %s with other bytes first; this job stops and leaves the run to it", run_key, lost.ref)
        return run_key
    store.put_bytes(layout.curve_key(run_key), _parquet(curve))  # also after a resume that had nothing left to train
    failpoint("train.before-complete")
    store.put_bytes(
        layout.run_complete_key(run_key),
        json.dumps({"run_key": run_key, "snapshots": [m["ref"] for m in snapshots], "spec": to_dict(spec)}, indent=1).encode(),
    )
    return run_key


def _epoch_batches(features, spec: TrainSpec, epoch: int):
    from jobs.tasks.base import train_batches

    return train_batches(features, spec.batch_size, spec.seed, epoch)


def _pad(features, tokenizer):
    from jobs.tasks.base import pad_batch

    return pad_batch(features, tokenizer.pad_token_id)


def _add_to_sum(acc: dict | None, state: dict) -> dict:
    """fp32 running sum of float tensors; integer buffers are copied (and must agree)."""
    if acc is None:
        return {k: (v.float().clone() if v.is_floating_point() else v.clone()) for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point():
            acc[k] += v.float()
    return acc


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    import pandas as pd  # imported here: the GPU check script imports this module without pandas

    pd.DataFrame(rows).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _commit_snapshot(store, spec, run_key, step, epoch, epochs_done, dev, head_sha, state, optimizer, scheduler, scaler,
                     rng, curve, scratch, done):
    ref = layout.snapshot_ref(run_key, step)
    weights = scratch / "snapshot.safetensors"
    trainer = scratch / "trainer.pt"
    curve_part = scratch / layout.CURVE_PART
    save_state_dict(state, weights)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng}, trainer)
    curve_part.write_bytes(_parquet(curve))
    failpoint("train.snapshot-written")
    manifest = commit_model(
        store,
        ref,
        weights,
        {
            "kind": "snapshot",
            "run_key": run_key,
            "step": step,
            "epoch": epoch,  # 0-based index of the epoch the step is in
            "epochs_done": epochs_done,  # training progress in epochs (4.0: the end of epoch 4)
            "dev_score": dev,
            "dev_metric": get_task(spec.task).metric,
            "dev_set": spec.dev_data.label,
            "head_sha256": head_sha,
            "spec": to_dict(spec),
        },
        extra_files={layout.TRAINER_STATE: str(trainer), layout.CURVE_PART: str(curve_part)},
        ephemeral=(layout.TRAINER_STATE,),  # deleted once the next snapshot is committed
    )
    # only the newest trainer state is needed to resume: drop the older ones
    for old in done:
        store.delete(f"{old['ref']}/{layout.TRAINER_STATE}")
    done.append(manifest)


def _commit_run_sum(store, spec, run_key, run_sum, snapshots, head_sha, scratch) -> None:
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


def _commit_head(store, spec, run_key, model, task, scratch) -> None:
    head = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith(task.head_prefixes)}
    path = scratch / "head.safetensors"
    save_state_dict(head, path)
    commit_model(store, layout.head_ref(run_key), path, {"kind": "head", "run_key": run_key, "spec": to_dict(spec)})
