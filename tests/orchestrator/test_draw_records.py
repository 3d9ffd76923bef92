"""Draw bookkeeping end to end (issue 12, parts 6 and 7) on the tiny preset, local backend, file:// store.

`evaluate --averages` scores exactly what the average stage recorded, whatever the flags say now;
several records of one seed (another K, or re-drawn after more runs finished) are read by
`tables`, which says which record it used; soup-N over too few snapshots says so or is refused.
The finished runs are the tiny preset's model with noise, committed exactly as the train job
commits them (tests/jobs/average_support.py): training is not under test here, and the
average and evaluate jobs (real processes) are.

Run it with: .venv/bin/python -m pytest tests/orchestrator/test_draw_records.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

import torch

from jobs import layout
from jobs.draws import Draw, read_records
from jobs.results import from_parquet_bytes
from jobs.snapshots import read_manifest
from jobs.store import open_store

from orchestrator import plan
from orchestrator.cli import main
from orchestrator.context import open_experiment

from tests.jobs.average_support import commit_run

# whole pipelines of real job processes: minutes on 2 idle cores, far more beside other CPU work
pytestmark = pytest.mark.timeout(1500)

# two snapshots per run; soup-3 at k=1 therefore averages 2 snapshots
BASE = {
    "task": "nli",
    "base_model": "tiny",
    "epochs": 1,
    "snapshots_per_epoch": 2,
    "precision": "fp32",
    "head": {"enabled": False},
    "data": {
        "train": {"dataset": "synthetic-nli", "language": "en", "split": "train", "limit": 64},
        "dev": {"dataset": "synthetic-nli", "language": "en", "split": "validation", "limit": 32},
        "targets": [{"dataset": "synthetic-nli", "languages": ["xx-near"], "limit": 32}],
    },
    # the config says K=3: the draws below are made with --runs-per-draw, which evaluate never sees
    "draws": {"count": 1, "runs_per_draw": 3, "methods": ["r-ca", "soup-3"]},
}
SMALL = {"learning_rates": [3.0e-4, 1.0e-3], "batch_sizes": [16], "seeds": [1]}  # 2 runs
BIG = {"learning_rates": [3.0e-4, 1.0e-3, 2.0e-3], "batch_sizes": [16], "seeds": [1]}  # the same 2 and 1 more


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def stage(config: Path, bucket: str, *args):
    return invoke(*args, "--config", config, "--bucket", bucket, "--experiment", "draws", "--backend", "local", "--parallelism", 2)


def finish_runs(bucket: str, config: Path, scratch: Path) -> None:
    """Commit every grid run of `config` not finished yet: 2 snapshots each, the tiny model plus noise."""
    from jobs.common import build_model
    from jobs.tasks import get_task

    exp = open_experiment(bucket, "draws", str(config), {})
    base = build_model(get_task("nli"), "tiny").state_dict()
    for spec in plan.grid_specs(exp.config, exp.uri, None):
        if exp.store.exists(layout.run_complete_key(spec.run_key)):
            continue
        g = torch.Generator().manual_seed(int(spec.run_key[:8], 16))
        states = [{k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.numel() > 1 else v
                   for k, v in base.items()} for _ in range(2)]
        dev = [round(float(torch.rand((), generator=g)), 4) for _ in states]
        commit_run(exp.store, scratch / spec.run_key, spec, states, dev, head_sha=None)


@pytest.fixture(scope="module")
def store_after_two_rounds(tmp_path_factory):
    """Round 1: 2 finished runs, `average --runs-per-draw 2`. Round 2: a third run finishes;
    `average --runs-per-draw 2` again (a second K=2 record of seed 0, drawn from 3 runs) and
    `average` with the config's K=3 (a third record). Then `evaluate --averages` once."""
    root = tmp_path_factory.mktemp("draws")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # job logs go to ./.logs
    bucket = f"file://{root / 'store'}"
    small, big = root / "small.yaml", root / "big.yaml"
    small.write_text(yaml.safe_dump(dict(BASE, grid=SMALL)))
    big.write_text(yaml.safe_dump(dict(BASE, grid=BIG)))
    out = {"root": root, "bucket": bucket, "small": small, "big": big, "steps": {}}

    def step(name, config, *args):
        result = stage(config, bucket, *args)
        out["steps"][name] = result
        assert result.exit_code == 0, f"{name}: {result.output}"
        return result

    store = open_store(bucket).child("draws")
    finish_runs(bucket, small, root / "scratch")
    step("average K=2 of 2", small, "average", "--runs-per-draw", 2)
    out["records after round 1"] = read_records(store)
    finish_runs(bucket, big, root / "scratch")
    step("average K=2 of 3", big, "average", "--runs-per-draw", 2)
    step("average K=3 of 3", big, "average")
    step("evaluate", big, "evaluate", "--averages")
    out["store"] = store
    yield out
    mp.undo()


def _records(store) -> dict[tuple[int, int], Draw]:
    """(K, finished runs) -> record."""
    return {(d.k, d.finished_runs): d for d in read_records(store)}


def _draw_refs(store, draw: Draw) -> list[str]:
    suffix = "/" + layout.MANIFEST
    return sorted(k[: -len(suffix)] for k in store.list_keys(f"averages/{draw.name}/") if k.endswith(suffix))


def _target_mean(store, ref: str) -> float:
    frame = from_parquet_bytes(store.get_bytes(layout.results_key(ref)))
    test = frame[(frame["language"] != "en") & (frame["split"] == "test")]
    return float(test["value"].astype(float).mean())


def test_evaluate_averages_scores_what_the_average_stage_recorded(store_after_two_rounds):
    s = store_after_two_rounds
    store = s["store"]
    (first,) = s["records after round 1"]
    assert (first.seed, first.k, first.finished_runs) == (0, 2, 2) and first.recorded_at
    assert first.methods == ("r-ca", "soup-3")
    refs = _draw_refs(store, first)
    assert [r.rsplit("/", 2)[1:] for r in refs] == [["r-ca", "k01"], ["r-ca", "k02"], ["soup-3", "k01"], ["soup-3", "k02"]]
    records = _records(store)
    assert set(records) == {(2, 2), (2, 3), (3, 3)}, records
    # the config says K=3: evaluate scored the K=3 draw's averages and every other record's too
    for draw in records.values():
        assert len(_draw_refs(store, draw)) == 2 * draw.k
        assert all(store.exists(layout.results_key(ref)) for ref in _draw_refs(store, draw))
    for key in {k for d in records.values() for k in d.run_keys}:
        assert store.exists(layout.results_key(layout.run_average_ref(key)))
    again = stage(s["big"], s["bucket"], "evaluate", "--averages")
    assert again.exit_code == 0 and "nothing to do" in again.output  # all recorded averages are scored


def test_soup_with_fewer_snapshots_than_n_says_how_many(store_after_two_rounds):
    s = store_after_two_rounds
    store = s["store"]
    assert "soup-3: the first k runs hold fewer than 3 snapshots at k=1 (2 snapshots)" in s["steps"]["average K=2 of 2"].output
    draw = _records(store)[(3, 3)]
    for k, held in ((1, 2), (2, 3), (3, 3)):
        ref = layout.draw_average_ref(0, draw.hash, "soup-3", k)
        manifest = read_manifest(store, ref)
        assert (manifest["count"], manifest["top_n"], len(manifest["constituents"])) == (held, 3, held)
        frame = from_parquet_bytes(store.get_bytes(layout.results_key(ref)))
        assert set(frame["n_snapshots"]) == {held}
    ca = from_parquet_bytes(store.get_bytes(layout.results_key(layout.run_average_ref(draw.run_keys[0]))))
    assert set(ca["n_snapshots"]) == {2}


def test_tables_pick_one_record_per_seed_and_k_and_say_which(store_after_two_rounds):
    s = store_after_two_rounds
    store = s["store"]
    records = _records(store)

    def tables(*more):
        return invoke("tables", "--bucket", s["bucket"], "--experiment", "draws", "--task", "nli",
                      "--cache-dir", s["root"] / "cache", *more)

    default = tables()  # each seed's largest K
    assert default.exit_code == 0, default.output
    assert f"note: draw records used: {records[(3, 3)].name} (K=3, drawn from 3 finished runs)" in default.output
    assert f"note: draw records not used: {records[(2, 2)].describe()}, {records[(2, 3)].describe()}" in default.output
    assert "Soup-3 averages fewer than 3 snapshots where the first k runs hold fewer: k=1 (2 snapshots in 1 of 1 draws)" in default.output

    k2 = tables("--runs-per-draw", 2)
    assert k2.exit_code == 0, k2.output
    chosen = records[(2, 3)]  # of two K=2 records, the one drawn from more finished runs
    assert f"note: draw records used: {chosen.name} (K=2, drawn from 3 finished runs)" in k2.output
    csv = tables("--runs-per-draw", 2, "--format", "csv", "--methods", "r-ca,soup-3")
    assert csv.exit_code == 0, csv.output
    lines = csv.output.splitlines()
    assert lines[0] == "k,R-CA mean,R-CA std,Soup-3 mean,Soup-3 std"
    for k in (1, 2):  # the numbers are the chosen record's, never mixed with the other K=2 record's
        expected = [_target_mean(store, layout.draw_average_ref(0, chosen.hash, m, k)) for m in ("r-ca", "soup-3")]
        row = lines[k].split(",")
        assert row[0] == str(k) and [row[1], row[3]] == [f"{v * 100:.1f}" for v in expected], (lines[k], expected)

    missing = tables("--runs-per-draw", 5)
    assert missing.exit_code != 0
    assert missing.output.strip().splitlines() == [
        "Error: no draw record has K=5 runs; recorded: K=2 (seeds 0), K=3 (seeds 0)"
    ]


def test_soup_n_beyond_every_snapshot_or_zero_padded_is_refused(store_after_two_rounds):
    s = store_after_two_rounds
    before = sorted(s["store"].list_keys("draws/"))
    too_big = stage(s["big"], s["bucket"], "average", "--runs-per-draw", 3, "--methods", "r-ca,soup-7")
    assert too_big.exit_code != 0
    assert "soup-7 needs 7 snapshots but draw seed 0's 3 runs hold only 6" in too_big.output
    padded = stage(s["big"], s["bucket"], "average", "--runs-per-draw", 2, "--methods", "soup-03")
    assert padded.exit_code != 0 and "write 'soup-03' as 'soup-3'" in padded.output
    assert sorted(s["store"].list_keys("draws/")) == before  # nothing was recorded or run


def test_a_store_written_before_the_change_reads_the_same(store_after_two_rounds, tmp_path):
    """Old draw records (no finished_runs, recorded_at, configurations) and old results files
    (no n_snapshots) parse, and the tables are unchanged."""
    import shutil

    s = store_after_two_rounds
    store = s["store"]
    old_root = tmp_path / "old"
    (old_root / "draws").mkdir(parents=True)
    others = []
    for key in store.list_keys("draws/"):  # one record per seed, as the old code wrote it
        record = json.loads(store.get_bytes(key))
        if (record["k"], record["finished_runs"]) == (3, 3):
            (old_root / key).write_text(json.dumps({f: record[f] for f in ("seed", "k", "run_keys", "hash", "methods")}))
        else:
            others.append(f"results/averages/s{record['seed']}-{record['hash']}/")
    for key in store.list_keys("results/"):
        if any(key.startswith(other) for other in others):
            continue
        frame = from_parquet_bytes(store.get_bytes(key)).drop(columns=["n_snapshots"])
        (old_root / key).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(old_root / key, index=False)
    args = ["tables", "--task", "nli", "--format", "csv", "--methods", "r-ca,soup-3"]
    new = invoke(*args, "--bucket", s["bucket"], "--experiment", "draws", "--cache-dir", tmp_path / "c1")
    old = invoke(*args, "--bucket", f"file://{old_root.parent}", "--experiment", "old", "--cache-dir", tmp_path / "c2")
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert old.output == new.output and "R-CA" in new.output
    (record,) = read_records(open_store(f"file://{old_root}"))
    assert (record.finished_runs, record.recorded_at) == (None, None)
    frame = pd.read_parquet(old_root / layout.results_key(layout.draw_average_ref(0, record.hash, "soup-3", 1)))
    assert "n_snapshots" not in frame.columns
