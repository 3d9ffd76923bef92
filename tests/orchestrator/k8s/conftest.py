"""Fixtures for the Kubernetes backend tests: a kmock Kubernetes API emulator on 127.0.0.1 in its own
thread (the official client is synchronous), a kubeconfig pointing at it, and a fake Job controller
that plays the job's effect on the store and patches the Job's conditions the way the Job controller would.

Emulator gotchas handled here: resources are declared up front; bodies carry metadata.namespace;
label selectors are ignored (the backend filters on labels itself, tested separately); the official
client sends `watch=True`, which the real API server accepts (Go ParseBool) but kmock 0.8 only
recognises as `watch=true`, so its parser is patched to compare case-insensitively.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import yaml

kmock = pytest.importorskip("kmock")
from kmock._internal import parsing as _kmock_parsing  # noqa: E402
from kmock._internal import rendering as _kmock_rendering  # noqa: E402

from kubernetes import client  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "xlt"


def _patch_watch_flag() -> None:
    original = _kmock_parsing.guess_k8s
    if getattr(original, "_xlt_patched", False):
        return

    def guess_k8s(k8s, method, query):
        if str(query.get("watch", "")).lower() == "true":
            query = dict(query, watch="true")
        return original(k8s, method, query)

    guess_k8s._xlt_patched = True
    _kmock_parsing.guess_k8s = guess_k8s
    _kmock_rendering.parsing.guess_k8s = guess_k8s


class Emulator:
    """kmock.KubernetesEmulator served from a background thread; `.url` for the official client."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self.k = None

    def start(self) -> "Emulator":
        _patch_watch_flag()
        self._thread = threading.Thread(target=self._main, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the kmock emulator did not start")
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as k, kmock.Server(k) as server:
            verbs = {"create", "get", "list", "watch", "patch", "delete"}
            k.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"}, verbs=verbs)
            k.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"log"}, verbs=verbs)
            self.k = k
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def add_namespace(self, name: str) -> None:
        """kmock 0.8 cannot parse the cluster-scoped /api/v1/namespaces paths: answer GETs with a reaction."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}}
        self.call(lambda: self.k[f"get /api/v1/namespaces/{name}"] << body)

    def call(self, fn) -> None:
        """Run fn() on the emulator's loop (reactions must be added there)."""
        done = threading.Event()

        def run():
            fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def api(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.url))

    def creations(self, namespace: str = NAMESPACE) -> int:
        """How many POSTs to the namespace's jobs collection the emulator has seen."""
        return len(self.k[f"post /apis/batch/v1/namespaces/{namespace}/jobs"])


@pytest.fixture(scope="session")
def emulator():
    emu = Emulator().start()
    emu.add_namespace(NAMESPACE)
    yield emu
    emu.stop()


@pytest.fixture
def clean_jobs(emulator):
    """No Jobs left from an earlier test."""
    batch = client.BatchV1Api(emulator.api())

    def clean():
        for job in batch.list_namespaced_job(NAMESPACE).items:
            batch.delete_namespaced_job(job.metadata.name, NAMESPACE)

    clean()
    yield emulator
    clean()


@pytest.fixture
def kubeconfig(emulator, tmp_path, monkeypatch) -> Path:
    """A kubeconfig whose current context is the emulator; KUBECONFIG points at it."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": emulator.url}}],
        "users": [{"name": "emu", "user": {}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu", "namespace": NAMESPACE}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


class FakeController:
    """Plays the cluster: for every new Job it writes the job's effect into the store (from the
    Job's own JOB_SPEC) and patches a terminal condition. `outcome(name)` picks Complete or Failed."""

    def __init__(self, emulator: Emulator, outcome=lambda name: ("Complete", "")):
        self.batch = client.BatchV1Api(emulator.api())
        self.outcome = outcome
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-job-controller", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        # The patch is applied before its response returns, so a Job seen without conditions is new
        # (or recreated under the same name): handle it.
        while not self._stop.is_set():
            items = json.loads(self.batch.list_namespaced_job(NAMESPACE, _preload_content=False).data)["items"]
            for job in items:
                name = job["metadata"]["name"]
                if (job.get("status") or {}).get("conditions") or job["spec"].get("suspend"):
                    continue
                self.seen.append(name)
                state, reason = self.outcome(name)
                if state == "Complete":
                    apply_effect(job)
                if state != "Running":
                    self.batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status(state, reason)})
            time.sleep(0.02)


def status(state: str, reason: str = "") -> dict:
    if state == "Complete":
        return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    if state == "Failed":
        return {"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}]}
    if state == "Running":
        return {"active": 1}
    raise ValueError(state)


def apply_effect(job: dict) -> None:
    """What the job would leave in the store: a committed head or a complete run."""
    from jobs import layout
    from jobs.store import open_store

    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    spec = json.loads(env["JOB_SPEC"])
    store = open_store(spec["experiment_uri"])
    if "learning_rate" not in spec:
        return
    from jobs.spec import spec_from_dict

    key = spec_from_dict("train", spec).run_key
    if spec["stage"] == "head":
        store.put_bytes(layout.weights_key(layout.head_ref(key)), b"")  # a committed model as the job leaves it: weights, then manifest
        store.put_bytes(layout.manifest_key(layout.head_ref(key)), json.dumps({"sha256": hashlib.sha256(b"").hexdigest(), "size": 0, "ref": layout.head_ref(key)}).encode())
    else:
        store.put_bytes(layout.run_complete_key(key), json.dumps({"snapshots": []}).encode())
