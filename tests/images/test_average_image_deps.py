"""The slim averaging image installs only images/average.requirements.txt: the average job must need nothing else.

    .venv/bin/python -m pytest -q tests/images/test_average_image_deps.py

Runs the average job on a tiny store here, with every other installed distribution made
unimportable; a new import in the averaging path fails here instead of in the image (a few seconds).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


BLOCKED_RUN = r"""
import importlib.abc, importlib.metadata as md, json, re, sys
allowed = set(json.loads(sys.argv[1]))
owners = md.packages_distributions()
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()

class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        dists = {norm(d) for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"{top} (from {sorted(dists)}) is not installed in the averaging image", name=name)
        return None

sys.meta_path.insert(0, NotInImage())
from jobs.__main__ import main
sys.exit(main(["average", "--spec", sys.argv[2]]))
"""


def requirement_closure(names: list[str]) -> set[str]:
    """The installed distributions that `names` pull in (what pip installs for them)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    closure, todo = set(), [normalize(n) for n in names]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        for r in md.requires(name) or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalize(req.name))
    return closure


def test_the_average_job_runs_with_only_the_averaging_image_packages(tiny_store, tmp_path):
    """The slim image installs images/average.requirements.txt only: the job must not need anything else.

    Runs the average job here with every other installed distribution made unimportable (optional
    imports, such as torch's of numpy, then fail quietly, as in the image).
    """
    from packaging.requirements import Requirement

    from tests.images.conftest import check_run_averages

    root, made = tiny_store
    lines = [l.split("#")[0].strip() for l in (IMAGES / "average.requirements.txt").read_text().splitlines()]
    allowed = requirement_closure([Requirement(l).name for l in lines if l]) | {"xlt-averaging"}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"experiment_uri": root.as_uri(), "task": "nli", "methods": ["ca"], "run_keys": list(made)}))
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, json.dumps(sorted(allowed)), str(spec)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, f"add what is missing to images/average.requirements.txt:\n{result.stderr[-3000:]}"
    check_run_averages(root, made)
