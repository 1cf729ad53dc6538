"""Where a run stands among its decisions, under the model's `approvalPolicy.minApprovers`.

Decisions are append-only rows. The run is *settled* by the first of:

- a rejection (by anyone allowed to decide): the run ends unapproved;
- an approval by the automatic policy (`system`), which approves alone;
- a rollback approval (restoring an earlier champion, which was approved before);
- the approval that brings the distinct approving people to `minApprovers` (default 1; 2 is
  the two-person rule).

Approvals before that are *partial*: the run still waits (status `pending`), the approval
sensor keeps waiting and nothing deploys. After a settled approval, a later rollback approval
settles it again (the newest settling decision counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import Approval, Model, Run, utcnow
from patient_ml.services.common import as_utc


def decisions_of(session: Session, run_id: str) -> list[Approval]:
    return list(
        session.scalars(select(Approval).where(Approval.run_id == run_id).order_by(Approval.id))
    )


def min_approvers_of(model: Model | None) -> int:
    value = (model.approval_policy or {}).get("minApprovers") if model is not None else None
    return max(1, int(value or 1))


def is_rollback(approval: Approval) -> bool:
    return bool((approval.criteria or {}).get("rollback"))


def settled(decided: list[Approval], required: int) -> Approval | None:
    """The decision that settles the run (see the module docstring), or None."""
    found: Approval | None = None
    people: set[str] = set()
    for approval in decided:
        if approval.decision == "rejected" or approval.actor == "system" or is_rollback(approval):
            found = approval
            continue
        if approval.user:
            people.add(approval.user)
        if len(people) >= required:
            found = approval
    return found


@dataclass(frozen=True)
class Progress:
    """How far the approvals of an unsettled run are."""

    required: int
    approved_by: tuple[str, ...]  # distinct people, in order

    @property
    def remaining(self) -> int:
        return max(0, self.required - len(self.approved_by))

    def wire(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "approvedBy": list(self.approved_by),
            "remaining": self.remaining,
        }


def progress(decided: list[Approval], required: int) -> Progress:
    """Distinct people who approved since the last settling rejection (none after one)."""
    people: list[str] = []
    for approval in decided:
        if approval.decision == "rejected":
            people = []
        elif approval.actor == "user" and approval.user and approval.user not in people:
            people.append(approval.user)
    return Progress(required, tuple(people))


def final_decision(session: Session, run: Run) -> Approval | None:
    """The decision that settles `run` under its model's minApprovers, or None."""
    model = session.get(Model, run.model_id)
    return settled(decisions_of(session, run.id), min_approvers_of(model))


def approval_status(session: Session, run: Run, *, decided: list[Approval] | None = None) -> str:
    """approved | rejected | pending | timedOut | notRequested (`decided`: the run's decisions,
    oldest first, when the caller has read them already). Partial approvals (fewer people than
    minApprovers) leave the run pending."""
    if decided is None:
        decided = decisions_of(session, run.id)
    final = settled(decided, min_approvers_of(session.get(Model, run.model_id)))
    if final is not None:
        return final.decision
    if decided:
        return "pending"
    deadline = as_utc(run.approval_deadline)
    if deadline is not None and utcnow() >= deadline:
        return "timedOut"
    return "pending" if run.approval_requested_at else "notRequested"
