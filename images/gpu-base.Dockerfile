# xlt-gpu-base: the layers that xlt-train and xlt-evaluate share. A CUDA PyTorch image (torch
# comes from it, never from the lock) plus the project wheel and its pinned dependencies.
#
# Build from the repository root (or `make images`; see images/README.md):
#   podman build -f images/gpu-base.Dockerfile \
#     --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t xlt-gpu-base:0.1.0-abc1234 .
#
# The HEALTHCHECK check does not apply: batch Jobs exit and Kubernetes reads their exit code.
# checkov:skip=CKV_DOCKER_2:batch job, no long-running service to probe; the exit code is the health signal
# CKV_DOCKER_7 (versioned base tag) cannot see through FROM ${ARG}; the ARG defaults below carry explicit versions.
# checkov:skip=CKV_DOCKER_7:the base comes from a build arg whose default has an explicit version tag

# The official PyTorch CUDA runtime image of the pinned torch (constraints.txt: torch 2.13.0).
ARG PYTORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

# ---- stage 1: the project wheel (sources never reach the final image) ----
FROM ${PYTORCH_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml ./
COPY jobs/ jobs/
COPY orchestrator/ orchestrator/
# the build backend (setuptools, per pyproject.toml) comes from the package index
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /tmp/build \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# ---- stage 2: the shared GPU layers ----
FROM ${PYTORCH_IMAGE}

ARG UID=10001

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Into the base's own Python, next to its CUDA torch: install-deps.sh drops torch (and its CUDA
# wheels) from the pins and fails if pip would replace the base's torch.
# COPY, not a bind mount: every builder then rebuilds these layers when the lock changes.
COPY constraints.txt pyproject.toml images/scripts/install-deps.sh images/scripts/check_pins.py /opt/xlt/
RUN --mount=type=secret,id=pip_ca \
    sh /opt/xlt/install-deps.sh requirements /opt/xlt/constraints.txt /opt/xlt/pyproject.toml

# the project itself in its own small layer: a code change rebuilds only this
COPY --from=wheel /wheels/ /opt/xlt/wheels/
RUN sh /opt/xlt/install-deps.sh project /opt/xlt/wheels /opt/xlt/constraints.txt

# The one-off job that fills the Hugging Face cache volume (images/README.md).
COPY images/scripts/fill_hf_cache.py /opt/xlt/fill_hf_cache.py

# The only writable paths: /scratch (TMPDIR, weights being read or written) and the Hugging
# Face cache volume (models and datasets, filled once; see images/README.md).
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
LABEL org.opencontainers.image.title="xlt-gpu-base" \
      org.opencontainers.image.description="Shared layers of the xlt-averaging train and evaluate images" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"

ENTRYPOINT ["python", "-m", "jobs"]
