# Aether: `make up` runs the whole stack, `make test` runs every test. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

MEMBERS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock $(MEMBERS)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.synced ## install Python dependencies into .venv (uv, one lock)

BASE_IMAGE ?= python:3.11-slim-bookworm

.PHONY: up
up: install ## run the whole stack (embedded NATS; the LLM simulator unless OPENAI_API_KEY is set)
	AETHER_BASE_IMAGE="$${AETHER_BASE_IMAGE:-$(BASE_IMAGE)}" $(PY) -m aether_devstack up $(if $(SCALE),--scale $(SCALE))

.PHONY: test
test: install ## run every test (unit, integration against a real nats-server, end to end)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: images
images: install ## build every service's image, aether-<service> (BASE_IMAGE=aether-base:bookworm: a base made here)
	$(PY) -m aether_devstack images --base $(BASE_IMAGE) $(SERVICES)

.PHONY: bench
bench: install ## makespan vs critical path (vs the Phase 1 loop and LangGraph), overhead, throughput, memory
	$(PY) -m aether_bench $(BENCH_ARGS)

.PHONY: chaos
chaos: install ## kill every service at its worst moment, restart NATS, take the LLM down (figures in artifacts/)
	$(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: install ## a longer schemathesis run against the gateway (AETHER_FUZZ_SECONDS, default 600)
	AETHER_FUZZ_SECONDS=$${AETHER_FUZZ_SECONDS:-600} $(PY) -m pytest tests/e2e/test_api_fuzz.py -s

.PHONY: bench-workspace
bench-workspace: install ## measure how large a task's workspace can get (files, bytes) before it degrades
	$(PY) scripts/measure_workspace.py $(if $(SIZES),--sizes $(SIZES))

.PHONY: lint
lint: install ## static checks
	$(VENV)/bin/ruff check libs services tools tests scripts

.PHONY: lock
lock: $(UV) ## refresh uv.lock after changing dependencies
	$(UV) lock --python $(PYTHON)

.PHONY: clean
clean: ## remove the virtualenvs and local data
	rm -rf $(VENV) $(TOOLS) .aether
