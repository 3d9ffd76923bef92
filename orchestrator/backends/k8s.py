"""The Kubernetes backend: each planned job becomes a batch/v1 Job, created, watched and resumed.

The only module that imports the kubernetes client. Submission is idempotent: a Job that already
exists (same name = same experiment and work) is reused, never created twice; a failed one is
recreated only with retry_failed. With a Kueue queue every Job is created at once (suspended, Kueue
admits them); otherwise at most `parallelism` of them run at a time. Stopping the orchestrator
leaves the Jobs running; running it again picks them up. Errors are BackendErrors, one line
naming the problem and the fix; progress goes to the Reporter the caller passes.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field

from orchestrator import k8s_render
from orchestrator.backends.base import BackendError, JobOutcome, Reporter, StderrReporter, last_error_line
from orchestrator.k8s_render import ClusterSettings, LABEL_PREFIX
from orchestrator.plan import JobRequest

TERMINAL = ("Complete", "Failed")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def job_state(job: dict) -> tuple[str, str, str]:
    """(state, reason, message) of a Job from its conditions: Complete, Failed, Suspended, Running, Pending."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for state in ("Complete", "Failed"):
        if state in conditions:
            c = conditions[state]
            return state, c.get("reason") or "", c.get("message") or ""
    if "Suspended" in conditions or (job.get("spec") or {}).get("suspend"):
        c = conditions.get("Suspended", {})
        return "Suspended", c.get("reason") or "", c.get("message") or "waiting for admission (Kueue) or resume"
    if "FailureTarget" in conditions:
        c = conditions["FailureTarget"]
        return "Failing", c.get("reason") or "", c.get("message") or ""
    if status.get("active") or status.get("ready"):
        return "Running", "", ""
    return "Pending", "", ""


def job_retries(job: dict) -> int:
    return int((job.get("status") or {}).get("failed") or 0)


def matches(labels: dict, selector: dict) -> bool:
    """Equality label selector, evaluated here too (a defence against servers that ignore it)."""
    return all(labels.get(k) == v for k, v in selector.items())


def selector_string(selector: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


@dataclass(frozen=True)
class ClusterOptions:
    """The cluster options of a command (--cluster-config, --namespace, ...), read once from the
    CLI; None leaves the cluster-config file's value (or the default)."""

    cluster_config: str | None = None  # a YAML file with a `cluster:` section (k8s/base/cluster.yaml)
    namespace: str | None = None
    image_prefix: str | None = None
    image_tag: str | None = None
    queue: str | None = None  # a Kueue LocalQueue: Jobs are labelled and created suspended
    retry_failed: bool = False  # delete and recreate Jobs that failed earlier
    kube_context: str | None = None

    def settings(self) -> ClusterSettings:
        """The cluster settings: defaults, then the file, then these options (SpecError naming the key)."""
        overrides = {"namespace": self.namespace, "image_prefix": self.image_prefix, "image_tag": self.image_tag, "queue": self.queue}
        return k8s_render.load_cluster_settings(self.cluster_config, overrides)


@dataclass
class _Progress:
    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


class K8sBackend:
    """Runs JobRequests as Kubernetes Jobs in `settings.namespace`."""

    log_location = "logs in the store (logs/<job>.log) or the pods: `orchestrator logs JOB`"
    estimates_cost = True  # a dry run prices the plan from the stage resources

    def __init__(
        self,
        settings: ClusterSettings,
        experiment: str,
        parallelism: int = 4,
        retry_failed: bool = False,
        api_client=None,
        context: str | None = None,
        watch_seconds: int = 60,
        request_timeout: float = 30.0,
        show_progress: bool = True,
        base_model: str = "xlm-roberta-large",
        reporter: Reporter | None = None,
    ):
        settings.validate()
        self.base_model = base_model  # for the --dry-run storage estimate
        self.settings = settings
        self.experiment = experiment
        self.parallelism = max(1, parallelism)
        self.retry_failed = retry_failed
        self.context = context
        self.watch_seconds = watch_seconds
        self.request_timeout = request_timeout
        self.show_progress = show_progress
        self.reporter = reporter or StderrReporter()
        self._api_client = api_client

    @classmethod
    def from_options(cls, options: ClusterOptions, experiment: str, base_model: str, parallelism: int = 4, **kwargs) -> "K8sBackend":
        """The backend for an experiment and a command's cluster options."""
        return cls(options.settings(), experiment, parallelism=parallelism, retry_failed=options.retry_failed,
                   context=options.kube_context, base_model=base_model, **kwargs)

    # --- the client ---------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def _client(self):
        if self._api_client is None:
            from kubernetes import client, config

            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config()
                else:
                    # read KUBECONFIG now: the client reads it once, when it is imported
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, context=self.context)
            except Exception as e:  # ConfigException, a malformed file, a missing context
                raise BackendError(
                    f"no Kubernetes context ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                    "set KUBECONFIG or run `kubectl config use-context NAME` (in a pod: mount a service account token)"
                ) from None
            self._api_client = client.ApiClient()
        return self._api_client

    @property
    def batch(self):
        from kubernetes import client

        return client.BatchV1Api(self._client())

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self._client())

    def _host(self) -> str:
        try:
            return self._client().configuration.host
        except Exception:
            return "(unknown)"

    def _error(self, e: Exception, action: str) -> BackendError:
        """One line naming the problem and the fix."""
        from kubernetes.client import ApiException

        ns = self.namespace
        if isinstance(e, ApiException):
            detail = _api_message(e)
            if e.status == 401:
                return BackendError(f"{action}: the API server refused the credentials ({detail}); refresh your kubeconfig login")
            if e.status == 403:
                return BackendError(
                    f"{action}: forbidden ({detail}); grant the Role in k8s/base (xlt-orchestrator) to your identity, "
                    f"check with `kubectl auth can-i create jobs -n {ns}`"
                )
            if e.status == 404 and "namespace" in detail.lower():
                return BackendError(
                    f"{action}: namespace {ns!r} does not exist; create it (`kubectl apply -k k8s/overlays/dev` or "
                    f"`kubectl create namespace {ns}`) or pass --namespace"
                )
            return BackendError(f"{action}: the API server answered {e.status} ({detail})")
        return BackendError(
            f"{action}: cannot reach the Kubernetes API server at {self._host()} ({type(e).__name__}); "
            "check `kubectl cluster-info` and your KUBECONFIG/context"
        )

    def _call(self, action: str, fn, *args, **kwargs):
        from kubernetes.client import ApiException

        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return fn(*args, **kwargs)
        except ApiException:
            raise
        except BackendError:
            raise
        except Exception as e:  # urllib3 connection errors, timeouts
            raise self._error(e, action) from None

    def preflight(self) -> None:
        """Fail now, in one line, when the cluster cannot take the Jobs: unreachable, no namespace, no rights."""
        from kubernetes.client import ApiException

        try:
            self._call("checking the namespace", self.core.read_namespace, self.namespace)
        except ApiException as e:
            if e.status == 404:
                raise BackendError(
                    f"namespace {self.namespace!r} does not exist; create it (`kubectl apply -k k8s/overlays/dev` "
                    f"or `kubectl create namespace {self.namespace}`) or pass --namespace"
                ) from None
            if e.status != 403:  # a namespaced Role cannot read namespaces: that is fine
                raise self._error(e, "checking the namespace") from None
        try:
            self._call("listing Jobs", self.batch.list_namespaced_job, self.namespace, limit=1)
        except ApiException as e:
            raise self._error(e, f"listing Jobs in {self.namespace}") from None

    # --- reading ------------------------------------------------------------------------------

    def experiment_selector(self, stage: str | None = None) -> dict:
        sel = {f"{LABEL_PREFIX}/experiment": k8s_render.experiment_label(self.experiment)}
        if stage:
            sel[f"{LABEL_PREFIX}/stage"] = stage
        return sel

    def list_jobs(self, stage: str | None = None) -> list[dict]:
        """The experiment's Jobs as plain dicts (camelCase, as kubectl shows them)."""
        import json

        from kubernetes.client import ApiException

        sel = self.experiment_selector(stage)
        try:
            resp = self._call("listing Jobs", self.batch.list_namespaced_job, self.namespace,
                              label_selector=selector_string(sel), _preload_content=False)
        except ApiException as e:
            raise self._error(e, f"listing Jobs in {self.namespace}") from None
        items = json.loads(resp.data).get("items") or []
        return [j for j in items if matches((j.get("metadata") or {}).get("labels") or {}, sel)]

    def read_job(self, name: str) -> dict | None:
        import json

        from kubernetes.client import ApiException

        try:
            resp = self._call(f"reading Job {name}", self.batch.read_namespaced_job, name, self.namespace, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._error(e, f"reading Job {name}") from None
        return json.loads(resp.data)

    def job_pods(self, name: str) -> list[dict]:
        """The pods of a Job, newest first."""
        import json

        from kubernetes.client import ApiException

        try:
            resp = self._call("listing pods", self.core.list_namespaced_pod, self.namespace,
                              label_selector=f"{JOB_NAME_LABELS[0]}={name}", _preload_content=False)
        except ApiException as e:
            if e.status in (403, 404):
                return []
            raise self._error(e, "listing pods") from None
        pods = [p for p in json.loads(resp.data).get("items") or []
                if any(((p.get("metadata") or {}).get("labels") or {}).get(k) == name for k in JOB_NAME_LABELS)]
        return sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)

    def read_pod_log(self, name: str, tail_lines: int | None = None) -> str | None:
        """The log of the Job's newest pod, or None when no pod (or no log) is left."""
        from kubernetes.client import ApiException

        for pod in self.job_pods(name):
            try:
                kwargs = {"container": k8s_render.CONTAINER}
                if tail_lines:
                    kwargs["tail_lines"] = tail_lines
                return self._call("reading the pod log", self.core.read_namespaced_pod_log,
                                  pod["metadata"]["name"], self.namespace, **kwargs)
            except ApiException as e:
                if e.status in (400, 403, 404):  # container not started, no rights, pod gone
                    continue
                raise self._error(e, "reading the pod log") from None
        return None

    def job_table(self) -> dict[str, dict]:
        """Job state by run key (train/head) and by Job name, for `orchestrator status`."""
        out: dict[str, dict] = {}
        for job in self.list_jobs():
            meta = job.get("metadata") or {}
            state, reason, _ = job_state(job)
            row = {"job": meta.get("name"), "job state": f"{state}({reason})" if reason else state, "retries": job_retries(job)}
            out[meta.get("name")] = row
            run = (meta.get("labels") or {}).get(f"{LABEL_PREFIX}/run")
            if run:
                out[run] = row
        return out

    # --- writing ------------------------------------------------------------------------------

    def render(self, requests: list[JobRequest]) -> list[dict]:
        """The Jobs as plain dicts (a missing image or a bad setting: a SpecError naming it)."""
        return k8s_render.render_jobs(requests, self.experiment, self.settings)

    def dry_run(self, requests: list[JobRequest], title: str) -> list[str]:
        """The Jobs that would be created and what the plan costs."""
        lines = []
        for job in self.render(requests):
            res = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            lines.append(f"would create Job {job['metadata']['name']:60s} gpu={res.get('nvidia.com/gpu', '0')} "
                         f"cpu={res['cpu']} memory={res['memory']}")
        cost = k8s_render.plan_cost(requests, self.settings, self.base_model)
        return lines + [f"{title}: {cost.describe()} (namespace {self.namespace})"]

    def delete_job(self, name: str, propagation: str = "Background", wait: bool = False) -> bool:
        from kubernetes.client import ApiException

        try:
            self._call(f"deleting Job {name}", self.batch.delete_namespaced_job, name, self.namespace,
                       propagation_policy=propagation)
        except ApiException as e:
            if e.status == 404:
                return False
            raise self._error(e, f"deleting Job {name}") from None
        deadline = time.monotonic() + 120
        while wait and self.read_job(name) is not None:
            if time.monotonic() > deadline:
                raise BackendError(f"Job {name} is still being deleted after 120 s; try again later")
            time.sleep(0.2)
        return True

    def cancel(self, stage: str | None = None, propagation: str = "Background") -> list[str]:
        """Delete the experiment's Jobs (and, by propagation, their pods); returns the names."""
        names = [j["metadata"]["name"] for j in self.list_jobs(stage)]
        return [n for n in names if self.delete_job(n, propagation)]

    def _create(self, job: dict) -> dict | None:
        """Create the Job; on 409 return the existing one (None means: created now)."""
        from kubernetes.client import ApiException

        name = job["metadata"]["name"]
        try:
            self._call(f"creating Job {name}", self.batch.create_namespaced_job, self.namespace, job)
            return None
        except ApiException as e:
            if e.status != 409:
                raise self._error(e, f"creating Job {name}") from None
        existing = self.read_job(name)
        if existing is None:  # deleted between the two calls: create it again
            return self._create(job)
        return existing

    # --- running ------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self.show_progress:
            self.reporter.say(text)

    def run(self, requests: list[JobRequest], title: str = "jobs") -> list[JobOutcome]:
        """Create the Jobs (at most `parallelism` running, or all at once with a Kueue queue), watch
        them until each is Complete or Failed; outcomes in request order."""
        if not requests:
            return []
        jobs = self.render(requests)  # a missing image fails here, before anything is submitted
        by_name = {j["metadata"]["name"]: (r, j) for r, j in zip(requests, jobs)}
        self.preflight()
        progress = _Progress()
        pending = deque(by_name)
        active: dict[str, float] = {}  # name -> monotonic start
        done: dict[str, JobOutcome] = {}
        limit = len(by_name) if self.settings.queue else self.parallelism
        self._say(f"{title}: {len(by_name)} Job(s) in namespace {self.namespace}")
        try:
            while pending or active:
                while pending and len(active) < limit:
                    name = pending.popleft()
                    self._submit(name, by_name[name][1], progress, active, done)
                if active:
                    self._wait(by_name, active, done)
        except BackendError as e:
            if progress.created:
                raise BackendError(f"{e} [created before the failure: {', '.join(progress.created)}; they keep running - "
                                   f"re-run to resume or `orchestrator cancel` to remove them]") from None
            raise
        except KeyboardInterrupt:
            self._say(f"\ninterrupted: {len(active)} Job(s) keep running in {self.namespace}; re-run to resume watching")
            raise
        return [done[name] for name in by_name if name in done]

    def _submit(self, name: str, job: dict, progress: _Progress, active: dict, done: dict) -> None:
        existing = self._create(job)
        if existing is not None:
            state, reason, _ = job_state(existing)
            if state == "Failed" and self.retry_failed:
                self._say(f"recreating failed Job {name} ({reason})")
                self.delete_job(name, "Background", wait=True)
                if self._create(job) is not None:
                    raise BackendError(f"Job {name} exists again right after deletion; is another orchestrator running?")
                progress.created.append(name)
            else:
                progress.reused.append(name)
                self._say(f"reusing existing Job {name} ({state})")
        else:
            progress.created.append(name)
            self._say(f"created Job {name}")
        active[name] = time.monotonic()

    def _finish(self, name: str, job: dict | None, request: JobRequest, started: float) -> JobOutcome:
        if job is None:
            return JobOutcome(request, 1, time.monotonic() - started, state="Deleted", job_name=name, reason="Deleted",
                              message="the Job was deleted while it was watched (orchestrator cancel?)")
        state, reason, message = job_state(job)
        seconds = time.monotonic() - started
        if state == "Complete":
            return JobOutcome(request, 0, seconds, state=state, job_name=name, reason=reason, message=message)
        exit_code, error_line = self._failure_details(name, reason)
        outcome = JobOutcome(request, exit_code, seconds, state=state, job_name=name, reason=reason, message=message,
                             error_line=error_line)
        hint = "" if self.retry_failed else " (re-run with --retry-failed to recreate it)"
        self._say(f"{name} failed (exit {exit_code}): {outcome.last_error()}{hint}")
        return outcome

    def _failure_details(self, name: str, reason: str) -> tuple[int, str]:
        """The container's exit code and the last ERROR line of its log, where the pod is still there."""
        exit_code = 3 if reason == "PodFailurePolicy" else 1
        for pod in self.job_pods(name):
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
                if cs.get("name") == k8s_render.CONTAINER and term and term.get("exitCode") is not None:
                    exit_code = int(term["exitCode"]) or exit_code
                    break
            break
        log = self.read_pod_log(name, tail_lines=50) or ""
        return exit_code, last_error_line(log.splitlines())

    def _absorb(self, by_name: dict, active: dict, done: dict, jobs: dict[str, dict], complete_view: bool) -> bool:
        """Move Jobs that finished (or vanished, when `jobs` is a full listing) from active to done."""
        changed = False
        for name in list(active):
            if name not in jobs and not complete_view:
                continue
            job = jobs.get(name)
            if job is not None and job_state(job)[0] not in TERMINAL:
                continue
            done[name] = self._finish(name, job, by_name[name][0], active.pop(name))
            changed = True
            if done[name].ok:
                self._say(f"{name} complete ({len(done)}/{len(by_name)})")
        return changed

    def _wait(self, by_name: dict, active: dict, done: dict) -> None:
        """Block until at least one active Job finishes (or a watch period ends)."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        listing = {j["metadata"]["name"]: j for j in self.list_jobs()}
        if self._absorb(by_name, active, done, listing, complete_view=True):
            return
        w = watch.Watch()
        try:
            stream = w.stream(
                self.batch.list_namespaced_job, self.namespace,
                label_selector=selector_string(self.experiment_selector()),
                timeout_seconds=self.watch_seconds, _request_timeout=(10, self.watch_seconds + 5),
            )
            for event in stream:
                obj = event.get("raw_object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if name not in active:
                    continue
                job = None if event.get("type") == "DELETED" else obj
                if self._absorb(by_name, active, done, {name: job}, complete_view=False):
                    break
        except ApiException as e:
            if e.status != 410:  # 410 Gone: the watch expired; the next listing catches up
                raise self._error(e, "watching Jobs") from None
        except BackendError:
            raise
        except Exception:  # read timeout of an idle watch, a dropped connection: list again
            pass
        finally:
            w.stop()


def _api_message(e) -> str:
    import json

    try:
        body = json.loads(e.body or "{}")
        return body.get("message") or e.reason or str(e.status)
    except (ValueError, TypeError):
        return (e.reason or str(e.status)).strip()
