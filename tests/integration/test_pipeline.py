"""End to end: the tiny pipeline through the orchestrator CLI, job subprocesses and a store."""
from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from jobs import layout
from jobs.store import open_store
from orchestrator.cli import main

# whole pipelines of real job processes: minutes on 2 idle cores, far more beside other CPU work
pytestmark = pytest.mark.timeout(1500)

CONFIG = {
    "task": "nli",
    "base_model": "tiny",
    "grid": {"learning_rates": [3.0e-4, 1.0e-3], "batch_sizes": [16, 32], "seeds": [1]},
    "epochs": 3,
    "head": {"enabled": True, "learning_rate": 5.0e-4, "batch_size": 32, "seed": 0},
    "data": {
        "train": {"dataset": "synthetic-nli", "language": "en", "split": "train"},
        "dev": {"dataset": "synthetic-nli", "language": "en", "split": "validation", "limit": 200},
        "targets": [{"dataset": "synthetic-nli", "languages": ["xx-near", "xx-mid", "xx-far"], "limit": 200}],
    },
    "draws": {"count": 2, "runs_per_draw": 3, "methods": ["r-last", "r-dev", "r-ca", "soup-2"]},
}


def run_cli(args, env=None):
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result


def pipeline(tmp_path, bucket, env=None, config=CONFIG):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = run_cli(["pipeline", "--config", str(cfg), "--bucket", bucket, "--experiment", "e2e"], env=env)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_pipeline_on_local_folder(tmp_path):
    bucket = f"file://{tmp_path}/store"
    result = pipeline(tmp_path, bucket)
    # Table 1 shape: rows k = 1..K, the selection and averaging columns
    for column in ("S-L", "S-DEV", "S-CA", "R-L", "R-DEV", "R-CA"):
        assert column in result.output
    store = open_store(f"{bucket}/e2e")
    results = pd.concat(pd.read_parquet(f"{tmp_path}/store/e2e/{k}") for k in store.list_keys("results/"))
    # every snapshot of every grid run (3 epochs x 4 runs) and every averaged model has results
    kinds = results.groupby("kind")["ref"].nunique().to_dict()
    assert kinds == {"snapshot": 12, "run-average": 4, "draw-average": 2 * 3 * 4}
    assert set(results["language"]) == {"en", "xx-near", "xx-mid", "xx-far"}
    assert results["value"].between(0, 1).all()
    # the synthetic task is learnable and transfers: R-CA over all runs is clearly above chance
    r_ca = results[(results["method"] == "r-ca") & (results["k"] == 3) & (results["language"] != "en") & (results["split"] == "test")]
    assert r_ca.groupby("ref")["value"].mean().min() > 0.6
    # draws are recorded next to the averaged models
    draws = [json.loads(store.get_bytes(k)) for k in store.list_keys("draws/")]
    assert sorted(d["seed"] for d in draws) == [0, 1] and all(len(d["run_keys"]) == 3 for d in draws)

    # a second run is a no-op: everything is complete, nothing is retrained or re-evaluated
    before = {k: store.size(k) for k in store.list_keys()}
    again = pipeline(tmp_path, bucket)
    assert "nothing to do" in again.output
    assert {k: store.size(k) for k in store.list_keys() if not k.startswith("logs/")} == {
        k: v for k, v in before.items() if not k.startswith("logs/")
    }


@pytest.mark.slow
@pytest.mark.s3
def test_pipeline_on_s3(tmp_path, s3_env):
    small = dict(CONFIG, grid={"learning_rates": [1.0e-3], "batch_sizes": [16, 32], "seeds": [1]}, epochs=1,
                 draws={"count": 1, "runs_per_draw": 2, "methods": ["r-ca", "soup-1"]})
    prefix = f"s3://test/{uuid.uuid4().hex[:8]}"
    pipeline(tmp_path, prefix, config=small)
    store = open_store(f"{prefix}/e2e")
    keys = store.list_keys()
    assert sum("/snapshots/" in k and k.endswith("/manifest.json") for k in keys) == 3  # head run + 2 runs, 1 epoch each
    assert sum(k.startswith("results/") for k in keys) == 2 + 2 + 2 * 2  # snapshots, CA, draw averages
    assert any(k.startswith("logs/train-") for k in keys)  # job logs outlive the job
