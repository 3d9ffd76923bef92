"""Draws follow PROTOCOL.md "Draws, exactly" to the letter."""
import random

import pytest

from jobs.draws import Draw, DrawError, RunInfo, draw_runs

LRS = (1e-6, 5e-6, 1e-5)
BSS = (16, 32)


def grid(seeds=(1, 2, 3)):
    return [RunInfo(f"run-{lr}-{bs}-{s}", lr, bs, s) for lr in LRS for bs in BSS for s in seeds]


def test_draw_matches_the_protocol_by_hand():
    runs = grid()
    configs = sorted({(r.learning_rate, r.batch_size) for r in runs})
    rng = random.Random(7)
    rng.shuffle(configs)
    expected = []
    for lr, bs in configs[:4]:
        candidates = sorted((r for r in runs if (r.learning_rate, r.batch_size) == (lr, bs)), key=lambda r: r.seed)
        expected.append(rng.choice(candidates).run_key)
    draw = draw_runs(list(reversed(runs)), 7, 4)  # input order must not matter
    assert list(draw.run_keys) == expected
    assert draw.prefix(2) == tuple(expected[:2])


def test_one_run_per_configuration_and_deterministic():
    config_of = {r.run_key: (r.learning_rate, r.batch_size) for r in grid()}
    a = draw_runs(grid(), 3, 6)
    assert len({config_of[k] for k in a.run_keys}) == 6
    assert draw_runs(grid(), 3, 6) == a
    assert draw_runs(grid(), 4, 6) != a


def test_too_many_runs_is_refused():
    with pytest.raises(DrawError, match="needs 7 distinct"):
        draw_runs(grid(), 0, 7)


def test_unfinished_runs_and_configurations_are_not_candidates(tmp_path):
    """A grid where one configuration has no finished run and another only one of its two: the
    average stage's draws (plan.finished_runs, then draw_runs) shuffle only the configurations
    with a finished run and pick only finished runs, exactly as the protocol by hand does."""
    from jobs import layout
    from jobs.store import LocalStore
    from orchestrator import plan
    from orchestrator.config import load_config

    cfg = load_config(None, {"task": "nli", "base_model": "tiny", "head": {"enabled": False},
                             "grid": {"learning_rates": list(LRS), "batch_sizes": list(BSS), "seeds": [1, 2]}})
    store = LocalStore(tmp_path / "store")
    unfinished = {(1e-6, 16, 1), (1e-6, 16, 2), (5e-6, 32, 1)}  # (1e-6, 16) has no finished run; (5e-6, 32) only seed 2
    for spec in plan.grid_specs(cfg, store.uri, None):
        if (spec.learning_rate, spec.batch_size, spec.seed) not in unfinished:
            store.put_bytes(layout.run_complete_key(spec.run_key), b"{}")
    finished = plan.finished_runs(cfg, store, store.uri, None)
    assert len(finished) == 12 - 3

    configs = sorted({(r.learning_rate, r.batch_size) for r in finished})
    assert len(configs) == 5 and (1e-6, 16) not in configs
    with pytest.raises(DrawError, match="only 5 exist"):  # the grid has 6 configurations, 5 with a finished run
        draw_runs(finished, 0, 6)
    differs_from_whole_grid = False
    for seed in range(10):
        rng = random.Random(seed)
        shuffled = list(configs)
        rng.shuffle(shuffled)
        expected = []
        for lr, bs in shuffled[:4]:
            candidates = sorted((r for r in finished if (r.learning_rate, r.batch_size) == (lr, bs)), key=lambda r: r.seed)
            expected.append(rng.choice(candidates).run_key)
        draw = draw_runs(finished, seed, 4)
        assert list(draw.run_keys) == expected, seed
        assert draw.finished_runs == 9
        differs_from_whole_grid |= draw.run_keys != plan.draw_from_grid(cfg, store.uri, None, seed, 4).run_keys
    assert differs_from_whole_grid  # the unfinished runs really changed the candidates


def test_round_trip():
    d = draw_runs(grid(), 1, 3)
    assert Draw.from_dict(d.to_dict()) == d


# --- draw records (issue 12.6): several per seed, each saying from how many runs and when -----------------

from jobs.draws import choose_records, merge_record, read_records, write_record  # noqa: E402


def record(seed, k, finished, when, salt="") -> Draw:
    return Draw(seed, k, tuple(f"run-{seed}-{i}{salt}" for i in range(k)), finished_runs=finished, recorded_at=when)


def test_a_draw_records_how_many_runs_it_was_drawn_from_and_round_trips():
    runs = [r for r in grid() if r.seed != 3]
    d = draw_runs(runs, 1, 3).recorded(("r-ca", "soup-5"), "2025-01-02T03:04:05.000001Z")
    assert (d.finished_runs, d.methods) == (len(runs), ("r-ca", "soup-5"))
    data = d.to_dict()
    assert data["hash"] == d.hash and d.key == f"draws/s1-{d.hash}.json"
    assert Draw.from_dict(data) == d


def test_records_written_before_the_new_fields_parse_with_defaults():
    bare = Draw.from_dict({"seed": 2, "k": 2, "run_keys": ["a", "b"]})  # Draw.to_dict of old
    assert (bare.finished_runs, bare.recorded_at, bare.methods, bare.configurations) == (None, None, (), ())
    from jobs.spec import short_hash

    job = {"seed": 2, "k": 2, "run_keys": ["a", "b"], "hash": short_hash(["a", "b"], 8), "methods": ["r-ca"]}  # the average job's
    assert Draw.from_dict(job).methods == ("r-ca",) and Draw.from_dict(job).hash == job["hash"]
    with pytest.raises(ValueError, match="does not match its run keys"):
        Draw.from_dict(dict(job, hash="00000000"))
    with pytest.raises(ValueError, match="k=3 but 2 run keys"):
        Draw.from_dict(dict(job, k=3))


def test_choose_records_one_per_seed_most_finished_runs_then_newest():
    old = record(0, 2, 6, "2025-01-01T00:00:00Z")
    more = record(0, 2, 9, "2025-01-01T00:00:00Z", "m")
    newest = record(0, 2, 9, "2025-02-01T00:00:00Z", "n")
    k3 = record(0, 3, 6, "2024-01-01T00:00:00Z")
    other_seed = record(1, 2, 9, None)
    records = [old, more, newest, k3, other_seed]

    chosen, lines = choose_records(records, 2)
    assert chosen == [newest, other_seed]
    assert lines[0] == f"draw records used: {newest.name}, {other_seed.name} (K=2, drawn from 9 finished runs)"
    assert lines[1].startswith("draw records not used: ") and old.name in lines[1] and k3.name in lines[1]

    chosen, lines = choose_records(records)  # no K asked: each seed's largest K
    assert chosen == [k3, other_seed]
    chosen, lines = choose_records(records, 3)
    assert chosen == [k3] and lines[-1] == "draw seeds 1 have no record with K=3: left out"
    with pytest.raises(DrawError) as error:
        choose_records(records, 5)
    assert str(error.value) == "no draw record has K=5 runs; recorded: K=2 (seeds 0, 1), K=3 (seeds 0)"
    # one record per seed (every store written before): exactly those, in seed order
    assert choose_records([other_seed, k3])[0] == [k3, other_seed]
    # unknown counts (records of jobs run without the orchestrator) rank below known ones; then the newest
    unknown_new = record(0, 2, None, "2026-01-01T00:00:00Z", "u")
    assert choose_records([unknown_new, old], 2)[0] == [old]
    assert choose_records([unknown_new, record(0, 2, None, "2025-01-01T00:00:00Z", "v")], 2)[0] == [unknown_new]


def test_write_record_merges_what_the_orchestrator_and_the_job_say(tmp_path):
    from jobs.store import LocalStore

    store = LocalStore(tmp_path)
    d = draw_runs(grid(), 0, 3)
    write_record(store, d.recorded(("r-ca",), "2025-01-01T00:00:00Z"))
    job = {"seed": 0, "k": 3, "run_keys": list(d.run_keys), "hash": d.hash, "methods": ["soup-5"]}
    merged = merge_record(json_of(store, d.key), job)
    assert merged["finished_runs"] == 18 and merged["recorded_at"] == "2025-01-01T00:00:00Z"
    assert merged["methods"] == ["r-ca", "soup-5"]
    write_record(store, d.recorded(("r-dev",), "2025-03-01T00:00:00Z"))  # re-drawn the same: newer time, methods kept
    (again,) = read_records(store)
    assert again.methods == ("r-ca", "r-dev") and again.recorded_at == "2025-03-01T00:00:00Z"


def json_of(store, key):
    import json

    return json.loads(store.get_bytes(key))
