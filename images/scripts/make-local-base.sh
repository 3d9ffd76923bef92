#!/bin/sh
# Makes a local Debian bookworm base image with Python 3.11 (python3, venv), for building the
# averaging image where no registry is reachable (the smoke test's PYTHON_IMAGE). Needs root.
#
#   images/scripts/make-local-base.sh localhost/xlt-smoke-base:bookworm-py311 [podman|docker]
#
# DEBIAN_MIRROR overrides the mirror (default: http://deb.debian.org/debian). About 1-2 minutes.
set -eu
name=$1
container=${2:-podman}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    bookworm "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
tar -C "$work/rootfs" -c . | "$container" import --change 'CMD ["python3"]' - "$name"
