"""Planned JobRequests of every stage for a task, built without a store or a cluster (for rendering)."""
from __future__ import annotations

from jobs.draws import RunInfo
from jobs.spec import DatasetRef, HeadRef

from orchestrator import plan
from orchestrator.config import DataSettings, ExperimentConfig, TargetSet

TASKS = ("nli", "ner", "tydiqa")
TARGETS = {
    "nli": TargetSet("xnli", ("ar", "de", "sw")),
    "ner": TargetSet("wikiann", ("ar", "de", "yo")),
    "tydiqa": TargetSet("tydiqa", ("ar", "fi", "te")),
}


class EmptyStore:
    uri = "s3://bucket/exp"

    def exists(self, key: str) -> bool:
        return False


def config(task: str, base_model: str = "xlm-roberta-large") -> ExperimentConfig:
    data = DataSettings(
        train=DatasetRef(task, "en", "train"),
        dev=DatasetRef(task, "en", "validation"),
        targets=(TARGETS[task],),
    )
    return ExperimentConfig(task=task, base_model=base_model, data=data, epochs=40 if task == "tydiqa" else 10)


def stage_requests(task: str, base_model: str = "xlm-roberta-large", uri: str = "s3://bucket/exp") -> dict[str, list]:
    """head, the full grid (63 runs), per-run CA + 10 draws, and evaluation of every snapshot."""
    cfg = config(task, base_model)
    store = EmptyStore()
    head = HeadRef(ref="heads/0123456789abcdef", sha256="0" * 64)
    train = plan.train_requests(cfg, store, uri, head)
    runs = [RunInfo(r.spec.run_key, r.spec.learning_rate, r.spec.batch_size, r.spec.seed) for r in train]
    draws = plan.make_draws(cfg, runs)
    snapshots = [f"runs/{r.run_key}/snapshots/{s:08d}" for r in runs for s in range(10)]
    return {
        "head": [plan.head_request(cfg, uri)],
        "train": train,
        "average": plan.average_requests(cfg, uri, runs, draws),
        "evaluate": plan.evaluate_requests(cfg, store, uri, snapshots + plan.average_refs(cfg, runs, draws)),
    }
