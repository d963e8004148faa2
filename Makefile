# One command surface. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run serve token migrate test lint format lock bench bench-quick bench-instructions deploy-lint container-smoke fuzz cluster cluster-test test-pgbouncer

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies

run: $(STAMP) ## Serve the API (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/python -m app serve

serve: run

token: $(STAMP) ## The development user's access token on stdout (the README quickstart uses it)
	@$(BIN)/python -m app token

migrate: $(STAMP) ## Apply database migrations
	$(BIN)/python -m app migrate

test: $(STAMP) ## Run the whole test suite (TEST_DATABASE_URL, else embedded PostgreSQL)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff check, ruff format --check, mypy strict, the import contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: ## Re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet '.[dev,bench]'
	.venv-lock/bin/python -m pip freeze --exclude items-service > requirements.lock
	rm -rf .venv-lock

BENCH_ARGS ?=

bench: $(STAMP) ## Benchmark against the raw Sanic baseline (PostgreSQL at 127.0.0.1; BENCH_ARGS=...)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: $(STAMP) ## One short benchmark round (about a minute)
	$(BIN)/python bench/run.py --rounds 1 --duration 5 --warmup 2 $(BENCH_ARGS)

bench-instructions: $(STAMP) ## Instructions per cached GET by id under callgrind, per layer (a few minutes)
	$(BIN)/python bench/instructions.py --variant no-rate-limit:RATE_LIMIT=off --variant no-access-log:ACCESS_LOG=false --variant no-metrics:METRICS_ENABLED=false $(BENCH_ARGS)

deploy-lint: ## Lint Dockerfile, compose file, Kubernetes manifests and deploy scripts
	scripts/deploy-lint.sh

container-smoke: ## Build the image and run it (and docker compose) for real; root, installs docker.io
	scripts/container-smoke.sh

fuzz: $(STAMP) ## Fuzz the API against its OpenAPI document for 10 minutes (schemathesis, all checks)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} FUZZ_SEED= $(BIN)/python -m pytest -p no:cacheprovider -m contract tests/contract/test_schemathesis.py

cluster: $(STAMP) ## nginx + 2 instances (+ PgBouncer) on this machine (root; Ctrl-C stops, kill -HUP: rolling restart)
	$(BIN)/python deploy/local-cluster/localcluster.py up $(CLUSTER_ARGS)

cluster-test: $(STAMP) ## Only the scale-out tests through nginx and PgBouncer (~50 s)
	$(BIN)/python -m pytest -m cluster tests/cluster

test-pgbouncer: $(STAMP) ## The API suites with their database behind PgBouncer (transaction mode)
	$(BIN)/python deploy/local-cluster/localcluster.py with-pgbouncer -- $(BIN)/python -m pytest -q tests/api/items tests/api/test_idempotency.py
