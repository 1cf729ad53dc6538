"""The monitor DAG's tasks: check the deployed champion against its reference profile, and
signal a breach as an Asset event (which a training DAG can be scheduled on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from patient_ml.operators.common import PatientMLBaseOperator, set_outlet_extra


class MonitorModelOperator(PatientMLBaseOperator):
    """One monitor check of a model's champion (`patient_ml.services.monitoring.check_model`):
    input drift, prediction drift and live performance of the prediction log's window against
    the champion's reference profile. Records a monitoring event (and an audit event on a
    breach); returns it (XCom). Prunes the prediction log to the retention settings.

    :param model_id: the model (id or name; templated).
    Other parameters: those of `PatientMLBaseOperator` (patient_ml.operators.common).
    """

    template_fields: Sequence[str] = ("model_id",)
    ui_color = "#fff4d6"

    def __init__(self, *, model_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.monitoring import check_model

        event = check_model(self.engine(), self.store(), self.model_id, actor=self.actor)
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
