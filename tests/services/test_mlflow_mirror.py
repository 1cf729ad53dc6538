"""MLflow mirrors the product (docs/mlflow.md), against a real `mlflow server` (SQLite
backend, started by tests/mlflow_server.py) and the product DB on SQLite and PostgreSQL: the
sweep's trials as nested runs (hyperparameters, intermediate and final metrics, pruned state),
the evaluated challenger as a registered version (evaluation metrics, the snapshot as input
dataset, the model artifact), the alias `champion` set by a deployment and moved by the next
one and by a rollback, with the approval and approvers in tags. An unreachable server never
fails a deployment: the failure is reported, and the next mirroring fills in what is missing."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import Engine, select

from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Run
from patient_ml.deploy import deploy_on_request, deploy_run
from patient_ml.services import approvals
from patient_ml.services import training as training_service
from patient_ml.storage import LocalArtifactStore
from patient_ml.training import sweep
from tests.mlflow_server import CONN_ID, MlflowServer, free_port
from tests.operators.lifecycle import IMAGE
from tests.services.evaluated import evaluated_run, model_with_policy

SNAPSHOT = "e" * 64
OBJECTIVE = "validation:balancedAccuracy"
EDGE = {"deployApproach": {"type": "edge", "inferenceImage": IMAGE}}


def _with_artifact(engine: Engine, store: LocalArtifactStore, run_id: str) -> bytes:
    """Give the run a real model.tar.gz in the artifact store; its bytes."""
    data = f"model of {run_id}".encode() * 50
    key = f"runs/{run_id}/model.tar.gz"
    store.put_bytes(key, data)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.model_artifact_uri = store.uri(key)
        run.model_artifact_sha256 = hashlib.sha256(data).hexdigest()
    return data


def _sweep(engine: Engine, run_id: str) -> None:
    """Three trials in the run's Optuna study (the product DB) and in pml_trials: 0 complete
    with intermediate values at steps 1-3, 1 pruned after step 1, 2 failed."""
    storage = sweep.optuna_storage(engine.url.render_as_string(hide_password=False))
    sweep.create_study(storage, run_id, "maximize")
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    plan: list[tuple[str, list[float], dict[str, float]]] = [
        ("complete", [0.6, 0.7, 0.8], {OBJECTIVE: 0.8, "train:loss": 0.31}),
        ("pruned", [0.2], {}),
        ("failed", [], {}),
    ]
    for number, (state, values, metrics) in enumerate(plan):
        trial = study.ask()
        params = {"epochs": str(3 + number), "lr": f"0.0{number + 1}"}
        trial.set_user_attr(sweep.HPARAMS_ATTR, params)
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        trial.set_user_attr("metrics", metrics)
        if state == "complete":
            study.tell(trial, values[-1])
        elif state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        with session_scope(engine) as session:
            training_service.record_trial(
                session, run_id, trial.number, state=state, params=params, worker="0",
                value=values[-1] if state == "complete" else None,
                failure="trainer exited with 1" if state == "failed" else None,
                optuna_trial_id=trial._trial_id,
            )  # fmt: skip


def _approve(engine: Engine, run_id: str, user: str, reason: str) -> None:
    with session_scope(engine) as session:
        approvals.decide(session, run_id, "approved", user=user, reason=reason, channel="api")


def _experiment(client: Any, model_name: str) -> str:
    found = client.get_experiment_by_name(f"patient-ml/{model_name}")
    assert found is not None, f"no MLflow experiment for model {model_name}"
    return str(found.experiment_id)


def _model_name(engine: Engine, model_id: str) -> str:
    from patient_ml.db.models import Model

    with session_scope(engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model.name


def _events(engine: Engine, run_id: str, action: str) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_id == run_id, AuditEvent.action == action)
        )
        return [dict(r.after or {}) for r in rows]


def test_trials_versions_and_the_champion_alias_are_mirrored(
    engine: Engine, tmp_path: Path, mlflow_conn: MlflowServer
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    model_id = model_with_policy(engine, {}, **EDGE)
    name = _model_name(engine, model_id)
    first = evaluated_run(engine, tmp_path, model_id, miss=0.1, snapshot_id=SNAPSHOT)
    artifact = _with_artifact(engine, store, first)
    _sweep(engine, first)
    _approve(engine, first, "dr-a", "good enough")

    result = deploy_run(engine, store, first, actor="airflow:t.deploy", server=None)

    report = result["mlflow"]
    assert report["mirrored"] is True, report
    assert report["trials_added"] == 3 and report["champion_version"] == report["model_version"]
    client = mlflow_conn.client()
    experiment = _experiment(client, name)
    (parent,) = client.search_runs(
        [experiment], f"tags.`patient_ml.run_id` = '{first}' and tags.`patient_ml.role` = 'run'"
    )
    assert parent.info.run_id == report["mlflow_run_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"epochs": "3", "image_size": "16"}
    children = client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    by_number = {int(c.data.tags["patient_ml.trial_number"]): c for c in children}
    assert sorted(by_number) == [0, 1, 2]
    done, pruned, failed = by_number[0], by_number[1], by_number[2]
    assert done.data.params == {"epochs": "3", "lr": "0.01"}
    assert (done.info.status, done.data.tags["patient_ml.trial_state"]) == ("FINISHED", "complete")
    history = client.get_metric_history(done.info.run_id, OBJECTIVE)
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8), (4, 0.8)]
    assert done.data.metrics["train:loss"] == pytest.approx(0.31)
    assert (pruned.info.status, pruned.data.tags["patient_ml.trial_state"]) == ("KILLED", "pruned")
    assert [m.value for m in client.get_metric_history(pruned.info.run_id, OBJECTIVE)] == [0.2]
    assert failed.info.status == "FAILED" and "exited" in failed.data.tags["patient_ml.failure"]

    # the challenger's version: evaluation metrics, the snapshot as input dataset, the artifact
    version = client.get_model_version(name, report["model_version"])
    assert version.run_id == parent.info.run_id
    assert version.tags["patient_ml.run_id"] == first
    assert version.tags["patient_ml.snapshot_id"] == SNAPSHOT
    assert "patient_ml.metric.balancedAccuracy" in version.tags, version.tags
    assert "patient_ml.metric.balancedAccuracy.interval95" in version.tags
    logged = client.get_logged_model(version.model_id) if version.model_id else None
    run_metrics = client.get_run(parent.info.run_id).data.metrics
    assert "balancedAccuracy" in run_metrics
    if logged is not None:
        assert {m.key for m in logged.metrics or []} >= {"balancedAccuracy"}
    (dataset,) = client.get_run(parent.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.digest == SNAPSHOT[:36]
    assert json.loads(dataset.dataset.source)["snapshotId"] == SNAPSHOT
    from mlflow.artifacts import download_artifacts

    folder = Path(
        download_artifacts(
            artifact_uri=version.source, dst_path=str(tmp_path / "m"), tracking_uri=mlflow_conn.url
        )
    )
    assert (folder / "model.tar.gz").read_bytes() == artifact

    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == version.version
    assert champion.tags["patient_ml.approved_by"] == "dr-a"
    assert champion.tags["patient_ml.approval_justification"] == "good enough"
    assert champion.tags["patient_ml.deploy_action"] == "promote"

    # a second run becomes champion: the alias moves; a rollback moves it back
    second = evaluated_run(engine, tmp_path, model_id, miss=0.05, seed=3, snapshot_id=SNAPSHOT)
    _with_artifact(engine, store, second)
    _approve(engine, second, "dr-b", "better")
    moved = deploy_run(engine, store, second, actor="airflow:t.deploy", server=None)["mlflow"]
    assert moved["champion_version"] != version.version
    assert client.get_model_version_by_alias(name, "champion").tags["patient_ml.run_id"] == second
    assert client.get_model_version_by_alias(name, "champion").tags["patient_ml.approved_by"] == (
        "dr-b"
    )

    deploy_on_request(engine, store, first, user="dr-c", channel="api", server=None,
                      rollback_reason="second drifts")  # fmt: skip
    back = client.get_model_version_by_alias(name, "champion")
    assert back.version == version.version
    assert back.tags["patient_ml.deploy_action"] == "rollback"
    assert back.tags["patient_ml.approved_by"] == "dr-c"
    assert back.tags["patient_ml.approval_justification"] == "second drifts"
    assert (
        "dr-a" in back.tags["patient_ml.approvers"] and "dr-c" in back.tags["patient_ml.approvers"]
    )
    assert client.get_registered_model(name).tags["patient_ml.champion_run_id"] == first

    # idempotent: mirroring again adds nothing (no second version, no duplicate trial runs)
    again = deploy_run(engine, store, first, actor="airflow:t.deploy", server=None)["mlflow"]
    assert again["trials_added"] == 0 and again["model_version"] == version.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert _events(engine, first, "run.mlflow.mirrored")


def test_an_unreachable_mlflow_never_fails_a_deployment_and_is_caught_up(
    engine: Engine, tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    model_id = model_with_policy(engine, {}, **EDGE)
    name = _model_name(engine, model_id)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.1, snapshot_id=SNAPSHOT)
    _with_artifact(engine, store, run_id)
    _sweep(engine, run_id)
    _approve(engine, run_id, "dr-a", "fine")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "patient_ml_mlflow", "host": dead,
                    "extra": {"max_retries": 1, "timeout": 2, "backoff_factor": 0}}),
    )  # fmt: skip
    monkeypatch.setenv("PATIENT_ML_MLFLOW_CONN_ID", CONN_ID)

    started = time.monotonic()
    result = deploy_run(engine, store, run_id, actor="airflow:t.deploy", server=None)
    took = time.monotonic() - started

    assert result["action"] == "promote"  # the product did its work
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None and run.deploy_status == "succeeded"
    report = result["mlflow"]
    assert report["mirrored"] is False and dead in report["error"], report
    assert took < 60, f"an unreachable MLflow held the deployment for {took:.0f} s"
    (failed,) = _events(engine, run_id, "run.mlflow.failed")
    assert dead in failed["error"]

    # MLflow answers again: the next mirroring (a retry, the next stage) fills everything in
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", mlflow_server.connection_json())
    caught_up = deploy_run(engine, store, run_id, actor="airflow:t.deploy", server=None)
    assert caught_up["alreadyDeployed"] is True
    assert caught_up["mlflow"]["mirrored"] is True and caught_up["mlflow"]["trials_added"] == 3
    client = mlflow_server.client()
    assert client.get_model_version_by_alias(name, "champion").tags["patient_ml.run_id"] == run_id


def test_no_connection_means_no_mirroring(engine: Engine, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = LocalArtifactStore(tmp_path / "artifacts")
    model_id = model_with_policy(engine, {}, **EDGE)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.1, snapshot_id=SNAPSHOT)
    _approve(engine, run_id, "dr-a", "fine")
    monkeypatch.setenv("PATIENT_ML_MLFLOW_CONN_ID", "mlflow_nowhere")
    with caplog.at_level("INFO", logger="patient_ml.mlflow"):
        result = deploy_run(engine, store, run_id, actor="t", server=None)
    assert "mlflow" not in result
    lines = [r.getMessage() for r in caplog.records if r.name == "patient_ml.mlflow"]
    assert lines == ["MLflow mirroring is off: no Airflow connection 'mlflow_nowhere'"]
    assert not _events(engine, run_id, "run.mlflow.failed")
