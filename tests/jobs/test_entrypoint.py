"""The job entry point: spec from file, stdin or JOB_SPEC; exit codes 0 / 3 / 75."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from jobs.errors import EXIT_PERMANENT, EXIT_TEMPORARY
from tests.conftest import free_ports


def job(kind, spec_text=None, env=None, args=()):
    return subprocess.run([sys.executable, "-m", "jobs", kind, *args], input=spec_text, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def test_missing_field_is_permanent():
    proc = job("average", json.dumps({"experiment_uri": "file:///tmp/x", "methods": ["ca"]}), args=["--spec", "-"])
    assert proc.returncode == EXIT_PERMANENT
    assert "task: missing required field" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_spec_from_environment_and_uncommitted_run(tmp_path):
    spec = {"experiment_uri": f"file://{tmp_path}/exp", "task": "nli", "methods": ["ca"], "run_keys": ["0123456789abcdef"]}
    proc = job("average", env={"JOB_SPEC": json.dumps(spec)})
    assert proc.returncode == EXIT_PERMANENT
    assert "not finished" in proc.stderr or "not committed" in proc.stderr
    assert not (tmp_path / "exp" / "runs" / "0123456789abcdef" / "ca").exists()


def test_unreachable_storage_is_temporary():
    spec = {"experiment_uri": "s3://test/exp", "task": "nli", "methods": ["ca"], "run_keys": ["0123456789abcdef"]}
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_ports(1)[0]}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    proc = job("average", json.dumps(spec), env=env, args=["--spec", "-"])
    assert proc.returncode == EXIT_TEMPORARY, proc.stderr


def test_no_spec_at_all():
    env = {k: v for k, v in os.environ.items() if k != "JOB_SPEC"}
    proc = subprocess.run([sys.executable, "-m", "jobs", "train"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == EXIT_PERMANENT and "no spec" in proc.stderr
