"""Checks that the Python packages installed in an image have exactly the versions of constraints.txt.

    python3 check_pins.py CONSTRAINTS [--strict]

Every installed distribution that the constraints pin must have the pinned version. With
--strict (the averaging image, whose whole environment comes from the lock) every installed
distribution must also be pinned, except the packaging tools and the project itself. torch is
checked only where it is pinned with the same local build tag (+cpu); a CUDA base's torch is
its own. Exit status 1 lists every difference.
"""
from __future__ import annotations

import importlib.metadata
import re
import sys

PROJECT = "xlt-averaging"
TOOLS = {"pip", "setuptools", "wheel", "distribute"}  # venv tooling; `pip freeze` hides them too


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: str) -> dict[str, str]:
    pins = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, version = line.partition("==")
            if not sep:
                raise SystemExit(f"{path}: not a name==version pin: {line!r}")
            pins[normalize(name)] = version.strip()
    return pins


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    pins = read_pins(argv[0])
    strict = "--strict" in argv[1:]
    installed = {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    problems = []
    for name, version in sorted(installed.items()):
        if name in TOOLS or name == PROJECT:
            continue
        if name not in pins:
            if strict:
                problems.append(f"{name}=={version} is installed but not pinned")
            continue
        if name == "torch" and pins[name].partition("+")[2] != version.partition("+")[2]:
            continue  # a CUDA base's torch (+cu12x) against the lock's CPU build: the base decides
        if version != pins[name]:
            problems.append(f"{name}=={version} is installed, constraints pin {pins[name]}")
    for line in problems:
        print(f"check_pins: {line}", file=sys.stderr)
    print(f"check_pins: {len(installed)} distributions, {len(problems)} differences from {argv[0]}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
