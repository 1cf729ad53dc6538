"""The FastAPI app the plugin mounts at `/v1/patient-ml` on the Airflow API server."""

from __future__ import annotations

from fastapi import FastAPI

from patient_ml import __version__
from patient_ml.api.errors import install_error_handlers
from patient_ml.api.routes_configs import router as configs_router
from patient_ml.api.routes_examples import router as examples_router
from patient_ml.api.routes_logs import router as logs_router
from patient_ml.api.routes_overview import router as overview_router
from patient_ml.api.routes_runs import router as runs_router

URL_PREFIX = "/v1/patient-ml"


def create_app() -> FastAPI:
    app = FastAPI(
        title="Patient ML API",
        version=__version__,
        description="Models, datasets, runs, approvals and predictions of Patient ML for "
        "Airflow, wire-compatible with the reference Patient ML API. Authenticate with an "
        "Airflow JWT (`POST /auth/token`) as `Authorization: Bearer <token>`, or the UI cookie.",
    )
    install_error_handlers(app)
    app.include_router(configs_router)
    app.include_router(runs_router)
    app.include_router(logs_router)
    app.include_router(examples_router)
    app.include_router(overview_router)
    return app
