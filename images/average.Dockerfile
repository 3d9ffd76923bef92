# xlt-average: the CPU-only, slim image of `python -m jobs average` (per-run CA, draw averages,
# uniform soups). Averaging streams tensors through memory and needs no GPU.
#
# Build from the repository root (or `make images`; see images/README.md):
#   podman build -f images/average.Dockerfile \
#     --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t xlt-average:0.1.0-abc1234 .
# Run:  podman run --rm -e JOB_SPEC="$(cat spec.json)" xlt-average:0.1.0-abc1234
#
# The HEALTHCHECK check does not apply: a batch Job's container exits and Kubernetes reads its exit code.
# checkov:skip=CKV_DOCKER_2:batch job, no long-running service to probe; the exit code is the health signal
# CKV_DOCKER_7 (versioned base tag) cannot see through FROM ${ARG}; the ARG defaults below carry explicit versions.
# checkov:skip=CKV_DOCKER_7:the base comes from a build arg whose default has an explicit version tag

# Any Debian-like image with python3 (>= 3.11) and its venv module.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: the project wheel (sources never reach the final image) ----
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml ./
COPY jobs/ jobs/
COPY orchestrator/ orchestrator/
# the build backend (setuptools, per pyproject.toml) comes from the package index
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /tmp/build \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# ---- stage 2: the job image ----
FROM ${PYTHON_IMAGE}

# A CPU build of torch: a requirement spec, installed from TORCH_INDEX_URL and from any wheel in
# images/wheelhouse/ (TORCH_INDEX_URL empty: from the wheelhouse only, no network).
ARG TORCH_SPEC="torch==2.13.0+cpu"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG UID=10001

# /opt/venv keeps the job's packages apart from the base's Python (Debian's is externally managed).
ENV PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv

# torch first, in its own layer: the largest and the least often changed
# DL3013 (pin pip versions): TORCH_SPEC is the pin, torch==2.13.0+cpu by default as in constraints.txt
# hadolint ignore=DL3013
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ -n "${TORCH_INDEX_URL}" ]; then set -- --index-url "${TORCH_INDEX_URL}"; else set -- --no-index; fi; \
    pip install --no-cache-dir --no-deps --find-links /wheelhouse "$@" "${TORCH_SPEC}"

# COPY, not a bind mount: every builder then rebuilds these layers when the lock changes.
COPY constraints.txt images/average.requirements.txt images/scripts/install-deps.sh images/scripts/check_pins.py /opt/xlt/
RUN --mount=type=secret,id=pip_ca \
    sh /opt/xlt/install-deps.sh requirements /opt/xlt/constraints.txt /opt/xlt/average.requirements.txt

# the project itself in its own small layer: a code change rebuilds only this
COPY --from=wheel /wheels/ /opt/xlt/wheels/
RUN sh /opt/xlt/install-deps.sh project /opt/xlt/wheels /opt/xlt/constraints.txt --strict

# The only writable paths: /scratch (TMPDIR, downloaded inputs, outputs before upload) and the
# Hugging Face cache (unused by averaging; kept for the same layout in every image).
RUN groupadd --gid "${UID}" xlt \
    && useradd --uid "${UID}" --gid "${UID}" --home-dir /scratch --no-create-home --shell /usr/sbin/nologin xlt \
    && install -d -m 0775 -o "${UID}" -g "${UID}" /scratch /hf-cache
ENV HOME=/scratch \
    TMPDIR=/scratch \
    XDG_CACHE_HOME=/scratch/.cache \
    HF_HOME=/hf-cache \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    XLT_PROGRESS=0
VOLUME ["/scratch", "/hf-cache"]
WORKDIR /scratch
USER ${UID}:${UID}

# Labels last: a new commit (REVISION) must not invalidate the install layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="xlt-average" \
      org.opencontainers.image.description="Snapshot averaging job of xlt-averaging (CPU): python -m jobs average" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"

ENTRYPOINT ["python", "-m", "jobs"]
CMD ["average"]
