"""The back half of a run through its operators on real models: evaluate (real `serve`
processes), the deferrable approval wait (its trigger run against the product DB), decisions
from the CLI, deploy to a real local endpoint, predictions, champion vs challenger on the same
test examples, rollback, and a failed health check that leaves the old champion serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
from sqlalchemy import Engine, select, update

from patient_ml.cli.main import main
from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import AuditEvent, Deployment, Endpoint, Model, Run
from patient_ml.deploy import DeployError, deploy_run, stop_old_endpoints
from patient_ml.evaluation.evaluate import EvaluationError
from patient_ml.evaluation.operating_point import stored
from patient_ml.exceptions import ConflictError
from patient_ml.operators.approval import ApprovalSensor
from patient_ml.operators.deploy import DeployModelOperator
from patient_ml.operators.evaluate import EvaluateModelOperator
from patient_ml.services.approvals import decide
from patient_ml.services.evaluations import FIRST_RUN_NOTE
from patient_ml.services.gate import gate_for
from patient_ml.services.predictions import predict
from patient_ml.services.runs import get_run, run_to_wire
from patient_ml.serving.client import ping
from patient_ml.serving.servers import LocalServer
from patient_ml.triggers.approval import ApprovalTrigger
from tests.operators.lifecycle import Project


@pytest.fixture
def sqlite_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The heavy flows run on SQLite; the decision races run on PostgreSQL in
    tests/services/test_approvals.py."""
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)
    return get_engine(url)


@pytest.fixture
def project(sqlite_engine: Engine, tmp_path: Path) -> Any:
    made: list[Project] = []

    def make(**extra: Any) -> Project:
        made.append(Project(sqlite_engine, tmp_path / f"p{len(made)}", **extra))
        return made[-1]

    yield make
    for p in made:  # never leave a serving process behind
        stop_old_endpoints(sqlite_engine, p.model_id, keep=None, actor="test-cleanup")


def evaluate(p: Project, run_id: str) -> dict[str, Any]:
    return EvaluateModelOperator(
        task_id="evaluate", run_id=run_id, backend="local", artifact_uri=p.artifacts
    ).execute({})


def wait_for_decision(p: Project, run_id: str, **kwargs: Any) -> dict[str, Any]:
    """The sensor defers; run its trigger to the first event, then resume the sensor.
    Without a task instance here, no Required Action is registered (tests/e2e covers them)."""
    sensor = ApprovalSensor(
        task_id="await_approval", run_id=run_id, artifact_uri=p.artifacts, poll_interval=0.2,
        **{"required_actions": False, **kwargs},
    )  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ApprovalTrigger)
    path, trigger_kwargs = trigger.serialize()
    assert path == "patient_ml.triggers.approval.ApprovalTrigger"
    return {"sensor": sensor, "trigger": ApprovalTrigger(**trigger_kwargs)}


def first_event(trigger: ApprovalTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout=30))


def cli(*argv: str) -> int:
    return main(list(argv))


def approve(session: Any, run_id: str, user: str, reason: str) -> Any:
    """A person's approval, with the override the gate asks for when the challenger is worse
    on the objective: these runs learn noise, so which of two is better is chance (the gate
    itself is tested in tests/services/test_gate.py)."""
    needed = gate_for(session, get_run(session, run_id)).override_required
    override = f"test: {reason}; models at chance level" if needed else None
    return decide(session, run_id, "approved", user=user, reason=reason, channel="api",
                  override=override)  # fmt: skip


def test_first_run_champion_challenger_same_test_set_and_rollback(
    project: Any, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    p = project()
    engine = sqlite_engine
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", p.artifacts)

    # --- first run: no champion, scored alone
    r1 = p.trained_run()
    summary = evaluate(p, r1)
    assert summary["championId"] is None and summary["note"] == FIRST_RUN_NOTE
    with session_scope(engine) as session:
        wire = run_to_wire(session, get_run(session, r1))
    assert wire["status"] == "succeeded" and wire["metrics"]["champion"] == []
    evaluated = {m["name"] for m in wire["metrics"]["challenger"] if m["stage"] == "evaluation"}
    assert {"accuracy", "balancedAccuracy", "macroF1", "auroc", "logLoss"} <= evaluated
    assert {"expectedCalibrationError", "recall:positive", "precision:negative"} <= evaluated
    assert wire["approvalStatus"] == "notRequested"
    card = p.store.read_bytes(f"runs/{r1}/model-card.md").decode()
    assert FIRST_RUN_NOTE in card and "Test classifier" in card

    # --- the sensor defers; a named user approves from the CLI; the trigger sees it
    waiting = wait_for_decision(p, r1)
    with session_scope(engine) as session:
        assert run_to_wire(session, get_run(session, r1))["approvalStatus"] == "pending"
    monkeypatch.setenv("PATIENT_ML_USER", "dr.ada")
    assert cli("runs", "approve", "--run", r1, "--reason", "Good enough for triage") == 0
    event = first_event(waiting["trigger"])
    assert event["status"] == "approved" and event["user"] == "dr.ada"
    assert waiting["sensor"].execute_complete({}, event)["status"] == "approved"

    # --- deploy (cloud): a real endpoint, health-checked, then the champion swap
    first = DeployModelOperator(
        task_id="deploy", run_id=r1, backend="local", artifact_uri=p.artifacts
    ).execute({})
    assert first["action"] == "promote" and ping(first["endpoint"])
    with session_scope(engine) as session:
        assert session.get(Model, p.model_id).champion_id == r1
        assert get_run(session, r1).deploy_status == "succeeded"
    again = DeployModelOperator(
        task_id="deploy", run_id=r1, backend="local", artifact_uri=p.artifacts
    ).execute({})
    assert again["alreadyDeployed"] is True  # an idempotent retry

    # --- predictions from the deployed champion, by example id and by image bytes
    report = json.loads(p.store.read_bytes(f"runs/{r1}/evaluation/report.json"))
    example = report["testExampleIds"][0]
    by_id = predict(engine, p.store, p.model_id, example_id=example)
    assert by_id["runId"] == r1 and {x["name"] for x in by_id["predictions"]} == {
        "negative",
        "positive",
    }
    # `value` marks the label at the champion's stored operating point (its threshold)
    with session_scope(engine) as session:
        point = stored(get_run(session, r1).operating_point)
    assert point is not None and point.threshold is not None
    decided = point.decide_one({x["index"]: x["confidence"] for x in by_id["predictions"]})
    assert [x["index"] for x in by_id["predictions"] if x["value"]] == [decided]
    assert by_id["operatingPoint"] == {
        "rule": point.rule,
        "positiveLabel": {"index": 1, "name": "positive"},
        "threshold": point.threshold,
        "label": decided,
        "name": "negative" if decided == 0 else "positive",
    }
    assert sum(x["confidence"] for x in by_id["predictions"]) == pytest.approx(1.0, abs=1e-6)
    assert by_id["predictions"] == sorted(by_id["predictions"], key=lambda x: -x["confidence"])
    image = (p.cohort.images / f"{example}.png").read_bytes()
    assert predict(engine, p.store, p.model_id, image=image)["predictions"] == by_id["predictions"]
    capsys.readouterr()
    assert cli("--json", "models", "predict", p.model_id, "--example", example) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == by_id["predictions"]
    assert cli("--json", "models", "endpoints", p.model_id) == 0
    assert [e["runId"] for e in json.loads(capsys.readouterr().out)["endpoints"]] == [r1]
    assert cli("runs", "card", "--run", r1) == 0
    assert "approved by dr.ada: Good enough for triage" in capsys.readouterr().out

    # --- second run: challenger vs champion on exactly the same test examples
    p.cohort.add_patients(60, 10)  # newly labelled data
    r2 = p.trained_run()
    summary2 = evaluate(p, r2)
    assert summary2["championId"] == r1 and "note" not in summary2
    report2 = json.loads(p.store.read_bytes(f"runs/{r2}/evaluation/report.json"))
    ids = report2["testExampleIds"]
    assert [a["id"] for a in report2["challenger"]["answers"]] == ids
    assert [a["id"] for a in report2["champion"]["answers"]] == ids
    assert set(report["testExampleIds"]) <= set(ids)  # earlier test examples stay in test
    deltas = summary2["deltas"]["balancedAccuracy"]
    assert deltas["delta"] == pytest.approx(deltas["challenger"] - deltas["champion"])
    # intervals resample the test set's independent clusters; the difference is paired
    assert 0 < summary2["testClusters"] <= summary2["testExamples"] == len(ids)
    assert summary2["clusterField"] in ("cluster", "patientKey")
    assert summary2["resampling"]["unit"] == "cluster" and summary2["testExamplesLeftOut"] == 0
    assert deltas["low"] <= deltas["delta"] <= deltas["high"]
    with session_scope(engine) as session:
        wire2 = run_to_wire(session, get_run(session, r2))
    [balanced] = [m for m in wire2["metrics"]["champion"] if m["name"] == "balancedAccuracy"]
    assert balanced["low"] <= balanced["value"] <= balanced["high"]
    assert report2["champion"]["intervals"]["clusters"] == summary2["testClusters"]
    card2 = json.loads(p.store.read_bytes(f"runs/{r2}/model-card.json"))
    assert card2["evaluation"]["champion"]["accuracy"] == pytest.approx(
        report2["champion"]["metrics"]["accuracy"]
    )
    assert card2["data"]["testSetSha256"] == report2["testSetSha256"]
    assert card2["evaluation"]["testClusters"] == summary2["testClusters"]
    low, high = card2["evaluation"]["intervals"]["champion"]["balancedAccuracy"]
    assert low <= card2["evaluation"]["champion"]["balancedAccuracy"] <= high
    card2_text = p.store.read_bytes(f"runs/{r2}/model-card.md").decode()
    assert f"{summary2['testClusters']} independent clusters" in card2_text
    assert "| Balanced accuracy | " in card2_text

    with session_scope(engine) as session:
        approve(session, r2, "dr.bob", "Better on the same test set")
    second = deploy_run(engine, p.store, r2, actor="t", server=LocalServer())
    assert ping(second["endpoint"]) and not ping(first["endpoint"])  # old one stopped after
    with session_scope(engine) as session, pytest.raises(ConflictError, match="second decision"):
        decide(session, r2, "rejected", user="dr.bob", reason="changed my mind", channel="api")

    # --- rollback: approve the earlier champion again and deploy it
    assert cli("runs", "approve", "--run", r1, "--reason", "Rollback", "--deploy",
               "--backend", "local") == 0  # fmt: skip
    with session_scope(engine) as session:
        assert session.get(Model, p.model_id).champion_id == r1
        history = session.scalars(
            select(Deployment).where(Deployment.model_id == p.model_id).order_by(Deployment.id)
        ).all()
        assert [(d.run_id, d.action) for d in history] == [
            (r1, "promote"),
            (r2, "promote"),
            (r1, "rollback"),
        ]
        live = session.scalars(select(Endpoint).where(Endpoint.status == "healthy")).all()
        assert [e.run_id for e in live] == [r1]
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == r1))
        assert {"run.evaluated", "run.approved", "run.rollback_approved"} <= set(actions)
    assert ping(live[0].url) and not ping(second["endpoint"])
    capsys.readouterr()
    assert cli("--json", "models", "deployments", p.model_id) == 0
    history_doc = json.loads(capsys.readouterr().out)["deployments"]
    assert [d["action"] for d in history_doc] == ["promote", "promote", "rollback"]


def test_failed_health_check_keeps_the_old_champion_serving(
    project: Any, sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = project()
    engine = sqlite_engine
    r1 = p.trained_run()
    evaluate(p, r1)
    with session_scope(engine) as session:
        decide(session, r1, "approved", user="dr.ada", reason="first model", channel="api")
    old = deploy_run(engine, p.store, r1, actor="t", server=LocalServer())
    r2 = p.trained_run()
    evaluate(p, r2)
    with session_scope(engine) as session:
        approve(session, r2, "dr.ada", "second model")
        # failure injection: the approved run's inference image cannot serve
        run = get_run(session, r2)
        config = json.loads(json.dumps(run.config))
        config["deployApproach"]["inferenceImage"] = "patient-ml/broken-serve:1"
        session.execute(update(Run).where(Run.id == r2).values(config=config))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train").write_text("#!/bin/sh\nexit 0\n")
    (broken / "serve").write_text("#!/bin/sh\necho 'cannot open model.npz' >&2\nexit 3\n")
    (broken / "serve").chmod(0o755)
    monkeypatch.setenv("PATIENT_ML_LOCAL_TRAINERS", f"patient-ml/broken-serve={broken}")

    with pytest.raises(DeployError, match="old endpoint keeps serving") as failed:
        deploy_run(engine, p.store, r2, actor="t", server=LocalServer())
    assert "cannot open model.npz" in str(failed.value)
    assert ping(old["endpoint"])
    with session_scope(engine) as session:
        assert session.get(Model, p.model_id).champion_id == r1
        run = get_run(session, r2)
        assert run.deploy_status == "failed" and "cannot open model.npz" in run.deploy_error
        statuses = session.scalars(select(Endpoint.status).order_by(Endpoint.id)).all()
        assert statuses == ["healthy", "failed"]


def test_rejection_and_timeout_skip_deploy(project: Any, sqlite_engine: Engine) -> None:
    p = project()
    engine = sqlite_engine
    rejected = p.trained_run()
    evaluate(p, rejected)
    waiting = wait_for_decision(p, rejected)
    with session_scope(engine) as session:
        decide(
            session,
            rejected,
            "rejected",
            user="dr.ada",
            reason="Misses small tumours",
            channel="api",
        )
    event = first_event(waiting["trigger"])
    assert event["status"] == "rejected"
    with pytest.raises(AirflowSkipException, match=r"rejected by dr\.ada"):
        waiting["sensor"].execute_complete({}, event)
    with pytest.raises(ConflictError, match="only an approved run"):
        deploy_run(engine, p.store, rejected, actor="t", server=LocalServer())

    late = p.trained_run()
    evaluate(p, late)
    waiting = wait_for_decision(p, late, timeout_hours=1 / 3600)  # one second
    event = first_event(waiting["trigger"])
    assert event["status"] == "timedOut"
    with pytest.raises(AirflowSkipException, match="ends unapproved"):
        waiting["sensor"].execute_complete({}, event)
    with session_scope(engine) as session:
        assert run_to_wire(session, get_run(session, late))["approvalStatus"] == "timedOut"
        with pytest.raises(ConflictError, match="timed out"):
            decide(session, late, "approved", user="dr.ada", reason="too late", channel="api")
        actions = set(session.scalars(select(AuditEvent.action)))
        assert "run.approval.timed_out" in actions
        assert session.get(Model, p.model_id).champion_id is None


def test_automatic_policy_approves_as_system_or_falls_back_to_a_human(
    project: Any, sqlite_engine: Engine
) -> None:
    policy = {
        "autoApproval": {
            "enabled": True,
            "metric": "balancedAccuracy",
            "minValue": 0.0,
            "allowWithoutChampion": True,
            "guardrails": [{"metric": "auroc", "maxRegression": 1.0}],
        }
    }
    p = project(approvalPolicy=policy)
    run = p.trained_run()
    evaluate(p, run)
    sensor = ApprovalSensor(task_id="a", run_id=run, artifact_uri=p.artifacts)
    event = sensor.execute({})  # no deferral: the policy holds
    assert event["status"] == "approved" and event["actor"] == "system"
    with session_scope(sqlite_engine) as session:
        approval = run_to_wire(session, get_run(session, run))["approvals"][0]
    assert approval["actor"] == "system" and "user" not in approval
    names = {c["name"]: c["passed"] for c in approval["criteria"]["criteria"]}
    assert names == {"champion": True, "minValue": True, "guardrail:auroc": True}

    strict = {"autoApproval": {**policy["autoApproval"], "minValue": 1.01}}  # unreachable
    q = project(approvalPolicy=strict)
    run2 = q.trained_run()
    evaluate(q, run2)
    waiting = wait_for_decision(q, run2)  # the policy fails: a human decides
    with session_scope(sqlite_engine) as session:
        declined = session.scalars(
            select(AuditEvent).where(
                AuditEvent.entity_id == run2, AuditEvent.action == "run.auto_approval.declined"
            )
        ).one()
        assert {c["name"]: c["passed"] for c in declined.after["criteria"]}["minValue"] is False
        decide(session, run2, "approved", user="dr.ada", reason="reviewed by hand", channel="api")
    assert first_event(waiting["trigger"])["user"] == "dr.ada"


def test_unauthorised_approver_is_refused(
    project: Any, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    p = project(approvalPolicy={"approvers": ["dr.ada"]})
    run = p.trained_run()
    evaluate(p, run)
    monkeypatch.setenv("PATIENT_ML_USER", "mallory")
    assert cli("runs", "approve", "--run", run, "--reason", "looks fine") == 7
    assert "may not decide" in capsys.readouterr().err
    with session_scope(sqlite_engine) as session:
        assert run_to_wire(session, get_run(session, run))["approvals"] == []
    monkeypatch.setenv("PATIENT_ML_USER", "dr.ada")
    assert cli("runs", "approve", "--run", run, "--reason", "looks fine") == 0


def test_an_unservable_champion_fails_the_evaluation_clearly(
    project: Any, sqlite_engine: Engine
) -> None:
    p = project(
        deployApproach={"type": "edge", "inferenceImage": "patient-ml/img-clf-trainer:0.1.0"}
    )
    r1 = p.trained_run()
    evaluate(p, r1)
    with session_scope(sqlite_engine) as session:
        decide(session, r1, "approved", user="dr.ada", reason="edge model", channel="api")
    edge = deploy_run(sqlite_engine, p.store, r1, actor="t", server=None)
    assert edge["deployType"] == "edge" and edge["endpoint"] is None
    with session_scope(sqlite_engine) as session:
        uri = get_run(session, r1).model_artifact_uri
    p.store.put_bytes(p.store.key_of(uri), b"not a model")  # the champion's artifact is damaged
    r2 = p.trained_run()
    with pytest.raises(EvaluationError, match=f"champion \\(run {r1}\\)") as failed:
        evaluate(p, r2)
    assert "changed or corrupted" in str(failed.value)
    with session_scope(sqlite_engine) as session:
        run = get_run(session, r2)
        assert run.status == "failed" and "champion" in run.error
