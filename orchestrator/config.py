"""Experiment settings: PROTOCOL.md's numbers as defaults, a YAML file over them, flags over both.

The settings are nested frozen dataclasses; `load_config` validates a YAML file with errors that
name the field (`grid.learning_rates[2]: expected a number`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from jobs.spec import DatasetRef, SpecError, check_method, from_mapping, to_dict

PAPER_LEARNING_RATES = (1e-6, 5e-6, 1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5)
PAPER_BATCH_SIZES = (16, 32, 64)
PAPER_SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Grid:
    """The hyperparameter grid: every (learning rate, batch size, seed) is one run."""

    learning_rates: tuple[float, ...] = PAPER_LEARNING_RATES
    batch_sizes: tuple[int, ...] = PAPER_BATCH_SIZES
    seeds: tuple[int, ...] = PAPER_SEEDS

    def validate(self, where: str) -> None:
        for name in ("learning_rates", "batch_sizes", "seeds"):
            values = getattr(self, name)
            if not values:
                raise SpecError(f"{where}.{name}: needs at least one value")
            if len(set(values)) != len(values):
                raise SpecError(f"{where}.{name}: has duplicates {list(values)}")


@dataclass(frozen=True)
class HeadSettings:
    """The shared frozen head (PROTOCOL.md): one full fine-tuning run whose head all runs freeze."""

    enabled: bool = True
    learning_rate: float = 2e-5
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class TargetSet:
    """Target languages of one dataset, evaluated on each split (validation selects trg-dev).

    `path` may be a template with {language} and {split} for local files."""

    dataset: str
    languages: tuple[str, ...]
    splits: tuple[str, ...] = ("validation", "test")
    path: Optional[str] = None
    format: Optional[str] = None
    limit: Optional[int] = None

    def refs(self) -> list[DatasetRef]:
        return [
            DatasetRef(
                dataset=self.dataset,
                language=language,
                split=split,
                path=self.path.format(language=language, split=split) if self.path else None,
                format=self.format,
                limit=self.limit,
            )
            for language in self.languages
            for split in self.splits
        ]


@dataclass(frozen=True)
class DataSettings:
    train: DatasetRef
    dev: DatasetRef
    targets: tuple[TargetSet, ...]


@dataclass(frozen=True)
class DrawSettings:
    """Accumulative averaging: `count` draws (sample seeds 0..count-1) of `runs_per_draw` runs."""

    count: int = 10
    runs_per_draw: int = 10
    methods: tuple[str, ...] = ("r-last", "r-dev", "r-ca", "soup-5")

    def validate(self, where: str) -> None:
        for i, m in enumerate(self.methods):
            check_method(m, f"{where}.methods[{i}]")
            if m in ("ca", "uniform"):
                raise SpecError(f"{where}.methods[{i}]: {m!r} is not a draw method")
        if self.count < 1 or self.runs_per_draw < 1:
            raise SpecError(f"{where}: count and runs_per_draw must be >= 1")


@dataclass(frozen=True)
class ExperimentConfig:
    task: str
    base_model: str
    data: DataSettings
    grid: Grid = field(default_factory=Grid)
    epochs: int = 10
    snapshots_per_epoch: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    precision: str = "fp32"
    micro_batch_size: Optional[int] = None
    eval_batch_size: int = 64
    head: HeadSettings = field(default_factory=HeadSettings)
    draws: DrawSettings = field(default_factory=DrawSettings)

    def to_dict(self) -> dict:
        return to_dict(self)


SYNTHETIC_TARGETS = {"nli": TargetSet("synthetic-nli", ("xx-near", "xx-mid", "xx-far"))}
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


def default_data(task: str, base_model: str) -> DataSettings:
    """The paper's data for real models; the synthetic sets for the tiny preset."""
    if base_model == "tiny":
        return DataSettings(
            train=DatasetRef(f"synthetic-{task}", "en", "train"),
            dev=DatasetRef(f"synthetic-{task}", "en", "validation"),
            targets=(SYNTHETIC_TARGETS[task],),
        )
    if task == "nli":
        return DataSettings(
            train=DatasetRef("mnli", "en", "train"),
            dev=DatasetRef("xnli", "en", "validation"),  # the paper selects on XNLI en, not MNLI
            targets=(TargetSet("xnli", XNLI_LANGUAGES),),
        )
    raise SpecError(f"no default data for task {task!r}; give data: in --config")


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> ExperimentConfig:
    """Defaults, then the YAML file, then non-None flag overrides (dotted keys allowed)."""
    data: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SpecError(f"{path}: expected a mapping of settings at the top level")
        data = dict(loaded or {})
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    data.setdefault("task", "nli")
    data.setdefault("base_model", "xlm-roberta-large")
    if "data" not in data:
        data["data"] = to_dict(default_data(data["task"], data["base_model"]))
    where = str(path) if path else "config"
    try:
        return from_mapping(ExperimentConfig, data, "")
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ExperimentConfig)]
