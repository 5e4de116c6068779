# Headwater developer workflow. `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE_DIR ?= .state
PACKAGES := libs/contracts libs/core libs/runtime libs/sdk \
	services/spec-registry services/change-detector services/scheduler \
	services/executor services/lineage-indexer
XDIST ?= -n 3

.PHONY: help install run up test lint typecheck unit bench lock compose-up compose-down clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/headwater: requirements.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation $(foreach p,$(PACKAGES),-e $(p))
	touch $@

install: $(BIN)/headwater ## create .venv and install every lib and service (editable, pinned)

run: install ## start the embedded stack, apply the example pipeline and publish a partition
	$(BIN)/headwater demo --state-dir $(STATE_DIR)

up: install ## start the embedded stack only (Ctrl-C stops it)
	$(BIN)/headwater up --state-dir $(STATE_DIR)

lint: install ## ruff format check and lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install ## mypy strict over every lib and service
	$(BIN)/mypy libs/*/src services/*/src

test: lint typecheck ## lint, typecheck and the whole test suite on real servers
	$(BIN)/pytest $(XDIST) -q

unit: install ## unit tests only (no servers)
	$(BIN)/pytest -q tests/unit

bench: install ## benchmarks (speed and memory targets)
	$(BIN)/python -m tests.bench

lock: ## re-pin requirements.lock from the current .venv
	$(BIN)/pip freeze --exclude-editable | sed '1i # Pinned versions of every dependency (name==version). Regenerate: make lock' > requirements.lock

compose-up: ## the dev stack (needs a Docker engine; see README)
	docker compose --env-file .env up --build -d

compose-down: ## stop the dev stack
	docker compose down

clean: ## remove the virtualenv and the embedded state
	rm -rf $(VENV) $(STATE_DIR)
