# crossfade: run `make help` to list targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==0.13.9"
	$(BIN)/uv pip install --python $(BIN)/python --quiet --require-hashes -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create .venv and install the pinned dependencies (requirements.lock)

.PHONY: lock
lock: ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra test --extra lint --extra plot \
	  --python-version 3.11 --generate-hashes -q -o requirements.lock

.PHONY: testbins
testbins: ## Build kube-apiserver, etcd and helm from pinned Go modules into .cache/bin
	hack/testenv.sh
	hack/upstream-crds.sh >/dev/null
	hack/policy-tools.sh >/dev/null

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict, import-linter, yamllint, hadolint, helm lint, CRD drift
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/yamllint -s crds examples helm/crossfade/values.yaml helm/crossfade/Chart.yaml \
	  tests/packaging/values .checkov.yaml .hadolint.yaml
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m crossfade.api.generate --check
	cmp crds/inferencepools.crossfade.dev.yaml helm/crossfade/crds/inferencepools.crossfade.dev.yaml
	@if [ -x .cache/bin/helm ]; then .cache/bin/helm lint --strict --kube-version 1.36.0 helm/crossfade; \
	  else echo "helm not built yet (make testbins); helm lint runs in the test suite"; fi

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format operator tests bench
	$(BIN)/ruff check --fix operator tests bench

.PHONY: crds
crds: $(STAMP) ## Generate crds/ and docs/api.md from the pydantic API models
	$(BIN)/python -m crossfade.api.generate
	cp crds/inferencepools.crossfade.dev.yaml helm/crossfade/crds/

.PHONY: pytest
pytest: $(STAMP) testbins ## Run the pytest suite only (PYTEST_ARGS=... to select)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: lint pytest ## Everything CI runs: lint, type checks and the whole pytest suite

.PHONY: demo
demo: $(STAMP) testbins ## Start a sandbox (real apiservers + fakes), run an outage drill, clean up
	$(BIN)/python -m crossfade.demo $(DEMO_ARGS)

.PHONY: bench
bench: $(STAMP) testbins ## Run the benchmarks; results in bench/results/
	$(BIN)/python -m bench

.PHONY: clean
clean: ## Remove the venv and caches (keeps .cache/ with the Go builds)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
