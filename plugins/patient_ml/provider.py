"""Provider metadata read by Airflow's ProvidersManager (entry point `apache_airflow_provider`)."""

from __future__ import annotations

from typing import Any

from patient_ml import __version__


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
