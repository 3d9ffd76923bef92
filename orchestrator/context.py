"""The experiment a command works on: its settings, its prefix URI and its store.

`experiment_options` adds the options every stage command shares, defined once.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import click

from jobs.store import ObjectStore, join_uri, open_store

from orchestrator.backends.k8s import ClusterOptions
from orchestrator.config import ExperimentConfig, load_config
from orchestrator.options import bucket_option, config_option, default_experiment, experiment_option


@dataclass
class Experiment:
    config: ExperimentConfig
    name: str
    uri: str
    store: ObjectStore
    cluster: ClusterOptions = field(default_factory=ClusterOptions)  # --backend k8s: the cluster options (see cluster_options)
    retries: int | None = None  # --retries: local backend re-runs of a job that exits 75 (None: the k8s backoffLimit default)


CLUSTER_OPTIONS = tuple(f.name for f in dataclasses.fields(ClusterOptions))  # the keyword arguments cluster_options adds


def cluster_options(fn):
    """--cluster-config --namespace --image-prefix --image-tag --queue --retry-failed --kube-context (--backend k8s)."""
    for option in reversed((
        click.option("--cluster-config", envvar="ORCHESTRATOR_CLUSTER_CONFIG", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML with a `cluster:` section (k8s/base/cluster.yaml) for --backend k8s."),
        click.option("--namespace", envvar="ORCHESTRATOR_NAMESPACE", default=None, help="Kubernetes namespace of the Jobs. [default: xlt]"),
        click.option("--image-prefix", envvar="ORCHESTRATOR_IMAGE_PREFIX", default=None, help="Registry/org of the images PREFIX/xlt-{train,evaluate,average}."),
        click.option("--image-tag", envvar="ORCHESTRATOR_IMAGE_TAG", default=None, help="Tag of the images. [default: the package version]"),
        click.option("--queue", envvar="ORCHESTRATOR_QUEUE", default=None, help="Kueue LocalQueue: label the Jobs and create them suspended."),
        click.option("--retry-failed", is_flag=True, default=False, help="Delete and recreate Jobs that failed earlier."),
        click.option("--kube-context", envvar="ORCHESTRATOR_KUBE_CONTEXT", default=None, help="kubeconfig context. [default: the current one]"),
    )):
        fn = option(fn)
    return fn


def experiment_options(fn):
    """--bucket --experiment --config --task --base-model --parallelism --backend, and the cluster options."""

    @bucket_option
    @experiment_option
    @config_option
    @click.option("--task", default=None, help="Task id (nli, ner, tydiqa); overrides the config file. [default: nli]")
    @click.option("--base-model", default=None, help="Hugging Face name or path, or a preset: 'tiny', 'multilingual-e5-small' (docs/models.md). [default: xlm-roberta-large]")
    @click.option("--parallelism", default=2, show_default=True, type=click.IntRange(1), help="Jobs run at once.")
    @click.option("--backend", type=click.Choice(["local", "k8s"]), default="local", show_default=True, help="Where jobs run: subprocesses or Kubernetes Jobs.")
    @cluster_options
    @click.option("--target", "targets", multiple=True, metavar="DATASET[:LANG,...]",
                  help="Evaluate on these target sets only (repeatable), e.g. --target xnli:de,fr --target americasnli.")
    @click.option("--data-root", default=None, help="Folder that relative local data paths of the config are joined to.")
    @click.option("--retries", type=click.IntRange(0), default=None,
                  help="--backend local: run a job again up to N times after a temporary failure (exit 75) or a kill. [default: 3, the Jobs' backoffLimit]")
    @functools.wraps(fn)
    def wrapper(bucket, experiment, config_path, task, base_model, targets, data_root, retries, **kwargs):
        cluster = ClusterOptions(**{name: kwargs.pop(name) for name in CLUSTER_OPTIONS})
        exp = open_experiment(bucket, experiment, config_path, {"task": task, "base_model": base_model}, targets, data_root)
        exp.cluster = cluster
        exp.retries = retries
        return fn(exp, **kwargs)

    return wrapper


def open_experiment(bucket: str, experiment: str | None, config_path: str | None, overrides: dict,
                    targets: tuple[str, ...] = (), data_root: str | None = None) -> Experiment:
    cfg = load_config(config_path, overrides, targets, data_root)
    name = experiment or default_experiment(cfg.task, cfg.base_model)
    if "/" in name or not name.strip():
        raise click.UsageError(f"--experiment {name!r}: use a plain name without '/'")
    root = open_store(bucket)
    check = getattr(root, "check", None)
    if check:
        check()  # unreachable endpoint, bad credentials, missing bucket: fail now, in one line
    uri = join_uri(root.uri, name)
    return Experiment(cfg, name, uri, open_store(uri))
