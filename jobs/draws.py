"""Draws of runs for accumulative averaging: the one implementation of PROTOCOL.md "Draws, exactly".

Every stage (averaging, tables, soup) calls `draw_runs`; nothing else shuffles runs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping


class DrawError(ValueError):
    """A draw that cannot be made (for example K larger than the number of configurations)."""


@dataclass(frozen=True)
class RunInfo:
    """What a draw needs to know of one finished run."""

    run_key: str
    learning_rate: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class Draw:
    """An ordered list of runs; prefix k (1-based) is `run_keys[:k]`."""

    seed: int
    k: int
    run_keys: tuple[str, ...]
    configurations: tuple[tuple[float, int], ...] = field(default=())

    def prefix(self, k: int) -> tuple[str, ...]:
        if not 1 <= k <= self.k:
            raise DrawError(f"k={k} is outside 1..{self.k} for draw seed {self.seed}")
        return self.run_keys[:k]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "k": self.k,
            "run_keys": list(self.run_keys),
            "configurations": [[lr, bs] for lr, bs in self.configurations],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Draw":
        return cls(
            seed=int(data["seed"]),
            k=int(data["k"]),
            run_keys=tuple(data["run_keys"]),
            configurations=tuple((float(lr), int(bs)) for lr, bs in data.get("configurations", [])),
        )


def draw_runs(runs: Iterable[RunInfo], seed: int, k: int) -> Draw:
    """Draw k runs with sample seed `seed`, exactly as PROTOCOL.md says.

    Candidates are the distinct (learning rate, batch size) configurations with at least one
    finished run, sorted; `random.Random(seed)` shuffles them, the first k are kept, then for
    each chosen configuration (in that order) `rng.choice` picks one of its runs sorted by seed.
    """
    by_config: dict[tuple[float, int], list[RunInfo]] = {}
    for run in runs:
        by_config.setdefault((float(run.learning_rate), int(run.batch_size)), []).append(run)
    configurations = sorted(by_config)
    if k < 1:
        raise DrawError(f"a draw needs k >= 1 runs, got k={k}")
    if k > len(configurations):
        raise DrawError(
            f"a draw of k={k} runs needs {k} distinct (learning rate, batch size) configurations "
            f"with a finished run, but only {len(configurations)} exist: lower --runs-per-draw "
            f"or train more of the grid"
        )
    rng = random.Random(seed)
    rng.shuffle(configurations)
    chosen = configurations[:k]
    run_keys = []
    for config in chosen:
        candidates = sorted(by_config[config], key=lambda r: (r.seed, r.run_key))
        run_keys.append(rng.choice(candidates).run_key)
    return Draw(seed=seed, k=k, run_keys=tuple(run_keys), configurations=tuple(chosen))
