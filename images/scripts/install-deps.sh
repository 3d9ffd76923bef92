#!/bin/sh
# Installs the project wheel and its pinned dependencies into the image's Python; shared by every image.
#
#   install-deps.sh WHEEL_DIR CONSTRAINTS [REQUIREMENTS_FILE]
#
# Without REQUIREMENTS_FILE (the GPU images) the project wheel is installed with all its
# dependencies. With one (the slim averaging image) only those requirements are installed, and the
# project wheel with --no-deps. Every version comes from CONSTRAINTS (constraints.txt) except
# torch, which must already be installed (the PyTorch base image, or the TORCH_SPEC step of the
# averaging image) and is checked to be left untouched. Ends with check_pins.py.
set -eu
wheel_dir=$1
constraints=$2
requirements=${3:-}
here=$(dirname "$0")

# pip trusts the CA bundle given as the build secret pip_ca (a proxy that re-signs TLS), if any.
if [ -s /run/secrets/pip_ca ]; then
    export PIP_CERT=/run/secrets/pip_ca
fi

# torch and its CUDA runtime wheels come from the base, never from the lock: drop their pins.
grep -v -i -E '^(torch|triton|nvidia-[a-z0-9-]+)==' "$constraints" > /tmp/pins.txt

torch_before=$(python3 -c 'import importlib.metadata as m; print(m.version("torch"))')

if [ -n "$requirements" ]; then
    pip install --no-cache-dir -c /tmp/pins.txt -r "$requirements"
    pip install --no-cache-dir --no-deps "$wheel_dir"/*.whl
    strict=--strict
else
    pip install --no-cache-dir -c /tmp/pins.txt "$wheel_dir"/*.whl
    strict=
fi

torch_after=$(python3 -c 'import importlib.metadata as m; print(m.version("torch"))')
if [ "$torch_before" != "$torch_after" ]; then
    echo "install-deps.sh: torch changed from $torch_before to $torch_after; the base's torch must be kept" >&2
    exit 1
fi
python3 "$here/check_pins.py" "$constraints" $strict
rm -f /tmp/pins.txt
