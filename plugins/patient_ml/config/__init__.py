"""Config models shared by the DAG factory, the CLI and the REST API."""

from __future__ import annotations

from patient_ml.config.loading import load_config_file, parse_dataset_config, parse_model_config
from patient_ml.config.models import DatasetConfig, ModelConfig

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "load_config_file",
    "parse_dataset_config",
    "parse_model_config",
]
