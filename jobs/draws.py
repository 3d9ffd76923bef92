"""Draws of runs for accumulative averaging: the one implementation of PROTOCOL.md "Draws, exactly".

Every stage (averaging, tables, soup) calls `draw_runs`; nothing else shuffles runs.

A draw is recorded in the store (`draws/s<seed>-<hash>.json`, `Draw.to_dict`) by the average
stage; that record, not the current flags, is what `evaluate --averages` and `tables` read. One
seed may have several records (another K, or re-drawn after more runs finished): each says from
how many finished runs it was drawn and when (`finished_runs`, `recorded_at`; None in records
written before these fields existed).
"""
from __future__ import annotations

import datetime
import json
import random
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional

from jobs.layout import draw_hash

DRAWS_PREFIX = "draws/"


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
    finished_runs: Optional[int] = None  # how many finished runs it was drawn from (None: not recorded)
    recorded_at: Optional[str] = None  # when the average stage recorded it (ISO 8601, UTC)
    methods: tuple[str, ...] = ()  # the averaging methods run over it, as far as recorded

    @property
    def hash(self) -> str:
        """The draw's short hash: its key in the store (`draws/s<seed>-<hash>.json`, `averages/s<seed>-<hash>/`)."""
        return draw_hash(self.run_keys)

    @property
    def name(self) -> str:
        return f"s{self.seed}-{self.hash}"

    @property
    def key(self) -> str:
        return f"{DRAWS_PREFIX}{self.name}.json"

    def recorded(self, methods: Iterable[str], when: Optional[str] = None) -> "Draw":
        """This draw as the average stage records it: its methods and the time (now unless given)."""
        return replace(self, methods=tuple(dict.fromkeys(methods)), recorded_at=when or utc_now())

    def describe(self) -> str:
        """e.g. `s0-1a2b3c4d (K=3, drawn from 12 finished runs, recorded 2025-01-31T10:00:00Z)`."""
        runs = f"drawn from {self.finished_runs} finished runs" if self.finished_runs is not None else "finished runs not recorded"
        when = f", recorded {self.recorded_at.split('.')[0].rstrip('Z')}Z" if self.recorded_at else ""  # to the second
        return f"{self.name} (K={self.k}, {runs}{when})"

    def prefix(self, k: int) -> tuple[str, ...]:
        if not 1 <= k <= self.k:
            raise DrawError(f"k={k} is outside 1..{self.k} for draw seed {self.seed}")
        return self.run_keys[:k]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "k": self.k,
            "run_keys": list(self.run_keys),
            "hash": self.hash,
            "configurations": [[lr, bs] for lr, bs in self.configurations],
            "finished_runs": self.finished_runs,
            "recorded_at": self.recorded_at,
            "methods": list(self.methods),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Draw":
        """Parse a record; every field after run_keys has a default (older records lack them)."""
        finished = data.get("finished_runs")
        draw = cls(
            seed=int(data["seed"]),
            k=int(data["k"]),
            run_keys=tuple(str(key) for key in data["run_keys"]),
            configurations=tuple((float(lr), int(bs)) for lr, bs in data.get("configurations") or []),
            finished_runs=None if finished is None else int(finished),
            recorded_at=data.get("recorded_at") or None,
            methods=tuple(str(m) for m in data.get("methods") or ()),
        )
        if draw.k != len(draw.run_keys):
            raise ValueError(f"k={draw.k} but {len(draw.run_keys)} run keys")
        if data.get("hash") is not None and data["hash"] != draw.hash:
            raise ValueError(f"hash {data['hash']} does not match its run keys (their hash is {draw.hash})")
        return draw


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def merge_record(existing: Optional[Mapping], new: Mapping) -> dict:
    """A draw record updated with `new` (same seed and runs): fields `new` lacks or leaves None
    are kept from `existing`, and the methods are the union of both (first seen first)."""
    merged = dict(existing or {})
    merged.update({key: value for key, value in new.items() if value is not None})
    methods = [*(existing or {}).get("methods", ()), *new.get("methods", ())]
    if methods:
        merged["methods"] = list(dict.fromkeys(methods))
    return merged


def read_records(store) -> list[Draw]:
    """Every draw record of an experiment (`draws/*.json`), sorted by (seed, K, name); a record
    that does not parse is a ValueError naming its key. `store` needs list_keys and get_bytes."""
    keys = sorted(k for k in store.list_keys(DRAWS_PREFIX) if k.endswith(".json"))
    draws = []
    for key in keys:
        try:
            draws.append(Draw.from_dict(json.loads(store.get_bytes(key))))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"draw record {key} is malformed: {error}") from error
    return sorted(draws, key=lambda d: (d.seed, d.k, d.name))


def write_record(store, draw: Draw) -> dict:
    """Record a draw (merged into an existing record of the same draw); returns what was written."""
    from jobs.store import read_json  # a malformed record: one line naming its key

    existing = read_json(store, draw.key, "draw record") if store.exists(draw.key) else None
    record = merge_record(existing, draw.to_dict())
    if record != existing:
        store.put_bytes(draw.key, json.dumps(record, indent=1).encode())
    return record


def _rank(draw: Draw) -> tuple:
    """Among records of one seed and K: the most finished runs, then the newest (unknown counts lowest)."""
    return (-1 if draw.finished_runs is None else draw.finished_runs, draw.recorded_at or "", draw.name)


def choose_records(draws: Iterable[Draw], k: Optional[int] = None) -> tuple[list[Draw], list[str]]:
    """One record per seed, for the tables: with `k`, the seed's records of K = k; without, those
    of the seed's largest K. Among them the record drawn from the most finished runs, the newest
    when equal. Returns the chosen draws (by seed) and lines saying what was used and left out.
    A DrawError when `k` is given and no record has it."""
    draws = list(draws)
    by_seed: dict[int, list[Draw]] = {}
    for draw in draws:
        by_seed.setdefault(draw.seed, []).append(draw)
    if k is not None and draws and not any(d.k == k for d in draws):
        have = ", ".join(f"K={kk} (seeds {_seeds(d.seed for d in draws if d.k == kk)})" for kk in sorted({d.k for d in draws}))
        raise DrawError(f"no draw record has K={k} runs; recorded: {have}")
    chosen, unused, no_k = [], [], []
    for seed, records in sorted(by_seed.items()):
        want = k if k is not None else max(d.k for d in records)
        matching = [d for d in records if d.k == want]
        if not matching:
            no_k.append(seed)
            unused.extend(records)
            continue
        best = max(matching, key=_rank)
        chosen.append(best)
        unused.extend(d for d in records if d is not best)
    lines = [f"draw records used: {_summary(chosen)}"] if chosen else []
    if unused:
        lines.append(f"draw records not used: {_summary(unused)}")
    if no_k:
        lines.append(f"draw seeds {_seeds(no_k)} have no record with K={k}: left out")
    return chosen, lines


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(set(seeds)))


def _summary(draws: list[Draw]) -> str:
    """`s0-aaaa, s1-bbbb (K=3, drawn from 12 finished runs)` when they share K and count, else each described."""
    shared = {(d.k, d.finished_runs) for d in draws}
    if len(shared) == 1:
        k, finished = shared.pop()
        runs = f"drawn from {finished} finished runs" if finished is not None else "finished runs not recorded"
        return f"{', '.join(d.name for d in draws)} (K={k}, {runs})"
    return ", ".join(d.describe() for d in draws)


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
    n_runs = sum(len(v) for v in by_config.values())
    return Draw(seed=seed, k=k, run_keys=tuple(run_keys), configurations=tuple(chosen), finished_runs=n_runs)
