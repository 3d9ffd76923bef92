# xlt-evaluate: Evaluation job: python -m jobs evaluate (and greedy-soup / fused-eval averaging).
# Everything but the labels and the default command lives in the shared xlt-gpu-base image.
#
# Build from the repository root after xlt-gpu-base (or `make images`; see images/README.md):
#   podman build -f images/evaluate.Dockerfile --build-arg GPU_BASE=xlt-gpu-base:0.1.0-abc1234 \
#     -t xlt-evaluate:0.1.0-abc1234 .
#
# The HEALTHCHECK check does not apply: a batch Job's container exits and Kubernetes reads its exit code.
# checkov:skip=CKV_DOCKER_2:batch job, no long-running service to probe; the exit code is the health signal
# CKV_DOCKER_7 (versioned base tag) cannot see through FROM ${ARG}; the ARG defaults below carry explicit versions.
# checkov:skip=CKV_DOCKER_7:the base comes from a build arg whose default has an explicit version tag

# images/gpu-base.Dockerfile, tagged like this image (make images passes the exact tag).
ARG GPU_BASE=xlt-gpu-base:0.1.0

FROM ${GPU_BASE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG UID=10001

LABEL org.opencontainers.image.title="xlt-evaluate" \
      org.opencontainers.image.description="Evaluation job of xlt-averaging (GPU): python -m jobs evaluate (and greedy-soup / fused-eval averaging)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"

# as in the base, restated so that this file says who it runs as
USER ${UID}:${UID}
ENTRYPOINT ["python", "-m", "jobs"]
CMD ["evaluate"]
