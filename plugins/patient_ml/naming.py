"""Names derived from configs, importable without the ORM or pydantic (the DAG factory uses
them at parse time): model slugs and the DAG id of a model."""

from __future__ import annotations

import re

DAG_ID_PREFIX = "patient_ml__"
MONITOR_DAG_ID_PREFIX = "patient_ml_monitor__"
SCORING_DAG_ID_PREFIX = "patient_ml_score__"


def model_slug(name: str) -> str:
    """Stable, DAG-id-safe identifier derived from a model's (or dataset's) name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def dag_id_of(slug: str) -> str:
    return DAG_ID_PREFIX + slug


def monitor_dag_id_of(slug: str) -> str:
    """The DAG that monitors the model's deployed champion."""
    return MONITOR_DAG_ID_PREFIX + slug


def scoring_dag_id_of(slug: str) -> str:
    """The DAG that scores the dataset with the model's deployed champion (batch scoring)."""
    return SCORING_DAG_ID_PREFIX + slug


def slug_of_dag_id(dag_id: str | None) -> str | None:
    """The model slug of one of our DAG ids (training, monitor or scoring); None for any other
    DAG id."""
    for prefix in (DAG_ID_PREFIX, MONITOR_DAG_ID_PREFIX, SCORING_DAG_ID_PREFIX):
        if dag_id and dag_id.startswith(prefix):
            return dag_id[len(prefix) :]
    return None
