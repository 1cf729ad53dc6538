"""The await-approval stage: a deferrable wait for a human (or the automatic policy)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from patient_ml.operators.common import RunOperator


class ApprovalSensor(RunOperator):
    """Wait for the decision on a run without holding a worker slot.

    Opens the run's approval window (deadline = now + the model's
    `approvalPolicy.timeoutHours`, or `timeout_hours`), applies the model's automatic policy
    when it is on, and otherwise defers to `ApprovalTrigger`, which polls the product DB.
    Approved: the task succeeds and deploy runs. Rejected or timed out: the task is skipped, so
    deploy is skipped; the run keeps its metrics and ends unapproved. Decisions come from
    `patient-ml runs approve|reject` or the REST API, through one service.

    :param poll_interval: seconds between two looks at the product DB (in the triggerer).
    :param timeout_hours: overrides the model's approvalPolicy.timeoutHours.
    Other parameters: those of `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#fff3c4"

    def __init__(
        self, *, poll_interval: float = 10.0, timeout_hours: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.poll_interval = poll_interval
        self.timeout_hours = timeout_hours

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.services import approvals, auto_approval
        from patient_ml.services.common import as_utc
        from patient_ml.services.runs import get_run
        from patient_ml.triggers.approval import ApprovalTrigger

        with session_scope(self.engine()) as session:
            run = get_run(session, self.run_id)
            model = session.get(Model, run.model_id)
            assert model is not None
            policy = model.approval_policy or {}
            hours = self.timeout_hours or float(policy.get("timeoutHours") or 72.0)
            run = approvals.request_approval(session, self.run_id, timeout_hours=hours)
            decided = approvals.latest_decision(session, self.run_id)
            if decided is None and approvals.approval_status(session, run) != "timedOut":
                decided, outcome = auto_approval.try_auto_approve(session, self.run_id)
                if outcome is not None:
                    for criterion in outcome.criteria:
                        self.log.info(
                            "auto-approval %s %s: %s",
                            criterion["name"],
                            "passed" if criterion["passed"] else "FAILED",
                            criterion["detail"],
                        )
            event: dict[str, Any] | None = None
            if decided is not None:
                event = approvals.decision_event(self.run_id, decided)
            elif approvals.approval_status(session, run) == "timedOut":
                event = {"status": "timedOut", "runId": self.run_id}
            deadline = as_utc(run.approval_deadline)
            approvers = policy.get("approvers") or []
        if event is not None:
            return self.execute_complete(context, event)
        assert deadline is not None
        self.log.info(
            "run %s waits for a decision until %s UTC by %s. Decide with: patient-ml runs "
            "approve --run %s --reason '...'  (or reject)",
            self.run_id,
            f"{deadline:%Y-%m-%d %H:%M}",
            ", ".join(approvers) if approvers else "any user",
            self.run_id,
        )
        self.defer(
            trigger=ApprovalTrigger(
                run_id=self.run_id,
                deadline=deadline.isoformat(),
                patient_ml_conn_id=self.patient_ml_conn_id,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from patient_ml.db.engine import session_scope
        from patient_ml.evaluation.model_card import write_model_card
        from patient_ml.services import audit

        engine = self.engine()
        status = event["status"]
        if status == "timedOut":
            with session_scope(engine) as session:
                audit.record(
                    session,
                    actor=self.actor,
                    action="run.approval.timed_out",
                    entity_type="run",
                    entity_id=self.run_id,
                )
        write_model_card(engine, self.store(), self.run_id)
        who = event.get("user") or event.get("actor")
        if status == "approved":
            self.log.info("run %s approved by %s: %s", self.run_id, who, event.get("description"))
            return event
        if status == "rejected":
            raise AirflowSkipException(
                f"Run {self.run_id} was rejected by {who}: {event.get('description')}; "
                "deploy is skipped."
            )
        raise AirflowSkipException(
            f"No decision on run {self.run_id} before its deadline; it ends unapproved and "
            "deploy is skipped."
        )
