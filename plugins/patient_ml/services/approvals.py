"""Approval decisions: one function shared by the CLI, the approval sensor (automatic policy)
and the REST API, so the rules live once.

- Only a succeeded (evaluated) run can be decided, and it must be decided with a reason.
- A model's `approvalPolicy.approvers` (when not empty) names who may decide; `system` is
  the automatic policy's actor and never a user.
- A run gets one decision. A second one is refused, with one exception: approving a run that
  was champion before and is not now is a rollback, and is recorded as a new approval.
- A run whose approval window closed (timeout) without a decision stays unapproved.
- The run row is locked while deciding (`SELECT ... FOR UPDATE` on PostgreSQL, the database
  write lock on SQLite), so of two concurrent decisions exactly one wins.
- Every decision records its channel: `api` (REST API), `ui` (the Patient ML pages),
  `cli` (`patient-ml runs approve|reject`), `airflow-required-actions` (Airflow's
  human-in-the-loop page or API), `system` (the automatic policy). The interfaces check the
  decision right (Airflow's auth manager) before calling `decide`; see `api.auth`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import Approval, Deployment, Model, Run, utcnow
from patient_ml.db.require import present
from patient_ml.exceptions import (
    ConfigValidationError,
    ConflictError,
    FieldError,
    PermissionDeniedError,
)
from patient_ml.services import audit
from patient_ml.services.common import as_utc
from patient_ml.services.runs import get_run

Decision = Literal["approved", "rejected"]
Channel = Literal["api", "ui", "cli", "airflow-required-actions", "system"]
CHANNELS: tuple[str, ...] = ("api", "ui", "cli", "airflow-required-actions", "system")
SYSTEM = "system"
MAX_REASON_CHARS = 4000


def _invalid(field: str, message: str, value: Any) -> ConfigValidationError:
    return ConfigValidationError("approval decision", [FieldError(field, message, value)])


def decisions_of(session: Session, run_id: str) -> list[Approval]:
    return list(
        session.scalars(select(Approval).where(Approval.run_id == run_id).order_by(Approval.id))
    )


def approval_status(session: Session, run: Run, *, decided: list[Approval] | None = None) -> str:
    """approved | rejected | pending | timedOut | notRequested (`decided`: the run's decisions,
    oldest first, when the caller has read them already)."""
    if decided is None:
        decided = decisions_of(session, run.id)
    if decided:
        return decided[-1].decision
    deadline = as_utc(run.approval_deadline)
    if deadline is not None and utcnow() >= deadline:
        return "timedOut"
    return "pending" if run.approval_requested_at else "notRequested"


def request_approval(session: Session, run_id: str, *, timeout_hours: float) -> Run:
    """Open the run's approval window (idempotent: a retried sensor keeps the first deadline)."""
    run = get_run(session, run_id)
    if run.approval_requested_at is None:
        now = utcnow()
        run.approval_requested_at = now
        run.approval_deadline = now + timedelta(hours=timeout_hours)
        session.flush()
    return run


def check_may_decide(model: Model, user: str) -> None:
    approvers = (model.approval_policy or {}).get("approvers") or []
    if user == SYSTEM:
        raise PermissionDeniedError(
            "'system' is reserved for the automatic approval policy.",
            fix="decide as a named user",
        )
    if approvers and user not in approvers:
        raise PermissionDeniedError(
            f"User {user!r} may not decide on runs of model {model.name!r}; its approvers are "
            f"{', '.join(approvers)}.",
            fix="ask one of the approvers, or add the user to approvalPolicy.approvers",
        )


def decide(
    session: Session,
    run_id: str,
    decision: Decision,
    *,
    user: str | None,
    reason: str,
    channel: Channel,
    actor: Literal["user", "system"] = "user",
    criteria: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> Approval:
    """Record a decision on a run; see the module docstring for the rules.

    :param channel: the interface the decision came through (`CHANNELS`).
    :param detail: what the channel knows of the decider beyond the user name (e.g. the OS
        account running the CLI, the Airflow user id), kept in the audit event.
    """
    if decision not in ("approved", "rejected"):
        raise _invalid("decision", "must be 'approved' or 'rejected'", decision)
    if channel not in CHANNELS:
        raise _invalid("channel", f"must be one of {', '.join(CHANNELS)}", channel)
    if (channel == SYSTEM) != (actor == "system"):
        raise _invalid("channel", "is 'system' exactly for the automatic policy", channel)
    reason = (reason or "").strip()
    if not reason:
        raise _invalid("description", "is empty; write why the run is approved or rejected", reason)
    if len(reason) > MAX_REASON_CHARS:
        raise _invalid(
            "description", f"is longer than {MAX_REASON_CHARS} characters; shorten it", reason
        )
    run = session.scalars(
        select(Run).where(Run.id == get_run(session, run_id).id).with_for_update()
        .execution_options(populate_existing=True)
    ).one()  # fmt: skip
    model = session.get(Model, run.model_id)
    model = present(model, f"model of run {run_id}")
    if actor == "user":
        if not user:
            raise _invalid("user", "is required for a human decision", user)
        check_may_decide(model, user)
    if run.status != "succeeded":
        raise ConflictError(
            f"Run {run.id} is {run.status!r}; only an evaluated (succeeded) run can be decided.",
            fix="wait until its evaluation has finished" if run.status == "running" else
            "start a new run",
        )  # fmt: skip
    earlier = decisions_of(session, run.id)
    rollback = False
    if earlier:
        rollback = decision == "approved" and _is_rollback(session, model, run, earlier)
        if not rollback:
            last = earlier[-1]
            who = last.user or last.actor
            raise ConflictError(
                f"Run {run.id} was already {last.decision} by {who} at "
                f"{last.decided_at:%Y-%m-%d %H:%M:%S} UTC; a second decision is refused.",
                fix="start a new run; to restore an earlier champion, approve that run",
            )
    elif approval_status(session, run) == "timedOut":
        raise ConflictError(
            f"Run {run.id} waited for a decision until {run.approval_deadline} and timed out; "
            "it ended unapproved.",
            fix="start a new run (or raise approvalPolicy.timeoutHours)",
        )
    approval = Approval(
        run_id=run.id,
        decision=decision,
        description=reason,
        actor=actor,
        user=user if actor == "user" else None,
        criteria={**(criteria or {}), "rollback": True} if rollback else criteria,
        channel=channel,
    )
    session.add(approval)
    session.flush()
    audit.record(
        session,
        actor=user if actor == "user" and user else SYSTEM,
        action=f"run.{'rollback_approved' if rollback else decision}",
        entity_type="run",
        entity_id=run.id,
        after={
            "decision": decision,
            "description": reason,
            "actor": actor,
            "channel": channel,
            "criteria": criteria,
            **({"detail": detail} if detail else {}),
        },
    )
    return approval


def _is_rollback(session: Session, model: Model, run: Run, earlier: list[Approval]) -> bool:
    if earlier[-1].decision != "approved" or model.champion_id == run.id:
        return False
    was_champion = session.scalar(
        select(Deployment.id).where(Deployment.model_id == model.id, Deployment.run_id == run.id)
    )
    return was_champion is not None


def latest_decision(session: Session, run_id: str) -> Approval | None:
    found = decisions_of(session, run_id)
    return found[-1] if found else None


def decision_event(run_id: str, approval: Approval) -> dict[str, Any]:
    """What the approval sensor and its trigger report about a decision."""
    return {
        "status": approval.decision,
        "runId": run_id,
        "actor": approval.actor,
        "user": approval.user,
        "description": approval.description,
        "channel": approval.channel,
    }
