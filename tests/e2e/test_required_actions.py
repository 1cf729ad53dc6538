"""The approval as an Airflow Required Action, on real Airflow (the shared deployment).

Two runs of one model (approvers: `admin`) wait in `await_approval` at the same time:

A. Airflow's HITL API lists the run's Required Action, assigned to the approver, its body saying
   first who may decide; a viewer may not respond (Airflow's 403), nor may a user whose role
   grants the right but who is not an approver (Airflow's 403 "not a respondent", issue 31),
   and the product's permissions tell both who may decide and why not before they type; the
   approver's response approves the run in the product DB (channel `airflow-required-actions`,
   audited), and deploy makes it champion.
B. A response without a justification is refused by the product (audited) and the Required
   Action opens again; a decision through the REST API then closes it at once, in the API
   server (the entry tells the decision, the channel and the decider), and Airflow refuses a
   later, conflicting response there (409): no stale entry, one decision, one record.
C. With the triggerer down (issue 34's fault), a decision through the CLI (`patient-ml runs
   reject`, on a machine with Airflow's configuration, as the demo runs it) closes the Required
   Action as it returns, with the decider as responder, and resumes the task without a
   triggerer; a later response is refused there too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from include.airflow_stack import ApiClient
from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Model
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.approvals import decisions_of
from patient_ml.services.runs import find_run_for_dag_run
from tests.e2e.conftest import E2EDeployment, register_cohort_model

MODEL = "e2e-hitl-classifier"
DAG_ID = "patient_ml__e2e_hitl_classifier"
TASK = "await_approval"
HITL_LIST = "/api/v2/dags/~/dagRuns/~/hitlDetails"


@pytest.fixture(scope="module")
def hitl(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    d = airflow_deployment
    model_id = register_cohort_model(
        d, dataset="e2e-hitl-dataset", salt="hitl01", model=MODEL, approvers=["admin"]
    )
    try:
        d.wait_for_dag(DAG_ID)
        yield {"d": d, "model_id": model_id}
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _pending(api: ApiClient, dag_run_id: str) -> list[dict[str, Any]]:
    """Required Actions as Airflow's page asks for them (no response, task waiting)."""
    found = api.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/hitlDetails"
        "?response_received=false&state=deferred&state=awaiting_input"
    )
    return list(found["hitl_details"])


def _detail(api: ApiClient, dag_run_id: str) -> dict[str, Any]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{TASK}/-1/hitlDetails"
    return dict(api.get(path))


def _respond(api: ApiClient, dag_run_id: str, body: dict[str, Any], ok: tuple[int, ...] = ()):
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{TASK}/-1/hitlDetails"
    return api.request("PATCH", path, body, ok=ok)


def _deferrals_reported(d: E2EDeployment, dag_run_id: str) -> int:
    """How many of the task's deferrals the scheduler has seen end (the deferring worker's
    exit). Airflow 3.3 races when a task is resumed before that: the late "success" of the
    deferring workload makes the scheduler retry the resumed try. A human answers minutes
    later; this test answers at once, so it first waits for that event."""
    key = f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{TASK}', run_id='{dag_run_id}'"
    log = (d.stack.home / "logs" / "scheduler.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Received executor event" in line and key in line)


def _wait_waiting(d: E2EDeployment, dag_run_id: str, deferrals: int = 1) -> None:
    def waiting() -> bool:
        states = d.api.task_states(DAG_ID, dag_run_id)
        bad = {t: s for t, s in states.items() if s == "failed"}  # a retry under load is fine
        assert not bad, f"tasks failed: {states}\n{d.stack.log_tail('scheduler')}"
        return (
            states.get(TASK) == "deferred"
            and bool(_pending(d.api, dag_run_id))
            and _deferrals_reported(d, dag_run_id) >= deferrals
        )

    d.stack.wait_for(waiting, 420, f"{TASK} of {dag_run_id} to wait in Required Actions")


def _try_number(d: E2EDeployment, dag_run_id: str) -> int:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{TASK}"
    return int(d.api.get(path)["try_number"])


def _wait_ended(d: E2EDeployment, dag_run_id: str) -> dict[str, str]:
    def ended() -> str | None:
        state = d.api.dag_run(DAG_ID, dag_run_id)["state"]
        return state if state in ("success", "failed") else None

    assert d.stack.wait_for(ended, 300, f"DAG run {dag_run_id} to end") == "success"
    return d.api.task_states(DAG_ID, dag_run_id)


def _product_run(d: E2EDeployment, dag_run_id: str) -> str:
    with session_scope(d.engine) as session:
        run = find_run_for_dag_run(session, DAG_ID, dag_run_id)
        assert run is not None
        return run.id


def _audit(d: E2EDeployment, run_id: str, action: str) -> list[AuditEvent]:
    with session_scope(d.engine) as session:
        found = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_id == run_id, AuditEvent.action == action)
        )
        return [e for e in found]


def test_required_actions_approve_and_rest_decision_closes(hitl: dict[str, Any]) -> None:
    d, model_id = hitl["d"], hitl["model_id"]
    api, viewer, clinician = d.api, d.stack.client("viewer"), d.stack.client("clinician")
    trigger = {"logical_date": None, "conf": {"maxTrials": 1}}
    a, b, c = (api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", trigger)["dag_run_id"] for _ in range(3))

    # A. listed for the approver, with the form Airflow renders
    _wait_waiting(d, a)
    run_a = _product_run(d, a)
    listed = api.get(f"{HITL_LIST}?dag_id_pattern={DAG_ID}&response_received=false")
    entry = next(e for e in listed["hitl_details"] if e["task_instance"]["dag_run_id"] == a)
    assert entry["assigned_users"] == [{"id": "admin", "name": "admin"}]
    assert entry["options"] == ["Approve", "Reject"] and entry["multiple"] is False
    assert MODEL in entry["subject"] and run_a in entry["body"]
    assert entry["params"]["justification"]["schema"]["minLength"] == 1
    assert entry["body"].splitlines()[0].startswith("**Who may decide:** admin (the model's")
    # a viewer may read it but not respond (Airflow's own decision right)
    refused = _respond(viewer, a, {"chosen_options": ["Approve"], "params_input": {}}, ok=(403,))
    assert refused["detail"]
    # nor may a user whose role grants the right but who is not an approver: Airflow itself
    # refuses (the request's assigned users), and nothing reaches the product
    answer = {"chosen_options": ["Approve"], "params_input": {"justification": "e2e: not mine"}}
    refused = _respond(clinician, a, answer, ok=(403,))
    assert "clinician" in refused["detail"] and "not a respondent" in refused["detail"]
    assert _detail(api, a)["response_received"] is False
    # ... which the product's pages tell both of them before they type anything
    for who, client in (("viewer", viewer), ("clinician", clinician)):
        told = client.get(f"/v1/patient-ml/models/{model_id}/permissions")["permissions"]
        assert told["mayDecide"] is False and told["approvers"] == ["admin"], told
        assert told["decideReason"].startswith(f"User '{who}' may not decide"), told
    approver = api.get(f"/v1/patient-ml/models/{model_id}/permissions")["permissions"]
    assert approver["mayDecide"] is True and approver["decideReason"] is None
    with session_scope(d.engine) as session:
        assert decisions_of(session, run_a) == []
    # the approver responds in Airflow: recorded in the product DB, deploy follows
    answer = _respond(
        api,
        a,
        {"chosen_options": ["Approve"], "params_input": {"justification": "e2e: better recall"}},
    )
    assert answer["responded_by"]["name"] == "admin"
    states = _wait_ended(d, a)
    assert states[TASK] == "success" and states["deploy"] == "success"
    with session_scope(d.engine) as session:
        [approval] = decisions_of(session, run_a)
        assert (approval.decision, approval.user, approval.channel) == (
            "approved",
            "admin",
            "airflow-required-actions",
        )
        assert approval.description == "e2e: better recall"
        model = session.get(Model, model_id)
        assert model is not None and model.champion_id == run_a
    [audited] = _audit(d, run_a, "run.approved")
    assert audited.actor == "admin" and audited.after["channel"] == "airflow-required-actions"
    assert not _pending(api, a)

    # B. a response without a justification is refused and the Required Action opens again
    _wait_waiting(d, b)
    run_b = _product_run(d, b)
    _respond(api, b, {"chosen_options": ["Approve"], "params_input": {"justification": " "}})
    d.stack.wait_for(
        lambda: _audit(d, run_b, "run.approval.refused"), 120, "the refusal to be audited"
    )
    _wait_waiting(d, b, deferrals=2)  # the Required Action is open again
    with session_scope(d.engine) as session:
        assert decisions_of(session, run_b) == []
    # a decision through the REST API closes it
    decided = api.post(
        f"/v1/patient-ml/models/{model_id}/runs/{run_b}/approvals",
        {"decision": "rejected", "description": "e2e: not better than the champion"},
    )
    assert decided["approvalDecision"]["channel"] == "api"
    # closed at once by the API server (no trigger needed), with the decider as responder ...
    closed = _detail(api, b)
    assert closed["response_received"] is True and closed["chosen_options"] == ["Reject"]
    assert closed["responded_by_user"]["name"] == "admin"  # the trigger would write none
    # ... so a late, conflicting response is refused where it is made (issue 34)
    late = {"chosen_options": ["Approve"], "params_input": {"justification": "e2e: late"}}
    assert "already been updated" in _respond(api, b, late, ok=(409,))["detail"]
    states = _wait_ended(d, b)
    assert states[TASK] == "skipped" and states["deploy"] == "skipped"
    closed = _detail(api, b)
    assert closed["response_received"] is True and closed["chosen_options"] == ["Reject"]
    justification = closed["params_input"]["justification"]
    assert justification.startswith("e2e: not better than the champion")
    assert "decided by admin through api" in justification
    assert not _pending(api, b)
    assert _try_number(d, a) == 1 and _try_number(d, b) == 1  # resumed, never retried
    with session_scope(d.engine) as session:
        model = session.get(Model, model_id)
        assert model is not None and model.champion_id == run_a  # B never deployed

    # C. the triggerer is down (so the trigger cannot close it first): a decision through the
    # CLI closes it, as the command returns, and resumes the task
    _wait_waiting(d, c)
    run_c = _product_run(d, c)
    cli = str(Path(sys.executable).with_name("patient-ml"))
    d.stack.stop_component("triggerer")
    try:
        done = subprocess.run(
            [cli, "--json", "runs", "reject", "--run", run_c, "--reason", "e2e: through the CLI"],
            env={**d.stack.env, "PATIENT_ML_USER": "admin"}, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _cli_closed_it(d, c, done.stdout, late)
    finally:
        d.stack.start(("triggerer",))
        d.stack.wait_ready(timeout=180)


def _cli_closed_it(d: E2EDeployment, c: str, stdout: str, late: dict[str, Any]) -> None:
    api = d.api
    printed = json.loads(stdout)
    assert printed["channel"] == "cli" and printed["requiredAction"] == "answered", printed
    closed = _detail(api, c)
    assert closed["response_received"] is True and closed["chosen_options"] == ["Reject"]
    assert closed["responded_by_user"]["name"] == "admin"
    assert "decided by admin through cli" in closed["params_input"]["justification"]
    assert "already been updated" in _respond(api, c, late, ok=(409,))["detail"]
    states = _wait_ended(d, c)
    assert states[TASK] == "skipped" and states["deploy"] == "skipped"
    assert _try_number(d, c) == 1
