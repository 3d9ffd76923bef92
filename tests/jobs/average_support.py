"""Fake finished runs for the averaging tests: snapshots and run-sums committed exactly as the
train job commits them (jobs/train.py `_commit_snapshot` and `_commit_run_sum`), no training.

Imported by the test_average*.py modules; it holds no tests itself.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from jobs import layout
from jobs.draws import RunInfo
from jobs.snapshots import commit_model, save_state_dict
from jobs.spec import DatasetRef, TrainSpec, to_dict

HEAD_SHA = "h" * 64


def small_shapes() -> dict[str, tuple[int, ...]]:
    return {
        "embeddings.word_embeddings.weight": (50, 8),
        "encoder.layer.0.dense.weight": (8, 8),
        "encoder.layer.0.dense.bias": (8,),
        "encoder.layer.0.scale": (),
        "classifier.weight": (3, 8),
        "classifier.bias": (3,),
    }


def run_spec(uri: str, lr: float, bs: int, seed: int) -> TrainSpec:
    return TrainSpec(
        experiment_uri=uri,
        task="nli",
        base_model="tiny",
        train_data=DatasetRef("synthetic-nli", "en", "train"),
        dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=48),
        learning_rate=lr,
        batch_size=bs,
        seed=seed,
        epochs=3,
        snapshot_every="1 epochs",  # what a config that names neither gets (orchestrator.config)
        precision="fp16",
    )


def random_state(shapes: dict, generator: torch.Generator, head: dict | None = None, dtype=torch.float32) -> dict:
    state = {name: torch.randn(shape, generator=generator).to(dtype) for name, shape in shapes.items()}
    state["embeddings.position_ids"] = torch.arange(12, dtype=torch.int64).reshape(1, 12)
    if head:
        state.update(head)
    return state


def commit_run(
    store,
    scratch: Path,
    spec: TrainSpec,
    states: list[dict],
    dev_scores: list[float],
    head_sha: str | None = HEAD_SHA,
) -> tuple[str, list[dict]]:
    """Commit snapshots (steps 10, 20, ...), the run-sum and complete.json of one run."""
    key = spec.run_key
    scratch.mkdir(parents=True, exist_ok=True)
    snaps = []
    run_sum = None
    for i, (state, dev) in enumerate(zip(states, dev_scores)):
        step = 10 * (i + 1)
        path = scratch / f"{key}-{step}.safetensors"
        save_state_dict(state, path)
        m = commit_model(
            store,
            layout.snapshot_ref(key, step),
            path,
            {
                "kind": "snapshot", "run_key": key, "step": step, "epoch": i, "dev_score": dev, "dev_metric": "acc",
                "dev_set": spec.dev_data.label, "head_sha256": head_sha, "spec": to_dict(spec),
            },
        )
        snaps.append(m)
        if run_sum is None:
            run_sum = {k: (v.float().clone() if v.is_floating_point() else v.clone()) for k, v in state.items()}
        else:
            for k, v in state.items():
                if v.is_floating_point():
                    run_sum[k] += v.float()
    path = scratch / f"{key}-sum.safetensors"
    save_state_dict(run_sum, path)
    commit_model(
        store,
        layout.run_sum_ref(key),
        path,
        {
            "kind": "run-sum", "run_key": key, "count": len(snaps),
            "snapshots": [{"ref": m["ref"], "sha256": m["sha256"], "dev_score": m["dev_score"], "step": m["step"]} for m in snaps],
            "head_sha256": head_sha, "spec": to_dict(spec),
        },
    )
    store.put_bytes(layout.run_complete_key(key), json.dumps({"run_key": key, "snapshots": [m["ref"] for m in snaps]}).encode())
    return key, snaps


def make_runs(store, scratch: Path, configs: list[tuple[float, int]], seeds=(1,), snapshots: int = 3, shapes=None, generator_seed: int = 0, dev=None):
    """Runs over (lr, bs) configs x seeds sharing one frozen head; returns RunInfos and states by ref."""
    shapes = shapes or small_shapes()
    g = torch.Generator().manual_seed(generator_seed)
    head = {k: torch.randn(s, generator=g) for k, s in shapes.items() if k.startswith("classifier.")}
    runs, states = [], {}
    for lr, bs in configs:
        for seed in seeds:
            spec = run_spec(store.uri, lr, bs, seed)
            snap_states = [random_state(shapes, g, head) for _ in range(snapshots)]
            scores = dev(spec, snapshots) if dev else [round(float(torch.rand((), generator=g)), 3) for _ in range(snapshots)]
            key, snaps = commit_run(store, scratch, spec, snap_states, scores)
            runs.append(RunInfo(key, lr, bs, seed))
            for m, s in zip(snaps, snap_states):
                states[m["ref"]] = s
    return runs, states


def load(store, ref: str) -> dict:
    from safetensors.torch import load_file

    from jobs.snapshots import WeightsCache

    return load_file(str(WeightsCache(store).path(ref)))


def naive_mean(states: list[dict]) -> dict:
    out = {}
    for name, v in states[0].items():
        if v.is_floating_point():
            out[name] = sum(s[name].double() for s in states) / len(states)
        else:
            out[name] = v
    return out


def max_abs_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    worst = 0.0
    for name in a:
        if a[name].is_floating_point():
            worst = max(worst, (a[name].double() - b[name].double()).abs().max().item() if a[name].numel() else 0.0)
        else:
            assert torch.equal(a[name], b[name]), name
    return worst


def tiny_model_runs(tmp_path: Path, dev_scores: list[list[float]]):
    """Runs of the tiny NLI model in a local store under tmp_path, one per list of English dev
    scores (a snapshot per score), perturbed from one initialisation: (store, run keys, states by ref)."""
    from jobs.common import build_model
    from jobs.store import LocalStore
    from jobs.tasks import get_task

    store = LocalStore(tmp_path / "store")
    base = {k: v.detach().clone() for k, v in build_model(get_task("nli"), "tiny").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    keys, states = [], {}
    for lr, scores in zip((1e-5, 2e-5, 3e-5, 4e-5), dev_scores):
        snaps = [{k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() for k, v in base.items()} for _ in scores]
        key, manifests = commit_run(store, tmp_path / "src", run_spec(store.uri, lr, 16, 1), snaps, scores, head_sha=None)
        keys.append(key)
        states.update({m["ref"]: s for m, s in zip(manifests, snaps)})
    return store, keys, states
