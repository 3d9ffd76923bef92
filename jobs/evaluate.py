"""The evaluate job: score stored models on the English dev set and every target set.

Run it as `python -m jobs evaluate --spec spec.json`. Writes one results parquet per model
(jobs.results); models whose results already exist are skipped, so a retry redoes only
what is missing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from jobs import layout
from jobs.common import load_model_from_ref, log, progress, ref_kind, setup_torch
from jobs.data.cache import encode_cached
from jobs.models import load_tokenizer
from jobs.results import results_frame, to_parquet_bytes
from jobs.snapshots import WeightsCache
from jobs.spec import DatasetRef, EvaluateSpec
from jobs.store import open_store
from jobs.tasks import get_task


def experiment_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def run_evaluate(spec: EvaluateSpec, scratch: Path | None = None, force: bool = False) -> list[str]:
    store = open_store(spec.experiment_uri)
    todo = [ref for ref in spec.refs if force or not store.exists(layout.results_key(ref))]
    if not todo:
        log.info("all %d models already evaluated", len(spec.refs))
        return []
    task = get_task(spec.task)
    device = setup_torch(spec.num_threads)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="xlt-eval-"))
    cache = WeightsCache(store, scratch / "cache")
    tokenizer = load_tokenizer(spec.base_model)

    # load and tokenise every set once for all models of this job
    sets: list[tuple[DatasetRef, list[dict], list[dict]]] = []
    for ref in (spec.source_dev, *spec.targets):
        examples = task.load(ref)
        sets.append((ref, examples, encode_cached(task, tokenizer, examples, spec.max_length)))

    written = []
    for ref in progress(todo, desc="evaluate", unit="model"):
        model, manifest = load_model_from_ref(task, spec.base_model, store, ref, cache)
        model.to(device)
        run_spec = manifest.get("spec") or {}
        base = {
            "experiment": experiment_name(spec.experiment_uri),
            "task": spec.task,
            "ref": ref,
            "kind": ref_kind(ref),
            "run_key": manifest.get("run_key"),
            "learning_rate": run_spec.get("learning_rate"),
            "batch_size": run_spec.get("batch_size"),
            "seed": run_spec.get("seed"),
            "step": manifest.get("step"),
            "method": manifest.get("method"),
            "k": manifest.get("k"),
            "draw_seed": manifest.get("draw_seed"),
            "metric": task.metric,
        }
        rows = []
        for i, (dref, examples, features) in enumerate(sets):
            if i == 0 and base["kind"] == "snapshot" and manifest.get("dev_score") is not None:
                values = {task.metric: manifest["dev_score"]}  # selection scores come from one place: the train job
            else:
                values = task.evaluate(model, tokenizer, examples, features, spec.batch_size)  # primary metric first
            for metric, value in values.items():
                rows.append(dict(base, metric=metric, dataset=dref.dataset, language=dref.language, split=dref.split, value=value, n_examples=len(examples)))
        store.put_bytes(layout.results_key(ref), to_parquet_bytes(results_frame(rows)))
        written.append(ref)
        log.info("evaluated %s: English dev %.4f", ref, rows[0]["value"])
    return written
