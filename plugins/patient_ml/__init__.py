"""Patient ML for Airflow: FHIR-curated image datasets, tuned in containers, approved, deployed."""

from __future__ import annotations

__version__ = "0.1.0"
