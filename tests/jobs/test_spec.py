"""Job specs: JSON round trips, validation errors that name the field, run keys."""
import pytest

from jobs.spec import (
    AverageSpec, DatasetRef, EvaluateSpec, SpecError, TrainSpec, canonical_json, spec_from_dict,
    spec_from_json, spec_to_json,
)

BASE = {
    "experiment_uri": "file:///tmp/store/exp",
    "task": "nli",
    "base_model": "tiny",
    "train_data": {"dataset": "synthetic-nli", "language": "en", "split": "train"},
    "dev_data": {"dataset": "synthetic-nli", "language": "en", "split": "validation"},
    "learning_rate": 2e-5,
    "batch_size": 32,
    "seed": 1,
}


def test_round_trip_every_kind():
    train = spec_from_dict("train", BASE)
    assert spec_from_json("train", spec_to_json(train)) == train
    ev = EvaluateSpec("file:///x", "nli", "tiny", ("runs/a/snapshots/00000001",), DatasetRef("d", "en", "validation"), (DatasetRef("d", "de", "test"),))
    assert spec_from_json("evaluate", spec_to_json(ev)) == ev
    avg = AverageSpec("file:///x", "nli", ("r-ca", "soup-5"), run_keys=("a" * 16,), draw_seed=3)
    assert spec_from_json("average", spec_to_json(avg)) == avg


def test_run_key_ignores_bucket_deadline_and_resources():
    key = spec_from_dict("train", BASE).run_key
    moved = dict(BASE, experiment_uri="s3://other/exp", deadline_seconds=60, micro_batch_size=8, eval_batch_size=7, num_threads=3)
    assert spec_from_dict("train", moved).run_key == key


@pytest.mark.parametrize("change", [
    {"learning_rate": 3e-5}, {"batch_size": 16}, {"seed": 2}, {"epochs": 9}, {"base_model": "xlm-roberta-base"},
    {"train_data": {"dataset": "synthetic-nli", "language": "en", "split": "train", "limit": 10}},
    {"head": {"ref": "heads/x", "sha256": "ab"}},
])
def test_run_key_changes_with_weight_fields(change):
    assert spec_from_dict("train", dict(BASE, **change)).run_key != spec_from_dict("train", BASE).run_key


def test_run_key_is_the_hash_of_canonical_json_with_repr_floats():
    assert canonical_json({"b": 1e-05, "a": 1.5e-05}) == '{"a":1.5e-05,"b":1e-05}'
    # an integer-valued learning rate is coerced to float, so 1 and 1.0 give the same key
    assert spec_from_dict("train", dict(BASE, learning_rate=1)).run_key == spec_from_dict("train", dict(BASE, learning_rate=1.0)).run_key


@pytest.mark.parametrize("data, message", [
    ({k: v for k, v in BASE.items() if k != "seed"}, "seed: missing required field"),
    (dict(BASE, batch_size="32"), "batch_size: expected an integer"),
    (dict(BASE, learning_rate=-1.0), "learning_rate: must be a finite number > 0"),
    (dict(BASE, colour="red"), "unknown field(s) colour"),
    (dict(BASE, train_data={"dataset": "x"}), "train_data.language: missing required field"),
    (dict(BASE, micro_batch_size=5), "micro_batch_size: must divide batch_size 32"),
])
def test_errors_name_the_field(data, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_dict("train", data)


def test_soup_zero_fails_loudly():
    # the seed's batch script passed top-k 0, and paths[-0:] silently selected every snapshot
    with pytest.raises(SpecError, match="soup-0"):
        spec_from_dict("average", {"experiment_uri": "x", "task": "nli", "methods": ["soup-0"], "run_keys": ["a"], "draw_seed": 0})


def test_invalid_json_is_one_line():
    with pytest.raises(SpecError, match="not valid JSON"):
        spec_from_json("train", "{")
    with pytest.raises(SpecError, match="unknown job kind"):
        spec_from_dict("fly", {})


def test_unset_optional_data_fields_do_not_change_the_key():
    explicit = dict(BASE, train_data=dict(BASE["train_data"], path=None, format=None, limit=None))
    assert spec_from_dict("train", explicit).run_key == spec_from_dict("train", BASE).run_key
