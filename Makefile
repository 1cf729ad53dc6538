# The two commands of the README:  `make demo` (main job)  and  `make test` (tests).
# Both set up everything they need in .venv on first use (Python >= 3.11 must be on PATH).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard plugins tests dags include benchmarks)

.PHONY: setup demo demo-stop test lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[test,samples]"
	@# stardist ships the nuclei image + mask used by the segmentation sample; its own heavy
	@# dependencies (TensorFlow, numba) are not needed to read two files, so --no-deps.
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps "stardist==0.9.2"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python include/demo.py $(DEMO_ARGS)

demo-stop:
	$(BIN)/python include/demo.py stop

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: setup
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
