"""The Kubernetes backend against kmock's API emulator with the official client: sweep creates the
right Jobs, resumes without duplicates, watches, reports state, retries failed Jobs, cancels; bad
settings fail in one line."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from kubernetes import client

from orchestrator.backends.base import BackendError
from orchestrator.backends.k8s import K8sBackend
from orchestrator.cli import main
from orchestrator.k8s_render import load_cluster_settings

from tests.orchestrator.k8s.conftest import NAMESPACE, REPO, FakeController, status

CONFIG = str(REPO / "configs" / "tiny-nli.yaml")  # head + 2 lr x 2 bs x 1 seed = 4 grid runs


def cli(bucket: str, *args: str, input: str | None = None):
    return CliRunner().invoke(main, [*args, "--bucket", bucket, "--config", CONFIG, "--backend", "k8s",
                                     "--image-prefix", "ghcr.io/acme", "--experiment", "exp"], input=input)


def jobs(emulator) -> dict[str, dict]:
    raw = client.BatchV1Api(emulator.api()).list_namespaced_job(NAMESPACE, _preload_content=False)
    return {j["metadata"]["name"]: j for j in json.loads(raw.data)["items"]}


@pytest.fixture
def bucket(tmp_path) -> str:
    return f"file://{tmp_path / 'store'}"


def test_sweep_creates_the_jobs_then_nothing_new(clean_jobs, kubeconfig, bucket):
    emu = clean_jobs
    before = emu.creations()
    with FakeController(emu) as ctl:
        result = cli(bucket, "sweep", "--parallelism", "2")
    assert result.exit_code == 0, result.output
    names = jobs(emu)
    stages = sorted(j["metadata"]["labels"]["xlt.io/stage"] for j in names.values())
    assert stages == ["head", "train", "train", "train", "train"]
    assert all(j["metadata"]["labels"]["xlt.io/experiment"] == "exp" for j in names.values())
    assert emu.creations() - before == 5 and sorted(ctl.seen) == sorted(names)
    # everything is complete in the store: the planner plans nothing, nothing is created
    again = cli(bucket, "sweep")
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output and emu.creations() - before == 5


def test_existing_job_is_reused_not_created_twice(clean_jobs, kubeconfig, bucket):
    emu = clean_jobs
    # the orchestrator died after creating the head Job; the Job finished meanwhile
    render = cli(bucket, "render", "head")
    import yaml

    (job,) = list(yaml.safe_load_all(render.output))
    batch = client.BatchV1Api(emu.api())
    batch.create_namespaced_job(NAMESPACE, job)
    from tests.orchestrator.k8s.conftest import apply_effect

    apply_effect(job)
    batch.patch_namespaced_job_status(job["metadata"]["name"], NAMESPACE, {"status": status("Complete")})
    posts = emu.creations()
    backend = K8sBackend(load_cluster_settings(None, {"image_prefix": "ghcr.io/acme"}), "exp", api_client=emu.api(), show_progress=False)
    from orchestrator.context import open_experiment

    exp = open_experiment(bucket, "exp", CONFIG, {})
    outcomes = backend.run(_head_request(exp), "head")
    assert [o.ok for o in outcomes] == [True] and outcomes[0].state == "Complete"
    assert emu.creations() == posts + 1  # one POST answered 409, then the Job was read and reused
    assert len(jobs(emu)) == 1


def _head_request(exp):
    from orchestrator import plan

    return [plan.head_request(exp.config, exp.uri)]


def test_status_failed_retry_and_cancel(clean_jobs, kubeconfig, bucket):
    emu = clean_jobs
    failing = set()

    def outcome(name):
        if name.startswith("train-") and len(failing) < 2 and name not in failing:
            failing.add(name)
            return "Failed", "BackoffLimitExceeded"
        return "Complete", ""

    with FakeController(emu, outcome):
        first = cli(bucket, "sweep", "--parallelism", "3")
    assert first.exit_code == 1 and "2 of 4 job(s) failed" in first.output, first.output
    # status shows the Job state beside the store's state
    st = cli(bucket, "status")
    assert st.exit_code == 0, st.output
    assert "job state" in st.output and st.output.count("Failed(BackoffLimitExceeded)") == 2
    assert st.output.count("Complete") >= 3
    # without --retry-failed nothing is recreated: the same failures are reported
    posts = emu.creations()
    again = cli(bucket, "sweep")
    assert again.exit_code == 1 and "--retry-failed" in again.output
    assert emu.creations() - posts == 2  # two POSTs answered 409; nothing new
    # with --retry-failed exactly the failed ones are deleted and recreated, and complete
    with FakeController(emu) as ctl:
        retry = cli(bucket, "sweep", "--retry-failed")
    assert retry.exit_code == 0, retry.output
    assert sorted(set(ctl.seen)) == sorted(failing)
    delete_urls = [str(r.url) for r in emu.k["delete"]]
    assert sum(any(n in u for n in failing) for u in delete_urls) == 2
    # cancel deletes the experiment's Jobs with the chosen propagation
    out = cli(bucket, "cancel", "--propagation", "Foreground", "--yes")
    assert out.exit_code == 0, out.output
    assert out.output.count("deleted Job") == 5 and jobs(emu) == {}
    assert all(r.params.get("propagationPolicy") == "Foreground" for r in list(emu.k["delete"])[-5:])


def test_status_shows_suspended_jobs_under_kueue(clean_jobs, kubeconfig, bucket):
    emu = clean_jobs
    render = CliRunner().invoke(main, ["render", "head", "--bucket", bucket, "--config", CONFIG, "--experiment", "exp",
                                       "--image-prefix", "ghcr.io/acme", "--queue", "xlt"])
    import yaml

    (job,) = list(yaml.safe_load_all(render.output))
    assert job["spec"]["suspend"] is True
    client.BatchV1Api(emu.api()).create_namespaced_job(NAMESPACE, job)
    st = cli(bucket, "status")
    assert st.exit_code == 0 and "Suspended" in st.output, st.output


def test_watch_sees_a_change_without_waiting_for_the_period(clean_jobs):
    emu = clean_jobs
    backend = K8sBackend(load_cluster_settings(None, {"image_prefix": "ghcr.io/acme"}), "exp", api_client=emu.api(),
                         watch_seconds=30, show_progress=False)
    from k8s_fixtures import stage_requests

    req = stage_requests("nli", uri="file:///nonexistent")["average"][0]
    job = backend.render([req])[0]
    name = job["metadata"]["name"]
    backend._create(job)
    batch = client.BatchV1Api(emu.api())

    def finish():
        time.sleep(0.5)
        batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status("Failed", "PodFailurePolicy")})

    threading.Thread(target=finish, daemon=True).start()
    active, done = {name: time.monotonic()}, {}
    start = time.monotonic()
    while active and time.monotonic() - start < 20:
        backend._wait({name: (req, job)}, active, done)
    assert time.monotonic() - start < 10  # the watch event ended the wait, not the 30 s period
    assert done[name].state == "Failed" and done[name].exit_code == 3 and not done[name].ok
    assert "PodFailurePolicy" in done[name].last_error()


def test_logs_fall_back_to_the_stored_copy(clean_jobs, kubeconfig, bucket):
    from jobs import layout
    from jobs.store import open_store

    open_store(f"{bucket}/exp").put_bytes(layout.log_key("train-nli-1234abcd-000000"), b"line 1\nERROR boom\n")
    out = cli(bucket, "logs", "train-nli-1234abcd-000000")
    assert out.exit_code == 0 and "ERROR boom" in out.output, out.output
    missing = cli(bucket, "logs", "nope")
    assert missing.exit_code == 1 and "no log for nope" in missing.output


# --- bad input: one line naming the problem and the fix ---------------------------------------


def test_no_kube_context(tmp_path, monkeypatch, bucket):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    out = cli(bucket, "sweep")
    assert out.exit_code == 1 and "no Kubernetes context" in out.output and "KUBECONFIG" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_unreachable_api_server(tmp_path, monkeypatch, bucket):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    from kubernetes.client import Configuration

    cfg = Configuration(host=f"http://127.0.0.1:{port}")
    cfg.retries = 0
    backend = K8sBackend(load_cluster_settings(None, {"image_prefix": "ghcr.io/acme"}), "exp", api_client=client.ApiClient(cfg))
    with pytest.raises(BackendError, match="cannot reach the Kubernetes API server at http://127.0.0.1"):
        backend.preflight()


def test_missing_namespace(clean_jobs, kubeconfig, bucket):
    out = cli(bucket, "sweep", "--namespace", "absent")
    assert out.exit_code == 1 and "namespace 'absent' does not exist" in out.output and "kubectl" in out.output


def test_missing_image(clean_jobs, kubeconfig, bucket):
    out = CliRunner().invoke(main, ["sweep", "--bucket", bucket, "--config", CONFIG, "--backend", "k8s"])
    assert out.exit_code == 1 and "--image-prefix" in out.output
    assert jobs(clean_jobs) == {}  # nothing was submitted


def test_rbac_forbidden(clean_jobs, kubeconfig, bucket):
    emu = clean_jobs
    emu.add_namespace("denied")
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": 'jobs.batch is forbidden: User "alice" cannot list resource "jobs" in API group "batch" in the namespace "denied"'}
    emu.call(lambda: emu.k["get /apis/batch/v1/namespaces/denied/jobs"] << 403 << body)
    out = cli(bucket, "sweep", "--namespace", "denied")
    assert out.exit_code == 1, out.output
    assert "forbidden" in out.output and "cannot list" in out.output and "kubectl auth can-i" in out.output


def test_failure_midway_reports_what_was_created(clean_jobs, bucket, monkeypatch):
    emu = clean_jobs
    from kubernetes.client import ApiException

    from orchestrator import plan
    from orchestrator.context import open_experiment

    exp = open_experiment(bucket, "exp", CONFIG, {})
    from jobs.spec import HeadRef

    requests = plan.train_requests(exp.config, exp.store, exp.uri, HeadRef("heads/x", "0" * 64))
    backend = K8sBackend(load_cluster_settings(None, {"image_prefix": "ghcr.io/acme"}), "exp", api_client=emu.api(),
                         parallelism=10, show_progress=False)
    real = client.BatchV1Api(emu.api())

    class QuotaAfterTwo:
        calls = 0

        def __getattr__(self, name):
            return getattr(real, name)

        def create_namespaced_job(self, namespace, body, **kw):
            QuotaAfterTwo.calls += 1
            if QuotaAfterTwo.calls > 2:
                raise ApiException(status=403, reason="Forbidden")
            return real.create_namespaced_job(namespace, body, **kw)

    monkeypatch.setattr(K8sBackend, "batch", property(lambda self: QuotaAfterTwo()))
    with pytest.raises(BackendError) as err:
        backend.run(requests, "train")
    msg = str(err.value)
    created = sorted(jobs(emu))
    assert len(created) == 2 and "created before the failure" in msg
    assert all(name in msg for name in created)
