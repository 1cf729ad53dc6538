"""Patient ML's roles under the FAB auth manager (`apache-airflow-providers-fab`), end to end on
real Airflow (issue 31; docs/roles.md, "FAB auth manager").

A deployment of its own for this module (AirflowStack(auth_manager="fab")): FAB's users and
roles in Airflow's metadata DB, one user per Patient ML role (include/demo_users.py) with FAB's
built-in role (viewer: Viewer, clinician and dr-approver: User, ml-engineer: Op, admin: Admin),
JWTs from FAB's `POST /auth/token`. One model names `dr-approver` its approver; the ML engineer
starts one run, which waits in `await_approval` as an Airflow Required Action:

- the viewer reads the model, but may neither start a run nor decide (403 from the product and
  from Airflow), and the product's permissions say so, and why, before anything is typed;
- the clinician (FAB `User`: the decision right, not an approver) is refused by the product and
  by Airflow, whose request is assigned to dr-approver's FAB id (`ab_user.id`, not the name):
  "not a respondent";
- dr-approver's response in Required Actions approves the run in the product (channel
  `airflow-required-actions`, recorded under the FAB user name), and deploy follows.

Before that decision, each user signs in through FAB's login page and walks the Patient ML pages
in a real browser at 1280 x 900 and 1920 x 1080 (tests/e2e/role_walk.py): only dr-approver sees
an enabled decision form and the request in Airflow's Required Actions.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from include.airflow_stack import ApiClient
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Run
from patient_ml.services.approvals import decisions_of
from tests.e2e.conftest import E2EDeployment, register_cohort_model, start_deployment
from tests.e2e.role_walk import chromium, walk_all

if importlib.util.find_spec("airflow.providers.fab") is None:  # CI installs it (`test` extra)
    pytest.skip(
        "apache-airflow-providers-fab is not installed (pip install -e '.[test]')",
        allow_module_level=True,
    )

MODEL = "e2e-fab-classifier"
DAG_ID = "patient_ml__e2e_fab_classifier"
TASK = "await_approval"
APPROVER = "dr-approver"
DETAIL = f"/api/v2/dags/{DAG_ID}/dagRuns/{{}}/taskInstances/{TASK}/-1/hitlDetails"


@pytest.fixture(scope="module")
def fab(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("e2e-fab")
    with start_deployment(root, request, auth_manager="fab", mirrors=False) as d:
        model_id = register_cohort_model(
            d, dataset="e2e-fab-dataset", salt="fab001", model=MODEL, approvers=[APPROVER]
        )
        d.wait_for_dag(DAG_ID)
        yield {"d": d, "model_id": model_id}


@pytest.fixture(scope="module")
def pending(fab: dict[str, Any]) -> dict[str, Any]:
    """The ML engineer (FAB Op) starts a run; it waits in Airflow's Required Actions."""
    d, model_id = fab["d"], fab["model_id"]
    engineer = d.stack.client("ml-engineer")
    run_id = engineer.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]
    [dag_run] = d.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    dag_run_id = dag_run["dag_run_id"]
    _wait_waiting(d, dag_run_id)
    with session_scope(d.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        slug = run.slug
    return {"run_id": run_id, "dag_run_id": dag_run_id, "slug": slug}


def test_fab_each_role_walks_the_pages(fab: dict[str, Any], pending: dict[str, Any]) -> None:
    """Every demo user signs in through FAB's login page while the run waits for dr-approver."""
    d = fab["d"]
    with chromium() as (browser, expect):
        walk_all(
            browser,
            expect,
            d.stack,
            model=MODEL,
            dag_id=DAG_ID,
            dag_run_id=pending["dag_run_id"],
            slug=pending["slug"],
            deciders=[APPROVER],
        )


def _fab_user_ids(d: E2EDeployment) -> dict[str, str]:
    """FAB's users in Airflow's metadata DB: name -> `ab_user.id`."""
    engine = create_engine(d.stack.metadata_db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, username FROM ab_user"))
            return {str(name): str(user_id) for user_id, name in rows}
    finally:
        engine.dispose()


def _respond(api: ApiClient, dag_run_id: str, body: dict[str, Any], ok: tuple[int, ...] = ()):
    return api.request("PATCH", DETAIL.format(dag_run_id), body, ok=ok)


def _deferrals_reported(d: E2EDeployment, dag_run_id: str) -> int:
    """The scheduler has seen the deferring worker exit (tests/e2e/test_required_actions.py:
    Airflow 3.3 retries a task resumed before that)."""
    key = f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{TASK}', run_id='{dag_run_id}'"
    log = (d.stack.home / "logs" / "scheduler.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Received executor event" in line and key in line)


def _wait_waiting(d: E2EDeployment, dag_run_id: str) -> None:
    def waiting() -> bool:
        states = d.api.task_states(DAG_ID, dag_run_id)
        bad = {t: s for t, s in states.items() if s == "failed"}
        assert not bad, f"tasks failed: {states}\n{d.stack.log_tail('scheduler')}"
        pending = d.api.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/hitlDetails"
            "?response_received=false&state=deferred&state=awaiting_input"
        )["hitl_details"]
        return (
            states.get(TASK) == "deferred"
            and bool(pending)
            and _deferrals_reported(d, dag_run_id) >= 1
        )

    d.stack.wait_for(waiting, 420, f"{TASK} of {dag_run_id} to wait in Required Actions")


def test_fab_roles_decide_who_may_do_what(fab: dict[str, Any], pending: dict[str, Any]) -> None:
    d, model_id = fab["d"], fab["model_id"]
    viewer, clinician = d.stack.client("viewer"), d.stack.client("clinician")
    approver = d.stack.client(APPROVER)
    model_path = f"/v1/patient-ml/models/{model_id}"

    # the FAB Viewer reads the model, may neither start a run nor decide, and is told why
    assert viewer.get(model_path)["model"]["name"] == MODEL
    refused = viewer.request("POST", f"{model_path}/runs", {"maxTrials": 1}, ok=(403,))
    assert "viewer" in str(refused)
    told = viewer.get(f"{model_path}/permissions")["permissions"]
    assert told["user"] == "viewer" and told["mayStartRun"] is False, told
    assert told["mayDecide"] is False and told["approvers"] == [APPROVER], told
    assert told["decideReason"].startswith("User 'viewer' may not decide"), told
    assert "HITL Detail" in told["decideReason"] and f"Who may decide: {APPROVER}" in str(told)
    # the FAB User who is not an approver has the right, but not the approval: told too
    told = clinician.get(f"{model_path}/permissions")["permissions"]
    assert told["mayDecide"] is False and told["mayStartRun"] is True, told
    assert told["decideReason"].startswith("User 'clinician' may not decide"), told
    assert APPROVER in told["decideReason"], told
    told = approver.get(f"{model_path}/permissions")["permissions"]
    assert told["mayDecide"] is True and told["decideReason"] is None, told

    # the FAB Op (ML engineer) started the run (`pending`); it waits in Required Actions
    run_id, dag_run_id = pending["run_id"], pending["dag_run_id"]

    # assigned to dr-approver's FAB id (ab_user.id), which the API server looked up by name
    ids = _fab_user_ids(d)
    assert ids[APPROVER].isdigit()
    detail = d.api.get(DETAIL.format(dag_run_id))
    assert detail["assigned_users"] == [{"id": ids[APPROVER], "name": APPROVER}]
    assert detail["body"].splitlines()[0].startswith(f"**Who may decide:** {APPROVER} (the")
    # Airflow refuses the viewer (no decision right) and the clinician (not a respondent)
    answer = {"chosen_options": ["Approve"], "params_input": {"justification": "e2e: not mine"}}
    assert _respond(viewer, dag_run_id, answer, ok=(403,))["detail"]
    refused = _respond(clinician, dag_run_id, answer, ok=(403,))
    assert f"User=clinician (id={ids['clinician']})" in refused["detail"]
    assert "not a respondent" in refused["detail"]
    # ... and so does the product's REST API, before anything is recorded
    for client in (viewer, clinician):
        refused = client.request(
            "POST",
            f"{model_path}/runs/{run_id}/approvals",
            {"decision": "approved", "description": "e2e: not mine"},
            ok=(403,),
        )
        assert refused, refused
    assert d.api.get(DETAIL.format(dag_run_id))["response_received"] is False
    with session_scope(d.engine) as session:
        assert decisions_of(session, run_id) == []

    # dr-approver (FAB User, named in approvers) responds in Required Actions: Airflow takes it
    # and the product records it under the FAB user name
    answer = {"chosen_options": ["Approve"], "params_input": {"justification": "e2e: FAB ok"}}
    responded = _respond(approver, dag_run_id, answer)
    assert responded["responded_by"] == {"id": ids[APPROVER], "name": APPROVER}

    def decided() -> list[Any]:
        with session_scope(d.engine) as session:
            return [(a.decision, a.user, a.channel) for a in decisions_of(session, run_id)]

    recorded = d.stack.wait_for(decided, 180, "the approval to be recorded")
    assert recorded == [("approved", APPROVER, "airflow-required-actions")]

    def ended() -> str | None:
        state = d.api.dag_run(DAG_ID, dag_run_id)["state"]
        return state if state in ("success", "failed") else None

    assert d.stack.wait_for(ended, 300, f"DAG run {dag_run_id} to end") == "success"
    assert d.api.task_states(DAG_ID, dag_run_id)["deploy"] == "success"
