"""await_approval's resume: events are validated (never read as a timeout by default), a
response from Airflow's Required Actions is recorded through the decision service like one
through the REST API (channel `airflow-required-actions`), a refused one is audited and the
wait goes on. The real Required Action in Airflow is proven in tests/e2e/test_required_actions.py.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.operators.approval import ApprovalSensor, AwaitApprovalOperator
from patient_ml.services import approvals, runs
from patient_ml.services.audit import events_for
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from patient_ml.triggers.approval import ApprovalTrigger
from patient_ml.triggers.approval_events import ApprovalEventError
from tests.helpers import example
from tests.services.evaluated import evaluated_run, model_with_champion


@pytest.fixture
def waiting_run(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """An evaluated run whose approval window is open; approvers dr-a and dr-b."""
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    with session_scope(engine) as session:
        dataset = create_dataset(session, example("brain_mri_dataset"), actor="t")
        config = example("brain_mri_model")
        config["datasetId"] = dataset.id
        config["approvalPolicy"] = {"approvers": ["dr-a", "dr-b"], "timeoutHours": 1}
        model = create_model(session, config, actor="t")
        run = runs.create_run(session, model.id, actor="t")
        runs.finish_run(session, run.id, status="succeeded", actor="t")
        approvals.request_approval(session, run.id, timeout_hours=1)
        run_id = run.id
    sensor = ApprovalSensor(
        task_id="await_approval",
        run_id=run_id,
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        required_actions=False,  # no task instance here: no Airflow HITL request
    )
    return {"run_id": run_id, "sensor": sensor, "engine": engine}


def _response(user: str | None, option: str = "Approve", text: str = "better") -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {"justification": text},
        "responded_at": datetime.now(UTC),
        "responded_by_user": None if user is None else {"id": user, "name": user},
        "timedout": False,
    }


def _decisions(engine: Engine, run_id: str) -> list[tuple[str, str | None, str | None]]:
    with session_scope(engine) as session:
        return [(a.decision, a.user, a.channel) for a in approvals.decisions_of(session, run_id)]


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ("approved", "a str, not an event object"),
        ({"status": "maybe", "runId": "RUN"}, "status"),
        ({"status": "approved"}, "runId"),
        ({"status": "timedOut", "runId": "another-run"}, "an event of run 'another-run'"),
        ({"status": "approved", "runId": "RUN", "actor": "robot"}, "actor"),
        ({"status": "error", "runId": "RUN"}, "error"),
        ({"chosen_options": ["Maybe"], "params_input": {}}, "chosen_options"),
        ({"chosen_options": ["Approve", "Reject"], "params_input": {}}, "chosen_options"),
        ({"chosen_options": ["Approve (override)"], "params_input": {}}, "chosen_options"),
    ],
)
def test_an_event_it_does_not_understand_fails_the_task(
    waiting_run: dict[str, Any], event: Any, says: str
) -> None:
    if isinstance(event, dict) and event.get("runId") == "RUN":
        event = {**event, "runId": waiting_run["run_id"]}
    with pytest.raises(ApprovalEventError, match="resumed with") as refused:
        waiting_run["sensor"].execute_complete({}, event)
    assert says in str(refused.value)
    assert _decisions(waiting_run["engine"], waiting_run["run_id"]) == []  # nothing recorded


def test_a_decision_event_the_product_db_does_not_hold_fails_the_task(
    waiting_run: dict[str, Any],
) -> None:
    forged = {"status": "approved", "runId": waiting_run["run_id"], "actor": "user", "user": "x"}
    with pytest.raises(ApprovalEventError, match="has no decision and its window is still open"):
        waiting_run["sensor"].execute_complete({}, forged)


def test_the_trigger_error_event_fails_the_task_with_the_error(
    waiting_run: dict[str, Any],
) -> None:
    event = {
        "status": "error",
        "runId": waiting_run["run_id"],
        "error": "OperationalError: could not connect to server",
        "failures": 6,
    }
    with pytest.raises(ApprovalEventError, match="failed 6 times in a row: OperationalError"):
        waiting_run["sensor"].execute_complete({}, event)


def test_a_required_actions_response_is_recorded_like_a_rest_decision(
    waiting_run: dict[str, Any],
) -> None:
    run_id, engine = waiting_run["run_id"], waiting_run["engine"]
    done = waiting_run["sensor"].execute_complete({}, _response("dr-a", text="  clearly better "))
    assert done["status"] == "approved" and done["user"] == "dr-a"
    assert done["channel"] == "airflow-required-actions"
    assert _decisions(engine, run_id) == [("approved", "dr-a", "airflow-required-actions")]
    with session_scope(engine) as session:
        approved = [e for e in events_for(session, "run", run_id) if e.action == "run.approved"]
        assert approved[0].actor == "dr-a"
        assert approved[0].after["description"] == "clearly better"
        assert approved[0].after["channel"] == "airflow-required-actions"
        assert approved[0].after["detail"] == {"airflowUserId": "dr-a"}


def test_a_reject_response_skips_deploy(waiting_run: dict[str, Any]) -> None:
    with pytest.raises(AirflowSkipException, match="rejected by dr-b through airflow-required"):
        waiting_run["sensor"].execute_complete({}, _response("dr-b", "Reject", "worse recall"))
    assert _decisions(waiting_run["engine"], waiting_run["run_id"])[0][0] == "rejected"


@pytest.mark.parametrize(
    ("user", "text", "why"),
    [
        ("mallory", "looks fine", "approvers are dr-a, dr-b"),
        ("dr-a", "   ", "description"),
    ],
)
def test_a_refused_response_is_audited_and_the_wait_goes_on(
    waiting_run: dict[str, Any], user: str, text: str, why: str
) -> None:
    run_id, engine = waiting_run["run_id"], waiting_run["engine"]
    with pytest.raises(TaskDeferred) as deferred:
        waiting_run["sensor"].execute_complete({}, _response(user, text=text))
    assert isinstance(deferred.value.trigger, ApprovalTrigger)  # waits again, deadline kept
    assert _decisions(engine, run_id) == []
    with session_scope(engine) as session:
        refused = [e for e in events_for(session, "run", run_id) if e.action.endswith("refused")]
    assert refused[0].actor == user and why in refused[0].after["reason"]
    assert refused[0].after["channel"] == "airflow-required-actions"


def test_a_response_after_a_decision_elsewhere_keeps_that_decision(
    waiting_run: dict[str, Any],
) -> None:
    run_id, engine = waiting_run["run_id"], waiting_run["engine"]
    with session_scope(engine) as session:
        approvals.decide(session, run_id, "rejected", user="dr-b", reason="no", channel="ui")
    with pytest.raises(AirflowSkipException, match="rejected by dr-b through ui"):
        waiting_run["sensor"].execute_complete({}, _response("dr-a"))
    assert _decisions(engine, run_id) == [("rejected", "dr-b", "ui")]


def test_the_decision_written_into_the_required_action_resumes_without_a_second_record(
    waiting_run: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The API server answers the Required Action with a REST decision and resumes the task
    (hooks.airflow_required_actions): the task ends with that decision, records nothing again
    and does not take the response back (it says what the product holds)."""
    run_id, engine = waiting_run["run_id"], waiting_run["engine"]
    with session_scope(engine) as session:
        approvals.decide(session, run_id, "approved", user="dr-a", reason="ok", channel="api")
    sensor = waiting_run["sensor"]
    sensor.required_actions = True  # a clear_response would need a task instance: none here
    done = sensor.execute_complete({}, _response("dr-a", text="ok — decided by dr-a through api"))
    assert done["status"] == "approved" and done["channel"] == "api"
    assert _decisions(engine, run_id) == [("approved", "dr-a", "api")]
    assert "came too late" not in caplog.text


def test_deferrable_is_the_default_and_false_polls_in_the_worker(
    waiting_run: dict[str, Any], tmp_path: Path
) -> None:
    """deferrable=False: the same wait in the worker; a decision recorded meanwhile (another
    thread, as the REST API would) ends it exactly as the trigger's event would."""
    run_id, engine = waiting_run["run_id"], waiting_run["engine"]
    assert waiting_run["sensor"].deferrable is True
    with pytest.raises(TaskDeferred):
        waiting_run["sensor"].execute({})
    worker = AwaitApprovalOperator(
        task_id="await_approval",
        run_id=run_id,
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        required_actions=False,
        deferrable=False,
        poll_interval=0.05,
    )

    def decide_soon() -> None:
        time.sleep(0.3)
        with session_scope(engine) as session:
            approvals.decide(session, run_id, "approved", user="dr-a", reason="ok", channel="api")

    thread = threading.Thread(target=decide_soon)
    thread.start()
    try:
        done = worker.execute({})
    finally:
        thread.join()
    assert done["status"] == "approved" and done["user"] == "dr-a" and done["channel"] == "api"


def test_the_former_name_is_the_same_operator() -> None:
    assert ApprovalSensor is AwaitApprovalOperator


def _sensor(run_id: str, tmp_path: Path) -> AwaitApprovalOperator:
    return AwaitApprovalOperator(
        task_id="await_approval",
        run_id=run_id,
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        required_actions=False,
    )


def _override(user: str, text: str, override: str | None) -> dict[str, Any]:
    answer = _response(user, "Approve with override", text)
    if override is not None:
        answer["params_input"]["override_justification"] = override
    return answer


def test_two_people_approve_in_required_actions_before_the_task_ends(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """minApprovers 2: the first approval re-opens the wait; the same person again is refused
    (audited); a second person ends it approved."""
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    policy = {"approvers": ["dr-a", "dr-b"], "minApprovers": 2}
    model_id = model_with_champion(engine, tmp_path, policy)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.02, seed=9, champion_miss=0.3)
    with session_scope(engine) as session:
        approvals.request_approval(session, run_id, timeout_hours=1)
    sensor = _sensor(run_id, tmp_path)
    with pytest.raises(TaskDeferred):
        sensor.execute_complete({}, _response("dr-a", text="good"))
    assert _decisions(engine, run_id) == [("approved", "dr-a", "airflow-required-actions")]
    with pytest.raises(TaskDeferred):
        sensor.execute_complete({}, _response("dr-a", text="still good"))
    with session_scope(engine) as session:
        refused = [e for e in events_for(session, "run", run_id)
                   if e.action == "run.approval.refused"]  # fmt: skip
    assert "needs 2 different people" in refused[0].after["reason"]
    _, _, assignees, _, override = sensor._request_text()
    assert assignees == ["dr-b"] and override is False  # offered to who has not approved
    done = sensor.execute_complete({}, _response("dr-b", text="agree"))
    assert done["status"] == "approved" and done["user"] == "dr-b"
    assert [d[1] for d in _decisions(engine, run_id)] == ["dr-a", "dr-b"]


def test_an_override_in_required_actions_needs_its_option_and_its_justification(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    policy = {"approvers": ["dr-a"], "nonInferiority": [
        {"metric": "sensitivity:positive", "margin": 0.02}]}  # fmt: skip
    model_id = model_with_champion(engine, tmp_path, policy)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.5, seed=10)
    with session_scope(engine) as session:
        approvals.request_approval(session, run_id, timeout_hours=1)
    sensor = _sensor(run_id, tmp_path)
    subject, body, _, _, override = sensor._request_text()
    assert (
        subject.startswith("Approve run ")
        and override is True
        and "✘ FAILS: Sensitivity of positive" in body
    )
    assert "**Override required.**" in body and "Approve with override" in body
    assert "| sensitivity:positive |" in body and "[" in body  # values with their intervals
    for answer in (
        _response("dr-a", text="fine"),  # plain Approve: refused
        _override("dr-a", "fine", None),  # the option without its text
    ):
        with pytest.raises(TaskDeferred):
            sensor.execute_complete({}, answer)
        with session_scope(engine) as session:
            reasons = [e.after["reason"] for e in events_for(session, "run", run_id)
                       if e.action == "run.approval.refused"]  # fmt: skip
        assert "is required to approve run" in reasons[-1]
    assert _decisions(engine, run_id) == []
    done = sensor.execute_complete({}, _override("dr-a", "fine", "second reader covers it"))
    assert done["status"] == "approved" and done["override"] is True
    with session_scope(engine) as session:
        [approval] = approvals.decisions_of(session, run_id)
        assert approval.criteria and approval.criteria["override"]["justification"] == (
            "second reader covers it"
        )
        audited = [e.action for e in events_for(session, "run", run_id)]
    assert "run.override_approved" in audited
