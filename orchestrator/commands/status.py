"""The `status` command: one table of every run of the experiment, from the store, then a check
of every committed model: each file its manifest lists (ephemeral ones aside) must be there with
the size the manifest says, and with `--verify` the same sha256. Corrupt, partial or unreadable
models and malformed records are listed one per line, and the command then exits 1."""
from __future__ import annotations

import click

from jobs import layout
from jobs.errors import JobError
from jobs.snapshots import check_committed, parse_manifest
from jobs.store import decode_json

from orchestrator import plan
from orchestrator.context import Experiment, experiment_options
from orchestrator.running import cluster_backend


def _latest(store, manifests: list[str]) -> dict | None:
    for key in reversed(manifests):  # the newest readable one (an unreadable one is reported below)
        try:
            return parse_manifest(store.get_bytes(key), layout.manifest_ref(key))
        except JobError:
            continue
    return None


def run_rows(exp: Experiment) -> list[dict]:
    cfg, store = exp.config, exp.store
    specs = [plan.head_spec(cfg, exp.uri)] if cfg.head.enabled else []
    head = plan.committed_head(cfg, store, exp.uri) if cfg.head.enabled else None
    if head is not None or not cfg.head.enabled:
        specs += plan.grid_specs(cfg, exp.uri, head)
    rows = []
    for spec in specs:
        key = spec.run_key
        manifests = [k for k in store.list_keys(layout.snapshots_prefix(key)) if layout.manifest_ref(k)]
        latest = _latest(store, manifests)
        complete = store.exists(layout.run_complete_key(key))
        evaluated = sum(store.exists(layout.results_key(layout.manifest_ref(m))) for m in manifests)
        dev = latest.get("dev_score") if latest else None
        rows.append(
            {
                "stage": spec.stage,
                "run": key,
                "lr": f"{spec.learning_rate:g}",
                "bs": spec.batch_size,
                "seed": spec.seed,
                "state": "complete" if complete else ("running/partial" if manifests else "pending"),
                "snapshots": len(manifests),
                "evaluated": evaluated if spec.stage == "train" else "-",
                "dev": f"{dev:.4f}" if isinstance(dev, (int, float)) else "-",
                "latest ref": latest.get("ref", "-") if latest else "-",
            }
        )
    return rows


def check_store(store, verify: bool = False) -> tuple[list[str], list[str]]:
    """(problems, notes) of every committed model and every JSON record in the store.

    One listing gives every object's size; each manifest is read and checked (sha256, size,
    extra files), each file it keeps is size-checked against it, and with `verify` hashed."""
    sizes = store.list_sizes()
    problems: list[str] = []
    notes: list[str] = []
    manifests = [k for k in sizes if layout.manifest_ref(k) and k.startswith(layout.MODEL_PREFIXES)]
    for key in manifests:
        ref = layout.manifest_ref(key)
        try:
            manifest = parse_manifest(store.get_bytes(key), ref)
            found = check_committed(store, ref, manifest, verify, sizes)
        except JobError as e:
            problems.append(str(e))
            continue
        problems += [f"model {ref}: {p}" for p in found]
    records = [k for k in sizes if layout.is_record_key(k)]
    for key in records:
        try:
            value = decode_json(store.get_bytes(key), key)
            if not isinstance(value, dict):
                problems.append(f"{key}: expected a JSON object, found {type(value).__name__}")
        except JobError as e:
            problems.append(str(e))
    uncommitted = [k for k in sizes if layout.weights_ref(k) and layout.manifest_key(layout.weights_ref(k)) not in sizes]
    if uncommitted:
        notes.append(f"{len(uncommitted)} uncommitted weights file(s) (an interrupted job; its retry rewrites them), "
                     f"e.g. {uncommitted[0]}")
    return problems, notes


def progress_lines(store) -> list[str]:
    """The last progress line (jobs/progress.py) of every job that is running, or was killed
    while running: one display line each, with its age (a killed job's line only grows older)."""
    from jobs.progress import format_duration, running_jobs

    return [f"{j['job']}  {format_duration(j['age']) + ' ago' if j['age'] is not None else '-'}  "
            f"{j['line'].removeprefix('progress ')}" for j in running_jobs(store)]


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


@click.command()
@experiment_options
@click.option("--verify", is_flag=True, help="Also hash every committed file and compare its sha256 with its manifest (reads every byte).")
def status(exp: Experiment, parallelism: int, backend: str, verify: bool = False) -> None:
    """Show every run of the experiment: stage, state, snapshots, latest English dev score and ref;
    then check every committed model's files against its manifest (exit 1 if any is corrupt)."""
    rows = run_rows(exp)
    if backend == "k8s":  # a Job-state column: what the cluster says beside what the store holds
        jobs = cluster_backend(exp, parallelism).job_table()
        for row in rows:
            job = jobs.get(row["run"], {})
            row.update({"job state": job.get("job state", "-"), "retries": job.get("retries", "-")})
    click.echo(f"experiment {exp.name} at {exp.uri}")
    click.echo(format_rows(rows))
    averages = sorted({layout.manifest_ref(k) for k in exp.store.list_keys(layout.AVERAGES) if layout.manifest_ref(k)})
    results = [k for k in exp.store.list_keys(layout.RESULTS) if k.endswith(".parquet")]
    click.echo(f"\n{len(averages)} averaged models, {len(results)} results files")
    for i, text in enumerate(progress_lines(exp.store)):
        click.echo(("\nrunning jobs (last progress line):\n" if i == 0 else "") + f"  {text}")
    problems, notes = check_store(exp.store, verify)
    for note in notes:
        click.echo(f"note: {note}")
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        click.echo(f"status: {len(problems)} problem(s) in {exp.uri}: re-run the stage that writes them, "
                   f"after deleting a corrupt model's manifest", err=True)
        raise click.exceptions.Exit(1)
    click.echo("all committed models check out" + (" (sizes and sha256)" if verify else " (sizes; --verify also hashes)"))
