"""The await-approval stage: a deferrable wait for a human (or the automatic policy)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from patient_ml.operators.common import RunOperator
from patient_ml.triggers.approval import (
    DEFAULT_MAX_ERROR_SECONDS,
    DEFAULT_MAX_POLL_ERRORS,
    ApprovalTrigger,
)
from patient_ml.triggers.approval_events import (
    ApprovalEventError,
    ErrorEvent,
    RequiredActionResponse,
    parse_event,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage


class AwaitApprovalOperator(RunOperator):
    """Wait for the decision on a run; deferrable (no worker slot held) by default.

    Opens the run's approval window (deadline = now + the model's
    `approvalPolicy.timeoutHours`, or `timeout_hours`), applies the model's automatic policy
    when it is on, and otherwise registers the decision as an Airflow Required Action (offered
    to the model's approvers) and defers to `ApprovalTrigger`, which polls the product DB.
    Decisions come from the REST API, the Patient ML pages, `patient-ml runs approve|reject`, or
    Airflow's Required Actions (recorded through the same decision service; a refused response
    there is audited and the Required Action re-opened). Approving past a failed change-control
    rule takes "Approve with override" and an override justification there (`services.gate`).
    Under `approvalPolicy.minApprovers: n` the task waits until n different people approved: a
    partial approval in Required Actions re-opens it for the others.
    Approved: the task succeeds and deploy runs. Rejected or timed out: the task is skipped, so
    deploy is skipped; the run keeps its metrics and ends unapproved. An event the task does not
    understand, or a trigger that lost the product DB for its whole error budget, fails it.

    :param deferrable: wait in the triggerer (default True: an approval may take days); False
        polls in the worker, holding its slot, with the same error budget and deadline.
    :param poll_interval: seconds between two looks at the product DB.
    :param timeout_hours: overrides the model's approvalPolicy.timeoutHours.
    :param required_actions: register the approval in Airflow's Required Actions (Airflow's
        human-in-the-loop; default True).
    :param max_poll_errors: failed polls in a row after which the wait ends with the error.
    :param max_error_seconds: how long polls may keep failing before the wait ends with the
        error (None: only `max_poll_errors` counts).
    Other parameters: those of `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#fff3c4"

    def __init__(
        self,
        *,
        poll_interval: float = 10.0,
        timeout_hours: float | None = None,
        required_actions: bool = True,
        max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
        max_error_seconds: float | None = DEFAULT_MAX_ERROR_SECONDS,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.max_error_seconds = max_error_seconds
        self.poll_interval = poll_interval
        self.timeout_hours = timeout_hours
        self.required_actions = required_actions
        self.max_poll_errors = max_poll_errors

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.db.require import required
        from patient_ml.services import approval_state, approvals, auto_approval
        from patient_ml.services.runs import get_run

        with session_scope(self.engine()) as session:
            run = get_run(session, self.run_id)
            model = required(session, Model, run.model_id, of=f"run {self.run_id}")
            policy = model.approval_policy or {}
            hours = self.timeout_hours or float(policy.get("timeoutHours") or 72.0)
            run = approvals.request_approval(session, self.run_id, timeout_hours=hours)
            decided = approvals.settled_decision(session, self.run_id)
            if (
                decided is None
                and not approval_state.decisions_of(session, self.run_id)
                and approval_state.approval_status(session, run) != "timedOut"
            ):
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
            elif approval_state.approval_status(session, run) == "timedOut":
                event = {"status": "timedOut", "runId": self.run_id}
        if event is not None:  # decided (or timed out) before any wait
            return self._finish(context, event)
        return self._finish(context, self._wait(context))

    def execute_complete(self, context: Context, event: object) -> dict[str, Any]:
        return self._finish(context, event)

    # ------------------------------------------------------------------ waiting
    def _wait(self, context: Context) -> dict[str, Any]:
        """Register (or re-open) the Required Action, then defer to the trigger (deferrable), or
        poll in the worker and return the event the trigger would have fired."""
        from patient_ml.triggers import required_action

        subject, body, approvers, deadline, override = self._request_text()
        ti_id = context["task_instance"].id if self.required_actions else None
        if ti_id is not None:
            required_action.request(
                ti_id, subject=subject, body=body, approvers=approvers, override=override
            )
        self.log.info(
            "run %s waits for a decision until %s UTC by %s. Decide in Airflow's Required "
            "Actions%s, through the REST API, or with: patient-ml runs approve --run %s "
            "--reason '...'  (or reject)",
            self.run_id,
            f"{deadline:%Y-%m-%d %H:%M}",
            ", ".join(approvers) if approvers else "any user with the decision right",
            "" if ti_id is not None else " (off for this task)",
            self.run_id,
        )
        trigger = ApprovalTrigger(
            run_id=self.run_id,
            deadline=deadline.isoformat(),
            patient_ml_conn_id=self.patient_ml_conn_id,
            poll_interval=self.poll_interval,
            ti_id=str(ti_id) if ti_id is not None else None,
            max_poll_errors=self.max_poll_errors,
            max_error_seconds=self.max_error_seconds,
        )
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete")
        return trigger.wait_in_worker()

    def _request_text(self) -> tuple[str, str, list[str], datetime, bool]:
        """(subject, body, approvers who may still approve, deadline, whether approving needs
        an override) of the run's Required Action."""
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.db.require import present, required
        from patient_ml.services.common import as_utc
        from patient_ml.services.runs import get_run, run_to_wire
        from patient_ml.triggers import required_action

        with session_scope(self.engine()) as session:
            run = get_run(session, self.run_id)
            model = required(session, Model, run.model_id, of=f"run {self.run_id}")
            approvers = list((model.approval_policy or {}).get("approvers") or [])
            deadline = present(as_utc(run.approval_deadline), f"approval window of run {run.id}")
            shown = f"{deadline:%Y-%m-%d %H:%M}"
            wire = run_to_wire(session, run)
            gate = wire["gate"]
            done = set(gate["approvals"]["approvedBy"])
            return (
                required_action.subject_of(model.name, run.slug),
                required_action.body_of(wire, model.name, approvers, shown),
                [a for a in approvers if a not in done] or approvers,
                deadline,
                bool(gate["overrideRequired"]),
            )

    # ------------------------------------------------------------------ the end of the wait
    def _finish(self, context: Context, raw: object) -> dict[str, Any]:
        event = parse_event(raw, self.run_id)
        if isinstance(event, ErrorEvent):
            raise ApprovalEventError(
                f"Waiting for the decision on run {self.run_id} failed {event.failures} times "
                f"in a row: {event.error}",
                fix="check that the product DB is reachable from the triggerer, then clear the "
                "task (it keeps the run's deadline)",
            )
        responded: str | None = None
        if isinstance(event, RequiredActionResponse) and self._mirrors_decision(event):
            responded = "mirrored"  # the response carries the decision made elsewhere
        elif isinstance(event, RequiredActionResponse):
            responded = self._record_response(context, event)
            if responded == "refused" or (responded == "recorded" and not self._settled()):
                # refused, or a partial approval (minApprovers): re-open it and wait again
                return self._finish(context, self._wait(context))
        status, decision = self._outcome()
        if responded == "superseded" and self.required_actions:
            # the response was not recorded: the Required Action must not claim it was
            from patient_ml.triggers import required_action

            subject, *_, override = self._request_text()
            required_action.clear_response(
                context["task_instance"].id, subject=subject, override=override
            )
        return self._end(status, decision)

    def _mirrors_decision(self, event: RequiredActionResponse) -> bool:
        """True when the response is the run's settled decision written into the Required
        Action where it was made (the API server answers it so: same decision, same person)."""
        from patient_ml.db.engine import session_scope
        from patient_ml.services import approvals

        responder = event.responded_by_user
        with session_scope(self.engine()) as session:
            settled = approvals.settled_decision(session, self.run_id)
            return (
                settled is not None
                and responder is not None
                and settled.decision == event.decision
                and (settled.user or settled.actor) == responder.name
            )

    def _settled(self) -> bool:
        from patient_ml.db.engine import session_scope
        from patient_ml.services import approvals

        with session_scope(self.engine()) as session:
            return approvals.settled_decision(session, self.run_id) is not None

    def _record_response(self, context: Context, event: RequiredActionResponse) -> str:
        """Record an Airflow Required Actions response through the decision service, exactly as
        one through the REST API. "recorded", "refused" (audited; the request re-opens) or
        "superseded" (the run was decided elsewhere or timed out first)."""
        from patient_ml.db.engine import session_scope
        from patient_ml.exceptions import (
            ConfigValidationError,
            ConflictError,
            PatientMLError,
            PermissionDeniedError,
        )
        from patient_ml.services import approvals, audit

        responder = event.responded_by_user
        if responder is None:  # a timeout default: this task defines none
            self.log.warning(
                "run %s: ignoring a Required Action response without a user", self.run_id
            )
            return "superseded"
        refused: PatientMLError | None = None
        try:
            with session_scope(self.engine()) as session:
                approvals.decide(
                    session,
                    self.run_id,
                    event.decision,
                    user=responder.name,
                    reason=event.justification,
                    channel="airflow-required-actions",
                    detail={"airflowUserId": responder.id},
                    override=event.override,
                )
        except approvals.RepeatedApprovalError as exc:  # the same person again (minApprovers)
            refused = exc
        except ConflictError as exc:
            self.log.warning(
                "run %s: the Required Actions response came too late: %s", self.run_id, exc
            )
            return "superseded"
        except (PermissionDeniedError, ConfigValidationError) as exc:
            refused = exc
        if refused is not None:
            with session_scope(self.engine()) as session:
                audit.record(
                    session,
                    actor=responder.name,
                    action="run.approval.refused",
                    entity_type="run",
                    entity_id=self.run_id,
                    after={
                        "decision": event.decision,
                        "channel": "airflow-required-actions",
                        "reason": refused.message,
                        "detail": {"airflowUserId": responder.id},
                    },
                )
            self.log.warning(
                "run %s: refused the Required Actions response of %s (%s); the Required "
                "Action is open again",
                self.run_id, responder.name, refused,
            )  # fmt: skip
            return "refused"
        self.log.info("run %s: %s by %s in Airflow's Required Actions%s", self.run_id,
                      event.decision, responder.name,
                      " (override)" if event.override is not None else "")  # fmt: skip
        return "recorded"

    def _outcome(self) -> tuple[str, dict[str, Any] | None]:
        """The product DB's word (the source of truth, whatever the event said)."""
        from patient_ml.db.engine import session_scope
        from patient_ml.services import approval_state, approvals
        from patient_ml.services.runs import get_run

        with session_scope(self.engine()) as session:
            decided = approvals.settled_decision(session, self.run_id)
            if decided is not None:
                return decided.decision, approvals.decision_event(self.run_id, decided)
            status = approval_state.approval_status(session, get_run(session, self.run_id))
        if status != "timedOut":
            raise ApprovalEventError(
                f"The approval task of run {self.run_id} was resumed, but the run has no "
                f"decision and its window is still open ({status}).",
                fix="clear the task so that it waits again",
            )
        return "timedOut", None

    def _end(self, status: str, decision: dict[str, Any] | None) -> dict[str, Any]:
        from patient_ml.db.engine import session_scope
        from patient_ml.services import audit
        from patient_ml.services.model_cards import write_model_card

        engine = self.engine()
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
        if decision is None:
            raise AirflowSkipException(
                f"No decision on run {self.run_id} before its deadline; it ends unapproved and "
                "deploy is skipped."
            )
        who = decision.get("user") or decision.get("actor")
        via = decision.get("channel") or "an unrecorded channel"
        if status == "approved":
            self.log.info("run %s approved by %s through %s: %s", self.run_id, who, via,
                          decision.get("description"))  # fmt: skip
            return decision
        raise AirflowSkipException(
            f"Run {self.run_id} was rejected by {who} through {via}: "
            f"{decision.get('description')}; deploy is skipped."
        )

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """OpenLineage (docs/lineage.md): the artifact decided on and the decision."""
        from patient_ml.operators.lineage import lineage_or_none
        from patient_ml.services.lineage import approval_lineage

        return lineage_or_none(self, lambda session: approval_lineage(session, self.run_id))


ApprovalSensor = AwaitApprovalOperator
"""The operator's former name (it was never a BaseSensorOperator); kept for existing DAGs."""
