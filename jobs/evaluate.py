"""The evaluate job: score stored models on the English dev set and every target set.

Run it as `python -m jobs evaluate --spec spec.json`. Writes one results parquet per model
(jobs.results); models whose results already exist are skipped, so a retry redoes only
what is missing. The average job uses the same Evaluator to score its averages itself
(fused average-then-evaluate, AverageSpec.evaluate). In pods and logs it prints a progress line
(jobs.progress): models done/total and sets done/total.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from jobs import layout
from jobs.common import load_model_from_file, load_model_from_ref, log, progress, ref_kind, setup_torch
from jobs.data.cache import encode_cached
from jobs.errors import PermanentError, TemporaryError
from jobs.faults import failpoint
from jobs.models import load_tokenizer
from jobs.progress import Progress, job_name
from jobs.results import results_frame, to_parquet_bytes
from jobs.scratch import scratch_dir
from jobs.snapshots import WeightsCache, read_manifest
from jobs.spec import DatasetRef, EvaluateSpec, Evaluation, task_options
from jobs.store import ObjectStore, open_store
from jobs.tasks import get_task


def experiment_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


class Evaluator:
    """Scores models of one experiment on the source dev set and every target set.

    The sets are loaded and tokenised once, for every model this evaluator scores. `on_set`, if
    set, is called after each set of each model is scored (progress lines)."""

    on_set: Callable[[], None] | None = None

    def __init__(self, store: ObjectStore, experiment_uri: str, task_name: str, settings: Evaluation, num_threads: int | None = None):
        self.store = store
        self.experiment_uri = experiment_uri
        self.options = task_options(settings, task_name)
        self.task = get_task(task_name, **self.options)
        self.settings = settings
        self.device = setup_torch(num_threads)
        self.tokenizer = load_tokenizer(settings.base_model)
        self.sets: list[tuple[DatasetRef, list[dict], list[dict]]] = []
        for ref in (settings.source_dev, *settings.targets):
            examples = self.task.load(ref)
            self.sets.append((ref, examples, encode_cached(self.task, self.tokenizer, examples, settings.max_length)))

    def evaluate_stored(self, ref: str, cache: WeightsCache) -> None:
        """Score a committed model and write its results."""
        model, manifest = load_model_from_ref(self.task, self.settings.base_model, self.store, ref, cache, device=self.device)
        self.write(ref, self.score(ref, model, manifest))

    def score_file(self, ref: str, path: str | Path, manifest: dict) -> list[dict]:
        """Result rows of model `ref` whose weights are the local file `path` (not stored yet)."""
        return self.score(ref, load_model_from_file(self.task, self.settings.base_model, path, ref, device=self.device), manifest)

    def score(self, ref: str, model, manifest: dict) -> list[dict]:
        from jobs.train import eval_autocast

        task = self.task
        model.to(self.device)
        run_spec = manifest.get("spec") or {}
        if run_spec and task_options(run_spec, task.name) != self.options:
            raise PermanentError(
                f"model {ref} was trained with {task_options(run_spec, task.name)}, this evaluation uses {self.options}: "
                f"evaluate it with its own settings (results of two schemes must not be mixed)"
            )
        base = {
            "experiment": experiment_name(self.experiment_uri),
            "task": task.name,
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
            "label_scheme": self.options.get("label_scheme"),
            "n_snapshots": manifest.get("count") if ref_kind(ref) != "snapshot" else None,  # snapshots averaged
        }
        rows = []
        for i, (dref, examples, features) in enumerate(self.sets):
            if i == 0 and base["kind"] == "snapshot" and manifest.get("dev_score") is not None:
                values = {task.metric: manifest["dev_score"]}  # selection scores come from one place: the train job
            else:
                with eval_autocast(self.device, self.settings.precision):
                    values = task.evaluate(model, self.tokenizer, examples, features, self.settings.batch_size)  # primary metric first
            for metric, value in values.items():
                rows.append(dict(base, metric=metric, dataset=dref.dataset, language=dref.language, split=dref.split, value=value, n_examples=len(examples)))
            if self.on_set is not None:
                self.on_set()
        return rows

    def write(self, ref: str, rows: list[dict]) -> None:
        self.store.put_bytes(layout.results_key(ref), to_parquet_bytes(results_frame(rows)))
        log.info("evaluated %s: English dev %.4f", ref, rows[0]["value"])


def run_evaluate(spec: EvaluateSpec, scratch: Path | None = None, force: bool = False) -> list[str]:
    """Score every model of the spec that has no results yet; returns the refs scored.

    A model that cannot be scored (missing, malformed manifest, truncated or corrupted weights,
    another architecture) is reported in one line and skipped; the job scores all the others,
    then fails with exit 3 naming those it could not. A storage failure that outlasts the
    store's retries stops the job at once (exit 75): a retry redoes only what is missing."""
    store = open_store(spec.experiment_uri)
    todo = [ref for ref in spec.refs if force or not store.exists(layout.results_key(ref))]
    if not todo:
        log.info("all %d models already evaluated", len(spec.refs))
        return []
    failed: list[str] = []

    def could_not(ref: str, error: Exception) -> None:
        failed.append(ref)
        log.error("cannot evaluate %s: %s", ref, error)

    manifests = {}
    for ref in todo:  # cheap checks first: nothing is loaded for a model that has no valid manifest
        try:
            manifests[ref] = read_manifest(store, ref)
        except PermanentError as e:
            could_not(ref, e)
    written: list[str] = []
    if manifests:
        evaluator = Evaluator(store, spec.experiment_uri, spec.task, spec.evaluation(), spec.num_threads)
        line = Progress("evaluate", len(manifests), "models", store=store, job=job_name("evaluate"))
        models_done, sets_done, sets_total = 0, 0, len(manifests) * len(evaluator.sets)

        def set_scored() -> None:
            nonlocal sets_done
            sets_done += 1
            line.update(models_done, f"sets {sets_done}/{sets_total}", fraction=sets_done / sets_total)

        evaluator.on_set = set_scored
        try:
            with (contextlib.nullcontext(Path(scratch)) if scratch else scratch_dir("evaluate")) as work:
                cache = WeightsCache(store, Path(work) / "cache")
                for ref in progress(list(manifests), desc="evaluate", unit="model"):
                    failpoint("evaluate.model")
                    try:
                        evaluator.evaluate_stored(ref, cache)
                    except TemporaryError:
                        raise
                    except PermanentError as e:
                        could_not(ref, e)
                        continue
                    finally:
                        models_done += 1
                        sets_done = models_done * len(evaluator.sets)  # a model that failed part-way counts whole
                    written.append(ref)
        finally:
            line.close()
    if failed:
        names = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise PermanentError(f"{len(failed)} of {len(todo)} model(s) could not be evaluated ({names}); the other {len(written)} were")
    return written
