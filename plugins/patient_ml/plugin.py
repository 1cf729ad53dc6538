"""The Airflow plugin (entry point `airflow.plugins`).

Later issues attach the REST API (`fastapi_apps`) and the web UI (`external_views`) here; for
now it registers the package with Airflow so `airflow plugins` lists it.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class PatientMLPlugin(AirflowPlugin):
    name = "patient_ml"
