"""Planning (orchestrator/plan.py) of the head, the grid and the evaluations against a real
store in a folder: what is complete in the store is never planned again, so re-running a stage
redoes only what is missing. (The averaging plans are tested with the average stage.)"""
from __future__ import annotations

import itertools
import json

import pytest
import yaml

from jobs import layout
from jobs.errors import MalformedFile
from jobs.snapshots import commit_model
from jobs.spec import HeadRef
from jobs.store import LocalStore

from orchestrator import plan
from orchestrator.config import load_config

LRS, BSS, SEEDS = [1e-5, 2e-5], [16, 32], [1, 2]


def setup(tmp_path, head: bool = True):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "task": "nli", "base_model": "tiny", "epochs": 2,
        "head": {"enabled": head, "learning_rate": 2e-5, "batch_size": 32, "seed": 0},
        "grid": {"learning_rates": LRS, "batch_sizes": BSS, "seeds": SEEDS},
    }))
    store = LocalStore(tmp_path / "store")
    return load_config(str(config), {}), store, store.uri


def finish(store, run_key: str, steps=(2, 4)) -> list[str]:
    """Mark a run complete the way the train job does: its completion record lists its snapshots."""
    refs = [layout.snapshot_ref(run_key, s) for s in steps]
    store.put_bytes(layout.run_complete_key(run_key), json.dumps({"run_key": run_key, "snapshots": refs}).encode())
    return refs


def test_the_head_runs_first_and_the_grid_freezes_the_committed_head(tmp_path):
    cfg, store, uri = setup(tmp_path)
    request = plan.head_request(cfg, uri)
    spec = request.spec
    assert (request.kind, request.stage, spec.stage, spec.head) == ("train", "head", "head", None)
    assert (spec.learning_rate, spec.batch_size, spec.seed) == (2e-5, 32, 0)
    assert request.name == f"head-nli-{spec.run_key[:8]}" and request.labels["run"] == spec.run_key
    assert plan.committed_head(cfg, store, uri) is None  # not until its manifest exists

    weights = tmp_path / "head.safetensors"
    weights.write_bytes(b"classifier tensors")
    manifest = commit_model(store, layout.head_ref(spec.run_key), weights, {"kind": "head"})
    head = plan.committed_head(cfg, store, uri)
    assert head == HeadRef(layout.head_ref(spec.run_key), manifest["sha256"])

    grid = plan.grid_specs(cfg, uri, head)
    assert sorted((s.learning_rate, s.batch_size, s.seed) for s in grid) == sorted(itertools.product(LRS, BSS, SEEDS))
    assert all(s.stage == "train" and s.head == head for s in grid)
    keys = [s.run_key for s in grid]
    assert len(set(keys)) == len(grid) and spec.run_key not in keys
    # the run key names the head it freezes (its sha256), never where the store is
    assert not set(keys) & {s.run_key for s in plan.grid_specs(cfg, uri, HeadRef(head.ref, "0" * 64))}
    assert [s.run_key for s in plan.grid_specs(cfg, "s3://elsewhere/nli-tiny", head)] == keys


def test_complete_runs_are_never_planned_again_and_partial_ones_are_resumed(tmp_path):
    cfg, store, uri = setup(tmp_path, head=False)
    requests = plan.train_requests(cfg, store, uri, None)
    assert len(requests) == len(LRS) * len(BSS) * len(SEEDS)
    assert all(r.kind == "train" and r.name == f"train-nli-{r.spec.run_key[:8]}" for r in requests)
    assert plan.finished_runs(cfg, store, uri, None) == []

    done = requests[:3]
    for r in done:
        finish(store, r.spec.run_key)
    partial = requests[3].spec.run_key  # a snapshot committed, no completion marker: the job resumes it
    store.put_bytes(layout.manifest_key(layout.snapshot_ref(partial, 2)), b"{}")
    again = plan.train_requests(cfg, store, uri, None)
    assert [r.name for r in again] == [r.name for r in requests[3:]]
    finished = plan.finished_runs(cfg, store, uri, None)
    assert [(f.run_key, f.learning_rate, f.batch_size, f.seed) for f in finished] == [
        (r.spec.run_key, r.spec.learning_rate, r.spec.batch_size, r.spec.seed) for r in done
    ]


def test_evaluation_plans_only_the_models_without_results(tmp_path):
    cfg, store, uri = setup(tmp_path, head=False)
    run_key = plan.grid_specs(cfg, uri, None)[0].run_key
    refs = finish(store, run_key, steps=range(1, 18))
    assert plan.snapshot_refs(store, run_key) == refs
    scored = refs[::5]
    for ref in scored:
        store.put_bytes(layout.results_key(ref), b"results")

    requests = plan.evaluate_requests(cfg, store, uri, refs, per_job=6)
    assert [len(r.spec.refs) for r in requests] == [6, 6, 1]
    assert [ref for r in requests for ref in r.spec.refs] == [ref for ref in refs if ref not in scored]
    spec = requests[0].spec
    assert (spec.task, spec.base_model, spec.source_dev) == ("nli", "tiny", cfg.data.dev)
    assert spec.targets == tuple(ref for t in cfg.data.targets for ref in t.refs()) and spec.targets
    names = [r.name for r in requests]
    assert len(set(names)) == 3 and names == [r.name for r in plan.evaluate_requests(cfg, store, uri, refs, per_job=6)]

    for ref in refs:
        store.put_bytes(layout.results_key(ref), b"results")
    assert plan.evaluate_requests(cfg, store, uri, refs) == []


def test_a_malformed_run_record_is_one_line_naming_it(tmp_path):
    cfg, store, uri = setup(tmp_path, head=False)
    run_key = plan.grid_specs(cfg, uri, None)[0].run_key
    store.put_bytes(layout.run_complete_key(run_key), b'{"snapshots": "all of them"}')
    with pytest.raises(MalformedFile, match=f"run record {layout.run_complete_key(run_key)}: snapshots: expected a list of model refs"):
        plan.snapshot_refs(store, run_key)
