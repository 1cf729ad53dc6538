"""The operators mirror to MLflow (docs/mlflow.md) on a real sweep: the reference trainer on the
local backend (tests/operators/lifecycle.py), a real `mlflow server` (tests/mlflow_server.py).
FinishTuningOperator mirrors the trials, EvaluateModelOperator registers the challenger,
DeployModelOperator (a real local endpoint) sets the alias `champion`; each reports in its
return value, and none fails when MLflow does not answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import Model
from patient_ml.deploy import stop_old_endpoints
from patient_ml.operators.deploy import DeployModelOperator
from patient_ml.operators.evaluate import EvaluateModelOperator
from patient_ml.services.approvals import decide
from patient_ml.services.gate import gate_for
from patient_ml.services.runs import get_run
from tests.mlflow_server import CONN_ID, MlflowServer, free_port
from tests.operators.lifecycle import Project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)
    engine = get_engine(url)
    made = Project(engine, tmp_path / "p")
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", made.artifacts)
    yield made
    stop_old_endpoints(engine, made.model_id, keep=None, actor="test-cleanup")


def _approve(engine: Engine, run_id: str) -> None:
    with session_scope(engine) as session:
        needed = gate_for(session, get_run(session, run_id)).override_required
        decide(session, run_id, "approved", user="dr.ada", reason="triage", channel="api",
               override="test: chance-level models" if needed else None)  # fmt: skip


def test_the_pipeline_operators_mirror_a_real_sweep(
    project: Project, mlflow_conn: MlflowServer
) -> None:
    p = project
    run_id = p.trained_run()  # TuneWorkerOperator + FinishTuningOperator
    with session_scope(p.engine) as session:
        name = session.get(Model, p.model_id).name  # type: ignore[union-attr]
    client = mlflow_conn.client()
    experiment = client.get_experiment_by_name(f"patient-ml/{name}")
    assert experiment is not None
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`patient_ml.run_id` = '{run_id}' and tags.`patient_ml.role` = 'run'",
    )
    (trial,) = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert trial.data.params == {"epochs": "3", "image_size": "16"}
    assert trial.data.tags["patient_ml.trial_state"] == "complete"
    assert trial.info.status == "FINISHED"
    history = client.get_metric_history(trial.info.run_id, "validation:balancedAccuracy")
    assert len(history) >= 2, history  # the trainer's intermediate values, then the final one

    evaluated = EvaluateModelOperator(
        task_id="evaluate", run_id=run_id, backend="local", artifact_uri=p.artifacts
    ).execute({})
    version = evaluated["mlflow"]["model_version"]
    assert evaluated["mlflow"]["mirrored"] is True and version == "1"
    assert client.get_model_version(name, version).tags["patient_ml.run_id"] == run_id

    _approve(p.engine, run_id)
    deployed = DeployModelOperator(
        task_id="deploy", run_id=run_id, backend="local", artifact_uri=p.artifacts
    ).execute({})
    assert deployed["mlflow"]["champion_version"] == version
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == version and champion.tags["patient_ml.approved_by"] == "dr.ada"


def test_the_operators_do_not_fail_when_mlflow_is_down(
    project: Project, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = project
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "patient_ml_mlflow", "host": dead,
                    "extra": {"max_retries": 0, "timeout": 2}}),
    )  # fmt: skip
    monkeypatch.setenv("PATIENT_ML_MLFLOW_CONN_ID", CONN_ID)
    run_id = p.trained_run()  # FinishTuningOperator mirrors (and fails to) without failing
    evaluated = EvaluateModelOperator(
        task_id="evaluate",
        run_id=run_id,
        backend="local",
        artifact_uri=p.artifacts,
        mlflow_conn_id=CONN_ID,
    ).execute({})
    assert evaluated["mlflow"]["mirrored"] is False and dead in evaluated["mlflow"]["error"]
    with session_scope(p.engine) as session:
        assert get_run(session, run_id).status == "succeeded"
