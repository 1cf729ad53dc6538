"""One real Airflow deployment shared by the end-to-end tests of this folder (started once per
test session, ~20 s): API server, scheduler, DAG processor and triggerer as separate processes on
the repository's `dags/`, PostgreSQL as the metadata DB and product DB when reachable (as in CI),
SQLite otherwise, the local training backend.

Each test module registers its own datasets and models through the product (services, CLI or
REST API); the DAG processor builds their DAGs on its next parse.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from include.airflow_stack import AirflowStack, ApiClient, openlineage_file_transport
from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import Model
from patient_ml.deploy import stop_old_endpoints
from tests.conftest import ADMIN_URL, REPO_ROOT, _postgres_unavailable_reason

# A training/inference image name in the reference API's AWS ECR form (the reference client
# validates trainingImage/inferenceImage against it); the local backend maps its repository to
# the reference image-classification trainer folder (PATIENT_ML_LOCAL_TRAINERS).
ECR_IMG_CLF_REPOSITORY = "123456789012.dkr.ecr.us-east-1.amazonaws.com/img-clf-trainer"
IMG_CLF_TRAINER = REPO_ROOT / "include" / "trainers" / "img_clf"


@dataclass
class E2EDeployment:
    stack: AirflowStack
    api: ApiClient  # admin's JWT
    engine: Engine  # the product DB
    root: Path  # this session's scratch folder
    sources: Path  # PATIENT_ML_ALLOWED_FILE_ROOTS: put the images curation may read here
    lineage_events: Path | None  # OpenLineage's file transport (None: provider not installed)
    mlflow_url: str | None = None  # the MLflow server the runs are mirrored to (None: no mlflow)

    def wait_for_dag(self, dag_id: str, *, unpause: bool = True) -> None:
        """Until the DAG processor has built `dag_id`; then unpause it (DAGs start paused)."""
        self.stack.wait_for(
            lambda: self.api.get(f"/api/v2/dags/{dag_id}", ok=(404,)).get("dag_id"),
            120,
            f"the DAG processor to build {dag_id}",
        )
        if unpause:
            self.api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})


def register_cohort_model(
    deployment: E2EDeployment,
    *,
    dataset: str,
    salt: str,
    model: str,
    approvers: list[str],
    training: dict[str, Any] | None = None,
) -> str:
    """A synthetic cohort of 60 patients as NDJSON (`tests/curation/cohort.py`), its dataset and
    a classifier model of it (reference trainer under its ECR-style name) with these approvers
    (and `training` over its trainingApproach); the model's id."""
    from patient_ml.services.datasets import create_dataset
    from tests.curation.cohort import Cohort, dataset_config

    cohort = Cohort(deployment.sources / f"{dataset}-cohort", salt, f"urn:test:{dataset}")
    cohort.add_patients(0, 60)
    source = cohort.write_ndjson(deployment.root / f"{dataset}-ndjson")
    with session_scope(deployment.engine) as session:
        ds = dataset_config(dataset, salt)
        ds["source"] = {"type": "ndjson", "uri": str(source)}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        return create_classifier_model(
            session,
            model=model,
            dataset_id=dataset_id,
            approval_policy={"approvers": approvers},
            training=training,
        )


def create_classifier_model(
    session: Session,
    *,
    model: str,
    dataset_id: str,
    approval_policy: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> str:
    """A classifier model of the dataset, trained and served by the reference trainer under its
    ECR-style name, with this approval policy (and `training` over its trainingApproach); the
    model's id."""
    from patient_ml.services.models import create_model
    from tests.operators.lifecycle import model_config

    config = model_config(model, dataset_id, approvalPolicy=approval_policy)
    config["trainingApproach"].update(training or {})
    config["trainingApproach"]["trainingImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
    config["deployApproach"]["inferenceImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
    return str(create_model(session, config, actor="e2e").id)


def wait_task(
    stack: AirflowStack, api: ApiClient, dag_id: str, dag_run: str, task: str, states: set[str]
) -> None:
    """Until `task` of the DAG run is in one of `states`; fails at once when a task failed."""

    def reached() -> bool:
        current = api.task_states(dag_id, dag_run)
        failed = [t for t, s in current.items() if s in ("failed", "upstream_failed")]
        assert not failed, f"tasks failed: {current}\n{stack.log_tail('scheduler')}"
        return current.get(task) in states

    stack.wait_for(reached, 420, f"{task} to be {states} in {dag_run}")


def wait_dag_run(stack: AirflowStack, api: ApiClient, dag_id: str, dag_run: str) -> str:
    """Until the DAG run ends; its state (success or failed)."""
    return stack.wait_dag_run(api, dag_id, dag_run)


def _databases() -> Iterator[tuple[str | None, str | None]]:
    """Fresh PostgreSQL databases (Airflow metadata, product) or (None, None) for SQLite."""
    reason = _postgres_unavailable_reason()
    if reason:
        if os.environ.get("PATIENT_ML_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (PATIENT_ML_REQUIRE_POSTGRES=1)")
        yield None, None
        return
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"pml_e2e_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("airflow", "product")]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield (
            f"{base}/{names[0]}".replace("+psycopg", "+psycopg2"),
            f"{base}/{names[1]}",
        )
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def airflow_deployment(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[E2EDeployment]:
    with start_deployment(tmp_path_factory.mktemp("e2e"), request) as deployment:
        yield deployment


@contextlib.contextmanager
def start_deployment(
    root: Path,
    request: pytest.FixtureRequest | None,
    *,
    auth_manager: str = "simple",
    mirrors: bool = True,
) -> Iterator[E2EDeployment]:
    """One Airflow in `root` with the product (see the module docstring); `auth_manager`:
    AirflowStack's ("fab": tests/e2e/test_fab_roles.py); `mirrors`: OpenLineage and MLflow
    (when installed; needs pytest's `request`), which a test of roles and benchmarks/faults.py
    do without."""
    sources = root / "sources"
    sources.mkdir()
    databases = _databases()
    metadata_db, product_db = next(databases)
    product_db = product_db or f"sqlite:///{root / 'product.db'}"
    schema.upgrade(get_engine(product_db, check_schema=False))
    engine = get_engine(product_db)
    product_env = {
        "PATIENT_ML_HOME": str(root / "pml-home"),
        "PATIENT_ML_DATABASE_URL": product_db,
        "PATIENT_ML_BACKEND": "local",
        "PATIENT_ML_ALLOWED_FILE_ROOTS": str(sources),
        "PATIENT_ML_ARTIFACT_URI": (root / "artifacts").as_uri(),
        "PATIENT_ML_LOCAL_TRAINERS": f"{ECR_IMG_CLF_REPOSITORY}={IMG_CLF_TRAINER}",
    }
    lineage_events = (
        openlineage_file_transport(root, product_env, "patient-ml-e2e") if mirrors else None
    )
    mlflow_url = _mlflow_mirror(request, product_env) if mirrors and request else None
    stack = AirflowStack(
        root / "airflow", metadata_db=metadata_db, env=product_env, auth_manager=auth_manager
    )
    stack.migrate()
    stack.start()
    try:
        # a busy shared machine may need longer (PATIENT_ML_E2E_READY_SECONDS)
        stack.wait_ready(timeout=float(os.environ.get("PATIENT_ML_E2E_READY_SECONDS", "180")))
        yield E2EDeployment(
            stack, stack.client("admin"), engine, root, sources, lineage_events, mlflow_url
        )
    finally:
        try:
            _stop_all_endpoints(engine)
        finally:
            stack.stop()
            engine.dispose()
            next(databases, None)


def _mlflow_mirror(request: pytest.FixtureRequest, env: dict[str, str]) -> str | None:
    """With mlflow installed (the `mlflow` extra, as in CI), a real `mlflow server`
    (tests/mlflow_server.py) as Airflow connection `mlflow_default`: every run is mirrored."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return None
    server = request.getfixturevalue("mlflow_server")
    env["AIRFLOW_CONN_MLFLOW_DEFAULT"] = server.connection_json()
    env["PATIENT_ML_MLFLOW_CONN_ID"] = "mlflow_default"
    return str(server.url)


def _stop_all_endpoints(engine: Engine) -> None:
    """The model servers the deploy tasks started (they outlive Airflow's processes)."""
    with session_scope(engine) as session:
        model_ids = list(session.scalars(select(Model.id)))
    for model_id in model_ids:
        stop_old_endpoints(engine, model_id, keep=None, actor="e2e-cleanup")
