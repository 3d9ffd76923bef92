"""What each stage would run now (orchestrator/stage_plans.py), shared by the stage commands and
`render`: the head while it is missing, then the grid; a stage whose inputs are not there yet
stops in one line naming the command to run first."""
from __future__ import annotations

import json

import click
import pytest
import yaml

from jobs import layout
from jobs.snapshots import commit_model

from orchestrator import plan
from orchestrator.context import open_experiment
from orchestrator.stage_plans import STAGES, plan_stage, required_head


@pytest.fixture
def exp(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "task": "nli", "base_model": "tiny", "epochs": 1,
        "grid": {"learning_rates": [1e-5, 2e-5], "batch_sizes": [16], "seeds": [1]},
    }))
    return open_experiment(f"file://{tmp_path / 'store'}", "plans", str(config), {})


def commit_head(exp, tmp_path):
    weights = tmp_path / "head.safetensors"
    weights.write_bytes(b"classifier tensors")
    commit_model(exp.store, layout.head_ref(plan.head_spec(exp.config, exp.uri).run_key), weights, {"kind": "head"})


def test_the_head_comes_first_then_the_grid_then_evaluation(exp, tmp_path):
    head = plan.head_request(exp.config, exp.uri)
    assert [r.name for r in plan_stage(exp, "sweep")] == [r.name for r in plan_stage(exp, "head")] == [head.name]
    with pytest.raises(click.ClickException, match="the head stage has not run yet: run `orchestrator sweep` first"):
        plan_stage(exp, "train")
    with pytest.raises(click.ClickException, match="the head stage has not run yet"):
        plan_stage(exp, "evaluate")

    commit_head(exp, tmp_path)
    assert plan_stage(exp, "head") == []
    grid = plan_stage(exp, "sweep")
    assert [r.stage for r in grid] == ["train", "train"] and plan_stage(exp, "train") == grid
    assert all(r.spec.head == required_head(exp) for r in grid)
    for stage in ("evaluate", "evaluate-averages", "average"):
        with pytest.raises(click.ClickException, match=f"no finished runs for the {stage} stage: run `orchestrator sweep` first"):
            plan_stage(exp, stage)

    run_key = grid[0].spec.run_key
    refs = [layout.snapshot_ref(run_key, 1)]
    exp.store.put_bytes(layout.run_complete_key(run_key), json.dumps({"snapshots": refs}).encode())
    assert [r.spec.run_key for r in plan_stage(exp, "train")] == [grid[1].spec.run_key]
    [evaluate] = plan_stage(exp, "evaluate")
    assert evaluate.spec.refs == tuple(refs)
    assert plan_stage(exp, "evaluate-averages") == []  # nothing averaged is recorded yet
    assert set(STAGES) == {"sweep", "head", "train", "evaluate", "evaluate-averages", "average"}
