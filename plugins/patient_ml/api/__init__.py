"""The REST API, wire-compatible with the reference Patient ML API, served by the Airflow API
server under `/v1/patient-ml/` (the plugin's `fastapi_apps`). Authentication and authorization
go through Airflow's auth manager; every rule lives in `patient_ml.services`."""
