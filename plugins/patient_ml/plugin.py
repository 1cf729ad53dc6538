"""The Airflow plugin (entry point `airflow.plugins`).

- `fastapi_apps`: the REST API under `/v1/patient-ml/` and the web UI's page and assets under
  `/patient-ml-ui/`, both on the Airflow API server and authenticated by Airflow's auth manager.
- `external_views`: Airflow's UI shows the web UI in its own pages, same origin: a "Patient ML"
  entry in the navigation (the Models table), a "Patient ML" tab on every DAG (the model of a
  `patient_ml__<model>` DAG) and on every DAG run (that Patient ML run). Airflow fills in
  `{DAG_ID}` and `{RUN_ID}`; other DAGs' tabs say they are not Patient ML models.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from patient_ml.api.app import URL_PREFIX, create_app
from patient_ml.ui.app import URL_PREFIX as UI_PREFIX
from patient_ml.ui.app import create_ui_app

ICON = f"{UI_PREFIX}/assets/icon.svg"
ICON_DARK = f"{UI_PREFIX}/assets/icon-dark.svg"

EXTERNAL_VIEWS = [
    {
        "name": "Patient ML",
        "href": f"{UI_PREFIX}/?view=models",
        "destination": "nav",
        "url_route": "patient-ml",
        "icon": ICON,
        "icon_dark_mode": ICON_DARK,
    },
    {
        "name": "Patient ML",
        "href": f"{UI_PREFIX}/?view=model&dagId={{DAG_ID}}",
        "destination": "dag",
        "url_route": "patient-ml-model",
        "icon": ICON,
        "icon_dark_mode": ICON_DARK,
    },
    {
        "name": "Patient ML",
        "href": f"{UI_PREFIX}/?view=run&dagId={{DAG_ID}}&dagRunId={{RUN_ID}}",
        "destination": "dag_run",
        "url_route": "patient-ml-run",
        "icon": ICON,
        "icon_dark_mode": ICON_DARK,
    },
]


class PatientMLPlugin(AirflowPlugin):
    name = "patient_ml"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Patient ML API"},
        {"app": create_ui_app(), "url_prefix": UI_PREFIX, "name": "Patient ML web UI"},
    ]
    external_views = EXTERNAL_VIEWS
