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


def test_unfinished_configurations_are_not_candidates():
    runs = [r for r in grid() if r.batch_size == 16]
    assert all(k in {r.run_key for r in runs} for k in draw_runs(runs, 0, 3).run_keys)


def test_round_trip():
    d = draw_runs(grid(), 1, 3)
    assert Draw.from_dict(d.to_dict()) == d
