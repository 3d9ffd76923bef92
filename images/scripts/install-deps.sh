#!/bin/sh
# Installs pinned dependencies, then the project wheel, into the image's Python; shared by every image.
#
#   install-deps.sh requirements CONSTRAINTS pyproject.toml|REQUIREMENTS_FILE
#   install-deps.sh project WHEEL_DIR CONSTRAINTS [--strict]
#
# "requirements" installs the project's runtime dependencies (pyproject.toml: the GPU images) or
# a subset (a requirements file: the slim averaging image), every version from CONSTRAINTS
# (constraints.txt) except torch, which must already be installed (the PyTorch base image, or
# the TORCH_SPEC step of the averaging image) and is checked to be left untouched. "project"
# installs the project wheel with --no-deps (its own layer: a code change rebuilds only that)
# and checks every installed version against CONSTRAINTS (check_pins.py).
set -eu
here=$(dirname "$0")

# pip trusts the CA bundle given as the build secret pip_ca (a proxy that re-signs TLS), if any.
if [ -s /run/secrets/pip_ca ]; then
    export PIP_CERT=/run/secrets/pip_ca
fi

torch_version() {
    python3 -c 'import importlib.metadata as m; print(m.version("torch"))'
}

case "$1" in
requirements)
    constraints=$2
    requirements=$3
    # torch and its CUDA runtime wheels come from the base, never from the lock: drop their pins.
    grep -v -i -E '^(torch|triton|nvidia-[a-z0-9-]+)==' "$constraints" > /tmp/pins.txt
    case "$requirements" in
    *.toml)
        # the runtime dependencies and the e5 extra (the multilingual-e5-small preset, docs/models.md)
        python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["e5"]))' \
            "$requirements" > /tmp/requirements.txt ;;
    *)
        cp "$requirements" /tmp/requirements.txt ;;
    esac
    before=$(torch_version)
    pip install --no-cache-dir -c /tmp/pins.txt -r /tmp/requirements.txt
    after=$(torch_version)
    rm -f /tmp/pins.txt /tmp/requirements.txt
    if [ "$before" != "$after" ]; then
        echo "install-deps.sh: torch changed from $before to $after; the base's torch must be kept" >&2
        exit 1
    fi
    ;;
project)
    pip install --no-cache-dir --no-deps "$2"/*.whl
    python3 "$here/check_pins.py" "$3" ${4:-}
    ;;
*)
    echo "usage: install-deps.sh requirements CONSTRAINTS FILE | project WHEEL_DIR CONSTRAINTS [--strict]" >&2
    exit 2
    ;;
esac
