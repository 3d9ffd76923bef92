"""Builds the averaging image for real and runs it on a tiny store (opt-in: `make image-smoke`).

    XLT_IMAGE_SMOKE=1 .venv/bin/python -m pytest -s -m images tests/images/test_image_smoke.py

Needs podman (or docker: CONTAINER=docker) and, for the local base image, debootstrap and root
(apt-get install -y podman buildah runc debootstrap). No registry is needed: the base image is made
locally (images/scripts/make-local-base.sh; XLT_SMOKE_BASE names another) and torch comes from a
wheel in images/wheelhouse/ (XLT_TORCH_WHEEL, or `pip download` of the pinned version). The build
goes through `make image-average`, exactly as `make images` builds it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.images.conftest import check_run_averages, make_tiny_store

pytestmark = [
    pytest.mark.images,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.environ.get("XLT_IMAGE_SMOKE") != "1", reason="image builds are opt-in: make image-smoke (XLT_IMAGE_SMOKE=1)"),
]

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "images" / "wheelhouse"
BASE = os.environ.get("XLT_SMOKE_BASE", "localhost/xlt-smoke-base:bookworm-py311")
TAG = "smoke"
IMAGE = f"xlt-average:{TAG}"


def container() -> str:
    found = os.environ.get("CONTAINER") or shutil.which("podman") or shutil.which("docker")
    if not found:
        pytest.fail("no podman or docker: apt-get install -y podman buildah runc debootstrap")
    return found


def is_podman() -> bool:
    return Path(container()).name == "podman"


def run_flags() -> list[str]:
    # crun fails on some kernels' cgroup setup; runc with explicit ulimits works everywhere we tried
    default = "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024" if is_podman() else ""
    return os.environ.get("XLT_SMOKE_RUN_FLAGS", default).split()


def sh(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), text=True, capture_output=True, **kwargs)


def pins() -> dict[str, str]:
    lines = [l.split("#")[0].strip() for l in (REPO / "constraints.txt").read_text().splitlines()]
    return {l.partition("==")[0].lower().replace("_", "-"): l.partition("==")[2] for l in lines if l}


def ensure_base() -> None:
    if sh(container(), "image", "inspect", BASE).returncode == 0:
        return
    print(f"\nmaking the local base image {BASE} (debootstrap)", file=sys.stderr)
    made = sh(str(REPO / "images/scripts/make-local-base.sh"), BASE, container())
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]


def ensure_torch_wheel() -> None:
    version = pins()["torch"]
    if list(WHEELHOUSE.glob(f"torch-{version}-*.whl")):
        return
    given = os.environ.get("XLT_TORCH_WHEEL")
    if given:
        shutil.copy(given, WHEELHOUSE)
        return
    got = sh(sys.executable, "-m", "pip", "download", "--no-deps", f"torch=={version}", "-d", str(WHEELHOUSE))
    assert got.returncode == 0, f"no torch {version} wheel (set XLT_TORCH_WHEEL): {got.stderr[-2000:]}"


@pytest.fixture(scope="module")
def built_image():
    ensure_base()
    ensure_torch_wheel()
    ca = os.environ.get("PIP_CERT") or ("/etc/ssl/certs/ca-certificates.crt" if Path("/etc/ssl/certs/ca-certificates.crt").exists() else "")
    build_flags = " ".join(f for f in run_flags() if not f.startswith("--runtime") or is_podman())
    revision = sh("git", "rev-parse", "HEAD", cwd=REPO).stdout.strip()  # once: others may commit meanwhile
    started = time.monotonic()
    build = subprocess.run(
        ["make", "--no-print-directory", "image-average", f"CONTAINER={container()}", f"PYTHON_IMAGE={BASE}",
         f"IMAGE_REVISION={revision}",
         "TORCH_INDEX_URL=", f"IMAGE_TAG={TAG}", f"CONTAINER_BUILD_FLAGS={build_flags}", f"PIP_CA_BUNDLE={ca}"],
        cwd=REPO, text=True, capture_output=True,
    )
    seconds = time.monotonic() - started
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    size = int(sh(container(), "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    print(f"\nimage-smoke: built {IMAGE} in {seconds:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
    return IMAGE, revision


def test_pip_freeze_in_the_image_equals_the_pins(built_image):
    built_image, _ = built_image
    freeze = sh(container(), "run", "--rm", *run_flags(), "--network", "none", "--entrypoint", "pip", built_image, "freeze")
    assert freeze.returncode == 0, freeze.stderr
    locked = pins()
    installed = [l for l in freeze.stdout.splitlines() if l and not l.startswith("#")]
    project = [l for l in installed if l.lower().startswith("xlt-averaging")]
    assert len(project) == 1 and "xlt_averaging-0.1.0-" in project[0], project
    differences = []
    for line in installed:
        if line in project:
            continue
        name, _, version = line.partition("==")
        key = name.lower().replace("_", "-")
        if locked.get(key) != version:
            differences.append(f"{line} (constraints.txt: {locked.get(key, 'not pinned')})")
    assert not differences, "image differs from constraints.txt:\n" + "\n".join(differences)
    assert "torch==" + locked["torch"] in installed
    print(f"image-smoke: pip freeze: {len(installed)} distributions, all as pinned", file=sys.stderr)


def test_image_metadata(built_image):
    built_image, revision = built_image
    inspect = json.loads(sh(container(), "image", "inspect", built_image).stdout)[0]
    config = inspect.get("Config") or inspect["ContainerConfig"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "jobs"] and config["Cmd"] == ["average"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert "TMPDIR=/scratch" in config["Env"] and "HF_HOME=/hf-cache" in config["Env"]


def run_job(image: str, store: Path, scratch: Path, spec: dict) -> subprocess.CompletedProcess:
    """The job as a Kubernetes pod runs it: read-only root, only /scratch writable, no network, spec in JOB_SPEC.

    podman's --read-only would still mount a writable /tmp; --read-only-tmpfs=false removes it, so a
    job that ignored TMPDIR=/scratch fails here.
    """
    no_tmp = ["--read-only-tmpfs=false"] if is_podman() else []
    return sh(
        container(), "run", "--rm", *run_flags(), "--network", "none", "--read-only", *no_tmp,
        "-v", f"{scratch}:/scratch", "-v", f"{store}:/store", "-e", f"JOB_SPEC={json.dumps(spec)}", image,
    )


def test_the_image_averages_a_tiny_store(built_image, tmp_path):
    built_image, _ = built_image
    store, scratch = tmp_path / "store", tmp_path / "scratch"
    store.mkdir()
    scratch.mkdir()
    made = make_tiny_store(store)
    for path in [scratch, store, *store.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the job runs as UID 10001
    spec = {"experiment_uri": "file:///store", "task": "nli", "methods": ["ca"], "run_keys": list(made)}
    started = time.monotonic()
    result = run_job(built_image, store, scratch, spec)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    print(f"image-smoke: averaged {len(made)} runs in the container in {time.monotonic() - started:.1f} s", file=sys.stderr)
    check_run_averages(store, made)
    assert list((store / "logs").glob("*.log")), "the job's log was not copied into the store"

    missing = dict(spec, run_keys=["0123456789abcdef"])
    result = run_job(built_image, store, scratch, missing)
    assert result.returncode == 3, f"a missing run is permanent (exit 3), got {result.returncode}: {result.stderr[-2000:]}"
