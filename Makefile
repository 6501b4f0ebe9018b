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

NPM ?= npm
UI_DEPS := ui/node_modules/.installed
UI_SOURCES := $(shell find ui/src -type f 2>/dev/null) ui/index.html ui/vite.config.ts ui/tsconfig.json

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

# Running needs the services and their libraries only; the test, bench and lint tools (playwright,
# schemathesis, ruff, langgraph for the bench…) come with the targets that use them. `--inexact`:
# a run install keeps what a test install added.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock $(MEMBERS)
	$(UV) sync --frozen --no-dev --inexact --python $(PYTHON)
	@touch $@

$(VENV)/.synced-dev: $(UV) pyproject.toml uv.lock $(MEMBERS)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@ $(VENV)/.synced

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.synced ## install what running needs into .venv (uv, one lock)

.PHONY: install-dev
install-dev: $(VENV)/.synced-dev ## install what running needs and the test, bench and lint tools

BASE_IMAGE ?= python:3.11-slim-bookworm
# `make test` runs on this many pytest workers (a module's tests stay together: tests/conftest.py).
TEST_WORKERS ?= 2

$(UI_DEPS): ui/package.json ui/package-lock.json
	cd ui && $(NPM) ci --no-audit --no-fund
	@touch $@

ui/dist/index.html: $(UI_DEPS) $(UI_SOURCES)
	cd ui && $(NPM) run build

.PHONY: ui
ui: ui/dist/index.html ## build the Mission Board (npm ci from the lock, then vite build into ui/dist)

.PHONY: browser
browser: ## Debian's Chromium for the browser tests (apt-get install when it is missing)
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

.PHONY: up
up: install ## run the whole stack (embedded NATS; the LLM simulator unless OPENAI_API_KEY is set)
	@if command -v $(NPM) >/dev/null; then $(MAKE) --no-print-directory ui; \
		else echo "npm not found: the Mission Board is not built (the API works; install Node.js 20.19+ for the UI)"; fi
	AETHER_BASE_IMAGE="$${AETHER_BASE_IMAGE:-$(BASE_IMAGE)}" $(PY) -m aether_devstack up $(if $(SCALE),--scale $(SCALE))

.PHONY: test
test: install-dev ui browser ## run every test (UI components, unit, integration against a real nats-server, end to end)
	cd ui && $(NPM) run --silent typecheck && $(NPM) test --silent
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

.PHONY: images
images: install ## build every service's image, aether-<service> (BASE_IMAGE=aether-base:bookworm: a base made here)
	$(PY) -m aether_devstack images --base $(BASE_IMAGE) $(SERVICES)

.PHONY: k8s-secrets
k8s-secrets: install ## print the Secrets giving each service its own NATS user (kubectl apply -f -)
	@$(PY) -m aether_devstack nats-secrets $(if $(NAMESPACE),--namespace $(NAMESPACE))

.PHONY: bench
bench: install-dev ## makespan vs critical path (vs the Phase 1 loop and LangGraph), overhead, throughput, memory
	$(PY) -m aether_bench $(BENCH_ARGS)

.PHONY: chaos
chaos: install-dev ## kill every service at its worst moment, restart NATS, take the LLM down, partition a 3-node cluster (root; figures in artifacts/)
	$(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

.PHONY: check-llm
check-llm: install ## Aether against a real model here: llama.cpp + SmolLM2-135M (installs them once, ~10 min); not in make test
	$(PY) -m aether_devstack check-llm $(CHECK_LLM_ARGS)

.PHONY: fuzz
fuzz: install-dev ## a longer schemathesis run against the gateway (AETHER_FUZZ_SECONDS, default 600)
	AETHER_FUZZ_SECONDS=$${AETHER_FUZZ_SECONDS:-600} $(PY) -m pytest tests/e2e/test_api_fuzz.py -s

.PHONY: bench-workspace
bench-workspace: install-dev ## measure how large a task's workspace can get (files, bytes) before it degrades
	$(PY) scripts/measure_workspace.py $(if $(SIZES),--sizes $(SIZES))

# What `make lint` type-checks: every package of the monorepo (the tests are not).
TYPED := libs/contracts/aether_contracts libs/core/aether_core \
	services/container-manager/aether_container_manager services/executor/aether_executor \
	services/gateway/aether_gateway services/planner/aether_planner services/synthesizer/aether_synthesizer \
	tools/bench/aether_bench tools/cli/aether_cli tools/devstack/aether_devstack tools/simulator/aether_simulator

.PHONY: lint
lint: install-dev $(UI_DEPS) ## static checks
	$(VENV)/bin/ruff check libs services tools tests scripts
	$(VENV)/bin/lint-imports --no-cache  # the import rules in pyproject.toml ([tool.importlinter])
	$(VENV)/bin/mypy --cache-dir .mypy_cache $(TYPED)  # the types ([tool.mypy] in pyproject.toml)
	cd ui && $(NPM) run --silent typecheck

.PHONY: api-types
api-types: install-dev $(UI_DEPS) ## regenerate ui/openapi.json and the UI's types after changing the gateway's API
	$(PY) -m aether_gateway.openapi > ui/openapi.json
	cd ui && $(NPM) run --silent gen:api

.PHONY: lock
lock: $(UV) ## refresh uv.lock after changing dependencies
	$(UV) lock --python $(PYTHON)

.PHONY: clean
clean: ## remove the virtualenvs, the UI's build and local data
	rm -rf $(VENV) $(TOOLS) .aether ui/node_modules ui/dist
