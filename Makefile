# Set-up, demo, tests; images and cluster targets below.
#   make install   virtualenv in .venv with pinned dependencies (torch first: a CPU wheel where one is on disk)
#   make demo      the whole pipeline offline on the tiny preset (a few minutes on 2 cores)
#   make test      the test suite (offline; starts its own S3 server and Kubernetes API emulator)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_BUCKET ?= file://.demo/store

.PHONY: install demo test lint clean

install: $(BIN)/orchestrator

$(BIN)/orchestrator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: install
	$(BIN)/orchestrator pipeline --config configs/tiny-nli.yaml --bucket $(DEMO_BUCKET)

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/lint-imports

clean:
	rm -rf .demo .logs .cache
