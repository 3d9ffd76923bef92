"""Soup-N with too few snapshots (issue 12.7): it says how many it averaged, or it is refused; and
the average job keeps what the orchestrator recorded with a draw."""
from __future__ import annotations

import json

import pytest

from jobs import layout
from jobs.average import AverageError, run_average
from jobs.draws import Draw, read_records, write_record
from jobs.errors import SpecError
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec, short_hash, spec_from_dict
from jobs.store import LocalStore

from average_support import load, make_runs, max_abs_diff, naive_mean

CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]
SCORES = [[0.5, 0.9], [0.7, 0.4], [0.3, 0.8]]  # 2 snapshots per run


@pytest.fixture
def three_runs(tmp_path):
    store = LocalStore(tmp_path / "store")
    scores = iter(SCORES)
    runs, states = make_runs(store, tmp_path / "src", CONFIGS, snapshots=2, dev=lambda spec, n: next(scores))
    return store, tuple(r.run_key for r in runs), states


def test_soup_n_over_fewer_snapshots_averages_them_all_and_says_how_many(three_runs, tmp_path):
    store, keys, states = three_runs
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("soup-5",), run_keys=keys, draw_seed=0)
    run_average(spec, tmp_path / "scratch", store=store)
    h = short_hash(list(keys), 8)
    ranked = sorted(((score, i, s) for i, run in enumerate(SCORES) for s, score in enumerate(run)), key=lambda t: -t[0])
    for k, held in ((1, 2), (2, 4), (3, 5)):
        ref = layout.draw_average_ref(0, h, "soup-5", k)
        m = read_manifest(store, ref)
        assert (m["count"], m["top_n"]) == (held, 5)
        members = [c["ref"] for c in m["constituents"]]
        expected = [layout.snapshot_ref(keys[i], 10 * (s + 1)) for score, i, s in ranked if i < k][:5]
        assert members == expected
        assert max_abs_diff(load(store, ref), naive_mean([states[r] for r in members])) < 1e-6


def test_soup_n_beyond_every_snapshot_of_the_draw_is_refused_and_writes_nothing(three_runs, tmp_path):
    store, keys, _ = three_runs
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-ca", "soup-7"), run_keys=keys, draw_seed=0)
    with pytest.raises(AverageError, match="soup-7 needs 7 snapshots but the draw's 3 runs hold only 6"):
        run_average(spec, tmp_path / "scratch", store=store)
    assert store.list_keys("averages/") == [] and store.list_keys("draws/") == []


@pytest.mark.parametrize("method", ["soup-05", "soup-007"])
def test_zero_padded_soup_is_refused_everywhere_it_can_be_named(method):
    with pytest.raises(SpecError, match=f"write '{method}' as 'soup-{int(method[5:])}'"):
        spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": [method], "run_keys": ["a"], "draw_seed": 0})
    from orchestrator.config import load_config

    with pytest.raises(SpecError, match=f"write '{method}' as 'soup-{int(method[5:])}'"):
        load_config(None, {"task": "nli", "base_model": "tiny", "draws": {"methods": ["r-ca", method]}})
    from orchestrator.analysis.tables import check_method

    with pytest.raises(ValueError, match=f"write method '{method}' as 'soup-{int(method[5:])}'"):
        check_method(method)


def test_the_job_keeps_what_the_orchestrator_recorded_with_the_draw(three_runs, tmp_path):
    store, keys, _ = three_runs
    draw = Draw(0, 3, keys, finished_runs=7).recorded(("r-ca",), "2025-01-01T00:00:00Z")
    write_record(store, draw)
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-last",), run_keys=keys, draw_seed=0)
    run_average(spec, tmp_path / "scratch", store=store)
    (after,) = read_records(store)
    assert (after.finished_runs, after.recorded_at, after.methods) == (7, "2025-01-01T00:00:00Z", ("r-ca", "r-last"))
    assert json.loads(store.get_bytes(f"averages/{draw.name}/draw.json")) == json.loads(store.get_bytes(draw.key))
