"""Bad input gives a one-line error naming the problem, a non-zero exit, no traceback, and
leaves the store untouched."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import free_ports

ORCH = [sys.executable, "-m", "orchestrator"]


def run(args, env=None, cwd=None):
    import os

    return subprocess.run(ORCH + args, capture_output=True, text=True, env=dict(os.environ, **(env or {})), cwd=cwd, timeout=120)


def assert_one_line_error(proc, needle):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert needle in err, err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("args, needle", [
    (["sweep", "--task", "pos", "--base-model", "tiny"], "task 'pos'"),
    (["status", "--bucket", "gs://bucket"], "unsupported store URI scheme 'gs'"),
    (["status", "--bucket", "s3://"], "malformed S3 URI"),
    (["average", "--methods", "soup-0", "--base-model", "tiny"], "soup-0"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    if "--bucket" not in args:
        args = args + ["--bucket", f"file://{tmp_path}/store"]
    proc = run(args)
    assert_one_line_error(proc, needle)


def test_bad_config_names_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: nli\nbase_model: tiny\ngrid:\n  learning_rates: [1e-3, fast]  # 1e-3 is a string to YAML 1.1; accepted\n")
    proc = run(["sweep", "--config", str(cfg), "--bucket", f"file://{tmp_path}/s"])
    assert_one_line_error(proc, "grid.learning_rates[1]: expected a number")


def test_unreachable_s3_endpoint():
    port = free_ports(1)[0]
    proc = run(["status", "--bucket", "s3://test", "--base-model", "tiny"],
               env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert_one_line_error(proc, "cannot reach the S3 endpoint")


@pytest.mark.s3
def test_bad_credentials_change_nothing(s3_server):
    c = s3_server.client()
    c.put_object(Bucket="test", Key="creds/nli-tiny/runs/x/spec.json", Body=b"{}")
    env = dict(s3_server.env(), AWS_SECRET_ACCESS_KEY="wrong")
    proc = run(["sweep", "--bucket", "s3://test/creds", "--base-model", "tiny"], env=env)
    assert_one_line_error(proc, "check AWS_ACCESS_KEY_ID")
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="test", Prefix="creds/")["Contents"]]
    assert keys == ["creds/nli-tiny/runs/x/spec.json"]


def test_debug_shows_the_traceback(tmp_path):
    proc = run(["--debug", "status", "--bucket", "gs://x"])
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_missing_ref_is_one_line(tmp_path):
    proc = run(["evaluate", "--base-model", "tiny", "--bucket", f"file://{tmp_path}/s", "--ref", "runs/nope/snapshots/00000001"])
    assert_one_line_error(proc, "model ref runs/nope/snapshots/00000001 does not exist")
