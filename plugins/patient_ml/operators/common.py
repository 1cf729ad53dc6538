"""What the per-run operators share: the run id, the product DB, the artifact store, where
models are served, and the run's end on a task's last failed try. Heavy imports stay inside
methods so DAG files parse fast."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from patient_ml.fhir.client import FhirClient
    from patient_ml.serving.base import ModelServing, ServerHandle
    from patient_ml.storage.base import ArtifactStore

log = logging.getLogger("patient_ml.operators")


def product_engine(conn_id: str | None) -> Engine:
    from patient_ml.hooks.product_db import product_engine as engine_of

    return engine_of(conn_id)


def artifact_store(artifact_uri: str | None, aws_conn_id: str) -> ArtifactStore:
    from patient_ml.storage import artifact_store_from_uri, default_artifact_store

    if artifact_uri:
        return artifact_store_from_uri(artifact_uri, aws_conn_id=aws_conn_id)
    return default_artifact_store(aws_conn_id=aws_conn_id)


class PatientMLBaseOperator(BaseOperator):
    """Base of every Patient ML operator: the connections it reaches the product through (one
    place for them, as the Amazon provider's `AwsBaseOperator` does for AWS).

    :param patient_ml_conn_id: Airflow connection of the product DB (default: the environment's
        resolution: PATIENT_ML_DATABASE_URL, PATIENT_ML_CONN_ID, SQLite under PATIENT_ML_HOME).
    :param artifact_uri: artifact store (default: PATIENT_ML_ARTIFACT_URI).
    :param aws_conn_id: AWS connection for an `s3://` artifact store (and s3:// image URLs).
    :param mlflow_conn_id: MLflow connection that mirrors the run (docs/mlflow.md; default: the
        setting PATIENT_ML_MLFLOW_CONN_ID, `mlflow_default`); off while it does not exist.
    """

    def __init__(
        self,
        *,
        patient_ml_conn_id: str | None = None,
        artifact_uri: str | None = None,
        aws_conn_id: str = "aws_default",
        mlflow_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patient_ml_conn_id = patient_ml_conn_id
        self.artifact_uri = artifact_uri
        self.aws_conn_id = aws_conn_id
        self.mlflow_conn_id = mlflow_conn_id

    @property
    def actor(self) -> str:
        return task_actor(self)

    def engine(self) -> Engine:
        return product_engine(self.patient_ml_conn_id)

    def store(self) -> ArtifactStore:
        return artifact_store(self.artifact_uri, self.aws_conn_id)


class FhirSourceMixin:
    """For operators that reach a dataset's FHIR source (curation, scoring write-back): their
    `fhir_conn_id` parameter, when set, overrides the dataset's `source.connId`."""

    fhir_conn_id: str | None

    def _fhir_client(self, conn_id: str) -> FhirClient:
        from patient_ml.hooks.fhir import FhirHook

        return FhirHook(self.fhir_conn_id or conn_id).get_client()


class RunOperator(PatientMLBaseOperator):
    """Base of the operators that work on one product run.

    :param run_id: product run id (templated).
    Other parameters: those of `PatientMLBaseOperator`.
    """

    template_fields: Sequence[str] = ("run_id",)

    def __init__(self, *, run_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id

    def mirror_to_mlflow(self) -> dict[str, Any] | None:
        """Mirror the run to MLflow (docs/mlflow.md): the report (also in the task log and the
        run's audit trail), or None when mirroring is off. Never fails the task."""
        from patient_ml.services.mlflow_mirror import mirror_with_connection

        try:
            report = mirror_with_connection(
                self.engine(), self.store(), self.run_id, self.mlflow_conn_id, actor=self.actor
            )
        except Exception as exc:  # e.g. the product DB itself is gone: the task decides that
            self.log.warning("run %s: not mirrored to MLflow: %s", self.run_id, exc)
            return {"mirrored": False, "error": str(exc)[:2000]}
        return report.to_wire() if report is not None else None


class ContainerOperator(RunOperator):
    """Base of the operators that start trainer images (trials, model servers).

    :param backend: where they run: `auto` (Docker when an engine answers), `local`, `docker`,
        `sagemaker` (Amazon SageMaker jobs and endpoints through `aws_conn_id`); any other value
        fails the task (patient_ml.hooks.docker.resolve_backend).
    :param cpus: CPU limit (Docker) or thread count (local).
    :param memory_mb: memory limit of a container.
    :param docker_conn_id: Docker connection (DockerHook: registry login to pull the image).
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        cpus: float = 1.0,
        memory_mb: int = 2048,
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.docker_conn_id = docker_conn_id


class ServingOperator(ContainerOperator):
    """Base of the operators that serve a model through the image's `serve`. Every server it
    starts is tracked, and `on_kill` stops those still running (a killed task leaves no
    container or process behind), unless `_keep_on_kill` says one must stay.

    :param health_timeout: seconds a server may take to answer /ping.
    Other parameters: those of `ContainerOperator`.
    """

    def __init__(self, *, health_timeout: float = 120.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health_timeout = health_timeout
        self._servers: list[TrackedServer] = []

    def server(self) -> TrackedServer:
        from patient_ml.serving.base import ServeLimits
        from patient_ml.serving.servers import make_server

        server = TrackedServer(
            make_server(
                self.backend,
                limits=ServeLimits(self.health_timeout, self.cpus, self.memory_mb),
                docker_conn_id=self.docker_conn_id,
                aws_conn_id=self.aws_conn_id,
            )
        )
        self._servers.append(server)
        return server

    def _keep_on_kill(self, handle: ServerHandle) -> bool:
        return False

    def on_kill(self) -> None:
        for server in self._servers:
            for handle in list(server.started.values()):
                if self._keep_on_kill(handle):
                    continue
                self.log.info("task killed: stopping model server %s", handle.name)
                try:
                    server.stop(handle.handle)
                except Exception as exc:  # the kill goes on; the reason is logged
                    self.log.warning("could not stop model server %s: %s", handle.name, exc)


class TrackedServer:
    """A model server that remembers what it started and has not stopped yet (for on_kill)."""

    def __init__(self, inner: ModelServing) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.limits = inner.limits
        self.started: dict[str, ServerHandle] = {}

    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle:
        handle = self.inner.start(name=name, image=image, model_dir=model_dir, labels=labels)
        self.started[handle.handle] = handle
        return handle

    def stop(self, handle: str) -> None:
        self.inner.stop(handle)
        self.started.pop(handle, None)

    def is_running(self, handle: str) -> bool:
        return self.inner.is_running(handle)

    def image_digest(self, image: str) -> str:
        return self.inner.image_digest(image)


def is_last_try(context: Context, retries: int | None) -> bool:
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    return try_number is None or int(try_number) > int(retries or 0)


def fail_run_on_last_try(
    context: Context, retries: int | None, conn_id: str | None, run_id: str, error: str, actor: str
) -> None:
    """Mark the run failed with `error` when Airflow will not retry this task any more."""
    if not is_last_try(context, retries):
        log.warning("run %s: this try failed; Airflow will retry the task", run_id)
        return
    from patient_ml.db.engine import session_scope
    from patient_ml.services.runs import finish_run, get_run

    with session_scope(product_engine(conn_id)) as session:
        if get_run(session, run_id).status == "running":
            finish_run(session, run_id, status="failed", actor=actor, error=error[:4000])


def task_actor(task: BaseOperator) -> str:
    """How audit events name the Airflow task that acted."""
    return f"airflow:{task.dag_id}.{task.task_id}"


def triggering_actor(dag_run: object) -> str:
    """Who started a DAG run, as the product's audit trail names it."""
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return f"airflow-user:{user}"
    run_type = str(getattr(dag_run, "run_type", "") or "").lower()
    if "scheduled" in run_type:
        return "airflow:schedule"
    if "asset" in run_type:
        return "airflow:asset-trigger"
    return "airflow"


def set_outlet_extra(context: Context, extra: dict[str, Any]) -> None:
    """Attach `extra` to the Asset events this task's outlets emit when it succeeds."""
    task = context.get("task") if hasattr(context, "get") else None
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if task is None or events is None:
        return
    for outlet in getattr(task, "outlets", None) or []:
        events[outlet].extra = {k: v for k, v in extra.items() if v is not None}
