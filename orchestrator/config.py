"""Experiment settings: PROTOCOL.md's numbers as defaults, a YAML file over them, flags over both.

The settings are nested frozen dataclasses; `load_config` validates a YAML file with errors that
name the field (`grid.learning_rates[2]: expected a number`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from jobs.averaging.methods import DRAWS, get_method
from jobs.data import registry
from jobs.data.errors import DataError
from jobs.spec import (
    NER_LABEL_SCHEMES,
    OUTPUT_DTYPES,
    PRECISIONS,
    QA_QUESTION_MODES,
    DatasetRef,
    SpecError,
    canonical_snapshot_every,
    from_mapping,
    to_dict,
)

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


HALVES = ("first", "second")


@dataclass(frozen=True)
class TargetSet:
    """Target languages of one registered dataset (jobs.data.registry), evaluated on each split
    (validation selects trg-dev, test reports).

    Local files: `path` is a template with {language} and {split} (relative paths are joined to
    data.root); `split_paths` gives a template per split where the file names differ (MasakhaNER's
    dev.txt / test.txt). A language with one labelled file uses the same file for both splits
    with `halves: {validation: first, test: second}`: the first half of its examples (in file
    order) validates, the second half is reported, so trg-dev never selects on what it reports."""

    dataset: str
    languages: tuple[str, ...]
    splits: tuple[str, ...] = ("validation", "test")
    path: Optional[str] = None
    format: Optional[str] = None
    limit: Optional[int] = None
    split_paths: Optional[dict] = None  # split -> path template
    halves: Optional[dict] = None  # split -> first | second

    def validate(self, where: str) -> None:
        for name in ("split_paths", "halves"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise SpecError(f"{where}.{name}: expected a mapping from split to string")
            unknown = sorted(set(value) - set(self.splits))
            if unknown:
                raise SpecError(f"{where}.{name}: split(s) {', '.join(unknown)} are not in splits {list(self.splits)}")
        for split, half in (self.halves or {}).items():
            if half not in HALVES:
                raise SpecError(f"{where}.halves.{split}: must be first or second, got {half!r}")
        if not self.languages:
            raise SpecError(f"{where}.languages: needs at least one language")

    def path_for(self, language: str, split: str) -> Optional[str]:
        template = (self.split_paths or {}).get(split, self.path)
        return template.format(language=language, split=split) if template else None

    def refs(self) -> list[DatasetRef]:
        return [
            DatasetRef(
                dataset=self.dataset,
                language=language,
                split=split,
                path=self.path_for(language, split),
                format=self.format,
                limit=self.limit,
                half=(self.halves or {}).get(split),
            )
            for language in self.languages
            for split in self.splits
        ]


@dataclass(frozen=True)
class DataSettings:
    """Source training set, English dev set (selection) and target sets.

    `root` (or --data-root, ORCHESTRATOR_DATA_ROOT) is joined to every relative local path; the
    result is made absolute when the config is loaded, so jobs see the same files."""

    train: DatasetRef
    dev: DatasetRef
    targets: tuple[TargetSet, ...]
    root: Optional[str] = None


@dataclass(frozen=True)
class DrawSettings:
    """Accumulative averaging: `count` draws (sample seeds 0..count-1) of `runs_per_draw` runs."""

    count: int = 10
    runs_per_draw: int = 10
    methods: tuple[str, ...] = ("r-last", "r-dev", "r-ca", "soup-5")
    # float dtype of the stored averages: bf16/fp16 halve storage for models kept only to be
    # evaluated (sums are always accumulated in fp32/fp64)
    output_dtype: str = "fp32"
    # fused average-then-evaluate: each average job scores its averages itself (it then needs
    # the evaluate image and a GPU on a cluster); with it, keep_averages: false stores no
    # averaged weights at all (a full paper run makes hundreds of XLM-R-large averages)
    fused_evaluate: bool = False
    keep_averages: bool = True
    # the target splits the fused evaluation scores draw averages on (None: every split). No
    # table reads a draw average's target-validation score (S-TDEV selects among snapshots), so
    # [test] spares those forward passes; run averages (CA) are always scored on every split
    target_splits: Optional[tuple[str, ...]] = None

    def validate(self, where: str) -> None:
        if not self.keep_averages and not self.fused_evaluate:
            raise SpecError(f"{where}.keep_averages: false needs fused_evaluate: true, else the averages would be lost unscored")
        if self.target_splits is not None:
            if not self.fused_evaluate:
                raise SpecError(f"{where}.target_splits: applies to the fused evaluation only; set fused_evaluate: true or drop it")
            bad = [s for s in self.target_splits if s not in ("validation", "test")]
            if bad or not self.target_splits:
                raise SpecError(f"{where}.target_splits: a non-empty list of validation, test; got {list(self.target_splits)}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise SpecError(f"{where}.output_dtype: must be one of {', '.join(OUTPUT_DTYPES)}, got {self.output_dtype!r}")
        for i, m in enumerate(self.methods):
            if get_method(m, f"{where}.methods[{i}]").mode != DRAWS:
                raise SpecError(f"{where}.methods[{i}]: {m!r} is not a draw method")
        if self.count < 1 or self.runs_per_draw < 1:
            raise SpecError(f"{where}: count and runs_per_draw must be >= 1")


# The paper's schedule per task (trident-xtreme configs/experiment/ofa-*.yaml): NLI and NER train
# 10 epochs with a snapshot per epoch, TyDiQA 40 epochs with a snapshot every 4 epochs.
DEFAULT_EPOCHS = {"nli": 10, "ner": 10, "tydiqa": 40}
DEFAULT_SNAPSHOT_EVERY = {"nli": "1 epochs", "ner": "1 epochs", "tydiqa": "4 epochs"}


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of an experiment; None fields take the task's paper default on creation.

    The paper's choices are the defaults (docs/fidelity.md): fp16 mixed precision, NER labels on
    every sub-token, whole QA questions, the per-task schedule above."""

    task: str
    base_model: str
    data: DataSettings
    grid: Grid = field(default_factory=Grid)
    epochs: Optional[int] = None  # None: 10 (NLI, NER) or 40 (TyDiQA)
    # one of the two: 'N epochs' / '0.5 epochs' / 'N steps' (default per task), or the older
    # snapshots_per_epoch (N evenly spaced per epoch)
    snapshot_every: Optional[str] = None
    snapshots_per_epoch: Optional[int] = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    precision: str = "fp16"  # the paper's "16-mixed"; bf16 | fp32 (CPUs: fp32)
    ner_labels: str = "all-subtokens"  # | first-subtoken (XTREME)
    qa_questions: str = "full"  # | truncated (questions cut to 64 tokens)
    freeze_word_embeddings: bool = False  # a CPU saving for small-scale replications
    micro_batch_size: Optional[int] = None
    eval_batch_size: int = 64
    head: HeadSettings = field(default_factory=HeadSettings)
    draws: DrawSettings = field(default_factory=DrawSettings)

    def __post_init__(self):
        paper_epochs = self.epochs is None
        if paper_epochs:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS.get(self.task, 10))
        if self.snapshot_every is None and self.snapshots_per_epoch is None:
            # the paper's interval goes with the paper's epochs; a run of other length snapshots every epoch
            every = DEFAULT_SNAPSHOT_EVERY.get(self.task, "1 epochs") if paper_epochs else "1 epochs"
            object.__setattr__(self, "snapshot_every", every)
        if self.snapshot_every is not None:
            object.__setattr__(self, "snapshot_every", canonical_snapshot_every(self.snapshot_every))

    def validate(self, where: str = "") -> None:
        p = f"{where}." if where else ""
        if self.snapshot_every is not None and self.snapshots_per_epoch is not None:
            raise SpecError(f"{p}snapshot_every: set either snapshot_every or snapshots_per_epoch, not both")
        if self.precision not in PRECISIONS:
            raise SpecError(f"{p}precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.ner_labels not in NER_LABEL_SCHEMES:
            raise SpecError(f"{p}ner_labels: must be one of {', '.join(NER_LABEL_SCHEMES)}, got {self.ner_labels!r}")
        if self.qa_questions not in QA_QUESTION_MODES:
            raise SpecError(f"{p}qa_questions: must be one of {', '.join(QA_QUESTION_MODES)}, got {self.qa_questions!r}")

    def task_fields(self) -> dict:
        """The task's own options as spec fields (only the task's: other tasks' keys stay unchanged)."""
        if self.task == "ner":
            return {"ner_labels": self.ner_labels}
        if self.task == "tydiqa":
            return {"qa_questions": self.qa_questions}
        return {}

    def to_dict(self) -> dict:
        return to_dict(self)


SYNTHETIC_LANGUAGES = ("xx-near", "xx-mid", "xx-far")
SYNTHETIC_TARGETS = {task: TargetSet(f"synthetic-{task}", SYNTHETIC_LANGUAGES) for task in ("nli", "ner", "tydiqa")}
XNLI_LANGUAGES = registry.target_languages(registry.get("xnli"))
# maximum sequence length per task (PROTOCOL.md); the tiny preset has 128 positions
DEFAULT_MAX_LENGTH = {"nli": 128, "ner": 128, "tydiqa": 384}
TINY_MAX_LENGTH = 128


def paper_targets(task: str) -> tuple[TargetSet, ...]:
    """Every target set of the paper for a task, all of its target languages, from the Hub."""
    return tuple(
        TargetSet(name, registry.target_languages(registry.get(name))) for name in registry.PAPER_TARGETS[task]
    )


def default_data(task: str, base_model: str) -> DataSettings:
    """The paper's data for real models; the synthetic sets for the tiny preset."""
    if task not in registry.PAPER_TARGETS:
        raise SpecError(f"no default data for task {task!r}; known tasks: {', '.join(registry.PAPER_TARGETS)}")
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
            targets=paper_targets(task),
        )
    if task == "ner":
        return DataSettings(
            train=DatasetRef("wikiann", "en", "train"),
            dev=DatasetRef("wikiann", "en", "validation"),
            targets=paper_targets(task),
        )
    return DataSettings(  # tydiqa: English dev selects; targets map validation/test to Hub train/dev
        train=DatasetRef("tydiqa", "en", "train"),
        dev=DatasetRef("tydiqa", "en", "validation"),
        targets=paper_targets(task),
    )


def parse_target(text: str) -> tuple[str, tuple[str, ...]]:
    """`DATASET[:LANG,LANG...]` -> (dataset, languages); no languages means all of them."""
    name, _, langs = text.partition(":")
    languages = tuple(l.strip() for l in langs.split(",") if l.strip())
    if not name.strip():
        raise SpecError(f"--target {text!r}: expected DATASET[:LANG,LANG...]")
    return name.strip(), languages


def select_targets(cfg: "ExperimentConfig", texts: tuple[str, ...]) -> "ExperimentConfig":
    """Replace the config's target sets by the ones named (`--target xnli:de,fr --target americasnli`).

    A dataset that the config already lists keeps its settings (local paths, halves, limit) with
    the languages chosen; another comes from the Hub with the paper's split mapping."""
    if not texts:
        return cfg
    chosen = []
    for text in texts:
        name, languages = parse_target(text)
        try:
            info = registry.get(name, cfg.task)
            for language in languages:
                registry.check_language(info, language)
        except DataError as e:
            raise SpecError(f"--target {text}: {e}") from None
        existing = next((t for t in cfg.data.targets if t.dataset == name), None)
        if existing is not None:
            if existing.path or existing.split_paths:
                extra = [l for l in languages if l not in existing.languages]
                if extra:
                    raise SpecError(
                        f"--target {text}: the config has local files of {name} for {', '.join(existing.languages)} only, not {', '.join(extra)}"
                    )
            chosen.append(dataclasses.replace(existing, languages=languages or existing.languages))
        else:
            chosen.append(TargetSet(name, languages or registry.target_languages(info)))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, targets=tuple(chosen)))


def _resolve(path: Optional[str], root: Optional[str]) -> Optional[str]:
    """A local path (or template) joined to the data root and made absolute."""
    if not path:
        return path
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and root:
        p = Path(os.path.expanduser(root)) / p
    return os.path.abspath(p)


def resolve_data(data: DataSettings, root: Optional[str]) -> DataSettings:
    root = root or data.root
    ref = lambda r: dataclasses.replace(r, path=_resolve(r.path, root))  # noqa: E731
    targets = tuple(
        dataclasses.replace(
            t,
            path=_resolve(t.path, root),
            split_paths={k: _resolve(v, root) for k, v in t.split_paths.items()} if t.split_paths else t.split_paths,
        )
        for t in data.targets
    )
    return dataclasses.replace(data, train=ref(data.train), dev=ref(data.dev), targets=targets, root=root)


def check_micro_batch(cfg: "ExperimentConfig") -> None:
    """Gradient accumulation: micro_batch_size must divide every batch size (grid and head)."""
    micro = cfg.micro_batch_size
    if micro is None:
        return
    sizes = sorted({*cfg.grid.batch_sizes, cfg.head.batch_size})
    bad = [b for b in sizes if micro < 1 or b % micro]
    if bad:
        raise SpecError(f"micro_batch_size: {micro} must divide every batch size, not {bad}")


def check_data(task: str, data: DataSettings) -> None:
    """Every dataset is registered for the task, every language known (one-line SpecError)."""
    sets = [("data.train", data.train.dataset, (data.train.language,)), ("data.dev", data.dev.dataset, (data.dev.language,))]
    sets += [(f"data.targets[{i}]", t.dataset, t.languages) for i, t in enumerate(data.targets)]
    for where, name, languages in sets:
        try:
            info = registry.get(name, task)
            for language in languages:
                registry.check_language(info, language)
        except DataError as e:
            raise SpecError(f"{where}: {e}") from None


def check_schedule(cfg: "ExperimentConfig") -> None:
    """The snapshot schedule against every batch size, as soon as the data size is known: here for
    local NLI/NER training files (one example is one feature); otherwise the train job checks it
    before it trains (a permanent error)."""
    from jobs.spec import parse_snapshot_every, snapshot_steps

    if cfg.epochs < 1:
        raise SpecError(f"epochs: must be >= 1, got {cfg.epochs}")
    schedule = parse_snapshot_every(cfg.snapshot_every) if cfg.snapshot_every else None
    if schedule is None or schedule[1] == "epochs":  # whole-epoch intervals need no data size
        snapshot_steps(schedule, cfg.snapshots_per_epoch, cfg.epochs, 1 << 30)
    train = cfg.data.train
    if cfg.task not in ("nli", "ner") or not train.path:
        return
    from jobs.api import count_examples

    try:
        n = count_examples(cfg.task, train)
    except DataError as e:
        raise SpecError(f"data.train: {e}") from None
    sizes = sorted({*cfg.grid.batch_sizes, *([cfg.head.batch_size] if cfg.head.enabled else [])})
    for batch_size in sizes:
        steps = -(-n // batch_size)
        try:
            snapshot_steps(schedule, cfg.snapshots_per_epoch, cfg.epochs, steps)
        except SpecError as e:
            raise SpecError(f"{e} ({n} training examples at batch size {batch_size})") from None


def check_numbers(cfg: "ExperimentConfig") -> None:
    """Learning rates finite and > 0, batch sizes >= 1 (grid and head), before any job starts."""
    import math

    for where, lr in [*((f"grid.learning_rates[{i}]", v) for i, v in enumerate(cfg.grid.learning_rates)), ("head.learning_rate", cfg.head.learning_rate)]:
        if not (math.isfinite(lr) and lr > 0):
            raise SpecError(f"{where}: must be a finite number > 0, got {lr}")
    for where, bs in [*((f"grid.batch_sizes[{i}]", v) for i, v in enumerate(cfg.grid.batch_sizes)), ("head.batch_size", cfg.head.batch_size), ("eval_batch_size", cfg.eval_batch_size)]:
        if bs < 1:
            raise SpecError(f"{where}: must be >= 1, got {bs}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise SpecError(f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any],
    targets: tuple[str, ...] = (),
    data_root: str | None = None,
) -> ExperimentConfig:
    """Defaults, then the YAML file, then non-None flag overrides (dotted keys allowed), then
    `--target` choices; local paths are joined to the data root (`data_root` over `data.root`)."""
    data: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError as e:
            raise SpecError(f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
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
    if "max_length" not in data:
        data["max_length"] = TINY_MAX_LENGTH if data["base_model"] == "tiny" else DEFAULT_MAX_LENGTH.get(data["task"], 128)
    where = str(path) if path else "config"
    try:
        cfg = from_mapping(ExperimentConfig, data, "")
        check_data(cfg.task, cfg.data)
        check_numbers(cfg)
        check_micro_batch(cfg)
        cfg = select_targets(cfg, tuple(targets))
        cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data, data_root))
        check_schedule(cfg)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    return cfg

