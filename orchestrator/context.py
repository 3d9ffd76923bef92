"""The experiment a command works on: its settings, its prefix URI and its store.

`experiment_options` adds the options every stage command shares, defined once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import click

from jobs.store import ObjectStore, join_uri, open_store

from orchestrator.config import ExperimentConfig, load_config
from orchestrator.options import bucket_option, config_option, default_experiment, experiment_option


@dataclass
class Experiment:
    config: ExperimentConfig
    name: str
    uri: str
    store: ObjectStore


def experiment_options(fn):
    """--bucket --experiment --config --task --base-model --parallelism --backend."""

    @bucket_option
    @experiment_option
    @config_option
    @click.option("--task", default=None, help="Task id (nli, ner, tydiqa); overrides the config file. [default: nli]")
    @click.option("--base-model", default=None, help="Hugging Face name or path, or 'tiny'. [default: xlm-roberta-large]")
    @click.option("--parallelism", default=2, show_default=True, type=click.IntRange(1), help="Jobs run at once.")
    @click.option("--backend", type=click.Choice(["local"]), default="local", show_default=True, help="Where jobs run.")
    @functools.wraps(fn)
    def wrapper(bucket, experiment, config_path, task, base_model, **kwargs):
        exp = open_experiment(bucket, experiment, config_path, {"task": task, "base_model": base_model})
        return fn(exp, **kwargs)

    return wrapper


def open_experiment(bucket: str, experiment: str | None, config_path: str | None, overrides: dict) -> Experiment:
    cfg = load_config(config_path, overrides)
    name = experiment or default_experiment(cfg.task, cfg.base_model)
    if "/" in name or not name.strip():
        raise click.UsageError(f"--experiment {name!r}: use a plain name without '/'")
    root = open_store(bucket)
    check = getattr(root, "check", None)
    if check:
        check()  # unreachable endpoint, bad credentials, missing bucket: fail now, in one line
    uri = join_uri(root.uri, name)
    return Experiment(cfg, name, uri, open_store(uri))
