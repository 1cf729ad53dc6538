"""Names derived from configs, importable without the ORM or pydantic (the DAG factory uses
them at parse time): model slugs and the DAG id of a model."""

from __future__ import annotations

import re

DAG_ID_PREFIX = "patient_ml__"


def model_slug(name: str) -> str:
    """Stable, DAG-id-safe identifier derived from a model's (or dataset's) name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def dag_id_of(slug: str) -> str:
    return DAG_ID_PREFIX + slug
