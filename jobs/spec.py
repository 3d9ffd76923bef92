"""Typed, JSON-serialisable job specs: the only thing the orchestrator hands to a job.

A spec is validated when it is read (`*.from_dict`), with errors that name the field. The run
key of a train spec hashes exactly the fields that change the trained weights, so that moving
a bucket, changing a deadline or a resource request never retrains anything.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from jobs.averaging.methods import DRAWS, EXPLICIT, MODES, RUN_AVERAGES, get_method
from jobs.errors import SpecError
from jobs.hashing import canonical_json, short_hash  # noqa: F401  (re-exported: older imports)

SPEC_VERSION = 1


def _drop_none(value: Any) -> Any:
    """Unset optional fields leave the key unchanged, so adding one later keeps old run keys."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check and convert one JSON value to a dataclass field's annotated type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected an object, got {type(value).__name__}")
        return from_mapping(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    return value


def from_mapping(cls, data: Mapping, where: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{path}: missing required field")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate:
        validate(where)
    return obj


def to_dict(obj) -> dict:
    """Dataclass to plain JSON-ready dict (tuples become lists)."""

    def convert(v):
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v

    return convert(obj)


@dataclass(frozen=True)
class DatasetRef:
    """One evaluation or training set: a registered dataset, a language and a split.

    `path`/`format` point at local files (see jobs.data); `half` keeps the first or second half
    of the examples (a language with one labelled file gives validation and test halves, so
    trg-dev never selects on what it reports); `limit` then keeps the first N examples.
    """

    dataset: str
    language: str
    split: str
    path: Optional[str] = None
    format: Optional[str] = None
    limit: Optional[int] = None
    half: Optional[str] = None  # first | second

    def validate(self, where: str) -> None:
        if self.limit is not None and self.limit < 1:
            raise SpecError(f"{where}.limit: must be >= 1, got {self.limit}")
        if self.half not in (None, "first", "second"):
            raise SpecError(f"{where}.half: must be 'first' or 'second', got {self.half!r}")

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.language}/{self.split}"


@dataclass(frozen=True)
class HeadRef:
    """The shared frozen classification head a grid run starts from."""

    ref: str
    sha256: str


# ---- choices of the paper's code, each with its named alternative (docs/fidelity.md) ----
PRECISIONS = ("fp16", "bf16", "fp32")  # fp16: autocast + GradScaler, the paper's Lightning "16-mixed"
NER_LABEL_SCHEMES = ("all-subtokens", "first-subtoken")
# all-subtokens: every sub-token carries its word's tag, seqeval over sub-tokens (the paper's code,
# label_all_tokens=True); first-subtoken: the XTREME convention, scored per word
QA_QUESTION_MODES = ("full", "truncated")
# full: only the context is windowed (the paper's code, truncation="only_second"); truncated:
# questions cut to 64 tokens first (this project before the fidelity change)
SNAPSHOT_UNITS = ("epochs", "steps")


def parse_snapshot_every(text: str, where: str = "snapshot_every") -> tuple[float, str]:
    """'4 epochs' -> (4.0, 'epochs'); '0.5 epochs', '1 epoch', '500 steps'. One-line SpecError."""
    parts = str(text).split()
    if len(parts) == 2:
        amount, unit = parts
        unit = unit if unit.endswith("s") else unit + "s"
        try:
            value = float(amount)
        except ValueError:
            value = float("nan")
        if unit in SNAPSHOT_UNITS and math.isfinite(value) and value > 0:
            if unit == "steps" and not value.is_integer():
                raise SpecError(f"{where}: a step interval must be a whole number, got {text!r}")
            return value, unit
    raise SpecError(f"{where}: expected 'N epochs' or 'N steps' (e.g. '1 epoch', '4 epochs', '0.5 epochs', '500 steps'), got {text!r}")


def canonical_snapshot_every(text: str, where: str = "snapshot_every") -> str:
    value, unit = parse_snapshot_every(text, where)
    return f"{value:g} {unit}"


def snapshot_steps(schedule: tuple[float, str] | None, snapshots_per_epoch: int | None, epochs: int,
                   steps_per_epoch: int, where: str = "snapshot_every") -> list[int]:
    """Optimizer steps after which a snapshot is taken; the last is always the end of training.

    `schedule` is a parsed `snapshot_every`; without one, `snapshots_per_epoch` (default 1)
    evenly spaced per epoch (the behaviour before `snapshot_every` existed). A schedule the run
    cannot give (an interval that does not divide the run, more snapshots per epoch than steps,
    an interval longer than the run) raises a one-line SpecError."""
    total = epochs * steps_per_epoch
    if schedule is None or (schedule[1] == "epochs" and schedule[0] < 1):
        per_epoch = snapshots_per_epoch or 1
        if schedule is not None:
            per_epoch = round(1 / schedule[0])
            if abs(per_epoch * schedule[0] - 1) > 1e-9:
                raise SpecError(f"{where}: {schedule[0]:g} epochs does not divide an epoch (use 1/N: 0.5, 0.25, ...)")
        if per_epoch > steps_per_epoch:
            raise SpecError(
                f"{where}: {per_epoch} snapshots per epoch but an epoch has only {steps_per_epoch} optimizer step(s); "
                f"ask for fewer or use a smaller batch size"
            )
        return [e * steps_per_epoch + round(j * steps_per_epoch / per_epoch) for e in range(epochs) for j in range(1, per_epoch + 1)]
    value, unit = schedule
    interval = int(value) if unit == "steps" else None
    if unit == "epochs":
        if not value.is_integer():
            raise SpecError(f"{where}: {value:g} epochs: use a whole number of epochs or 1/N of an epoch")
        if epochs % int(value):
            raise SpecError(f"{where}: every {value:g} epochs does not divide the run of {epochs} epochs (the last snapshot must end training)")
        interval = int(value) * steps_per_epoch
    if interval > total:
        raise SpecError(f"{where}: every {value:g} {unit} is longer than the run ({total} steps, {epochs} epochs)")
    if total % interval:
        raise SpecError(f"{where}: every {interval} steps does not divide the run of {total} steps (the last snapshot must end training)")
    return list(range(interval, total + 1, interval))


# The training settings an experiment config sets alike for every run of its grid. One list for
# the config (orchestrator.config.ExperimentConfig declares each of them, with the paper's
# defaults), the planner (which copies them into every TrainSpec) and the model card. The task's
# own options (ner_labels, qa_questions) travel through task_options; freeze_word_embeddings is
# written only when true (None keeps older run keys).
TRAINING_SETTINGS = (
    "epochs", "snapshots_per_epoch", "snapshot_every", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length",
    "precision", "micro_batch_size", "eval_batch_size",
)


@dataclass(frozen=True)
class TrainSpec:
    """One fine-tuning run (stage "train") or the task's head run (stage "head").

    Fields added after the first stores were written default to None, which means the behaviour
    before they existed (a snapshot per epoch, first-sub-token NER labels, questions cut to 64
    tokens, fp32): old specs parse to the same run key. New specs name every setting."""

    experiment_uri: str
    task: str
    base_model: str
    train_data: DatasetRef
    dev_data: DatasetRef
    learning_rate: float
    batch_size: int
    seed: int
    epochs: int = 10
    snapshots_per_epoch: Optional[int] = None  # the old schedule field; None with snapshot_every
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    precision: str = "fp32"  # fp16 (autocast + GradScaler) | bf16 (autocast) | fp32
    stage: str = "train"
    head: Optional[HeadRef] = None
    snapshot_every: Optional[str] = None  # '1 epochs', '4 epochs', '0.5 epochs', '500 steps'
    ner_labels: Optional[str] = None  # NER only: all-subtokens | first-subtoken (None: first-subtoken)
    qa_questions: Optional[str] = None  # QA only: full | truncated (None: truncated)
    freeze_word_embeddings: Optional[bool] = None  # a CPU saving; applied to every run of a grid alike
    # --- below: execution settings, not part of the run key ---
    micro_batch_size: Optional[int] = None  # gradient accumulation when smaller than batch_size
    eval_batch_size: int = 64
    num_threads: Optional[int] = None
    deadline_seconds: Optional[int] = None
    version: int = SPEC_VERSION

    # Fields that change the trained weights; the run key hashes exactly these.
    KEY_FIELDS: typing.ClassVar[tuple[str, ...]] = (
        "task", "base_model", "train_data", "learning_rate", "batch_size", "seed", "epochs",
        "snapshots_per_epoch", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length",
        "precision", "stage",
    )
    # Key fields added later: hashed only when set, so older specs keep their run keys.
    LATER_KEY_FIELDS: typing.ClassVar[tuple[str, ...]] = (
        "snapshot_every", "ner_labels", "qa_questions", "freeze_word_embeddings",
    )

    @classmethod
    def weight_settings(cls, spec: Mapping[str, Any]) -> dict:
        """The settings of a spec (as JSON) that shaped its weights, identity fields aside: the run
        key's fields but the task, model, data, grid point and stage (the model card's "training")."""
        identity = {"task", "base_model", "train_data", "learning_rate", "batch_size", "seed", "stage"}
        return {k: spec.get(k) for k in (*cls.KEY_FIELDS, *cls.LATER_KEY_FIELDS) if k not in identity}

    def __post_init__(self):
        if self.snapshot_every is not None:  # one spelling per schedule, so one run key
            object.__setattr__(self, "snapshot_every", canonical_snapshot_every(self.snapshot_every))

    def validate(self, where: str = "") -> None:
        p = f"{where}." if where else ""
        if self.stage not in ("train", "head"):
            raise SpecError(f"{p}stage: must be 'train' or 'head', got {self.stage!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise SpecError(f"{p}learning_rate: must be a finite number > 0, got {self.learning_rate}")
        for name in ("batch_size", "epochs", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise SpecError(f"{p}{name}: must be >= 1, got {getattr(self, name)}")
        if self.snapshots_per_epoch is not None and self.snapshots_per_epoch < 1:
            raise SpecError(f"{p}snapshots_per_epoch: must be >= 1, got {self.snapshots_per_epoch}")
        if self.snapshot_every is not None and self.snapshots_per_epoch is not None:
            raise SpecError(f"{p}snapshot_every: set either snapshot_every or snapshots_per_epoch, not both")
        if self.micro_batch_size is not None and (
            self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size
        ):
            raise SpecError(
                f"{p}micro_batch_size: must divide batch_size {self.batch_size}, got {self.micro_batch_size}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise SpecError(f"{p}warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        check_task_options(self, p)
        if self.stage == "head" and self.head is not None:
            raise SpecError(f"{p}head: a head run trains its own head; remove the head field")

    @property
    def schedule(self) -> tuple[float, str] | None:
        return parse_snapshot_every(self.snapshot_every) if self.snapshot_every else None

    def snapshot_steps(self, steps_per_epoch: int) -> list[int]:
        return snapshot_steps(self.schedule, self.snapshots_per_epoch, self.epochs, steps_per_epoch)

    def snapshot_count(self) -> int | None:
        """Snapshots of the run when the schedule is in epochs (None for step schedules: the
        number of steps depends on the data)."""
        schedule = self.schedule
        if schedule is None:
            return self.epochs * (self.snapshots_per_epoch or 1)
        value, unit = schedule
        if unit == "steps":
            return None
        return round(self.epochs / value)

    def task_options(self) -> dict:
        return task_options(self)

    @property
    def run_key(self) -> str:
        fields = {name: _drop_none(to_dict(getattr(self, name))) for name in self.KEY_FIELDS}
        fields["head_sha256"] = self.head.sha256 if self.head else None
        fields.update({name: getattr(self, name) for name in self.LATER_KEY_FIELDS if getattr(self, name) is not None})
        return short_hash(fields)


def check_task_options(spec, p: str = "") -> None:
    """precision, ner_labels and qa_questions of a train, evaluate or evaluation spec."""
    precision = getattr(spec, "precision", None)
    if precision is not None and precision not in PRECISIONS:
        raise SpecError(f"{p}precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if spec.ner_labels is not None and spec.ner_labels not in NER_LABEL_SCHEMES:
        raise SpecError(f"{p}ner_labels: must be one of {', '.join(NER_LABEL_SCHEMES)}, got {spec.ner_labels!r}")
    if spec.qa_questions is not None and spec.qa_questions not in QA_QUESTION_MODES:
        raise SpecError(f"{p}qa_questions: must be one of {', '.join(QA_QUESTION_MODES)}, got {spec.qa_questions!r}")


def task_options(spec, task: str | None = None) -> dict:
    """The task's encoding and scoring options of a spec (or a spec's dict), a missing field read
    as the behaviour before it existed: `get_task(spec.task, **task_options(spec))`."""
    get = spec.get if isinstance(spec, Mapping) else lambda name: getattr(spec, name, None)
    task = task or get("task")
    if task == "ner":
        return {"label_scheme": get("ner_labels") or "first-subtoken"}
    if task == "tydiqa":
        return {"questions": get("qa_questions") or "truncated"}
    return {}


@dataclass(frozen=True)
class EvaluateSpec:
    """Evaluate stored models (snapshots or averages) on the source dev set and every target set."""

    experiment_uri: str
    task: str
    base_model: str
    refs: tuple[str, ...]
    source_dev: DatasetRef
    targets: tuple[DatasetRef, ...]
    max_length: int = 128
    batch_size: int = 64
    precision: Optional[str] = None  # autocast on a GPU as in training (None: fp32)
    ner_labels: Optional[str] = None  # as TrainSpec (None: first-subtoken)
    qa_questions: Optional[str] = None  # as TrainSpec (None: truncated)
    num_threads: Optional[int] = None
    deadline_seconds: Optional[int] = None
    version: int = SPEC_VERSION

    def validate(self, where: str = "") -> None:
        if not self.refs:
            raise SpecError(f"{where + '.' if where else ''}refs: name at least one model reference")
        check_task_options(self, f"{where}." if where else "")

    def evaluation(self) -> "Evaluation":
        return Evaluation(self.base_model, self.source_dev, self.targets, self.max_length, self.batch_size,
                          self.precision, self.ner_labels, self.qa_questions)


@dataclass(frozen=True)
class Evaluation:
    """What an average job needs to score its own averages (fused average-then-evaluate): the
    same settings an EvaluateSpec carries, less the refs."""

    base_model: str
    source_dev: DatasetRef
    targets: tuple[DatasetRef, ...]
    max_length: int = 128
    batch_size: int = 64
    precision: Optional[str] = None
    ner_labels: Optional[str] = None
    qa_questions: Optional[str] = None

    def validate(self, where: str = "") -> None:
        check_task_options(self, f"{where}." if where else "")


OUTPUT_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class AverageSpec:
    """Average stored snapshots, in one of three modes (methods: jobs.averaging.methods):

    - `run-averages`: `methods=("ca",)`, `run_keys`: each run's CA (all snapshots of the run);
    - `draws`: `draw_seed` set, `run_keys` in draw order: every method for every k = 1..K;
    - `explicit`: `methods=("uniform",)`, `refs=(...)`, averaged into `output_ref`.
    """

    experiment_uri: str
    task: str
    methods: tuple[str, ...]
    run_keys: tuple[str, ...] = ()
    draw_seed: Optional[int] = None
    refs: tuple[str, ...] = ()
    output_ref: Optional[str] = None
    # None only in specs written before the field existed (and in callers that still leave it
    # out): __post_init__ reads their mode from their shape, the one place that does
    mode: Optional[str] = None
    output_dtype: str = "fp32"  # fp32 | bf16 | fp16: the stored averages' float dtype (sums are fp32 or fp64)
    # fused average-then-evaluate: score every average in this job (results parquet as the
    # evaluate job writes them); then `keep_averages: false` stores no weights at all
    evaluate: Optional[Evaluation] = None
    keep_averages: bool = True
    num_threads: Optional[int] = None
    deadline_seconds: Optional[int] = None
    version: int = SPEC_VERSION

    def __post_init__(self):
        if self.mode is None:
            # a spec of the old shape, which said its mode through its methods: 'uniform' was an
            # explicit list, exactly ('ca',) the run averages, anything else a draw
            methods = tuple(self.methods or ())
            mode = EXPLICIT if "uniform" in methods else RUN_AVERAGES if methods == ("ca",) else DRAWS
            object.__setattr__(self, "mode", mode)

    def validate(self, where: str = "") -> None:
        p = f"{where}." if where else ""
        if self.mode not in MODES:
            raise SpecError(f"{p}mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.methods:
            raise SpecError(f"{p}methods: name at least one method")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise SpecError(f"{p}output_dtype: must be one of {', '.join(OUTPUT_DTYPES)}, got {self.output_dtype!r}")
        methods = [get_method(m, f"{p}methods[{i}]") for i, m in enumerate(self.methods)]
        if not self.keep_averages and self.evaluate is None:
            raise SpecError(f"{p}keep_averages: false needs evaluate settings, else the averages would be lost unscored")
        if self.mode == EXPLICIT:
            if len(methods) != 1 or methods[0].mode != EXPLICIT or not self.refs or not self.output_ref:
                raise SpecError(f"{p}methods: 'uniform' needs refs and output_ref and no other method")
        elif self.mode == RUN_AVERAGES:
            for i, m in enumerate(methods):
                if m.mode != RUN_AVERAGES:
                    raise SpecError(f"{p}methods[{i}]: {m.id!r} is not a per-run method (mode run-averages computes 'ca')")
            if len(self.run_keys) < 1:
                raise SpecError(f"{p}run_keys: per-run CA needs at least one run key")
        else:
            if self.draw_seed is None or not self.run_keys:
                raise SpecError(f"{p}draw_seed: draw methods need draw_seed and the draw's run_keys in order")
            for i, m in enumerate(methods):
                if m.mode == RUN_AVERAGES:
                    raise SpecError(f"{p}methods: {m.id!r} is per run; average draws and runs in separate specs")
                if m.mode != DRAWS:
                    raise SpecError(f"{p}methods[{i}]: {m.id!r} is not a draw method")


SPEC_TYPES: dict[str, type] = {"train": TrainSpec, "evaluate": EvaluateSpec, "average": AverageSpec}


def spec_from_dict(kind: str, data: Any):
    """Validate a decoded JSON spec for the job kind; raises SpecError naming the field."""
    if kind not in SPEC_TYPES:
        raise SpecError(f"unknown job kind {kind!r}; known: {', '.join(SPEC_TYPES)}")
    if not isinstance(data, Mapping):
        raise SpecError(f"{kind} spec: expected a JSON object, got {type(data).__name__}")
    return from_mapping(SPEC_TYPES[kind], data, "")


def spec_from_json(kind: str, text: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{kind} spec is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return spec_from_dict(kind, data)


def spec_to_json(spec) -> str:
    return json.dumps(to_dict(spec), sort_keys=True, indent=1)
