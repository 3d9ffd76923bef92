"""The `soup` command (a task to one deployable averaged model) and the `export` command.

    orchestrator soup --config configs/tiny-nli.yaml --runs 3 --out soup-nli
    orchestrator export --bucket file://.store/nli-tiny --ref averages/s0-1a2b3c4d/r-ca/k03 --out DIR

`soup` draws K (learning rate, batch size) configurations from the grid with a recorded seed
(PROTOCOL's shuffle), trains them (head first), averages all their snapshots (R-CA, every
k = 1..K), evaluates, and exports the k = K model. `--until-plateau EPS` trains in waves of
--parallelism runs in draw order and stops launching when the running average's English dev
score improved by less than EPS with each of the last two runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Sequence

import click

import jobs
from jobs import layout
from jobs.draws import Draw
from jobs.snapshots import is_committed
from jobs.spec import AverageSpec, to_dict
from jobs.store import open_store

from orchestrator import plan, running
from orchestrator.backends.base import Backend
from orchestrator.context import Experiment, experiment_options
from orchestrator.export import ExportError, check_output, english_dev, export_model, plateau_table
from orchestrator.formatting import pct
from orchestrator.options import bucket_option
from orchestrator.running import run_stage

METHOD = "r-ca"  # the paper's accumulative average: every snapshot of every run


def soup_key(name: str) -> str:
    """Where a soup's recipe (draw, runs, plateau scores, result) is recorded in the experiment."""
    return f"soups/{name}.json"


def soup_name(draw: Draw) -> str:
    return f"s{draw.seed}-k{draw.k}-{layout.draw_hash(draw.run_keys)}"


def prefix_refs(seed: int, run_keys: Sequence[str]) -> list[str]:
    """The R-CA models after 1..n runs of a draw-mode average over `run_keys` (see jobs.average)."""
    h = layout.draw_hash(run_keys)
    return [layout.draw_average_ref(seed, h, METHOD, k) for k in range(1, len(run_keys) + 1)]


def average_request(exp: Experiment, seed: int, run_keys: Sequence[str]) -> plan.JobRequest:
    spec = AverageSpec(experiment_uri=exp.uri, task=exp.config.task, methods=(METHOD,), run_keys=tuple(run_keys), draw_seed=seed)
    name = f"average-{exp.config.task}-soup-s{seed}-{layout.draw_hash(run_keys)}"
    return plan.JobRequest("average", "average", name, spec, {"stage": "average", "task": exp.config.task, "draw": seed})


def plateaued(scores: Sequence[float | None], eps: float) -> bool:
    """True once each of the last two additions improved the running average by less than eps."""
    if len(scores) < 3 or any(s is None for s in scores[-3:]):
        return False
    a, b, c = scores[-3:]
    return (b - a) < eps and (c - b) < eps


def grow(
    run_keys: Sequence[str],
    wave_size: int,
    eps: float | None,
    train_wave: Callable[[list[str]], None],
    score_prefix: Callable[[list[str]], list[float | None]],
    echo: Callable[[str], None] = lambda line: None,
) -> int:
    """Train runs in waves in draw order; after each wave score the running averages of the
    trained prefix and stop launching once they plateau. Returns how many runs were trained
    (a started wave always finishes and joins the average)."""
    n = 0
    while n < len(run_keys):
        wave = list(run_keys[n : n + wave_size])
        train_wave(wave)
        n += len(wave)
        if eps is None or n == len(run_keys):
            continue
        scores = score_prefix(list(run_keys[:n]))
        echo("running R-CA, English dev: " + ", ".join(f"k={k} {pct(s)}" for k, s in enumerate(scores, 1)))
        if plateaued(scores, eps):
            echo(f"plateau: the last two runs each improved English dev by less than {eps}; {len(run_keys) - n} run(s) not launched")
            break
    return n


@dataclass
class SoupPlan:
    name: str
    draw: Draw
    head: object
    trained: list[str]


class PrefixScorer:
    """English dev of the running R-CA after 1..n runs: average the prefix, evaluate the new k's.

    The k-th average of any prefix of the draw is the same model, so a k scored in an earlier
    wave is not evaluated again."""

    def __init__(self, exp: Experiment, backend: Backend, seed: int):
        self.exp, self.backend, self.seed = exp, backend, seed
        self.known: dict[int, float | None] = {}

    def __call__(self, prefix: list[str], all_k: bool = False) -> list[float | None]:
        refs = prefix_refs(self.seed, prefix)
        ensure_averaged(self.exp, self.backend, self.seed, prefix)
        todo = refs if all_k else [ref for k, ref in enumerate(refs, 1) if k not in self.known]
        run_stage(self.backend, plan.evaluate_requests(self.exp.config, self.exp.store, self.exp.uri, todo), "evaluate soup")
        dev = to_dict(self.exp.config.data.dev)
        for k, ref in enumerate(refs, 1):
            if all_k or k not in self.known:
                self.known[k] = english_dev(self.exp.store, ref, dev)
        return [self.known[k] for k in range(1, len(refs) + 1)]


def ensure_averaged(exp: Experiment, backend: Backend, seed: int, run_keys: Sequence[str]) -> None:
    if not all(is_committed(exp.store, ref) for ref in prefix_refs(seed, run_keys)):
        run_stage(backend, [average_request(exp, seed, run_keys)], "average soup")


def ensure_head(exp: Experiment, backend: Backend):
    cfg = exp.config
    if not cfg.head.enabled:
        return None
    head = plan.committed_head(cfg, exp.store, exp.uri)
    if head is None:
        run_stage(backend, [plan.head_request(cfg, exp.uri)], "head")
        head = plan.committed_head(cfg, exp.store, exp.uri)
        if head is None:
            raise click.ClickException("the head run finished without committing a head; see its log")
    return head


def check_runs(exp: Experiment, runs: int) -> None:
    grid = exp.config.grid
    n = len(set(grid.learning_rates)) * len(set(grid.batch_sizes))
    if runs > n:
        raise click.ClickException(
            f"--runs {runs}: the grid has only {n} distinct (learning rate, batch size) configurations "
            f"({len(grid.learning_rates)} x {len(grid.batch_sizes)}); lower --runs or widen grid.learning_rates / grid.batch_sizes"
        )


def record(exp: Experiment, name: str, data: dict) -> None:
    exp.store.put_bytes(soup_key(name), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def train_soup(
    exp: Experiment,
    backend: Backend,
    runs: int,
    seed: int,
    until_plateau: float | None,
    parallelism: int,
    scorer: Callable[[list[str]], list[float | None]] | None = None,
) -> SoupPlan:
    """Head, the draw (recorded), then the drawn runs in draw order (waves when until_plateau)."""
    check_runs(exp, runs)
    head = ensure_head(exp, backend)
    draw = plan.draw_from_grid(exp.config, exp.uri, head, seed, runs)
    name = soup_name(draw)
    specs = {s.run_key: s for s in plan.grid_specs(exp.config, exp.uri, head)}
    base = {
        "name": name,
        "task": exp.config.task,
        "base_model": exp.config.base_model,
        "experiment": exp.name,
        "method": METHOD,
        "seed": seed,
        "runs_requested": runs,
        "until_plateau": until_plateau,
        "draw": draw.to_dict(),
        "runs": [{"run_key": k, "learning_rate": specs[k].learning_rate, "batch_size": specs[k].batch_size, "seed": specs[k].seed} for k in draw.run_keys],
        "version": jobs.__version__,
    }
    record(exp, name, base)
    click.echo(f"soup {name}: {runs} run(s) drawn with seed {seed} (recorded at {soup_key(name)})", err=True)

    def train_wave(keys: list[str]) -> None:
        todo = {r.spec.run_key: r for r in plan.train_requests(exp.config, exp.store, exp.uri, head)}
        run_stage(backend, [todo[k] for k in keys if k in todo], f"train {len(keys)} run(s)")

    scorer = scorer or PrefixScorer(exp, backend, seed)
    wave = parallelism if until_plateau is not None else runs
    n = grow(draw.run_keys, wave, until_plateau, train_wave, scorer, lambda line: click.echo(line, err=True))
    return SoupPlan(name, draw, head, list(draw.run_keys[:n]))


def finish_soup(exp: Experiment, backend: Backend, soup: SoupPlan, out: str, force: bool) -> dict:
    """Average and evaluate every k of the trained prefix, record the soup, export k = n."""
    scorer = PrefixScorer(exp, backend, soup.draw.seed)
    scores = scorer(soup.trained, all_k=True)
    refs = prefix_refs(soup.draw.seed, soup.trained)
    rows = [{"k": k, "run_key": key, "ref": ref, "english_dev": s} for k, (key, ref, s) in enumerate(zip(soup.trained, refs, scores), 1)]
    click.echo("\nrunning R-CA (English dev x100) as runs join in draw order:")
    click.echo(f"{'k':>3}  {'run added':16}  {'dev':>5}  change")
    for k, key, score, change in plateau_table(rows):
        click.echo(f"{k:>3}  {key:16}  {score:>5}  {change}")
    data = json.loads(exp.store.get_bytes(soup_key(soup.name)))
    data.update(runs_trained=len(soup.trained), ref=refs[-1], running_average=rows)
    record(exp, soup.name, data)
    card = {
        "soup record": f"`{soup_key(soup.name)}`",
        "runs requested (K)": soup.draw.k,
        "runs trained": len(soup.trained),
        "stop rule": "all K runs" if data["until_plateau"] is None else f"--until-plateau {data['until_plateau']}",
    }
    r = export_model(exp.store, refs[-1], out, force, soup=card)
    click.echo(f"\nsoup {refs[-1]} (English dev {pct(r['english_dev'])}) exported to {out}")
    click.echo(f"export again with: orchestrator export --bucket {exp.uri} --ref {refs[-1]} --out DIR")
    return r


@click.command()
@experiment_options
@click.option("--runs", "runs", type=click.IntRange(1), required=True, help="K: runs to draw from the grid and average.")
@click.option("--seed", type=int, default=0, show_default=True, help="Draw seed: which K configurations, in which order.")
@click.option("--until-plateau", "until_plateau", type=click.FloatRange(0), default=None, metavar="EPS",
              help="Train in waves of --parallelism; stop launching once each of the last two runs improved the running average's English dev by less than EPS (0-1 scale).")
@click.option("--out", default=None, help="Output directory, or a file:// or s3:// prefix. [default: soup-EXPERIMENT-sSEED-kK]")
@click.option("--force", is_flag=True, help="Overwrite the exported files in a non-empty --out.")
def soup(exp: Experiment, parallelism: int, backend: str, runs: int, seed: int, until_plateau, out, force: bool) -> None:
    """From a task to one deployable averaged model: draw K runs, train, average (R-CA), evaluate, export."""
    out = out or f"soup-{exp.name}-s{seed}-k{runs}"
    check_runs(exp, runs)
    _check_out(out, force)
    b = make_backend(exp, parallelism, backend)
    plan_ = train_soup(exp, b, runs, seed, until_plateau, parallelism)
    finish_soup(exp, b, plan_, out, force)


def make_backend(exp: Experiment, parallelism: int, backend: str) -> Backend:
    """The stages' backend (local processes, or Kubernetes Jobs); tests replace this seam."""
    return running.make_backend(exp, parallelism, backend)


def _check_out(out: str, force: bool) -> None:
    try:
        check_output(out, force)
    except ExportError as e:
        raise click.ClickException(str(e)) from None


_ROOTS = ("runs", "averages", "heads")


@click.command()
@bucket_option
@click.option("--experiment", default=None, help="Experiment name under --bucket; omit when --bucket is the experiment's URI or --ref starts with the experiment.")
@click.option("--ref", required=True, help="Model ref, e.g. averages/s0-1a2b3c4d/r-ca/k10 or runs/KEY/ca.")
@click.option("--out", required=True, help="Output directory, or a file:// or s3:// prefix.")
@click.option("--force", is_flag=True, help="Overwrite the exported files in a non-empty --out.")
def export(bucket: str, experiment: str | None, ref: str, out: str, force: bool) -> None:
    """Export a stored (averaged) model as a Hugging Face model directory with a model card."""
    ref = ref.strip("/")
    store = open_store(bucket)
    if experiment:
        store = store.child(experiment)
    elif ref.split("/", 1)[0] not in _ROOTS and "/" in ref:
        name, ref = ref.split("/", 1)  # EXPERIMENT/REF
        store = store.child(name)
    _check_out(out, force)
    try:
        r = export_model(store, ref, out, force)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"exported {ref} ({r['method'] or r['kind']}, {len(r['snapshots'])} snapshots, English dev {pct(r['english_dev'])}) to {out}")
