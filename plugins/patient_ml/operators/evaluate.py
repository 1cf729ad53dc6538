"""The evaluate stage: challenger and champion served and scored on the same test split."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from patient_ml.operators.common import artifact_store, fail_run_on_last_try, product_engine


class EvaluateModelOperator(BaseOperator):
    """Serve the run's best model and the champion at run time through the image's `serve`,
    send every confirmed test example to both, compute the test metrics in the platform,
    record them (challenger, champion, deltas) on the run, end the run as succeeded, and write
    its model card. A first run is scored alone; a champion that cannot be served fails the
    task with the reason. On the last failed try the run ends as failed.

    :param run_id: product run id (templated).
    :param backend: where `serve` runs: `auto` (Docker when an engine answers), `local`,
        `docker`.
    :param health_timeout: seconds a server may take to answer /ping.
    :param cpus: CPU limit (Docker) or thread count (local) of a server.
    :param memory_mb: memory limit of a server container.
    """

    template_fields: Sequence[str] = ("run_id",)
    ui_color = "#e0f0ff"

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
        from patient_ml.evaluation.evaluate import evaluate_run
        from patient_ml.evaluation.model_card import write_model_card
        from patient_ml.exceptions import PatientMLError
        from patient_ml.serving.servers import ServeLimits, make_server

        engine = product_engine(self.patient_ml_conn_id)
        store = artifact_store(self.artifact_uri, self.aws_conn_id)
        actor = f"airflow:{self.dag_id}.{self.task_id}"
        workdir = Path(tempfile.mkdtemp(prefix="evaluate-"))
        try:
            server = make_server(
                self.backend,
                limits=ServeLimits(self.health_timeout, self.cpus, self.memory_mb),
                docker_conn_id=self.docker_conn_id,
            )
            summary = evaluate_run(engine, store, server, self.run_id, workdir, actor=actor)
        except PatientMLError as exc:
            fail_run_on_last_try(
                context, self.retries, self.patient_ml_conn_id, self.run_id, str(exc), actor
            )
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        card = write_model_card(engine, store, self.run_id)
        self.log.info("model card: %s", card["markdown"])
        return {**summary, "modelCard": card}
