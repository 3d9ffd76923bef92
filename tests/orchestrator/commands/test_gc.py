"""`orchestrator gc` deletes only what no pending stage needs; a pending average still runs after it."""
from __future__ import annotations

import yaml
from click.testing import CliRunner

from jobs import layout
from jobs.average import run_average
from jobs.snapshots import is_committed, read_manifest
from jobs.spec import AverageSpec
from jobs.store import LocalStore

from orchestrator import plan
from orchestrator.commands.gc import gc
from orchestrator.context import open_experiment

from tests.jobs.average_support import make_runs

CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]


def _setup(tmp_path):
    bucket = tmp_path / "bucket"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "task": "nli", "base_model": "tiny", "epochs": 3, "head": {"enabled": False},
        "grid": {"learning_rates": [1e-5, 2e-5, 3e-5], "batch_sizes": [16, 32], "seeds": [1]},
        "draws": {"count": 1, "runs_per_draw": 3, "methods": ["r-last", "soup-2"]},
    }))
    exp = open_experiment(str(bucket), "gc", str(config), {})
    runs, states = make_runs(exp.store, tmp_path / "src", CONFIGS, snapshots=4)
    assert {r.run_key for r in plan.finished_runs(exp.config, exp.store, exp.uri, None)} == {r.run_key for r in runs}
    return bucket, config, exp, runs, states


def _gc(bucket, config, *flags):
    result = CliRunner().invoke(gc, ["--bucket", str(bucket), "--experiment", "gc", "--config", str(config), *flags])
    assert result.exit_code == 0, result.output
    return result.output


def test_gc_keeps_what_pending_stages_need_and_deletes_the_rest(tmp_path):
    bucket, config, exp, runs, states = _setup(tmp_path)
    store: LocalStore = exp.store
    # nothing evaluated yet: every snapshot is an input of the pending evaluate stage
    assert "nothing to delete" in _gc(bucket, config, "--yes")
    for ref in states:
        store.put_bytes(layout.results_key(ref), b"results")
    draw = plan.make_draws(exp.config, plan.finished_runs(exp.config, store, exp.uri, None))[0]
    spec = AverageSpec(experiment_uri=exp.uri, task="nli", methods=("r-last", "soup-2"), run_keys=draw.run_keys, draw_seed=draw.seed)
    from jobs.api import draw_inputs

    needed = draw_inputs(store, spec)
    before = set(store.list_keys())
    out = _gc(bucket, config, "--dry-run")
    assert "dry run, nothing deleted" in out and set(store.list_keys()) == before
    doomed = [line.split()[1] for line in out.splitlines() if line.startswith("  snapshot")]
    assert doomed and not set(doomed) & needed
    assert "bytes) in" in out
    _gc(bucket, config, "--yes")
    for ref in states:
        assert is_committed(store, ref) == (ref not in doomed)
        assert store.exists(layout.weights_key(ref)) == (ref not in doomed)
    for r in runs:
        info = read_manifest(store, layout.run_sum_ref(r.run_key))
        snaps = sorted(info["snapshots"], key=lambda s: s["step"])
        assert is_committed(store, snaps[-1]["ref"])  # last
        assert is_committed(store, max(snaps, key=lambda s: s["dev_score"])["ref"])  # src-dev
    # the pending average still finds every input
    refs = run_average(spec, tmp_path / "scratch", store=store)
    assert len(refs) == 6
    # once the averages are evaluated they go too, and so do soup members nothing needs any more
    for ref in refs:
        store.put_bytes(layout.results_key(ref), b"results")
    out = _gc(bucket, config, "--yes")
    assert sum(line.startswith("  average ") for line in out.splitlines()) == 6
    assert not store.list_keys("averages/" + refs[0].split("/")[1] + "/r-last")
    assert store.list_keys("draws") and store.exists(f"averages/{refs[0].split('/')[1]}/draw.json")
    assert all(store.exists(layout.results_key(r)) for r in list(states) + refs)
    assert run_average(spec, tmp_path / "scratch2", store=store) == []  # evaluated counts as done
