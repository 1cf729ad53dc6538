"""Airflow DAG factory of Patient ML: one DAG per stored model config (`patient_ml__<slug>`).

Each DAG runs curate → tune (mapped trial workers) → evaluate → await_approval → deploy → record
for its model. Add, change or delete a model with `patient-ml models create|update|delete` (or
the REST API) and the DAG follows on the next parse. The arguments below set how every model's
pipeline runs (see `patient_ml.factory.FactoryOptions`); the product DB comes from
PATIENT_ML_DATABASE_URL, PATIENT_ML_CONN_ID or the SQLite default under PATIENT_ML_HOME.
"""

from __future__ import annotations

from patient_ml.factory import build_dags

build_dags(
    globals(),
    # backend="auto",              # or "local" / "docker"; default PATIENT_ML_BACKEND
    # patient_ml_conn_id="patient_ml_default",
    # artifact_uri="s3://bucket/patient-ml",
    # retries=1,
    # approval_poll_interval=10.0,
)
