"""Fused average-then-evaluate: an average job scores its own averages (tiny XLM-R, synthetic NLI)."""
from __future__ import annotations

import pytest

from jobs import layout
from jobs.average import run_average
from jobs.common import build_model
from jobs.models import load_tokenizer
from jobs.results import from_parquet_bytes
from jobs.snapshots import is_committed
from jobs.spec import AverageSpec, DatasetRef, Evaluation, short_hash
from jobs.tasks import get_task

from average_support import naive_mean, tiny_model_runs

DEV = DatasetRef("synthetic-nli", "en", "validation", limit=48)
TARGET = DatasetRef("synthetic-nli", "xx-near", "test", limit=32)
EVALUATION = Evaluation(base_model="tiny", source_dev=DEV, targets=(TARGET,), max_length=64, batch_size=32)


@pytest.fixture
def tiny_runs(tmp_path):
    """Two runs of two snapshots of the tiny model, perturbed from one initialisation."""
    return tiny_model_runs(tmp_path, [[0.4, 0.5], [0.4, 0.5]])


def _expected_scores(state: dict) -> dict[tuple[str, str], float]:
    """What the evaluate job's code computes for this state: (language, metric) -> value."""
    task = get_task("nli")
    model = build_model(task, "tiny")
    model.load_state_dict(state, strict=False)
    tokenizer = load_tokenizer("tiny")
    out = {}
    for ref in (DEV, TARGET):
        examples = task.load(ref)
        values = task.evaluate(model, tokenizer, examples, task.encode(tokenizer, examples, 64), 32)
        out.update({(ref.language, metric): value for metric, value in values.items()})
    return out


def _results(store, ref: str):
    return from_parquet_bytes(store.get_bytes(layout.results_key(ref)))


def test_dropped_averages_are_scored_exactly_and_not_stored(tiny_runs, tmp_path):
    store, keys, states = tiny_runs
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-ca", "r-last"), run_keys=tuple(keys), draw_seed=0,
                       evaluate=EVALUATION, keep_averages=False)
    refs = run_average(spec, tmp_path / "scratch", store=store)
    h = short_hash(list(keys), 8)
    expected_refs = {layout.draw_average_ref(0, h, m, k) for m in ("r-ca", "r-last") for k in (1, 2)}
    assert set(refs) == expected_refs
    for ref in refs:
        assert not is_committed(store, ref) and not store.exists(layout.weights_key(ref))  # weights dropped
    assert not [k for k in store.list_keys("averages") if k.endswith(".safetensors")]

    # R-CA at k = 2 is the mean of all four snapshots: its scores equal the evaluate code's on that mean
    ref = layout.draw_average_ref(0, h, "r-ca", 2)
    frame = _results(store, ref)
    assert set(frame["method"]) == {"r-ca"} and set(frame["k"]) == {2} and set(frame["draw_seed"]) == {0}
    expected = _expected_scores(naive_mean(list(states.values())))
    got = {(row.language, row.metric): row.value for row in frame.itertuples()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key

    assert run_average(spec, tmp_path / "scratch2", store=store) == []  # scored counts as done


def test_kept_averages_missing_scores_are_evaluated_from_the_store(tiny_runs, tmp_path):
    store, keys, states = tiny_runs
    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-ca",), run_keys=tuple(keys), draw_seed=0, evaluate=EVALUATION)
    refs = run_average(spec, tmp_path / "scratch", store=store)
    assert len(refs) == 2
    for ref in refs:
        assert is_committed(store, ref) and store.exists(layout.results_key(ref))
    # lose one score: a retry scores the stored average again and recomputes no average
    lost = refs[1]
    before = _results(store, lost)
    store.delete(layout.results_key(lost))
    weights_before = store.get_bytes(layout.weights_key(lost))
    assert run_average(spec, tmp_path / "scratch2", store=store) == []  # nothing averaged again
    assert store.get_bytes(layout.weights_key(lost)) == weights_before
    after = _results(store, lost)
    assert after["value"].tolist() == pytest.approx(before["value"].tolist(), abs=1e-6)


def test_dropping_averages_needs_evaluation():
    from jobs.spec import SpecError, spec_from_dict

    with pytest.raises(SpecError, match="keep_averages: false needs evaluate"):
        spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": ["r-ca"], "run_keys": ["a"], "draw_seed": 0, "keep_averages": False})
