"""The Airflow plugin (entry point `airflow.plugins`).

It serves the REST API under `/v1/patient-ml/` on the Airflow API server (`fastapi_apps`),
authenticated by Airflow's auth manager. The web UI (`external_views`) joins it later.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from patient_ml.api.app import URL_PREFIX, create_app


class PatientMLPlugin(AirflowPlugin):
    name = "patient_ml"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Patient ML API"}]
