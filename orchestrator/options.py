"""Click options shared by every orchestrator command, defined once.

Every option can also be set from the environment: the group sets
`auto_envvar_prefix="ORCHESTRATOR"`, so `--bucket` reads `ORCHESTRATOR_BUCKET`.
"""
from __future__ import annotations

import click

DEFAULT_BUCKET = "file://.store"  # the embedded default: a local folder beside the checkout

bucket_option = click.option(
    "--bucket",
    default=DEFAULT_BUCKET,
    show_default=True,
    help="Object store holding experiments: file://DIR (or a plain path) or s3://BUCKET[/PREFIX].",
)
task_option = click.option(
    "--task",
    default="nli",
    show_default=True,
    help="Task id: nli, ner or tydiqa.",
)
experiment_option = click.option(
    "--experiment",
    default=None,
    help="Experiment name; its prefix is BUCKET/NAME. Default: TASK-MODEL (e.g. nli-tiny).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML file with the experiment settings (grid, epochs, snapshots, targets); flags override it.",
)


def default_experiment(task: str, base_model: str) -> str:
    """TASK-MODEL with the model's last path part, e.g. nli-xlm-roberta-large."""
    model = base_model.rstrip("/").split("/")[-1]
    return f"{task}-{model}"
