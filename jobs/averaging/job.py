"""The average job: `python -m jobs average --spec spec.json` (jobs.average.run_average).

Three modes (AverageSpec.mode): each run's CA ("run-averages"), every method for every
k = 1..K of a draw in one pass ("draws"), and an explicit list of refs ("explicit").

How it works (and why it is fast and small):
- Inputs are fetched once per job (downloads run concurrently), memory-mapped, and read as
  zero-copy views of the page cache: no input is ever copied into process memory.
- One streaming pass computes every output (jobs.averaging.engine); memory is a few chunks.
- Validation comes first (committed, sizes, identical tensor names, shapes, dtypes, frozen
  heads, integer buffers: jobs.averaging.inputs); sha256 checks run concurrently in the
  background (once per machine, see jobs.snapshots) and must pass before anything is
  committed. On any error nothing is written to the store.
- A retry redoes only what is missing: an average is done once committed or evaluated; only
  methods with a missing output are planned, and those whole (a chain needs its prefix sums).
- Greedy soup needs English dev forward passes to pick its members (jobs.averaging.greedy),
  and runs them only when one of its outputs is missing.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from jobs import layout
from jobs.averaging.engine import Output, stream_average
from jobs.averaging.errors import AverageError
from jobs.averaging.inputs import open_inputs, validate_inputs
from jobs.averaging.members import (
    check_draw_methods, draw_record, output_refs, plan_draw, plan_explicit, plan_run_averages, run_info, spec_methods,
)
from jobs.averaging.methods import DRAWS, EXPLICIT
from jobs.common import log, progress, setup_torch
from jobs.draws import merge_record, utc_now
from jobs.progress import Progress, format_bytes, job_name
from jobs.scratch import scratch_dir
from jobs.snapshots import AlreadyCommitted, WeightsCache, adopt_committed, commit_model, is_average_done, is_committed, read_manifest
from jobs.spec import AverageSpec
from jobs.store import ObjectStore, open_store, read_json

if TYPE_CHECKING:
    from jobs.evaluate import Evaluator


@dataclass
class AveragingPass:
    """What one streaming pass computes."""

    outputs: list[Output]
    write_refs: set[str]  # the outputs written; the others are computed only as steps of a chain
    out_dtype: str = "fp32"
    known_manifests: dict[str, dict] = field(default_factory=dict)  # input manifests read already (run-sums)


@dataclass
class Delivery:
    """What becomes of each output once every input is verified and every output computed."""

    commit: bool = True  # false: `keep_averages: false`, the output is only scored
    evaluator: Optional["Evaluator"] = None  # scores each output from its local file first (fused evaluation)
    before_commit: Optional[Callable[[], None]] = None  # runs once, before the first commit


def execute(store: ObjectStore, cache: WeightsCache, scratch: Path, work: AveragingPass, delivery: Delivery) -> list[dict]:
    """Fetch, validate, compute every output in one streaming pass, then deliver each.

    With an evaluator each output is scored from its local file, then committed (unless
    `delivery.commit` is false), then its results are written: results never exist for weights
    that failed to commit. Returns the committed manifests."""
    outputs = work.outputs
    needed = list(dict.fromkeys(ref for o in outputs for ref, _ in o.terms))
    manifests = dict(work.known_manifests)
    for ref in needed:
        if ref not in manifests:
            manifests[ref] = read_manifest(store, ref)
    # from S3 the inputs download part by part while the pass runs behind them (every read
    # waits for its bytes); they are hashed as they land, and checked before anything is committed
    paths, ready, verification = cache.stream([(r, manifests[r]) for r in needed])
    total_read = sum(manifests[r]["size"] for r in needed)
    delivering = delivery.commit or delivery.evaluator is not None
    line = Progress("average", len(work.write_refs) if delivering else 0, "averages", store=store, job=job_name("average"))
    # the pass (which from S3 follows the download) is this share of the job's percent and ETA
    pass_share = 0.5 if delivery.evaluator is not None else 0.9

    def read_line(done_bytes: int) -> None:
        line.update(0, f"read {format_bytes(done_bytes)} of {format_bytes(total_read)}",
                    fraction=pass_share * done_bytes / max(1, total_read))

    verified = False

    def check_inputs() -> None:
        """Every input verified before anything is stored (no bad input leaves a trace in the
        store); fused scoring of the first output overlaps the last of the hashing."""
        nonlocal verified
        if not verified:
            verification.wait()
            if delivery.before_commit is not None:
                delivery.before_commit()
            verified = True

    evaluator = delivery.evaluator
    out_dir: Path | None = None
    try:
        files: dict = {}
        try:
            files = open_inputs(paths, ready)
            scratch.mkdir(parents=True, exist_ok=True)
            out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=scratch))
            try:
                infos = validate_inputs(files, manifests)
            except AverageError:
                verification.wait()  # a corrupted file explains a mismatch better than the mismatch
                raise
            out_paths = {o.ref: out_dir / f"{i:04d}.safetensors" for i, o in enumerate(outputs)}
            hashes = stream_average(files, infos, outputs, out_paths, work.out_dtype, work.write_refs, on_tensor=read_line)
        finally:
            for f in files.values():
                f.close()

        committed = []
        by_ref = {o.ref: o for o in outputs}
        refs = list(hashes) if delivering else []
        line.update(0, f"read {format_bytes(total_read)}", fraction=pass_share, force=True)  # the pass is over
        for done, ref in enumerate(progress(refs, desc="evaluate + commit" if evaluator is not None else "commit", unit="model")):
            manifest = dict(by_ref[ref].manifest, dtype=work.out_dtype)
            rows = evaluator.score_file(ref, out_paths[ref], dict(manifest, ref=ref)) if evaluator is not None else None
            if delivery.commit:
                check_inputs()
                try:
                    committed.append(commit_model(store, ref, out_paths[ref], manifest, sha256=hashes[ref][0], move=True))
                except AlreadyCommitted as lost:  # another job committed other bytes first: keep its model if it checks out
                    committed.append(adopt_committed(store, lost))
            out_paths[ref].unlink(missing_ok=True)
            if rows is not None:
                check_inputs()
                evaluator.write(ref, rows)
            line.update(done + 1, fraction=pass_share + (1 - pass_share) * (done + 1) / len(refs), force=done + 1 == len(refs))
        check_inputs()
        return committed
    except BaseException:
        verification.cancel()  # stops a download still running
        raise
    finally:
        line.close()
        if out_dir is not None and delivering:  # else (nothing delivered) the outputs stay for the caller
            shutil.rmtree(out_dir, ignore_errors=True)


def run_average(spec: AverageSpec, scratch: Path | None = None, store: ObjectStore | None = None) -> list[str]:
    """Compute (and commit, and with `spec.evaluate` score) every missing average of the spec;
    returns the refs committed, or scored when the weights are not kept."""
    setup_torch(spec.num_threads)
    store = store or open_store(spec.experiment_uri)
    if scratch is None:  # removed however the job ends; a dead job's is swept by the next one
        with scratch_dir("average") as own:
            return _run_average(spec, own, store)
    return _run_average(spec, Path(scratch), store)


def _run_average(spec: AverageSpec, scratch: Path, store: ObjectStore) -> list[str]:
    cache = WeightsCache(store, scratch / "cache")
    refs_by_method = output_refs(spec)
    all_refs = [ref for refs in refs_by_method.values() for ref in refs]
    runs = None
    if spec.mode == DRAWS:  # refused before anything else when a soup could never be made
        runs = [run_info(store, key) for key in spec.run_keys]
        check_draw_methods(spec_methods(spec), runs)

    evaluator = None
    if spec.evaluate is not None:  # fused: done means evaluated; stored but unscored averages are scored as they are
        todo = {ref for ref in all_refs if not store.exists(layout.results_key(ref))}
        stored = sorted(ref for ref in todo if is_committed(store, ref))
        todo -= set(stored)
        if stored or todo:
            from jobs.evaluate import Evaluator

            evaluator = Evaluator(store, spec.experiment_uri, spec.task, spec.evaluate, spec.num_threads)
        for ref in stored:
            evaluator.evaluate_stored(ref, cache)
    else:
        todo = {ref for ref in all_refs if not is_average_done(store, ref)}  # a retry redoes only what is missing
    if not todo:
        log.info("all %d averaged models exist", len(all_refs))
        if spec.mode == DRAWS:
            _write_draw_record(store, spec)
        return []

    pending = [m for m in spec_methods(spec) if any(ref in todo for ref in refs_by_method[m.id])]  # whole chains
    known_manifests: dict[str, dict] = {}
    if spec.mode == DRAWS:
        chosen = {m.id: m.select_all(store, spec, runs, cache) for m in pending if m.needs_forward_passes}
        outputs = plan_draw(spec, runs, pending, chosen)
        known_manifests = {layout.run_sum_ref(run["run_key"]): run for run in runs}
    elif spec.mode == EXPLICIT:
        outputs = plan_explicit(store, spec)
    else:
        outputs = plan_run_averages(store, spec)

    work = AveragingPass(outputs, todo, spec.output_dtype, known_manifests)
    record = (lambda: _write_draw_record(store, spec)) if spec.mode == DRAWS else None
    committed = execute(store, cache, scratch, work, Delivery(spec.keep_averages, evaluator, record))
    if spec.keep_averages:
        log.info("committed %d averaged models", len(committed))
        return [m["ref"] for m in committed]
    log.info("evaluated %d averaged models (weights not kept)", len(todo))
    return sorted(todo)


def _write_draw_record(store: ObjectStore, spec: AverageSpec) -> None:
    """The job's draw record, merged into the one the orchestrator wrote (finished runs, time),
    if any, and copied beside the draw's averages."""
    draw = draw_record(spec)
    key = layout.draw_key(spec.draw_seed, draw["hash"])
    existing = read_json(store, key, "draw record") if store.exists(key) else None
    merged = merge_record(existing, draw)
    merged.setdefault("recorded_at", utc_now())  # a job launched without the orchestrator: when, at least
    record = json.dumps(merged, indent=1).encode()
    copy = layout.draw_record_copy_key(spec.draw_seed, draw["hash"])
    if merged != existing:
        store.put_bytes(key, record)
    if merged != existing or not store.exists(copy):
        store.put_bytes(copy, record)
