"""Approval decisions: one function shared by the CLI, the approval sensor (automatic policy)
and the REST API, so the rules live once.

- Only a succeeded (evaluated) run can be decided, and it must be decided with a reason.
- A model's `approvalPolicy.approvers` (when not empty) names who may decide; `system` is
  the automatic policy's actor and never a user.
- A run is settled by one decision, or, under `approvalPolicy.minApprovers: n`, by approvals
  of n distinct people (`services.approval_state`): until then each approval is partial, the
  same person cannot approve twice, and one rejection settles the run as rejected. A decision
  on a settled run is refused, with one exception: approving a run that was champion before
  and is not now is a rollback, and is recorded as a new approval.
- Approving a challenger that fails a non-inferiority rule or is worse on the objective
  (`services.gate`) needs `override`: its own justification, recorded in `criteria.override`
  and audited as `run.override_approved`. An override where none is needed is refused, so
  the audit trail never shows an override that was not one. A run that repeats a rejected run
  (same snapshot, hyperparameters, training image) is flagged in `criteria.gate`.
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
from patient_ml.services.approval_state import (
    approval_status,
    decisions_of,
    final_decision,
    min_approvers_of,
    progress,
    settled,
)
from patient_ml.services.gate import Gate, gate_for
from patient_ml.services.runs import get_run

Decision = Literal["approved", "rejected"]
Channel = Literal["api", "ui", "cli", "airflow-required-actions", "system"]
CHANNELS: tuple[str, ...] = ("api", "ui", "cli", "airflow-required-actions", "system")
SYSTEM = "system"
MAX_REASON_CHARS = 4000


class RepeatedApprovalError(ConflictError):
    """The same person approved the run before; under minApprovers another person must."""


def _invalid(field: str, message: str, value: object) -> ConfigValidationError:
    return ConfigValidationError("approval decision", [FieldError(field, message, value)])


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
    override: str | None = None,
) -> Approval:
    """Record a decision on a run; see the module docstring for the rules.

    :param channel: the interface the decision came through (`CHANNELS`).
    :param detail: what the channel knows of the decider beyond the user name (e.g. the OS
        account running the CLI, the Airflow user id), kept in the audit event.
    :param override: the justification of an override (approving past a failed
        non-inferiority rule, or a challenger worse on the objective); only then.
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
    required = min_approvers_of(model)
    final = settled(earlier, required)
    rollback = False
    if final is not None:
        rollback = decision == "approved" and _is_rollback(session, model, run, final)
        if not rollback:
            who = final.user or final.actor
            raise ConflictError(
                f"Run {run.id} was already {final.decision} by {who} at "
                f"{final.decided_at:%Y-%m-%d %H:%M:%S} UTC; a second decision is refused.",
                fix="start a new run; to restore an earlier champion, approve that run",
            )
    elif approval_status(session, run, decided=earlier) == "timedOut":
        raise ConflictError(
            f"Run {run.id} waited for a decision until {run.approval_deadline} and timed out; "
            "it ended unapproved.",
            fix="start a new run (or raise approvalPolicy.timeoutHours)",
        )
    elif actor == "user" and user in progress(earlier, required).approved_by:
        raise RepeatedApprovalError(
            f"User {user!r} has approved run {run.id} already; model {model.name!r} needs "
            f"{required} different people to approve (approvalPolicy.minApprovers).",
            fix="ask another approver to approve or reject the run",
        )
    kept = dict(criteria or {})
    gate: Gate | None = None
    if actor == "user" and not rollback and run.evaluation:
        gate = gate_for(session, run, model)
        kept["gate"] = gate.summary()
    overridden = _check_override(run, decision, gate, reason, override, rollback)
    if overridden is not None:
        kept["override"] = overridden
    if rollback:
        kept["rollback"] = True
    after = progress([*earlier, _pending(run.id, decision, actor, user)], required)
    if actor == "user" and decision == "approved" and not rollback and required > 1:
        kept["approvals"] = {**after.wire(), "complete": after.remaining == 0}
    approval = Approval(
        run_id=run.id,
        decision=decision,
        description=reason,
        actor=actor,
        user=user if actor == "user" else None,
        criteria=kept or None,
        channel=channel,
    )
    session.add(approval)
    session.flush()
    action = "rollback_approved" if rollback else "override_approved" if overridden else decision
    audit.record(
        session,
        actor=user if actor == "user" and user else SYSTEM,
        action=f"run.{action}",
        entity_type="run",
        entity_id=run.id,
        after={
            "decision": decision,
            "description": reason,
            "actor": actor,
            "channel": channel,
            "criteria": kept or None,
            **({"detail": detail} if detail else {}),
        },
    )
    return approval


def _pending(run_id: str, decision: str, actor: str, user: str | None) -> Approval:
    """The decision being recorded, for counting approvals before it is saved."""
    return Approval(run_id=run_id, decision=decision, actor=actor, user=user)


def _check_override(
    run: Run,
    decision: str,
    gate: Gate | None,
    reason: str,
    override: str | None,
    rollback: bool,
) -> dict[str, Any] | None:
    """The override record to keep, or a refusal naming the field and the fix."""
    text = (override or "").strip()
    needed = decision == "approved" and gate is not None and gate.override_required
    if not needed:
        if override is None:
            return None
        why = (
            "only applies to approving a run"
            if decision != "approved"
            else "does not apply to a rollback"
            if rollback
            else "is not needed: the challenger passes every non-inferiority rule and is not "
            "worse on the objective"
        )
        raise _invalid("override", f"{why}; leave it out", override)
    reasons = gate.reasons() if gate is not None else []
    if not text:
        raise _invalid(
            "override",
            f"is required to approve run {run.id}, which "
            + "; and ".join(reasons)
            + ". Confirm an override with its own justification (why approve anyway), or "
            "reject the run",
            override,
        )
    if len(text) > MAX_REASON_CHARS:
        raise _invalid(
            "override", f"is longer than {MAX_REASON_CHARS} characters; shorten it", override
        )
    if text == reason:
        raise _invalid(
            "override",
            "repeats the decision's description; the override needs its own justification: "
            "why approve although the rules fail",
            override,
        )
    failed = [] if gate is None else gate.failed
    return {
        "justification": text,
        "reasons": reasons,
        "failedRules": [r.metric for r in failed],
        "worseOnObjective": gate.worse_on_objective if gate is not None else False,
    }


def _is_rollback(session: Session, model: Model, run: Run, final: Approval) -> bool:
    if final.decision != "approved" or model.champion_id == run.id:
        return False
    was_champion = session.scalar(
        select(Deployment.id).where(Deployment.model_id == model.id, Deployment.run_id == run.id)
    )
    return was_champion is not None


def latest_decision(session: Session, run_id: str) -> Approval | None:
    """The newest decision row (partial approvals included); see `settled_decision`."""
    found = decisions_of(session, run_id)
    return found[-1] if found else None


def settled_decision(session: Session, run_id: str) -> Approval | None:
    """The decision that settled the run (None: none yet, or only partial approvals)."""
    return final_decision(session, get_run(session, run_id))


def decision_event(run_id: str, approval: Approval) -> dict[str, Any]:
    """What the approval sensor and its trigger report about a decision."""
    return {
        "status": approval.decision,
        "runId": run_id,
        "actor": approval.actor,
        "user": approval.user,
        "description": approval.description,
        "channel": approval.channel,
        "override": bool((approval.criteria or {}).get("override")),
    }
