"""Numeric limits of model configs, importable without pydantic (the DAG factory reads them)."""

from __future__ import annotations

MAX_TRIALS_LIMIT = 1000
MAX_PARALLEL_TRIALS = 64

# Config documents (files, REST bodies, stored rows): see docs/configs.md (input limits).
MAX_CONFIG_BYTES = 1_000_000  # a config file or REST body; real configs are a few kB
MAX_CONFIG_NODES = 20_000  # YAML/JSON values after alias expansion (an alias bomb is refused)
MAX_CONFIG_DEPTH = 32  # nesting of mappings and lists
MAX_NAME_LENGTH = 128  # names, label names, categorical values, schedules
MAX_DESCRIPTION_LENGTH = 4000  # dataset and model descriptions
MAX_LABEL_DESCRIPTION_LENGTH = 1000
MAX_CODE_LENGTH = 512  # one FHIR token of trainingDataFilter.codes
MAX_URI_LENGTH = 2048
MAX_LIST_ITEMS = 1000  # values of one categorical hyperparameter
MAX_SEARCH_PARAMETERS = 100
