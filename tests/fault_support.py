"""Helpers for the fault tests (tests/test_faults.py, tests/test_bad_inputs.py,
tests/jobs/test_commit_races.py, tests/jobs/test_store_retries.py): real job processes, fail
points (jobs/faults.py), a SeaweedFS server that a test may stop and start again, and store
fingerprints. It holds no tests itself."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, S3Server, _weed_binary, free_ports


def job_env(tmp: Path, extra: dict | None = None) -> dict:
    """The environment of a job process: its own temp folder (scratch), the test's settings."""
    scratch = tmp / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(scratch), XLT_FAILPOINT_DIR=str(tmp / "failpoints"), XLT_NUM_THREADS="1")
    env.pop("XLT_FAILPOINTS", None)
    env.update(extra or {})
    return env


def start_job(kind: str, spec_json: str, env: dict, args: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobs", kind, "--spec", "-", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def run_job(kind: str, spec_json: str, env: dict, args: tuple[str, ...] = (), timeout: float = 180) -> subprocess.CompletedProcess:
    proc = start_job(kind, spec_json, env, args)
    out, err = proc.communicate(spec_json, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_paused(env: dict, point: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> int:
    """The pid of the job paused at fail point `point` (waits for its marker file)."""
    directory = Path(env["XLT_FAILPOINT_DIR"])
    deadline = time.time() + timeout
    while time.time() < deadline:
        for marker in directory.glob(f"{point}.*.paused") if directory.exists() else []:
            pid = int(marker.name.split(".")[-2])
            if proc is None or proc.pid == pid:
                return pid
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {point}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no job paused at {point} within {timeout} s")


def release(env: dict, point: str) -> None:
    directory = Path(env["XLT_FAILPOINT_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{point}.go").write_text("")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def fingerprint(root: Path, skip=("logs/",)) -> dict[str, str]:
    """Relative path -> sha256 of every file under a local store folder (job logs left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(skip) and f"/{skip[0]}" not in f"/{rel}":
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def s3_fingerprint(client, bucket: str, prefix: str) -> dict[str, str]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if "/logs/" not in obj["Key"]:
                out[obj["Key"]] = obj["ETag"]
    return out


class StoppableS3:
    """A SeaweedFS server (`weed mini`) on fixed free ports and a fixed folder, so that it can be
    stopped (a store outage) and started again with the same objects."""

    NAMES = ["master", "volume", "filer", "s3", "webdav", "admin", "debug"]

    def __init__(self, data: Path):
        self.data = data
        self.ports = dict(zip(self.NAMES, free_ports(len(self.NAMES))))
        self.grpc = dict(zip(self.NAMES, free_ports(len(self.NAMES))))
        self.server = S3Server(f"http://127.0.0.1:{self.ports['s3']}", "test-access", "test-secret", "test")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        args = [_weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=test"]
        for name in self.NAMES:
            args.append(f"-{name}.port={self.ports[name]}")
            if name not in ("webdav", "debug"):  # s3 too: its default gRPC port is its port + 10000, past 65535 for ports above 55535
                args.append(f"-{name}.port.grpc={self.grpc[name]}")
        log = open(self.data / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, AWS_ACCESS_KEY_ID="test-access", AWS_SECRET_ACCESS_KEY="test-secret"))
        client = self.server.client()
        deadline = time.time() + timeout
        while True:
            try:
                client.head_bucket(Bucket="test")
                client.list_objects_v2(Bucket="test", MaxKeys=1)
                return
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"SeaweedFS did not start: {(self.data / 'weed.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # an outage, not a clean shutdown
            self.proc.wait(30)
        self.proc = None


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory):
    server = StoppableS3(tmp_path_factory.mktemp("weed-stoppable"))
    yield server
    server.stop()


@pytest.fixture
def weed(weed_server):
    """A SeaweedFS server the test may stop and start again; up when the test starts (one per
    session: import both `weed` and `weed_server` into the test module)."""
    if weed_server.proc is None or weed_server.proc.poll() is not None:
        weed_server.start()
    return weed_server
