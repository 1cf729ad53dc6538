"""The FastAPI app the plugin mounts at `/v1/patient-ml` on the Airflow API server.

Its interactive docs (`/docs`, Swagger UI) load their JavaScript and CSS from this server
(`/docs-assets/`, the files of the `swagger-ui-bundle-v2` package), never from a CDN, so they
work on a machine without Internet access.

When the API server starts, the objects it has built by then (Airflow, its providers, this
plugin: about 730,000 in `benchmarks/api_load.py`'s server) are frozen out of Python's cyclic
garbage collector (`gc.freeze`), and thawed when it stops; Airflow enters the lifespan of every
FastAPI app a plugin mounts. Without it, every full collection walked that whole startup heap:
0.5-0.7 s during which no request of the process moved, the tail latency the benchmark measured.
Frozen objects are still freed by reference counting; only a reference cycle among them
outlives the process.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from patient_ml import __version__
from patient_ml.api.errors import install_error_handlers
from patient_ml.api.guards import BodySizeLimit
from patient_ml.api.routes_configs import router as configs_router
from patient_ml.api.routes_examples import router as examples_router
from patient_ml.api.routes_failure_cases import router as failure_cases_router
from patient_ml.api.routes_logs import router as logs_router
from patient_ml.api.routes_monitoring import router as monitoring_router
from patient_ml.api.routes_overview import router as overview_router
from patient_ml.api.routes_runs import router as runs_router
from patient_ml.api.routes_scoring import router as scoring_router
from patient_ml.hooks.airflow_assignees import install as install_assignee_resolver

URL_PREFIX = "/v1/patient-ml"

# The API docs' sections (OpenAPI tags), in reading order, and which routes belong to each (the
# first pattern a route's path matches; issue 31: every route was under "default").
API_TAGS: tuple[tuple[str, str, str], ...] = (
    ("Approvals", r"/approvals$", "Approve or reject an evaluated run (audited)."),
    (
        "Deployment",
        r"/(deploy-options|deployment|rollback|deployments)$",
        "Deploy an approved run, roll back to an earlier champion, the deployment history.",
    ),
    ("Predictions", r"/predictions$", "The deployed champion's predictions."),
    ("Model cards", r"/model-card(/|$)", "A run's model card (JSON, document, Markdown)."),
    (
        "Evaluation",
        r"/failure-cases(/|$)",
        "A run's most confident errors on the test set, with saliency maps.",
    ),
    ("Monitoring", r"/monitoring$", "The deployed champion's monitoring checks."),
    (
        "Examples and labels",
        r"^/datasets/[^/]+/examples",
        "A dataset's examples, their images, hints and labels.",
    ),
    (
        "Runs",
        r"^/models/[^/]+/runs(/|$)",
        "Start runs, read them, their trials, logs and model artifact.",
    ),
    ("Datasets", r"^/datasets(/|$)", "Dataset configs and their curation report."),
    ("Models", r"^/models(/|$)", "Model configs and what a caller may do with one."),
    (
        "Web UI",
        r"^/(model-summaries|dag-runs|dags)(/|$)",
        "Look-ups for the web pages: the Models table, Airflow DAG and DAG run ids.",
    ),
)


def tag_routes(app: FastAPI) -> None:
    """Give every API route its docs section (API_TAGS)."""
    import re

    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema and not route.tags:
            for tag, pattern, _ in API_TAGS:
                if re.search(pattern, route.path):
                    route.tags = [tag]
                    break


DOCS_ASSETS = "/docs-assets"


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its function's name (unique within the app)."""
    return route.name


@asynccontextmanager
async def freeze_startup_heap(_app: FastAPI) -> AsyncIterator[None]:
    """Lifespan: the objects alive once the server has started are left out of every later
    garbage collection (see the module docstring), until the server stops."""
    gc.collect()  # what startup left behind is freed now, not frozen
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=freeze_startup_heap,
        docs_url=None,  # served below with local assets
        redoc_url=None,  # ReDoc would load its script from a CDN
        title="Patient ML API",
        version=__version__,
        description="Models, datasets, runs, approvals and predictions of Patient ML for "
        "Airflow, wire-compatible with the reference Patient ML API. Authenticate with an "
        "Airflow JWT (`POST /auth/token`) as `Authorization: Bearer <token>`, or the UI cookie.",
        openapi_tags=[{"name": tag, "description": text} for tag, _, text in API_TAGS],
        # Operation ids are the route functions' names (`get_run`, not
        # `get_run_models__model_id__runs__run_id__get`), as in Airflow's own API: the web UI's
        # generated client (ui/src/client, `make ui-client`) names its functions after them.
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    # under FAB, the approvers' Required Actions get their ab_user ids as Airflow stores them
    install_assignee_resolver()
    app.add_middleware(BodySizeLimit)
    app.include_router(configs_router)
    app.include_router(runs_router)
    app.include_router(logs_router)
    app.include_router(examples_router)
    app.include_router(monitoring_router)
    app.include_router(scoring_router)
    app.include_router(overview_router)
    app.include_router(failure_cases_router)
    tag_routes(app)
    _serve_docs(app)
    return app


def _serve_docs(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )
