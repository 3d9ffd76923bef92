"""The `gc` command: delete stored models that no pending stage needs, after showing them.

Kept always: each finished run's run-sum, last and src-dev snapshots, every results file, heads,
draws, run specs, curves and logs, and anything of a run that is not finished. Deleted:
- snapshots of finished runs that are neither last nor src-dev, once evaluated and not an input
  of a pending average (a soup member, or any snapshot of a draw with a pending greedy soup);
- trainer states of finished runs (only a resume needs them);
- averaged models (draw averages, per-run CA) once evaluated: the tables read results only, and
  the average stage counts an evaluated model as done;
- partial writes of killed writers: `.NAME.XXXX.part` files of a local store, incomplete multipart
  uploads of S3, untouched for `--partial-age` minutes (a live writer keeps touching its own).
Manifests go before weights, so a reader never finds a committed model without its file.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import click

from jobs import layout
from jobs.draws import DrawError
from jobs.snapshots import is_average_done, read_manifest
from jobs.spec import AverageSpec

from orchestrator import plan, stage_plans
from orchestrator.context import Experiment, experiment_options
from orchestrator.formatting import human_bytes


@dataclass
class Doomed:
    ref: str
    what: str  # snapshot | trainer-state | average | partial-write
    keys: list[str]
    size: int
    uploads: list[tuple[str, str]] = field(default_factory=list)  # (key, upload id) of S3 multipart uploads to abort


def _evaluated(store, ref: str) -> bool:
    return store.exists(layout.results_key(ref))


def pending_inputs(exp: Experiment) -> set[str] | None:
    """Model refs that a pending average needs; None if the draws cannot be made yet (then every
    snapshot may still be needed)."""
    from jobs.api import draw_inputs

    cfg, store, uri = exp.config, exp.store, exp.uri
    head = stage_plans.committed_head(exp)
    if cfg.head.enabled and head is None:
        return None
    runs = plan.finished_runs(cfg, store, uri, head)
    if not runs:
        return set()
    try:
        draws = plan.make_draws(cfg, runs)
    except DrawError:
        return None
    needed: set[str] = set()
    for draw in draws:
        spec = AverageSpec(experiment_uri=uri, task=cfg.task, methods=tuple(cfg.draws.methods), run_keys=draw.run_keys, draw_seed=draw.seed)
        h = layout.draw_hash(draw.run_keys)
        todo = tuple(m for m in spec.methods
                     if not all(is_average_done(store, layout.draw_average_ref(draw.seed, h, m, k)) for k in range(1, draw.k + 1)))
        if todo:
            needed |= draw_inputs(store, dataclasses.replace(spec, methods=todo))
    return needed


PARTIAL_AGE_MINUTES = 60.0


def partial_writes(store, older_than_s: float) -> list[Doomed]:
    """Unfinished writes of dead writers: `.part` files of a local store and incomplete S3
    multipart uploads, untouched for `older_than_s` seconds."""
    now = time.time()
    out = []
    part_files = getattr(store, "part_files", None)
    if part_files is not None:
        base = store.root / store.prefix if store.prefix else store.root
        for path in part_files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # finished (renamed) meanwhile
            if now - st.st_mtime >= older_than_s:
                key = path.relative_to(base).as_posix()
                out.append(Doomed(key, "partial-write", [key], st.st_size))
    uploads = getattr(store, "incomplete_uploads", None)
    if uploads is not None:
        for key, upload_id, initiated, size in uploads():
            if now - initiated >= older_than_s:
                out.append(Doomed(key, "partial-write", [], size, uploads=[(key, upload_id)]))
    return out


def collect(exp: Experiment, partial_age_s: float = PARTIAL_AGE_MINUTES * 60) -> tuple[list[Doomed], list[str]]:
    """What gc would delete, and notes on what it keeps for a reason worth saying."""
    store = exp.store
    keys = store.list_keys()
    by_ref: dict[str, list[str]] = {}
    for key in keys:
        ref, _, _name = key.rpartition("/")
        by_ref.setdefault(ref, []).append(key)
    notes: list[str] = []
    doomed: list[Doomed] = []
    complete = {run for run in map(layout.completed_run, keys) if run}
    keep: dict[str, set[str]] = {}
    for run_key in sorted(complete):  # first: a malformed run-sum stops gc before it plans anything
        sum_manifest = layout.manifest_key(layout.run_sum_ref(run_key))
        if sum_manifest not in keys:
            continue
        info = read_manifest(store, layout.run_sum_ref(run_key))
        snaps = sorted(info["snapshots"], key=lambda s: s["step"])
        keep[run_key] = {snaps[-1]["ref"], max(snaps, key=lambda s: s["dev_score"])["ref"]}
    needed = pending_inputs(exp)
    if needed is None:
        notes.append("the draws cannot be made yet (too few finished runs): every snapshot is kept")
    unevaluated = 0
    for ref, ref_keys in sorted(by_ref.items()):
        parsed = layout.parse_snapshot_ref(ref)
        if parsed and parsed[0] in keep:
            trainer = [k for k in ref_keys if layout.plain_name(k.rpartition("/")[2]) == layout.TRAINER_STATE]
            if ref in keep[parsed[0]] or needed is None or ref in needed:
                if trainer:
                    doomed.append(Doomed(ref, "trainer-state", trainer, 0))
                continue
            if not _evaluated(store, ref):
                unevaluated += 1
                if trainer:
                    doomed.append(Doomed(ref, "trainer-state", trainer, 0))
                continue
            ordered = [k for k in ref_keys if layout.manifest_ref(k)] + [k for k in ref_keys if not layout.manifest_ref(k)]
            doomed.append(Doomed(ref, "snapshot", ordered, 0))
        elif layout.is_average_ref(ref) and layout.manifest_key(ref) in ref_keys and _evaluated(store, ref):
            ordered = [layout.manifest_key(ref)] + [k for k in ref_keys if k != layout.manifest_key(ref)]
            doomed.append(Doomed(ref, "average", ordered, 0))
    if unevaluated:
        notes.append(f"{unevaluated} snapshot(s) kept until evaluated (`orchestrator evaluate`)")
    if needed:
        notes.append(f"{len(needed)} model(s) kept as inputs of pending averages (`orchestrator average`)")
    for d in doomed:
        d.size = sum(store.size(k) for k in d.keys)
    return doomed + partial_writes(store, partial_age_s), notes


@click.command()
@experiment_options
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@click.option("--partial-age", type=click.FloatRange(0), default=PARTIAL_AGE_MINUTES, show_default=True,
              help="Minutes a partial write (.part file, incomplete S3 upload) must be untouched before it is deleted.")
def gc(exp: Experiment, parallelism: int, backend: str, dry_run: bool, yes: bool, partial_age: float = PARTIAL_AGE_MINUTES) -> None:
    """Delete stored models that no pending stage needs (shows them and their size first).

    Keeps run-sums, the last and src-dev snapshot of each run, every results file, heads and
    draws; deletes other evaluated snapshots that no pending average reads, trainer states of
    finished runs, evaluated averaged models, and partial writes of killed writers."""
    doomed, notes = collect(exp, partial_age * 60)
    for note in notes:
        click.echo(f"note: {note}")
    if not doomed:
        click.echo(f"gc: nothing to delete in {exp.uri}")
        return
    for d in doomed:
        click.echo(f"  {d.what:13s} {d.ref}  ({human_bytes(d.size)})")
    total = sum(d.size for d in doomed)
    counts = {}
    for d in doomed:
        counts[d.what] = counts.get(d.what, 0) + 1
    summary = ", ".join(f"{n} {what}(s)" for what, n in counts.items())
    click.echo(f"gc: {summary}: {human_bytes(total)} ({total} bytes) in {exp.uri}")
    if dry_run:
        click.echo("gc: dry run, nothing deleted")
        return
    if not yes:
        click.confirm("Delete them?", abort=True)
    for d in doomed:
        for key in d.keys:
            exp.store.delete(key)
        for key, upload_id in d.uploads:
            exp.store.abort_upload(key, upload_id)
    click.echo(f"gc: deleted {len(doomed)} item(s), {human_bytes(total)}")
