"""What the per-run operators share: the run id, the product DB, the artifact store, where
models are served, and the run's end on a task's last failed try. Heavy imports stay inside
methods so DAG files parse fast."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

log = logging.getLogger("patient_ml.operators")


def product_engine(conn_id: str | None) -> Any:
    from patient_ml.hooks.product_db import product_engine as engine_of

    return engine_of(conn_id)


def artifact_store(artifact_uri: str | None, aws_conn_id: str) -> Any:
    from patient_ml.storage import artifact_store_from_uri, default_artifact_store

    if artifact_uri:
        return artifact_store_from_uri(artifact_uri, aws_conn_id=aws_conn_id)
    return default_artifact_store(aws_conn_id=aws_conn_id)


class RunOperator(BaseOperator):
    """Base of the operators that work on one product run.

    :param run_id: product run id (templated).
    :param patient_ml_conn_id: Airflow connection of the product DB (default: the environment's).
    :param artifact_uri: artifact store (default: PATIENT_ML_ARTIFACT_URI).
    :param aws_conn_id: AWS connection for an `s3://` artifact store.
    """

    template_fields: Sequence[str] = ("run_id",)

    def __init__(
        self,
        *,
        run_id: str,
        patient_ml_conn_id: str | None = None,
        artifact_uri: str | None = None,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.patient_ml_conn_id = patient_ml_conn_id
        self.artifact_uri = artifact_uri
        self.aws_conn_id = aws_conn_id

    @property
    def actor(self) -> str:
        return task_actor(self)

    def engine(self) -> Any:
        return product_engine(self.patient_ml_conn_id)

    def store(self) -> Any:
        return artifact_store(self.artifact_uri, self.aws_conn_id)


class ServingOperator(RunOperator):
    """Base of the operators that serve a model through the image's `serve`.

    :param backend: where `serve` runs: `auto` (Docker when an engine answers), `local`,
        `docker`, `sagemaker` (an Amazon SageMaker endpoint through `aws_conn_id`).
    :param health_timeout: seconds a server may take to answer /ping.
    :param cpus: CPU limit (Docker) or thread count (local) of a server.
    :param memory_mb: memory limit of a server container.
    :param docker_conn_id: Docker connection (registry credentials to pull the image).
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        health_timeout: float = 120.0,
        cpus: float = 1.0,
        memory_mb: int = 2048,
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.health_timeout = health_timeout
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.docker_conn_id = docker_conn_id

    def server(self) -> Any:
        from patient_ml.serving.servers import ServeLimits, make_server

        return make_server(
            self.backend,
            limits=ServeLimits(self.health_timeout, self.cpus, self.memory_mb),
            docker_conn_id=self.docker_conn_id,
            aws_conn_id=self.aws_conn_id,
        )


def is_last_try(context: Any, retries: int) -> bool:
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    return try_number is None or int(try_number) > int(retries or 0)


def fail_run_on_last_try(
    context: Any, retries: int, conn_id: str | None, run_id: str, error: str, actor: str
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


def task_actor(task: Any) -> str:
    """How audit events name the Airflow task that acted."""
    return f"airflow:{task.dag_id}.{task.task_id}"


def triggering_actor(dag_run: Any) -> str:
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


def set_outlet_extra(context: Any, extra: dict[str, Any]) -> None:
    """Attach `extra` to the Asset events this task's outlets emit when it succeeds."""
    task = context.get("task") if hasattr(context, "get") else None
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if task is None or events is None:
        return
    for outlet in getattr(task, "outlets", None) or []:
        events[outlet].extra = {k: v for k, v in extra.items() if v is not None}
