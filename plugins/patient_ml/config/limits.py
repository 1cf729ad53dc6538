"""Numeric limits of model configs, importable without pydantic (the DAG factory reads them)."""

from __future__ import annotations

MAX_TRIALS_LIMIT = 1000
MAX_PARALLEL_TRIALS = 64
