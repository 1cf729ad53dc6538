"""The deploy stage: make an approved run the champion (edge) or serve it (cloud)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from patient_ml.operators.common import artifact_store, product_engine


class DeployModelOperator(BaseOperator):
    """Deploy an approved run. `edge`: it becomes champion, its artifact is the download.
    `cloud`: a new endpoint is started and health-checked, then the champion is swapped
    atomically and the old endpoint stopped; a failing endpoint leaves the old champion
    serving and records deployStatus=failed with the reason. Retries are idempotent.

    :param run_id: product run id (templated).
    :param backend: where a cloud endpoint runs: `auto`, `local` or `docker`.
    :param health_timeout: seconds the new endpoint may take to answer /ping.
    """

    template_fields: Sequence[str] = ("run_id",)
    ui_color = "#dff5e1"

    def __init__(
        self,
        *,
        run_id: str,
        backend: str = "auto",
        health_timeout: float = 120.0,
        cpus: float = 1.0,
        memory_mb: int = 2048,
        patient_ml_conn_id: str | None = None,
        docker_conn_id: str | None = None,
        artifact_uri: str | None = None,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.backend = backend
        self.health_timeout = health_timeout
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.patient_ml_conn_id = patient_ml_conn_id
        self.docker_conn_id = docker_conn_id
        self.artifact_uri = artifact_uri
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.deploy import deploy_run
        from patient_ml.evaluation.model_card import write_model_card
        from patient_ml.serving.servers import ServeLimits, make_server

        engine = product_engine(self.patient_ml_conn_id)
        store = artifact_store(self.artifact_uri, self.aws_conn_id)
        server = make_server(
            self.backend,
            limits=ServeLimits(self.health_timeout, self.cpus, self.memory_mb),
            docker_conn_id=self.docker_conn_id,
        )
        try:
            result = deploy_run(
                engine, store, self.run_id, actor=f"airflow:{self.dag_id}.{self.task_id}",
                server=server,
            )  # fmt: skip
        finally:
            write_model_card(engine, store, self.run_id)
        self.log.info("deployed: %s", result)
        return result
