"""The run's approval as an Airflow Required Action (Airflow 3.1+ human-in-the-loop).

`await_approval` registers a HITL request for its task instance (the `hitl_detail` row Airflow's
Required Actions page and `GET /api/v2/dags/~/dagRuns/~/hitlDetails` list): options Approve /
Reject, a required `justification`, assigned to the model's `approvalPolicy.approvers` who have
not approved yet (as Airflow user ids: the user names with the simple auth manager, FAB's
`ab_user` ids looked up by the API server with FAB, unassigned with another auth manager; see
`assignees`). The body first says who may decide, then shows challenger vs champion with
intervals, the change-control rules and whether they hold, a repeat of a rejected run and the
approvals so far. When approving needs an override (`services.gate`), the options are "Approve
with override" / Reject and the form asks for the override's own justification. A response there
resumes the task, which records it through the same decision service as the REST API. A decision
made elsewhere closes the request with that decision, so no stale entry is left: at once when it
is made in Airflow's API server (the REST API and the Patient ML pages) or by the CLI with
Airflow's configuration (`answer_settled`, through `patient_ml.hooks.airflow_required_actions`,
which also resumes the task without a triggerer), else from the trigger when it next looks.

Only Airflow's SDK calls are used (the Execution API, authenticated as the task instance): the
task registers or re-opens the request (`upsert_hitl_detail`), the trigger reads and answers it
(`get_hitl_detail_content_detail`, `update_hitl_detail_response`, served to triggers only).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from patient_ml.config.platform_metrics import metric_text
from patient_ml.triggers.approval_events import (
    APPROVE,
    APPROVE_OVERRIDE,
    JUSTIFICATION,
    OVERRIDE_JUSTIFICATION,
    REJECT,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from patient_ml.db.models import Run

log = logging.getLogger("patient_ml.triggers.required_action")

OPTIONS = [APPROVE, REJECT]
OVERRIDE_OPTIONS = [APPROVE_OVERRIDE, REJECT]
MAX_JUSTIFICATION_CHARS = 4000  # services.approvals.MAX_REASON_CHARS
MAX_METRIC_ROWS = 16


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


def override_param() -> dict[str, Any]:
    """The HITL form field of an override's own justification (serialized Param); optional in
    the form (a rejection needs none), required by the decision service to approve."""
    from airflow.sdk import Param

    return Param(
        None,
        type=["null", "string"],
        maxLength=MAX_JUSTIFICATION_CHARS,
        title="Override justification",
        description="Required to approve: the challenger fails a change-control rule or is "
        "worse on the objective (see above). Why approve it anyway? Audited as an override.",
    ).serialize()


def options_of(override: bool) -> list[str]:
    return OVERRIDE_OPTIONS if override else OPTIONS


def params_of(override: bool) -> dict[str, Any]:
    params = {JUSTIFICATION: justification_param()}
    if override:
        params[OVERRIDE_JUSTIFICATION] = override_param()
    return params


SIMPLE_AUTH_MANAGER = "SimpleAuthManager"
FAB_AUTH_MANAGER = "FabAuthManager"


def auth_manager_kind(auth_manager: str | None = None) -> str:
    """The configured auth manager's class name (`[core] auth_manager`)."""
    if auth_manager is None:
        from airflow.configuration import conf

        auth_manager = conf.get("core", "auth_manager", fallback="") or ""
    return auth_manager.rsplit(".", 1)[-1]


def ids_are_names(auth_manager: str | None = None) -> bool:
    """Whether the configured auth manager's user ids are the user names that
    `approvalPolicy.approvers` lists. Airflow checks a HITL request's assigned users by id
    (`BaseAuthManager.is_authorized_hitl_task`: `user.get_id() in assigned_users`): with the
    simple auth manager the id is the name; with FAB it is the numeric row id of `ab_user`
    (Keycloak: a UUID), which the worker cannot look up."""
    return auth_manager_kind(auth_manager) == SIMPLE_AUTH_MANAGER


def assignees(approvers: list[str], auth_manager: str | None = None) -> list[dict[str, str]] | None:
    """HITL assigned users from `approvalPolicy.approvers`, so that Airflow itself refuses a
    response from anyone else (403 "not a respondent"). With the simple auth manager the ids
    are the names; with FAB each id is a mark the API server replaces with the user's `ab_user`
    id as it stores the request (`patient_ml.hooks.airflow_assignees`). None (anyone with the
    decision right may respond in Airflow) when the model names no approvers, or under another
    auth manager whose ids cannot be found from a name here: then the decision service refuses
    a response from a non-approver (audited) and the request opens again."""
    if not approvers:
        return None
    kind = auth_manager_kind(auth_manager)
    if kind == SIMPLE_AUTH_MANAGER:
        return [{"id": name, "name": name} for name in approvers]
    if kind == FAB_AUTH_MANAGER:
        from patient_ml.hooks.airflow_assignees import marked

        return [marked(name) for name in approvers]
    return None


def who_may_decide(approvers: list[str]) -> str:
    """The body's first line: who may decide, before anyone reads further or types."""
    if not approvers:
        return (
            "**Who may decide:** any user with the right to respond to this DAG's required actions."
        )
    return (
        f"**Who may decide:** {', '.join(approvers)} (the model's approvers). Anyone else is "
        "refused, whatever their Airflow role."
    )


def subject_of(model_name: str, run_slug: str) -> str:
    return f"Approve run {run_slug} of model {model_name}?"


def _value(value: object, low: object = None, high: object = None, signed: bool = False) -> str:
    if not isinstance(value, int | float):
        return "-"
    shown = metric_text(value, signed=signed)
    if isinstance(low, int | float) and isinstance(high, int | float):
        shown += f" [{metric_text(low, signed=signed)}, {metric_text(high, signed=signed)}]"
    return shown


def _metric_rows(run: dict[str, Any], first: list[str]) -> list[str]:
    """challenger, champion and the paired difference of each test metric, with intervals:
    the metrics the rules name first."""
    test = [m for m in run["metrics"]["challenger"] if m.get("stage") == "evaluation"]
    theirs = {m["name"]: m for m in run["metrics"]["champion"] if m.get("stage") == "evaluation"}
    deltas = (run.get("evaluation") or {}).get("deltas") or {}
    order = {name: i for i, name in enumerate(first)}
    test.sort(key=lambda m: order.get(m["name"], len(order)))
    rows = []
    for m in test[:MAX_METRIC_ROWS]:
        other = theirs.get(m["name"]) or {}
        delta = deltas.get(m["name"]) or {}
        rows.append(
            f"| {m['name']} | {_value(m['value'], m.get('low'), m.get('high'))} | "
            f"{_value(other.get('value'), other.get('low'), other.get('high'))} | "
            f"{_value(delta.get('delta'), delta.get('low'), delta.get('high'), signed=True)} |"
        )
    return rows


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rules = gate.get("rules") or []
    if rules:
        lines += [
            "**Change-control rules** (non-inferiority: the lower end of the paired "
            "interval must be above -margin):",
            "",
        ]
        lines += [f"- {'✔ holds' if r['passed'] else '✘ FAILS'}: {r['detail']}" for r in rules]
        lines.append("")
    objective = gate.get("objective")
    if objective:
        lines += [f"Objective: {objective['detail']}.", ""]
    if gate.get("overrideRequired"):
        lines += [
            "**Override required.** Approving this run needs **Approve with override** and an "
            "**override justification** of its own (audited as an override): the challenger "
            + "; and ".join(gate.get("overrideReasons") or [])
            + ".",
            "",
        ]
    for twin in gate.get("duplicateOfRejected") or []:
        lines += [
            f"**Repeat of a rejected run:** same snapshot, hyperparameters and training image as "
            f"run `{twin['slug']}` ({twin['runId']}), rejected by {twin['rejectedBy']}: "
            f"{twin.get('description') or '(no reason given)'}",
            "",
        ]
    approvals = gate.get("approvals") or {}
    if int(approvals.get("required") or 1) > 1:
        done = ", ".join(approvals.get("approvedBy") or []) or "nobody yet"
        lines += [
            f"Two-person rule: {approvals['required']} different people must approve; approved "
            f"so far by {done} ({approvals.get('remaining')} more needed).",
            "",
        ]
    return lines


def body_of(run: dict[str, Any], model_name: str, approvers: list[str], deadline: str) -> str:
    """Markdown: what to compare and how to decide (ids and metrics only, never patient data).
    `run` is the extended run wire (metrics with intervals, evaluation, gate)."""
    gate = run.get("gate") or {}
    first = [r["metric"] for r in gate.get("rules") or []]
    if gate.get("objective"):
        first.append(gate["objective"]["metric"])
    rows = _metric_rows(run, first)
    table = (
        [
            "| test metric | challenger [95 % CI] | champion [95 % CI] | difference [paired CI] |",
            "|---|---|---|---|",
            *rows,
        ]
        if rows
        else ["No test metrics were recorded."]
    )
    points = (run.get("evaluation") or {}).get("operatingPoints") or {}
    point_lines = [
        f"Operating point of the {who}: {_describe_point(p)}" for who, p in points.items()
    ]
    evaluation = run.get("evaluation") or {}
    counted = (
        f" ({evaluation['testExamples']} test images, {evaluation.get('testClusters')} "
        "independent clusters; intervals resample clusters, differences are paired)"
        if evaluation.get("testExamples")
        else ""
    )
    who = ", ".join(approvers) if approvers else "any user with the decision right"
    return "\n".join(
        [
            who_may_decide(approvers),
            "",
            f"Model **{model_name}**, run `{run['id']}` (snapshot `{run.get('snapshotId')}`),"
            f" evaluated against the champion on the same held-out test set{counted}.",
            "",
            *table,
            "",
            *point_lines,
            *([""] if point_lines else []),
            *_gate_lines(gate),
            f"Approvers: {who}. Decide before {deadline} UTC, or the run ends unapproved.",
            "A justification is required. The decision is recorded in Patient ML exactly as "
            "one through its REST API (same checks, same audit); approving deploys the run.",
        ]
    )


def _describe_point(point: dict[str, Any]) -> str:
    label = (point.get("positiveLabel") or {}).get("name")
    if point.get("threshold") is None or not label:
        text = "the most confident label (no threshold)"
    else:
        at_least = metric_text(point["threshold"])
        text = f"{label} when its confidence is at least {at_least} ({point['rule']})"
    return text + (f"; {point['note']}" if point.get("note") else "")


def request(
    ti_id: UUID, *, subject: str, body: str, approvers: list[str], override: bool = False
) -> None:
    """Register (or re-open, clearing a refused response) the task's Required Action;
    `override`: approving needs an override (its option and its justification field)."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    upsert_hitl_detail(
        ti_id=ti_id,
        options=options_of(override),
        subject=subject,
        body=body,
        defaults=None,
        multiple=False,
        params=params_of(override),
        assigned_users=assignees(approvers),  # type: ignore[arg-type]
    )


def close(
    ti_id: UUID,
    *,
    decision: str,
    description: str,
    decided_by: str,
    channel: str | None,
    override: bool = False,
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
    options, params_input = response_of(decision, description, decided_by, channel, override)
    update_hitl_detail_response(ti_id=ti_id, chosen_options=options[:1], params_input=params_input)
    return True


def answer_settled(session: Session, run: Run, user_id: str, user_name: str) -> str | None:
    """Write the decision that settled `run` into its Required Action at once, and resume its
    waiting task (`hooks.airflow_required_actions`), so Airflow refuses any later response
    there: one decision, one record, with or without a triggerer. Called right after a decision
    is committed, by the REST API (in Airflow's API server) and the CLI (where Airflow's
    metadata database is configured; elsewhere the approval task's trigger closes the request
    when it next looks). None when there is nothing to answer (not settled yet under
    `minApprovers`, or no DAG run waits), else the hook's outcome."""
    from patient_ml.hooks.airflow_required_actions import RequiredActionHook
    from patient_ml.services.approvals import decision_event, settled_decision

    settled = settled_decision(session, run.id)
    if settled is None or not (run.airflow_dag_id and run.airflow_run_id):
        return None
    event = decision_event(run.id, settled)
    options, params_input = response_of(
        event["status"], event["description"] or "", event["user"] or event["actor"],
        event["channel"], event["override"],
    )  # fmt: skip
    return RequiredActionHook().answer(
        run.airflow_dag_id,
        run.airflow_run_id,
        options=options,
        params_input=params_input,
        user_id=user_id,
        user_name=user_name,
    )


def response_of(
    decision: str, description: str, decided_by: str, channel: str | None, override: bool
) -> tuple[list[str], dict[str, str]]:
    """A decision made elsewhere as the Required Action's response: the options that say it
    (the first the request offers is chosen) and the form's justification, which names the
    decider and the channel."""
    if decision == "rejected":
        options = [REJECT]
    else:
        options = [APPROVE_OVERRIDE, APPROVE] if override else [APPROVE, APPROVE_OVERRIDE]
    text = f"{description} — decided by {decided_by} through {channel or 'another channel'}"
    return options, {JUSTIFICATION: text[:MAX_JUSTIFICATION_CHARS]}


def clear_response(ti_id: UUID, *, subject: str, override: bool = False) -> None:
    """Remove a response that was not recorded (the run was decided elsewhere or timed out
    first): the entry then shows no response, as Airflow's own HITL tasks do after a timeout
    without defaults. Bookkeeping only: a failure is logged, never fails the task."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    try:  # the form's fields too: the Execution API refuses a request without them (422)
        upsert_hitl_detail(
            ti_id=ti_id, options=options_of(override), subject=subject, params=params_of(override)
        )
    except Exception as exc:
        log.warning("could not clear the Required Action of task %s: %s", ti_id, exc)
