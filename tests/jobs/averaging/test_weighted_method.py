"""The registry's acceptance test: a method added by one module and one registration (the toy
R-WDEV of tests/jobs/averaging/wdev.py) runs end to end through the average job, the evaluate
job and the tables, on the tiny model in a local file store."""
from __future__ import annotations

import pytest

from jobs import layout
from jobs.average import run_average
from jobs.averaging.methods import METHOD_TYPES, MethodIdError, get_method, register_method, unregister_method
from jobs.evaluate import run_evaluate
from jobs.results import from_parquet_bytes
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec, DatasetRef, EvaluateSpec, spec_from_dict

from orchestrator.analysis.collect import collect_draws, collect_results
from orchestrator.analysis.tables import cumulative_table, default_methods, label
from orchestrator.analysis.variants import build_inputs

from tests.jobs.average_support import load, max_abs_diff, tiny_model_runs
from tests.jobs.averaging.wdev import WeightedByDev

DEV = DatasetRef("synthetic-nli", "en", "validation", limit=48)
TARGET = DatasetRef("synthetic-nli", "xx-near", "test", limit=32)
DEV_SCORES = [[0.4, 0.6], [0.7, 0.2]]  # two snapshots per run; the last ones weigh 0.6 and 0.2


@pytest.fixture
def wdev():
    register_method(WeightedByDev)
    yield
    unregister_method(WeightedByDev.family)


@pytest.fixture
def two_runs(tmp_path):
    """Two runs of two snapshots of the tiny model, perturbed from one initialisation."""
    store, keys, states = tiny_model_runs(tmp_path, DEV_SCORES)
    return store, tuple(keys), states


def test_the_toy_method_is_not_a_default_and_parses_only_once_registered(wdev):
    assert WeightedByDev not in METHOD_TYPES
    spec = spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": ["r-wdev"], "run_keys": ["a"], "draw_seed": 0})
    assert spec.mode == "draws" and get_method("r-wdev").label == label("r-wdev") == "R-WDEV"
    unregister_method("r-wdev")
    with pytest.raises(MethodIdError, match="unknown averaging method 'r-wdev'"):
        get_method("r-wdev")
    register_method(WeightedByDev)  # for the fixture's teardown


def test_a_registered_method_runs_through_average_evaluate_and_tables(wdev, two_runs, tmp_path):
    store, keys, states = two_runs
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-wdev",), mode="draws", run_keys=keys, draw_seed=0)
    averages = run_average(spec, tmp_path / "scratch", store=store)
    h = layout.draw_hash(keys)
    assert averages == [layout.draw_average_ref(0, h, "r-wdev", k) for k in (1, 2)]

    for k, ref in enumerate(averages, start=1):  # the weighted mean, in float64, of the last snapshots
        m = read_manifest(store, ref)
        lasts = [layout.snapshot_ref(key, 20) for key in keys[:k]]
        assert (m["method"], m["k"], [c["ref"] for c in m["constituents"]]) == ("r-wdev", k, lasts)
        weights = [scores[-1] for scores in DEV_SCORES[:k]]
        expected = {name: sum(w * states[r][name].double() for w, r in zip(weights, lasts)) / sum(weights) if v.is_floating_point() else v
                    for name, v in states[lasts[0]].items()}
        assert max_abs_diff(load(store, ref), expected) < 1e-6, k

    snapshots = sorted(states)
    run_evaluate(EvaluateSpec(store.uri, "nli", "tiny", tuple(snapshots + averages), DEV, (TARGET,), max_length=64, batch_size=32),
                 tmp_path / "eval")
    inputs = build_inputs(collect_results(store), collect_draws(store), task="nli")
    assert default_methods(inputs) == ("s-last", "s-dev", "s-ca", "s-tdev", "r-wdev")
    table = cumulative_table(inputs, "nli", ("s-dev", "r-wdev"))
    assert [c[0] for c in table.frame.columns[::2]] == ["S-DEV", "R-WDEV"]
    for k, ref in enumerate(averages, start=1):
        rows = from_parquet_bytes(store.get_bytes(layout.results_key(ref)))
        target = rows[(rows["language"] == "xx-near") & (rows["metric"] == rows["metric"].iloc[0])]["value"]
        assert table.frame.loc[k, ("R-WDEV", "mean")] == pytest.approx(float(target.mean()))
