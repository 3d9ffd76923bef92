"""Planning: turn an experiment config and what the store already holds into job specs.

Every function here is pure apart from reading the store; the backends only execute. What is
complete in the store is never planned again, so re-running any stage redoes only what is missing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from jobs import layout
from jobs.averaging.methods import DRAWS, RUN_AVERAGES, RunCA, get_method
from jobs.draws import Draw, RunInfo, draw_runs
from jobs.snapshots import is_committed, read_manifest
from jobs.spec import TRAINING_SETTINGS, AverageSpec, EvaluateSpec, Evaluation, HeadRef, TrainSpec
from jobs.errors import MalformedFile
from jobs.store import ObjectStore, read_json

from orchestrator.config import ExperimentConfig


@dataclass(frozen=True)
class JobRequest:
    """One job for a backend: kind, spec, a readable name and labels for monitoring."""

    kind: str  # train | evaluate | average
    stage: str  # head | train | evaluate | average
    name: str
    spec: object
    labels: dict = field(default_factory=dict)


def _train_spec(cfg: ExperimentConfig, uri: str, lr: float, bs: int, seed: int, stage: str, head: HeadRef | None) -> TrainSpec:
    return TrainSpec(
        experiment_uri=uri,
        task=cfg.task,
        base_model=cfg.base_model,
        train_data=cfg.data.train,
        dev_data=cfg.data.dev,
        learning_rate=lr,
        batch_size=bs,
        seed=seed,
        **{name: getattr(cfg, name) for name in TRAINING_SETTINGS},
        freeze_word_embeddings=cfg.freeze_word_embeddings or None,
        **cfg.task_fields(),
        stage=stage,
        head=head,
    )


def _labels(spec: TrainSpec) -> dict:
    return {"stage": spec.stage, "task": spec.task, "lr": spec.learning_rate, "bs": spec.batch_size, "seed": spec.seed, "run": spec.run_key}


def head_spec(cfg: ExperimentConfig, uri: str) -> TrainSpec:
    h = cfg.head
    return _train_spec(cfg, uri, h.learning_rate, h.batch_size, h.seed, "head", None)


def head_request(cfg: ExperimentConfig, uri: str) -> JobRequest:
    spec = head_spec(cfg, uri)
    return JobRequest("train", "head", f"head-{cfg.task}-{spec.run_key[:8]}", spec, _labels(spec))


def committed_head(cfg: ExperimentConfig, store: ObjectStore, uri: str) -> HeadRef | None:
    """The head a grid run freezes, once the head stage has committed it."""
    key = head_spec(cfg, uri).run_key
    ref = layout.head_ref(key)
    if not is_committed(store, ref):
        return None
    return HeadRef(ref=ref, sha256=read_manifest(store, ref)["sha256"])


def grid_specs(cfg: ExperimentConfig, uri: str, head: HeadRef | None) -> list[TrainSpec]:
    return [
        _train_spec(cfg, uri, lr, bs, seed, "train", head)
        for lr in cfg.grid.learning_rates
        for bs in cfg.grid.batch_sizes
        for seed in cfg.grid.seeds
    ]


def train_requests(cfg: ExperimentConfig, store: ObjectStore, uri: str, head: HeadRef | None) -> list[JobRequest]:
    """Grid runs that are not complete yet."""
    out = []
    for spec in grid_specs(cfg, uri, head):
        if store.exists(layout.run_complete_key(spec.run_key)):
            continue
        name = f"train-{cfg.task}-{spec.run_key[:8]}"
        out.append(JobRequest("train", "train", name, spec, _labels(spec)))
    return out


def finished_runs(cfg: ExperimentConfig, store: ObjectStore, uri: str, head: HeadRef | None) -> list[RunInfo]:
    """The grid runs of this config whose run is complete."""
    return [
        RunInfo(s.run_key, s.learning_rate, s.batch_size, s.seed)
        for s in grid_specs(cfg, uri, head)
        if store.exists(layout.run_complete_key(s.run_key))
    ]


def draw_from_grid(cfg: ExperimentConfig, uri: str, head: HeadRef | None, seed: int, k: int) -> Draw:
    """A draw of k runs from the whole grid (finished or not): PROTOCOL's shuffle, as if every
    grid run had finished, so that it equals `draw_runs` over the grid once all have (the soup)."""
    runs = [RunInfo(s.run_key, s.learning_rate, s.batch_size, s.seed) for s in grid_specs(cfg, uri, head)]
    return draw_runs(runs, seed, k)


def snapshot_refs(store: ObjectStore, run_key: str) -> list[str]:
    key = layout.run_complete_key(run_key)
    info = read_json(store, key, "run record")
    if not isinstance(info.get("snapshots"), list) or not all(isinstance(r, str) for r in info["snapshots"]):
        raise MalformedFile(f"run record {key}: snapshots: expected a list of model refs")
    return list(info["snapshots"])


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate_requests(cfg: ExperimentConfig, store: ObjectStore, uri: str, refs: list[str], per_job: int = 16) -> list[JobRequest]:
    """Evaluate jobs for every ref without results, `per_job` models per job (one data load)."""
    todo = [r for r in refs if not store.exists(layout.results_key(r))]
    targets = tuple(ref for t in cfg.data.targets for ref in t.refs())
    out = []
    for i, chunk in enumerate(_chunks(todo, per_job)):
        spec = EvaluateSpec(
            experiment_uri=uri,
            task=cfg.task,
            base_model=cfg.base_model,
            refs=tuple(chunk),
            source_dev=cfg.data.dev,
            targets=targets,
            max_length=cfg.max_length,
            batch_size=cfg.eval_batch_size,
            precision=cfg.precision,
            **cfg.task_fields(),
        )
        from jobs.spec import short_hash

        out.append(JobRequest("evaluate", "evaluate", f"evaluate-{cfg.task}-{short_hash(list(chunk), 8)}", spec, {"stage": "evaluate", "task": cfg.task}))
    return out


def make_draws(cfg: ExperimentConfig, runs: list[RunInfo]) -> list[Draw]:
    return [draw_runs(runs, seed, cfg.draws.runs_per_draw) for seed in range(cfg.draws.count)]


def record_draws(store: ObjectStore, draws: list[Draw], methods: tuple[str, ...]) -> list[Draw]:
    """Record the draws the average stage is about to average (`draws/s<seed>-<hash>.json`): from
    how many finished runs each was drawn, when, and its methods (merged into an earlier record of
    the same draw). These records, not later flags, say what `evaluate --averages` and `tables` read."""
    from jobs.draws import utc_now, write_record

    now = utc_now()
    return [Draw.from_dict(write_record(store, draw.recorded(methods, now))) for draw in draws]


def recorded_average_refs(store: ObjectStore, runs: list[RunInfo]) -> list[str]:
    """Every stored averaged model the average stage made: the CA of each run (finished, or in a
    recorded draw) and every average under every recorded draw, whatever --draws, --runs-per-draw
    or --methods say now. Only committed models (a manifest exists)."""
    from jobs.draws import read_records

    draws = read_records(store)
    run_keys = dict.fromkeys([r.run_key for r in runs] + [key for d in draws for key in d.run_keys])
    refs = [layout.run_average_ref(key) for key in run_keys if store.exists(layout.manifest_key(layout.run_average_ref(key)))]
    recorded = {d.name for d in draws}
    suffix = "/" + layout.MANIFEST
    for key in sorted(store.list_keys("averages/")):
        parts = key.split("/")
        if key.endswith(suffix) and len(parts) > 3 and parts[1] in recorded:
            refs.append(key[: -len(suffix)])
    return refs


def soup_shortfalls(store: ObjectStore, draws: list[Draw], methods: tuple[str, ...]) -> list[str]:
    """Soup-N checks before averaging (any method with a nominal snapshot count): a DrawError
    when N exceeds the snapshots of all K runs of a draw; else one line per soup-N and draw whose
    first k runs hold fewer than N snapshots for some k (that average holds them all, and its
    manifest and results say how many)."""
    from jobs.draws import DrawError

    soups = [m for m in (get_method(m) for m in methods) if m.nominal_count is not None]
    if not soups:
        return []
    counts: dict[str, int] = {}
    short: dict[str, dict[int, list[int]]] = {}
    for draw in draws:
        per_run = [counts.setdefault(key, len(snapshot_refs(store, key))) for key in draw.run_keys]
        for method in soups:
            if method.too_few_snapshots(per_run):
                raise DrawError(
                    f"{method.id} needs {method.nominal_count} snapshots but draw seed {draw.seed}'s {draw.k} runs hold only {sum(per_run)}: "
                    f"lower N, or raise --runs-per-draw"
                )
            for k in method.short_prefixes(per_run):
                short.setdefault(method.id, {}).setdefault(k, []).append(sum(per_run[:k]))
    return [f"{m.id}: the first k runs hold fewer than {m.nominal_count} snapshots at {_held(short[m.id])}; those averages hold them all"
            for m in soups if m.id in short]


def _held(by_k: dict[int, list[int]]) -> str:
    """`k=1 (3 snapshots), k=2 (5-6 snapshots)`."""
    def span(counts: list[int]) -> str:
        return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"

    return ", ".join(f"k={k} ({span(c)} snapshots)" for k, c in sorted(by_k.items()))


def average_requests(cfg: ExperimentConfig, uri: str, runs: list[RunInfo], draws: list[Draw]) -> list[JobRequest]:
    """Per-run CA for every finished run, and one job per draw computing every method and k.

    Jobs that run forward passes (fused evaluation, greedy soup) are stage `average-gpu`: on a
    cluster they take the evaluate image and a GPU; plain averaging needs only CPUs."""
    d = cfg.draws
    evaluation = None
    if d.fused_evaluate:
        evaluation = Evaluation(
            base_model=cfg.base_model,
            source_dev=cfg.data.dev,
            targets=tuple(ref for t in cfg.data.targets for ref in t.refs()),
            max_length=cfg.max_length,
            batch_size=cfg.eval_batch_size,
            precision=cfg.precision,
            **cfg.task_fields(),
        )
    common = dict(experiment_uri=uri, task=cfg.task, output_dtype=d.output_dtype, evaluate=evaluation, keep_averages=d.keep_averages)
    out = []
    if runs:
        spec = AverageSpec(methods=(RunCA.family,), mode=RUN_AVERAGES, run_keys=tuple(r.run_key for r in runs), **common)
        stage = "average-gpu" if evaluation else "average"
        out.append(JobRequest("average", stage, f"average-{cfg.task}-ca", spec, {"stage": stage, "task": cfg.task}))
    if evaluation is not None and d.target_splits is not None:
        draw_common = dict(common, evaluate=dataclasses.replace(
            evaluation, targets=tuple(ref for ref in evaluation.targets if ref.split in d.target_splits)))
    else:
        draw_common = common
    forward_passes = any(get_method(m).needs_forward_passes for m in d.methods)  # greedy soup
    for draw in draws:
        spec = AverageSpec(methods=tuple(d.methods), mode=DRAWS, run_keys=draw.run_keys, draw_seed=draw.seed, **draw_common)
        stage = "average-gpu" if evaluation or forward_passes else "average"
        out.append(JobRequest("average", stage, f"average-{cfg.task}-draw{draw.seed}", spec, {"stage": stage, "task": cfg.task, "draw": draw.seed}))
    return out


def average_refs(cfg: ExperimentConfig, runs: list[RunInfo], draws: list[Draw]) -> list[str]:
    """Refs of every averaged model the average stage produces (for evaluation)."""
    refs = [layout.run_average_ref(r.run_key) for r in runs]
    for draw in draws:
        h = layout.draw_hash(draw.run_keys)
        refs += [layout.draw_average_ref(draw.seed, h, m, k) for m in cfg.draws.methods for k in range(1, draw.k + 1)]
    return refs
