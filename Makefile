# The two commands of the README:  `make demo` (main job)  and  `make test` (tests).
# Both set up everything they need in .venv on first use (Python >= 3.11 must be on PATH).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard plugins tests dags include benchmarks)
# The web UI (ui/, Vite + React) is built into the package (plugins/patient_ml/ui/static/); npm
# and Node 20+ must be on PATH. Rebuilt when its sources or lockfile change.
DOCS_SITE ?= site
UI_BUILT := plugins/patient_ml/ui/static/index.html
UI_SOURCES := $(shell find ui/src ui/public -type f 2>/dev/null) ui/index.html ui/vite.config.ts ui/tsconfig.json
UI_MODULES := ui/node_modules/.package-lock.json

# `make test` runs pytest on this many worker processes (pytest-xdist, `--dist loadgroup`: the
# end-to-end tests stay together on one worker with one Airflow, the compose test starts at once
# on the other, the rest fill the gaps; tests/conftest.py). 0: one process.
PYTEST_WORKERS ?= 2

TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup ui ui-client ui-test demo demo-chain demo-stop test lint docs format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[test,samples,bench,docs,lineage,mlflow]"
	@# stardist ships the nuclei image + mask used by the segmentation sample; its own heavy
	@# dependencies (TensorFlow, numba) are not needed to read two files, so --no-deps.
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps "stardist==0.9.2"
	@# PyTorch (CPU) for the reference trainers, which the local backend runs with this venv's
	@# interpreter. Through pip, not uv: pip reads the machine's configured wheel folder, which
	@# holds the CPU wheel (uv does not see it). Never a plain `torch` requirement: on PyPI it
	@# pulls the CUDA libraries; elsewhere set TORCH_PIP_ARGS="--index-url
	@# https://download.pytorch.org/whl/cpu".
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	@touch $(STAMP)

$(UI_MODULES): ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error

$(UI_BUILT): $(UI_MODULES) $(UI_SOURCES)
	cd ui && npm run build --silent

ui: $(UI_BUILT)

# The UI's API client (ui/src/client: types, SDK, TanStack Query options) from the API's OpenAPI
# document (ui/openapi.json, written from the FastAPI app without a server). Run it after changing
# a route or a response model, and commit both; tests/ui/test_generated_client.py checks them.
ui-client: $(STAMP) $(UI_MODULES)
	$(BIN)/python include/write_openapi.py
	cd ui && npm run generate-client --silent

ui-test: $(UI_MODULES)
	cd ui && npm test --silent

setup: $(STAMP) $(UI_BUILT)

demo: setup
	$(BIN)/python include/demo.py $(DEMO_ARGS)

demo-chain: setup  ## make demo, run 1 only, then batch scoring feeding a second, chained model
	$(BIN)/python include/demo.py --runs 1 --chain $(DEMO_ARGS)

demo-stop:
	$(BIN)/python include/demo.py stop

test: setup lint ui-test
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(DOCS_SITE)

# The documentation site (mkdocs.yml, docs/): strict, so a broken link or anchor fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(DOCS_SITE)

format: setup
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) var site .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .grimp_cache ui/node_modules plugins/patient_ml/ui/static
