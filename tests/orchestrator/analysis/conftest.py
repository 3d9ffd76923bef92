"""Tiny hand-made results (jobs.results contract) for the analysis tests, built in code."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from jobs.draws import RunInfo, draw_runs
from jobs.results import results_frame


class Rows:
    """Builders of results rows: one call per evaluated model."""

    def __init__(self, task: str = "nli", experiment: str = "toy"):
        self.task = task
        self.experiment = experiment
        self.rows: list[dict] = []

    def _model(self, ref: str, en_dev: float | None, cells: dict, **identity) -> None:
        base = {"experiment": self.experiment, "task": self.task, "ref": ref, **identity}
        if en_dev is not None:
            self.rows.append(
                {
                    **base,
                    "dataset": "xnli",
                    "language": "en",
                    "split": "validation",
                    "metric": "acc",
                    "value": en_dev,
                    "n_examples": 10,
                }
            )
        for (dataset, language, metric), values in cells.items():
            validation, test = values if isinstance(values, tuple) else (values, values)
            for split, value in (("validation", validation), ("test", test)):
                if value is not None:
                    self.rows.append(
                        {
                            **base,
                            "dataset": dataset,
                            "language": language,
                            "split": split,
                            "metric": metric,
                            "value": value,
                            "n_examples": 10,
                        }
                    )

    def snapshot(self, run_key: str, step: int, en_dev: float | None, cells: dict, lr=1e-5, bs=32, seed=1) -> None:
        """cells: (dataset, language, metric) -> (validation, test) or one value for both (None: absent)."""
        self._model(
            f"runs/{run_key}/step-{step}",
            en_dev,
            cells,
            kind="snapshot",
            run_key=run_key,
            learning_rate=lr,
            batch_size=bs,
            seed=seed,
            step=step,
        )

    def run_average(self, run_key: str, en_dev: float, cells: dict, lr=1e-5, bs=32, seed=1) -> None:
        self._model(
            f"runs/{run_key}/ca",
            en_dev,
            cells,
            kind="run-average",
            run_key=run_key,
            method="ca",
            learning_rate=lr,
            batch_size=bs,
            seed=seed,
        )

    def draw_average(self, method: str, draw_seed: int, k: int, en_dev: float, cells: dict) -> None:
        self._model(
            f"averages/{method}/draw-{draw_seed}/k-{k}",
            en_dev,
            cells,
            kind="draw-average",
            method=method,
            k=k,
            draw_seed=draw_seed,
        )

    def frame(self) -> pd.DataFrame:
        return results_frame(self.rows)


@pytest.fixture
def rows():
    return Rows


def synthetic_experiment(task: str = "nli", n_draws: int = 3, k: int = 3, steps: int = 3, seed: int = 0):
    """A full small experiment: 2 lr x 2 bs x 2 seeds runs, every snapshot evaluated, draws and their averages."""
    rng = random.Random(seed)
    cells = [("xnli", "de", "acc"), ("xnli", "fr", "acc"), ("indicxnli", "hi", "acc")]
    builder = Rows(task)
    runs = []
    for lr in (1e-5, 2e-5):
        for bs in (16, 32):
            for run_seed in (1, 2):
                run_key = f"lr{lr:g}-bs{bs}-s{run_seed}"
                runs.append(RunInfo(run_key, lr, bs, run_seed))
                for step in range(1, steps + 1):
                    builder.snapshot(
                        run_key,
                        step * 100,
                        rng.uniform(0.7, 0.9),
                        {c: (rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8)) for c in cells},
                        lr=lr,
                        bs=bs,
                        seed=run_seed,
                    )
                builder.run_average(
                    run_key,
                    rng.uniform(0.7, 0.9),
                    {c: (rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8)) for c in cells},
                    lr=lr,
                    bs=bs,
                    seed=run_seed,
                )
    draws = [draw_runs(runs, draw_seed, k) for draw_seed in range(n_draws)]
    for draw in draws:
        for method in ("r-last", "r-ca", "soup-2"):
            for prefix in range(1, k + 1):
                builder.draw_average(
                    method, draw.seed, prefix, rng.uniform(0.7, 0.9), {c: rng.uniform(0.5, 0.8) for c in cells}
                )
    return builder.frame(), draws


@pytest.fixture
def experiment():
    return synthetic_experiment
