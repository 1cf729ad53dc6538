"""Provider metadata read by Airflow's ProvidersManager (entry point `apache_airflow_provider`)."""

from __future__ import annotations

from typing import Any

from patient_ml import __version__
from patient_ml.settings import SECTION, catalog


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "patient-ml-airflow",
        "name": "Patient ML",
        "description": "Train, evaluate, approve and deploy image models on FHIR patient data.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "patient_ml_db",
                "hook-class-name": "patient_ml.hooks.product_db.ProductDatabaseHook",
                "hook-name": "Patient ML product database",
            },
            {
                "connection-type": "fhir",
                "hook-class-name": "patient_ml.hooks.fhir.FhirHook",
                "hook-name": "FHIR server",
            },
            {
                "connection-type": "patient_ml_mlflow",
                "hook-class-name": "patient_ml.hooks.mlflow_tracking.MlflowHook",
                "hook-name": "MLflow tracking server (Patient ML mirror)",
            },
        ],
        "config": {SECTION: config_section()},
        "hooks": [
            {
                "integration-name": "Patient ML",
                "python-modules": [
                    "patient_ml.hooks.product_db",
                    "patient_ml.hooks.fhir",
                    "patient_ml.hooks.mlflow_tracking",
                ],
            }
        ],
    }


def config_section() -> dict[str, Any]:
    """The `[patient_ml]` section from `settings.yaml`: `airflow config list` shows it. No
    option has a default here: the product computes its defaults (some from other settings),
    and an Airflow default would hide the PATIENT_ML_* environment variables."""
    options = {
        key: {
            "description": f"{item['description'].rstrip('.')}. Default: {item['default']}. "
            f"Environment: PATIENT_ML_{key.upper()} or AIRFLOW__PATIENT_ML__{key.upper()}.",
            "version_added": None,
            "type": item["type"],
            "example": None,
            "default": None,
        }
        for key, item in catalog().items()
    }
    return {"description": "Patient ML for Airflow (docs: configuration.md).", "options": options}
