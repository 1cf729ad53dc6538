"""The monitor DAG's tasks: check the deployed champion against its reference profile, and
signal a breach as an Asset event (which a training DAG can be scheduled on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from patient_ml.operators.common import artifact_store, product_engine, set_outlet_extra, task_actor


class MonitorModelOperator(BaseOperator):
    """One monitor check of a model's champion (`patient_ml.services.monitoring.check_model`):
    input drift, prediction drift and live performance of the prediction log's window against
    the champion's reference profile. Records a monitoring event (and an audit event on a
    breach); returns it (XCom). Prunes the prediction log to the retention settings.

    :param model_id: the model (id or name; templated).
    :param patient_ml_conn_id: Airflow connection of the product DB (default: the environment's).
    :param artifact_uri: artifact store (default: PATIENT_ML_ARTIFACT_URI).
    :param aws_conn_id: AWS connection for an `s3://` artifact store.
    """

    template_fields: Sequence[str] = ("model_id",)
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        model_id: str,
        patient_ml_conn_id: str | None = None,
        artifact_uri: str | None = None,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.patient_ml_conn_id = patient_ml_conn_id
        self.artifact_uri = artifact_uri
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.monitoring import check_model

        event = check_model(
            product_engine(self.patient_ml_conn_id),
            artifact_store(self.artifact_uri, self.aws_conn_id),
            self.model_id,
            actor=task_actor(self),
        )
        self.log.info("monitor check: %s %s", event["status"], event.get("breaches") or "")
        return {k: event.get(k) for k in ("id", "status", "runId", "breaches", "window")}


class DriftSignalOperator(BaseOperator):
    """Emit the model's drift Asset event when the check task found a breach; skipped (no
    event) otherwise. The event's extra names the monitoring event, the run and the breaches.

    :param check_task_id: the task whose XCom is the check's result.
    """

    ui_color = "#ffe0d6"

    def __init__(self, *, check_task_id: str = "check", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_task_id = check_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        result = context["ti"].xcom_pull(task_ids=self.check_task_id) or {}
        if result.get("status") != "breach":
            raise AirflowSkipException(f"no breach (status {result.get('status')!r})")
        extra = {"monitoringEventId": result.get("id"), "runId": result.get("runId"),
                 "breaches": result.get("breaches")}  # fmt: skip
        set_outlet_extra(context, extra)
        self.log.info("breach signalled: %s", extra)
        return extra
