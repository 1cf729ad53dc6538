"""The events the approval task resumes with, validated before anything is recorded.

Three sources resume `await_approval` (`patient_ml.operators.approval.AwaitApprovalOperator`):

- `ApprovalTrigger` (product DB): a decision recorded through another channel
  (`DecisionEvent`), the deadline (`TimedOutEvent`) or an exhausted error budget
  (`ErrorEvent`);
- Airflow's human-in-the-loop response (its Required Actions page or
  `PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails`),
  delivered by Airflow's API server as the HITL resume payload, or found by `ApprovalTrigger`
  (`RequiredActionResponse`).

Anything else (an unknown status, another run's event, a malformed payload) is refused with
`ApprovalEventError` and the task fails: an event is never read as a timeout by default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from patient_ml.exceptions import PatientMLError

APPROVE = "Approve"
APPROVE_OVERRIDE = "Approve with override"
REJECT = "Reject"
JUSTIFICATION = "justification"
OVERRIDE_JUSTIFICATION = "override_justification"


class ApprovalEventError(PatientMLError):
    """The approval task was resumed with an event it does not understand."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DecisionEvent(_Event):
    status: Literal["approved", "rejected"]
    runId: str
    actor: Literal["user", "system"]
    user: str | None = None
    description: str | None = None
    channel: str | None = None
    override: bool = False


class TimedOutEvent(_Event):
    status: Literal["timedOut"]
    runId: str


class ErrorEvent(_Event):
    status: Literal["error"]
    runId: str
    error: str = Field(min_length=1)
    failures: int = Field(ge=1)


TriggerEventPayload = Annotated[
    DecisionEvent | TimedOutEvent | ErrorEvent, Field(discriminator="status")
]


class HITLResponder(_Event):
    id: str
    name: str


class RequiredActionResponse(_Event):
    """Airflow's HITL resume payload (`HITLDetail.as_resume_event_payload`)."""

    chosen_options: list[Literal["Approve", "Approve with override", "Reject"]] = Field(
        min_length=1, max_length=1
    )
    params_input: dict[str, Any] = Field(default_factory=dict)
    responded_at: datetime | None = None
    responded_by_user: HITLResponder | None = None
    timedout: bool = False

    @property
    def decision(self) -> Literal["approved", "rejected"]:
        return "rejected" if self.chosen_options[0] == REJECT else "approved"

    @property
    def justification(self) -> str:
        value = self.params_input.get(JUSTIFICATION)
        return value if isinstance(value, str) else ""

    @property
    def override(self) -> str | None:
        """The override's justification when "Approve with override" was chosen ("" when its
        field was left empty, which the decision service refuses), else None."""
        if self.chosen_options[0] != APPROVE_OVERRIDE:
            return None
        value = self.params_input.get(OVERRIDE_JUSTIFICATION)
        return value if isinstance(value, str) else ""


ApprovalEvent = DecisionEvent | TimedOutEvent | ErrorEvent | RequiredActionResponse
_TRIGGER_EVENT: TypeAdapter[DecisionEvent | TimedOutEvent | ErrorEvent] = TypeAdapter(
    TriggerEventPayload
)


def parse_event(event: object, run_id: str) -> ApprovalEvent:
    """The validated event, or ApprovalEventError naming what is wrong (no payload values: a
    justification may hold anything)."""
    if not isinstance(event, dict):
        raise ApprovalEventError(
            f"The approval task of run {run_id} was resumed with a {type(event).__name__}, "
            "not an event object.",
            fix="resume it only through ApprovalTrigger or Airflow's Required Actions",
        )
    try:
        if "chosen_options" in event:
            return RequiredActionResponse.model_validate(event)
        parsed = _TRIGGER_EVENT.validate_python(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ApprovalEventError(
            f"The approval task of run {run_id} was resumed with an event it does not "
            f"understand ({problems}).",
            fix="resume it only through ApprovalTrigger or Airflow's Required Actions; a "
            "status is one of approved, rejected, timedOut, error",
        ) from None
    if parsed.runId != run_id:
        raise ApprovalEventError(
            f"The approval task of run {run_id} was resumed with an event of run {parsed.runId!r}.",
            fix="clear the task so that it waits for its own run again",
        )
    return parsed
