"""Render planned jobs (orchestrator.plan.JobRequest) as Kubernetes batch/v1 Job manifests.

Pure functions over plain dicts: nothing here talks to a cluster or imports the kubernetes
client (only orchestrator.backends.k8s does). `orchestrator render STAGE` prints what this makes;
the cluster settings come from a YAML file (see k8s/base/cluster.yaml and docs/kubernetes.md).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from jobs.averaging.methods import DRAWS, RUN_AVERAGES
from jobs.spec import SpecError, canonical_json, from_mapping, short_hash, to_dict

from orchestrator.plan import JobRequest

STAGES = ("head", "train", "evaluate", "average", "average-gpu")
# average-gpu: average jobs that run forward passes (fused evaluation, greedy soup)
IMAGE_FOR_STAGE = {"head": "xlt-train", "train": "xlt-train", "evaluate": "xlt-evaluate", "average": "xlt-average", "average-gpu": "xlt-evaluate"}
CONTAINER = "job"  # the container name the podFailurePolicy's exit-code rule refers to
EXIT_PERMANENT = 3  # jobs.errors.EXIT_PERMANENT: the job fails at once, no retry helps
LABEL_PREFIX = "xlt.io"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
APP = "xlt-averaging"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IMAGE_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# Parameters of the models the planner knows, for the dry-run's storage estimate (fp32 weights).
MODEL_PARAMETERS = {
    "tiny": 600_000,
    "multilingual-e5-small": 117_700_000,
    "multilingual-e5-small-random": 117_700_000,
    "xlm-roberta-base": 278_000_000,
    "xlm-roberta-large": 560_000_000,
    "facebook/xlm-v-base": 778_000_000,
    "microsoft/mdeberta-v3-base": 279_000_000,
}


@dataclass(frozen=True)
class StageResources:
    """What one pod of a stage asks for; requests equal limits (a Guaranteed pod when gpu > 0)."""

    cpu: str = "4"
    memory: str = "16Gi"
    gpu: int = 0  # nvidia.com/gpu
    ephemeral_storage: str = "20Gi"  # /scratch: downloaded snapshots, the model being written
    deadline_seconds: Optional[int] = None  # activeDeadlineSeconds when the spec sets none
    hours_per_job: float = 0.0  # for the --dry-run cost estimate
    hours_per_epoch: float = 0.0  # train/head: added per epoch of the spec


def _default_resources() -> dict[str, StageResources]:
    return {
        # XLM-R large, batch up to 64 x 128 tokens: one 40-80 GB GPU; ~1 h/epoch of MNLI on an A100.
        "head": StageResources(cpu="8", memory="32Gi", gpu=1, deadline_seconds=48 * 3600, hours_per_epoch=1.0),
        "train": StageResources(cpu="8", memory="32Gi", gpu=1, deadline_seconds=48 * 3600, hours_per_epoch=1.0),
        # up to 16 models x every target set per job
        "evaluate": StageResources(cpu="8", memory="32Gi", gpu=1, deadline_seconds=12 * 3600, hours_per_job=1.0),
        # streaming fp32 sums on the CPU: memory for one model plus one tensor. /scratch holds a
        # draw's inputs and outputs: for XLM-R large (2.24 GB) and K = 10, about 35 inputs (run-sums,
        # last, src-dev, soup members) + 40 averages (4 methods x k) = ~170 GB in fp32
        "average": StageResources(cpu="4", memory="16Gi", gpu=0, ephemeral_storage="200Gi",
                                  deadline_seconds=12 * 3600, hours_per_job=0.5),
        # the same plus forward passes: every average of a draw scored on every target set
        "average-gpu": StageResources(cpu="8", memory="32Gi", gpu=1, ephemeral_storage="200Gi",
                                      deadline_seconds=24 * 3600, hours_per_job=2.0),
    }


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how the Jobs run. Loaded from --cluster-config (the `cluster:` section), flags override."""

    namespace: str = "xlt"
    image_prefix: Optional[str] = None  # e.g. ghcr.io/acme: images PREFIX/xlt-train:TAG etc.
    image_tag: str = "0.1.0"
    image_pull_policy: str = "Always"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str = "xlt-job"  # holds no permissions; its token is not mounted
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    affinity: dict = field(default_factory=dict)
    priority_class: Optional[str] = None
    queue: Optional[str] = None  # Kueue LocalQueue: label the Jobs and create them suspended
    shm_size: str = "8Gi"  # memory-backed /dev/shm for data-loader workers
    hf_cache_pvc: Optional[str] = "xlt-hf-cache"  # mounted read-only at hf_home, HF_HUB_OFFLINE=1
    hf_home: str = "/hf-cache"
    s3_secret: Optional[str] = "xlt-s3"  # envFrom: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    defaults_config_map: Optional[str] = "xlt-defaults"  # envFrom (optional): AWS_ENDPOINT_URL, ...
    env: dict = field(default_factory=dict)  # extra environment variables for every job
    backoff_limit: int = 3  # retries after temporary failures (exit 75, OOM, node loss)
    ttl_seconds_after_finished: int = 7 * 24 * 3600  # results are in the store; Jobs go after a week
    user_id: int = 10001  # the images' non-root user (images/*.Dockerfile)
    resources: dict = field(default_factory=_default_resources)

    def validate(self, where: str = "cluster") -> None:
        if not _DNS_LABEL.match(self.namespace or ""):
            raise SpecError(f"{where}.namespace: {self.namespace!r} is not a valid namespace name")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SpecError(f"{where}.image_pull_policy: Always, IfNotPresent or Never, got {self.image_pull_policy!r}")
        if self.queue is not None and not _LABEL_VALUE.match(self.queue):
            raise SpecError(f"{where}.queue: {self.queue!r} is not a valid queue name")
        unknown = sorted(set(self.resources) - set(STAGES))
        if unknown:
            raise SpecError(f"{where}.resources: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")

    def stage(self, stage: str) -> StageResources:
        return self.resources.get(stage) or _default_resources()[stage]

    def image(self, stage: str) -> str:
        if not self.image_prefix:
            raise SpecError(
                "no container image: pass --image-prefix REGISTRY/ORG (or set ORCHESTRATOR_IMAGE_PREFIX, "
                "or cluster.image_prefix in --cluster-config); images are PREFIX/xlt-train:TAG etc."
            )
        prefix = self.image_prefix.rstrip("/")
        if not _IMAGE_PREFIX.match(prefix):
            raise SpecError(f"--image-prefix {self.image_prefix!r}: expected REGISTRY/ORG in lower case, e.g. ghcr.io/acme")
        if not _TAG.match(self.image_tag or ""):
            raise SpecError(f"--image-tag {self.image_tag!r}: not a valid image tag")
        return f"{prefix}/{IMAGE_FOR_STAGE[stage]}:{self.image_tag}"


def load_cluster_settings(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> ClusterSettings:
    """Defaults, then the file's `cluster:` section (or the whole file), then non-None overrides."""
    data: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SpecError(f"{path}: cannot read cluster settings: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise SpecError(f"{path}: expected a mapping (a `cluster:` section)")
        data = dict(loaded.get("cluster", loaded))
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    resources = _default_resources()
    for stage, res in (data.pop("resources", None) or {}).items():
        if stage not in STAGES:
            raise SpecError(f"{path or 'cluster'}: resources.{stage}: unknown stage; known: {', '.join(STAGES)}")
        merged = {**to_dict(resources[stage]), **(res or {})}
        resources[stage] = from_mapping(StageResources, merged, f"cluster.resources.{stage}")
    try:
        settings = from_mapping(ClusterSettings, data, "cluster")
    except SpecError as e:
        raise SpecError(f"{path or 'cluster settings'}: {e}") from None
    return dataclasses.replace(settings, resources=resources)


# --- names and labels -------------------------------------------------------------------------


def dns_label(text: str, max_len: int = 63) -> str:
    """Lower-case, [-a-z0-9] only, no leading/trailing '-', at most max_len characters."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    out = re.sub(r"-{2,}", "-", out).strip("-")[:max_len].rstrip("-")
    return out or "x"


def label_value(value: Any) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends); floats in short form (2e-05)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text)


def work_identity(request: JobRequest) -> str:
    """What makes two Jobs the same work: the experiment plus the run key (train) or the spec
    without execution settings. A Job of that name is reused, never created twice."""
    spec = to_dict(request.spec)
    for volatile in ("deadline_seconds", "num_threads", "micro_batch_size", "eval_batch_size"):
        spec.pop(volatile, None)
    work = getattr(request.spec, "run_key", None) or spec
    return short_hash({"kind": request.kind, "stage": request.stage, "experiment": to_dict(request.spec)["experiment_uri"], "work": work}, 6)


def job_name(request: JobRequest) -> str:
    """The planner's readable name (stage-task-runhash) plus 6 hex of the work identity: DNS-1123, <= 63."""
    suffix = work_identity(request)
    return f"{dns_label(request.name, 63 - len(suffix) - 1)}-{suffix}"


def experiment_label(experiment: str) -> str:
    return label_value(experiment)


def job_labels(request: JobRequest, experiment: str, settings: ClusterSettings) -> dict[str, str]:
    """Recommended app.kubernetes.io/* labels plus xlt.io/* for selecting and listing Jobs."""
    labels = {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/instance": experiment_label(experiment),
        "app.kubernetes.io/component": request.stage,
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": "xlt-orchestrator",
        "app.kubernetes.io/version": label_value(settings.image_tag),
        f"{LABEL_PREFIX}/experiment": experiment_label(experiment),
        f"{LABEL_PREFIX}/stage": request.stage,
        f"{LABEL_PREFIX}/kind": request.kind,
        f"{LABEL_PREFIX}/task": label_value(getattr(request.spec, "task", "")),
    }
    spec = request.spec
    for key, attr in (("lr", "learning_rate"), ("bs", "batch_size"), ("seed", "seed")):
        if request.kind == "train" and getattr(spec, attr, None) is not None:
            labels[f"{LABEL_PREFIX}/{key}"] = label_value(getattr(spec, attr))
    if getattr(spec, "run_key", None):
        labels[f"{LABEL_PREFIX}/run"] = spec.run_key
    if request.labels.get("draw") is not None:
        labels[f"{LABEL_PREFIX}/draw"] = label_value(request.labels["draw"])
    if settings.queue:
        labels[QUEUE_LABEL] = settings.queue
    return {k: v for k, v in labels.items() if v != ""}


# --- the Job ----------------------------------------------------------------------------------


def _resources(res: StageResources) -> dict:
    amounts = {"cpu": res.cpu, "memory": res.memory, "ephemeral-storage": res.ephemeral_storage}
    if res.gpu:
        amounts["nvidia.com/gpu"] = str(res.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _threads(cpu: str) -> int:
    try:
        return max(1, int(float(cpu[:-1]) / 1000) if cpu.endswith("m") else int(float(cpu)))
    except ValueError:
        return 1


def render_job(request: JobRequest, experiment: str, settings: ClusterSettings) -> dict:
    """One batch/v1 Job running `python -m jobs KIND` with the spec in JOB_SPEC."""
    if request.stage not in STAGES:
        raise SpecError(f"unknown stage {request.stage!r}; known: {', '.join(STAGES)}")
    res = settings.stage(request.stage)
    spec = request.spec
    if getattr(spec, "deadline_seconds", None) is None and res.deadline_seconds:
        spec = dataclasses.replace(spec, deadline_seconds=res.deadline_seconds)  # not in the run key
    name = job_name(request)
    labels = job_labels(request, experiment, settings)
    env = [
        {"name": "JOB_SPEC", "value": canonical_json(to_dict(spec))},
        {"name": "JOB_NAME", "value": name},  # the log is uploaded to logs/<JOB_NAME>.log
        {"name": "TMPDIR", "value": "/scratch"},  # the root file system is read-only
        {"name": "HOME", "value": "/scratch"},
        {"name": "XLT_PROGRESS", "value": "0"},
        {"name": "XLT_NUM_THREADS", "value": str(_threads(res.cpu))},
        {"name": "OMP_NUM_THREADS", "value": str(_threads(res.cpu))},
        {"name": "HF_DATASETS_OFFLINE", "value": "1"},
    ]
    volumes = [
        {"name": "scratch", "emptyDir": {"sizeLimit": res.ephemeral_storage}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
    ]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "shm", "mountPath": "/dev/shm"}]
    if settings.hf_cache_pvc:
        env += [{"name": "HF_HOME", "value": settings.hf_home}, {"name": "HF_HUB_OFFLINE", "value": "1"}]
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": settings.hf_cache_pvc, "readOnly": True}})
        mounts.append({"name": "hf-cache", "mountPath": settings.hf_home, "readOnly": True})
    else:
        env += [{"name": "HF_HOME", "value": "/scratch/hf"}]
    env += [{"name": str(k), "value": str(v)} for k, v in sorted(settings.env.items())]
    env_from = []
    if settings.defaults_config_map:
        env_from.append({"configMapRef": {"name": settings.defaults_config_map, "optional": True}})
    if settings.s3_secret:
        env_from.append({"secretRef": {"name": settings.s3_secret}})
    container = {
        "name": CONTAINER,
        "image": settings.image(request.stage),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "jobs"],
        "args": [request.kind],
        "env": env,
        "resources": _resources(res),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.user_id,
            "runAsGroup": settings.user_id,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.user_id,
            "runAsGroup": settings.user_id,
            "fsGroup": settings.user_id,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.affinity:
        pod_spec["affinity"] = dict(settings.affinity)
    if settings.priority_class:
        pod_spec["priorityClassName"] = settings.priority_class
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    job_spec: dict = {
        "backoffLimit": settings.backoff_limit,
        "activeDeadlineSeconds": int(spec.deadline_seconds) if getattr(spec, "deadline_seconds", None) else None,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                # preemption, node drain, eviction: not the job's fault, does not count as a retry
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                # exit 3: bad spec or input; the same pod would fail again
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]}},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if job_spec["activeDeadlineSeconds"] is None:
        del job_spec["activeDeadlineSeconds"]
    if settings.queue:
        job_spec["suspend"] = True  # Kueue unsuspends the Job when it admits it
    annotations = {f"{LABEL_PREFIX}/planner-name": request.name, f"{LABEL_PREFIX}/experiment-uri": spec.experiment_uri}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }


def render_jobs(requests: list[JobRequest], experiment: str, settings: ClusterSettings) -> list[dict]:
    return [render_job(r, experiment, settings) for r in requests]


def to_yaml(objs: list[dict]) -> str:
    """A multi-document YAML stream for `kubectl apply -f -`."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: ~10x faster for a full sweep
    return yaml.dump_all(objs, Dumper=dumper, sort_keys=False, default_flow_style=False, width=1_000_000)


# --- the cost of a plan -----------------------------------------------------------------------


@dataclass
class PlanCost:
    jobs: int = 0
    gpus: int = 0
    gpu_hours: float = 0.0
    snapshot_bytes: Optional[int] = 0  # None: the model's size is unknown

    def describe(self) -> str:
        size = "unknown (model size not known)" if self.snapshot_bytes is None else human_bytes(self.snapshot_bytes)
        return f"{self.jobs} Job(s), {self.gpus} GPU(s) requested, ~{self.gpu_hours:,.1f} GPU-hours, snapshots ~{size}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n} B"


def model_bytes(base_model: str) -> Optional[int]:
    params = MODEL_PARAMETERS.get(base_model) or MODEL_PARAMETERS.get(base_model.rstrip("/").split("/")[-1])
    return None if params is None else params * 4  # fp32 safetensors


def plan_cost(requests: list[JobRequest], settings: ClusterSettings, base_model: str) -> PlanCost:
    """Jobs, GPU-hours (stage hours x GPUs) and the bytes the new snapshots / averages will occupy."""
    cost = PlanCost()
    size = model_bytes(base_model)
    for r in requests:
        res = settings.stage(r.stage)
        spec = r.spec
        epochs = getattr(spec, "epochs", 0) if r.kind == "train" else 0
        cost.jobs += 1
        cost.gpus += res.gpu
        cost.gpu_hours += res.gpu * (res.hours_per_job + res.hours_per_epoch * epochs)
        if r.kind not in ("train", "average"):
            continue
        if size is None:
            cost.snapshot_bytes = None
        elif cost.snapshot_bytes is not None and r.kind == "train":
            cost.snapshot_bytes += size * ((spec.snapshot_count() or spec.epochs) + 1)  # + the fp32 run-sum; step schedules: a guess
        elif cost.snapshot_bytes is not None and spec.keep_averages:
            k = len(spec.run_keys)
            models = {RUN_AVERAGES: k, DRAWS: len(spec.methods) * k}.get(spec.mode, 1)  # explicit: one model
            per_value = 2 if spec.output_dtype in ("bf16", "fp16") else 4  # model_bytes counts fp32
            cost.snapshot_bytes += size * models * per_value // 4
    return cost
