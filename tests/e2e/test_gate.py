"""The change-control gate on real Airflow (the shared deployment), with a seeded challenger.

A model with an automatic policy and two non-inferiority rules learns a synthetic cohort whose
label is visible (a bright square in the upper or the lower half of the image). Run 1 (a model
that learns) is approved by the policy as the first run and deployed. The model's search space
is then changed to a learning rate that cannot learn in one epoch, and run 2 (the seeded
challenger, worse on both rules) is:

- refused by the automatic policy (audited with the failed rules), so it waits in
  `await_approval` as an Airflow Required Action whose options are "Approve with override" /
  Reject, whose form asks for an override justification, and whose body shows the deltas with
  their intervals, the failed rule and the override requirement;
- shown on the run page (a real browser) with its operating point, the failed rule, the
  override requirement and an approval form that offers only "Approve with override";
- refused by the REST API when approved without an override (422 on `override`);
- approved in Required Actions with the override and its own justification: recorded as an
  override (channel `airflow-required-actions`, audited as `run.override_approved`) and
  deployed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Model, Run
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.approvals import decisions_of
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model, get_model, model_to_wire, update_model
from tests.curation.cohort import Cohort, dataset_config
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment
from tests.e2e.test_web_ui import FRAME, _login, _shot, browser  # noqa: F401  (fixture)
from tests.operators.lifecycle import model_config

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

MODEL = "e2e-gate-classifier"
DAG_ID = "patient_ml__e2e_gate_classifier"
TASK = "await_approval"
RULES = [
    {"metric": "balancedAccuracy", "margin": 0.02},
    {"metric": "sensitivity:positive", "margin": 0.02},
]
LEARNS = [
    {"type": "categorical", "name": "epochs", "values": ["20"]},
    {"type": "categorical", "name": "image_size", "values": ["16"]},
    {"type": "categorical", "name": "learning_rate", "values": ["0.01"]},
    # up vs down is the label: augment with left-right mirroring only (the trainer's default,
    # all 8 orientations of the square, would flip the label with the image)
    {"type": "categorical", "name": "orientations", "values": ["lr"]},
]
CANNOT_LEARN = [  # the seeded challenger: one epoch at a learning rate that moves nothing
    {"type": "categorical", "name": "epochs", "values": ["1"]},
    {"type": "categorical", "name": "image_size", "values": ["16"]},
    {"type": "categorical", "name": "learning_rate", "values": ["0.000001"]},
    {"type": "categorical", "name": "augment", "values": ["false"]},
]


def square_png(label: int, seed: int) -> bytes:
    """32 x 32 noise with a bright 8 x 8 square in the upper half (label 1) or the lower half
    (label 0), anywhere across: learnable, unchanged in kind by left-right mirroring (the
    search space keeps the trainer's augmentation to that)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 140, (32, 32)).astype(np.uint8)
    row = int(rng.integers(1, 8)) + (0 if label == 1 else 16)
    col = int(rng.integers(0, 24))
    pixels[row : row + 8, col : col + 8] = 255
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def register(d: E2EDeployment) -> str:
    cohort = Cohort(d.sources / "gate-cohort", "gate01", "urn:test:e2e-gate-dataset")
    for p in range(100):
        for k in range(2):
            doc_id, label = f"g{p:04d}-{k}", (p + k) % 2
            cohort.doc(doc_id, f"gp{p:04d}", data=square_png(label, p * 10 + k))
            cohort.label(f"go{p:04d}-{k}", doc_id, label)
    source = cohort.write_ndjson(d.root / "gate-ndjson")
    with session_scope(d.engine) as session:
        ds = dataset_config("e2e-gate-dataset", "gate01", maxImagePixels=5000)
        ds["source"] = {"type": "ndjson", "uri": str(source)}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        policy = {
            "approvers": ["admin"],
            "autoApproval": {"enabled": True, "allowWithoutChampion": True},
            "nonInferiority": RULES,
        }
        config = model_config(MODEL, dataset_id, approvalPolicy=policy)
        config["trainingApproach"]["trainingImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        config["trainingApproach"]["searchSpace"] = LEARNS
        config["deployApproach"]["inferenceImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        return str(create_model(session, config, actor="e2e").id)


@pytest.fixture(scope="module")
def gated(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    d = airflow_deployment
    model_id = register(d)
    try:
        d.wait_for_dag(DAG_ID)
        yield {"d": d, "model_id": model_id}
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _champion(d: E2EDeployment, model_id: str) -> str | None:
    with session_scope(d.engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model.champion_id


def _run_of(d: E2EDeployment, run_id: str) -> Run:
    with session_scope(d.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        session.expunge(run)
        return run


def _audit(d: E2EDeployment, run_id: str, action: str) -> list[AuditEvent]:
    with session_scope(d.engine) as session:
        found = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_id == run_id, AuditEvent.action == action)
        )
        return list(found)


def _hitl_path(dag_run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{TASK}/-1/hitlDetails"


def _deferrals_reported(d: E2EDeployment, dag_run_id: str) -> int:
    """The deferring worker's exit as the scheduler saw it (see test_required_actions: a
    response before it races Airflow 3.3's scheduler)."""
    key = f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{TASK}', run_id='{dag_run_id}'"
    log = (d.stack.home / "logs" / "scheduler.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Received executor event" in line and key in line)


def test_a_worse_challenger_is_refused_and_needs_an_override(
    gated: dict[str, Any],
    browser: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    d, model_id = gated["d"], gated["model_id"]
    api = d.api

    # Run 1 learns; the policy approves it as the first run and it is deployed.
    first = api.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]
    d.stack.wait_for(lambda: _champion(d, model_id) == first, 600, f"run {first} as champion")
    with session_scope(d.engine) as session:
        [auto] = decisions_of(session, first)
        assert auto.actor == "system" and auto.decision == "approved"
    learned = api.get(f"/v1/patient-ml/models/{model_id}/runs/{first}?view=extended")["run"]
    [balanced] = [
        m["value"]
        for m in learned["metrics"]["challenger"]
        if m["name"] == "balancedAccuracy" and m["stage"] == "evaluation"
    ]
    assert balanced > 0.8, learned["metrics"]["challenger"]
    point = _run_of(d, first).operating_point
    assert point and point["rule"] == "youden" and 0 < point["threshold"] < 1

    # The seeded challenger: the same data, a search space that cannot learn.
    with session_scope(d.engine) as session:
        config = model_to_wire(get_model(session, model_id))
        config["trainingApproach"]["searchSpace"] = CANNOT_LEARN
        update_model(session, model_id, config, actor="e2e")
    second = api.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]

    def waiting() -> bool:
        run = _run_of(d, second)
        assert run.status != "failed", run.error
        if not (run.airflow_run_id and run.approval_requested_at):
            return False
        states = d.api.task_states(DAG_ID, run.airflow_run_id)
        return states.get(TASK) == "deferred" and _deferrals_reported(d, run.airflow_run_id) >= 1

    d.stack.wait_for(waiting, 600, f"run {second} to wait in Required Actions")
    dag_run_id = _run_of(d, second).airflow_run_id
    assert dag_run_id

    # Refused by the automatic policy, with the failed rules audited.
    [declined] = _audit(d, second, "run.auto_approval.declined")
    failed = {c["name"] for c in declined.after["criteria"] if not c["passed"]}
    assert "nonInferiority:balancedAccuracy@overall" in failed
    with session_scope(d.engine) as session:
        assert decisions_of(session, second) == []

    # The REST API: the gate, and a plain approval refused on `override`.
    run = api.get(f"/v1/patient-ml/models/{model_id}/runs/{second}?view=extended")["run"]
    gate = run["gate"]
    rule = next(r for r in gate["rules"] if r["metric"] == "balancedAccuracy")
    assert not rule["passed"] and rule["low"] < -0.02 and gate["overrideRequired"]
    assert run["operatingPoint"]["threshold"] is not None
    refused = api.request(
        "POST",
        f"/v1/patient-ml/models/{model_id}/runs/{second}/approvals",
        {"decision": "approved", "description": "e2e: looks fine"},
        ok=(422,),
    )
    assert refused["error"]["errors"][0]["field"] == "override"

    # Airflow's Required Action: the override option and field, the deltas with intervals.
    detail = api.get(_hitl_path(dag_run_id))
    assert detail["options"] == ["Approve with override", "Reject"]
    assert set(detail["params"]) == {"justification", "override_justification"}
    body = detail["body"]
    assert "✘ FAILS: Balanced accuracy" in body and "**Override required.**" in body
    assert "| balancedAccuracy |" in body and "difference [paired CI]" in body
    assert "Operating point of the challenger" in body

    # The run page, in a real browser: the failed rule and the override requirement.
    page = _login(browser, d, "admin")
    page.goto(f"{d.stack.url}/dags/{DAG_ID}/runs/{dag_run_id}/plugin/patient-ml-run")
    ui = page.frame_locator(FRAME)
    expect(ui.get_by_test_id("run-title")).to_be_visible(timeout=60_000)
    expect(ui.get_by_test_id("gate-rule-balancedAccuracy")).to_contain_text("fails")
    expect(ui.get_by_test_id("override-required")).to_contain_text("needs an explicit override")
    expect(ui.get_by_test_id("operating-point-challenger")).to_contain_text(
        "when its confidence is at least"
    )
    expect(ui.get_by_test_id("at-point-sensitivity:positive")).to_contain_text("[")
    form = ui.get_by_test_id("approval-form")
    expect(form.get_by_role("button", name="Approve with override")).to_be_disabled()
    expect(form.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
    ui.get_by_test_id("operating-point").scroll_into_view_if_needed()
    _shot(page, "run-operating-point")
    ui.get_by_test_id("gate").scroll_into_view_if_needed()
    _shot(page, "run-gate-override")

    # A clinician (Airflow role `user`: she may respond to required actions in general, but is
    # not one of the model's approvers) sees who may decide and why not before typing, with
    # the form disabled; Airflow refuses her response in Required Actions (issue 31).
    other = _login(browser, d, "clinician")
    other.goto(f"{d.stack.url}/dags/{DAG_ID}/runs/{dag_run_id}/plugin/patient-ml-run")
    theirs = other.frame_locator(FRAME)
    expect(theirs.get_by_test_id("approval-approvers")).to_have_text(
        "Who may decide: admin.", timeout=60_000
    )
    expect(theirs.get_by_test_id("approval-reason")).to_contain_text(
        "User 'clinician' may not decide on runs of model"
    )
    expect(theirs.get_by_role("textbox", name="Justification")).to_be_disabled()
    expect(theirs.get_by_role("button", name="Reject")).to_be_disabled()
    theirs.get_by_test_id("approval-who").scroll_into_view_if_needed()
    _shot(other, "run-not-an-approver")
    other.context.close()
    refused = d.stack.client("clinician").request(
        "PATCH",
        _hitl_path(dag_run_id),
        {"chosen_options": ["Reject"], "params_input": {"justification": "e2e: not mine"}},
        ok=(403,),
    )
    assert "not a respondent" in refused["detail"]

    # The approver overrides in Required Actions, with the override's own justification.
    answer = api.request(
        "PATCH",
        _hitl_path(dag_run_id),
        {
            "chosen_options": ["Approve with override"],
            "params_input": {
                "justification": "e2e: the seeded challenger",
                "override_justification": "e2e: overriding on purpose to prove the audit",
            },
        },
    )
    assert answer["responded_by"]["name"] == "admin"
    d.stack.wait_for(lambda: _champion(d, model_id) == second, 600, f"run {second} deployed")
    with session_scope(d.engine) as session:
        [approval] = decisions_of(session, second)
        assert (approval.user, approval.channel) == ("admin", "airflow-required-actions")
        assert approval.criteria and approval.criteria["override"]["justification"] == (
            "e2e: overriding on purpose to prove the audit"
        )
        assert "balancedAccuracy" in approval.criteria["override"]["failedRules"]
    [audited] = _audit(d, second, "run.override_approved")
    assert audited.actor == "admin" and audited.after["channel"] == "airflow-required-actions"
    assert not _audit(d, second, "run.approved")

    page.reload()
    ui = page.frame_locator(FRAME)
    expect(ui.get_by_test_id("decision-override")).to_contain_text(
        "override: e2e: overriding on purpose", timeout=60_000
    )
    page.context.close()
