"""Config models shared by the DAG factory, the CLI and the REST API.

The names below load on first use, so `patient_ml.config.limits` (read by the DAG factory at
parse time) does not pull in pydantic and every config model.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names' types, for the type checker (loaded on first use at run time)
    from patient_ml.config.loading import load_config_file as load_config_file
    from patient_ml.config.loading import parse_dataset_config as parse_dataset_config
    from patient_ml.config.loading import parse_model_config as parse_model_config
    from patient_ml.config.models import DatasetConfig as DatasetConfig
    from patient_ml.config.models import ModelConfig as ModelConfig

_EXPORTS = {
    "DatasetConfig": "patient_ml.config.models",
    "ModelConfig": "patient_ml.config.models",
    "load_config_file": "patient_ml.config.loading",
    "parse_dataset_config": "patient_ml.config.loading",
    "parse_model_config": "patient_ml.config.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'patient_ml.config' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
