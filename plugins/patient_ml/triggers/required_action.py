"""The run's approval as an Airflow Required Action (Airflow 3.1+ human-in-the-loop).

`await_approval` registers a HITL request for its task instance (the `hitl_detail` row Airflow's
Required Actions page and `GET /api/v2/dags/~/dagRuns/~/hitlDetails` list): options Approve /
Reject, a required `justification`, assigned to the model's `approvalPolicy.approvers` (as
Airflow user ids: the user names with the simple auth manager). A response there resumes the
task, which records it through the same decision service as the REST API. A decision made
elsewhere closes the request with that decision (from the trigger), so no stale entry is left.

Only Airflow's SDK calls are used (the Execution API, authenticated as the task instance): the
task registers or re-opens the request (`upsert_hitl_detail`), the trigger reads and answers it
(`get_hitl_detail_content_detail`, `update_hitl_detail_response`, served to triggers only).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from patient_ml.triggers.approval_events import APPROVE, JUSTIFICATION, REJECT

log = logging.getLogger("patient_ml.triggers.required_action")

OPTIONS = [APPROVE, REJECT]
MAX_JUSTIFICATION_CHARS = 4000  # services.approvals.MAX_REASON_CHARS
MAX_METRIC_ROWS = 12


def justification_param() -> dict[str, Any]:
    """The HITL form field: a required, non-blank text (serialized Param)."""
    from airflow.sdk import Param

    return Param(
        None,
        type="string",
        minLength=1,
        maxLength=MAX_JUSTIFICATION_CHARS,
        pattern=r"\S",
        title="Justification",
        description="Why the run is approved or rejected (required; kept in the audit trail).",
    ).serialize()


def assignees(approvers: list[str]) -> list[dict[str, str]] | None:
    """HITL assigned users from `approvalPolicy.approvers` (None: anyone with the right)."""
    return [{"id": name, "name": name} for name in approvers] or None


def subject_of(model_name: str, run_slug: str) -> str:
    return f"Approve run {run_slug} of model {model_name}?"


def body_of(run: dict[str, Any], model_name: str, approvers: list[str], deadline: str) -> str:
    """Markdown: what to compare and how to decide (ids and metrics only, never patient data)."""
    champion = {(m["name"], m.get("stage")): m["value"] for m in run["metrics"]["champion"]}
    rows = [
        f"| {m['name']} ({m.get('stage') or '-'}) | {m['value']:.4g} | "
        + (
            f"{champion[(m['name'], m.get('stage'))]:.4g} |"
            if (m["name"], m.get("stage")) in champion
            else "- |"
        )
        for m in run["metrics"]["challenger"][:MAX_METRIC_ROWS]
    ]
    table = (
        ["| metric | challenger | champion |", "|---|---|---|", *rows]
        if rows
        else ["No metrics were recorded."]
    )
    who = ", ".join(approvers) if approvers else "any user with the decision right"
    return "\n".join(
        [
            f"Model **{model_name}**, run `{run['id']}` (snapshot `{run.get('snapshotId')}`),"
            " evaluated against the champion on the same held-out test set.",
            "",
            *table,
            "",
            f"Approvers: {who}. Decide before {deadline} UTC, or the run ends unapproved.",
            "A justification is required. The decision is recorded in Patient ML exactly as "
            "one through its REST API (same checks, same audit); approving deploys the run.",
        ]
    )


def request(ti_id: UUID, *, subject: str, body: str, approvers: list[str]) -> None:
    """Register (or re-open, clearing a refused response) the task's Required Action."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    upsert_hitl_detail(
        ti_id=ti_id,
        options=OPTIONS,
        subject=subject,
        body=body,
        defaults=None,
        multiple=False,
        params={JUSTIFICATION: justification_param()},
        assigned_users=assignees(approvers),  # type: ignore[arg-type]
    )


def close(
    ti_id: UUID,
    *,
    decision: str,
    description: str,
    decided_by: str,
    channel: str | None,
) -> bool:
    """Record a decision made elsewhere as the Required Action's response (no stale entry).

    Runs in the triggerer (`ApprovalTrigger`): Airflow's Execution API serves reading and
    answering a HITL request to triggers only. False, and nothing changed, when the request
    already has a response (one given in Airflow meanwhile: the resumed task sorts it out).
    """
    from airflow.sdk.execution_time.hitl import (
        get_hitl_detail_content_detail,
        update_hitl_detail_response,
    )

    if get_hitl_detail_content_detail(ti_id=ti_id).response_received:
        return False
    option = APPROVE if decision == "approved" else REJECT
    text = f"{description} — decided by {decided_by} through {channel or 'another channel'}"
    update_hitl_detail_response(
        ti_id=ti_id,
        chosen_options=[option],
        params_input={JUSTIFICATION: text[:MAX_JUSTIFICATION_CHARS]},
    )
    return True


def clear_response(ti_id: UUID, *, subject: str) -> None:
    """Remove a response that was not recorded (the run was decided elsewhere or timed out
    first): the entry then shows no response, as Airflow's own HITL tasks do after a timeout
    without defaults. Bookkeeping only: a failure is logged, never fails the task."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    try:
        upsert_hitl_detail(ti_id=ti_id, options=OPTIONS, subject=subject)
    except Exception as exc:
        log.warning("could not clear the Required Action of task %s: %s", ti_id, exc)
