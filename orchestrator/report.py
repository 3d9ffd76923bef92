"""The summary printed at the end of `pipeline`: the paper's Table 1 for this experiment."""
from __future__ import annotations

import click

from orchestrator import plan, stage_plans
from orchestrator.context import Experiment


def print_summary_table(exp: Experiment) -> None:
    from orchestrator.analysis.collect import collect_results
    from orchestrator.analysis.render import render
    from orchestrator.analysis.tables import cumulative_table
    from orchestrator.analysis.variants import build_inputs

    cfg = exp.config
    head = stage_plans.committed_head(exp)
    runs = plan.finished_runs(cfg, exp.store, exp.uri, head)
    draws = plan.make_draws(cfg, runs)  # the draws of this config, not stale ones from the store
    results = collect_results(exp.store)
    inputs = build_inputs(results, draws, task=cfg.task)
    methods = ("s-last", "s-dev", "s-ca", "s-tdev", *cfg.draws.methods)
    table = cumulative_table(inputs, cfg.task, methods)
    click.echo(f"\n{exp.name}: mean target score x100 over {len(draws)} draws (English excluded)")
    click.echo(render(table, "text"))
