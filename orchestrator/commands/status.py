"""The `status` command: one table of every run of the experiment, from the store."""
from __future__ import annotations

import json

import click

from jobs import layout

from orchestrator import plan
from orchestrator.context import Experiment, experiment_options


def run_rows(exp: Experiment) -> list[dict]:
    cfg, store = exp.config, exp.store
    specs = [plan.head_spec(cfg, exp.uri)] if cfg.head.enabled else []
    head = plan.committed_head(cfg, store, exp.uri) if cfg.head.enabled else None
    if head is not None or not cfg.head.enabled:
        specs += plan.grid_specs(cfg, exp.uri, head)
    rows = []
    for spec in specs:
        key = spec.run_key
        manifests = [k for k in store.list_keys(f"runs/{key}/snapshots/") if k.endswith(layout.MANIFEST)]
        latest = json.loads(store.get_bytes(manifests[-1])) if manifests else None
        complete = store.exists(layout.run_complete_key(key))
        evaluated = sum(store.exists(layout.results_key(m.rsplit("/", 1)[0])) for m in manifests)
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
                "dev": f"{latest['dev_score']:.4f}" if latest else "-",
                "latest ref": latest["ref"] if latest else "-",
            }
        )
    return rows


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
def status(exp: Experiment, parallelism: int, backend: str) -> None:
    """Show every run of the experiment: stage, state, snapshots, latest English dev score and ref."""
    rows = run_rows(exp)
    if backend == "k8s":  # a Job-state column: what the cluster says beside what the store holds
        from orchestrator.backends.k8s import backend_for

        jobs = backend_for(exp, parallelism, show_progress=False).job_table()
        for row in rows:
            job = jobs.get(row["run"], {})
            row.update({"job state": job.get("job state", "-"), "retries": job.get("retries", "-")})
    click.echo(f"experiment {exp.name} at {exp.uri}")
    click.echo(format_rows(rows))
    averages = sorted({k.rsplit("/", 1)[0] for k in exp.store.list_keys("averages/") if k.endswith(layout.MANIFEST)})
    results = [k for k in exp.store.list_keys("results/") if k.endswith(".parquet")]
    click.echo(f"\n{len(averages)} averaged models, {len(results)} results files")
