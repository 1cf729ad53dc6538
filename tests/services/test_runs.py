"""Runs: idempotent creation per Airflow DAG run, frozen config, reference wire shape."""

from __future__ import annotations

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Metric
from patient_ml.exceptions import ConflictError, NotFoundError
from patient_ml.services import datasets, models, runs
from tests.helpers import example


@pytest.fixture
def model_id(engine) -> str:
    with session_scope(engine) as s:
        datasets.create_dataset(s, example("brain_mri_dataset"), actor="a")
        return models.create_model(s, example("brain_mri_model"), actor="a").id


def test_create_is_idempotent_per_airflow_run(engine, model_id) -> None:
    with session_scope(engine) as s:
        first = runs.create_run(
            s, model_id, actor="a", airflow_dag_id="d", airflow_run_id="manual__1"
        ).id
    with session_scope(engine) as s:
        again = runs.create_run(
            s, model_id, actor="a", airflow_dag_id="d", airflow_run_id="manual__1"
        ).id
        other = runs.create_run(s, model_id, actor="a").id
    assert first == again != other
    with session_scope(engine) as s:
        assert len(runs.list_runs(s, model_id)) == 2


def test_wire_shape_follows_the_reference(engine, model_id) -> None:
    with session_scope(engine) as s:
        run = runs.create_run(s, model_id, actor="a")
        s.add(Metric(run_id=run.id, subject="challenger", stage="evaluation", name="accuracy",
                     value=0.9, direction="maximize"))  # fmt: skip
        s.add(Metric(run_id=run.id, subject="champion", stage="evaluation", name="accuracy",
                     value=0.8))  # fmt: skip
    with session_scope(engine) as s:
        runs.finish_run(s, run.id, status="succeeded", actor="a")
        wire = runs.run_to_wire(s, runs.get_run(s, run.id))
    assert wire["status"] == "succeeded" and wire["end"] >= wire["start"]
    assert wire["modelId"] == model_id and wire["slug"] == run.slug
    assert wire["metrics"]["challenger"] == [
        {"name": "accuracy", "value": 0.9, "stage": "evaluation", "direction": "maximize"}
    ]
    assert wire["metrics"]["champion"][0]["value"] == 0.8
    assert wire["problemDefinition"]["problemType"] == "imgClf"
    assert wire["trainingApproach"]["maxTrials"] == 8
    assert wire["approvals"] == [] and wire["hyperparameters"] == []


def test_config_is_frozen_at_run_creation(engine, model_id) -> None:
    with session_scope(engine) as s:
        run_id = runs.create_run(s, model_id, actor="a").id
        data = example("brain_mri_model")
        data["trainingApproach"]["maxTrials"] = 3
        models.update_model(s, model_id, data, actor="a")
    with session_scope(engine) as s:
        assert runs.get_run(s, run_id).config["trainingApproach"]["maxTrials"] == 8


def test_finish_twice(engine, model_id) -> None:
    with session_scope(engine) as s:
        run_id = runs.create_run(s, model_id, actor="a").id
    with session_scope(engine) as s:
        runs.finish_run(s, run_id, status="failed", actor="a", error="trial 3: OOM")
        runs.finish_run(s, run_id, status="failed", actor="a", error="trial 3: OOM")
    with pytest.raises(ConflictError, match="already ended"), session_scope(engine) as s:
        runs.finish_run(s, run_id, status="succeeded", actor="a")
    with pytest.raises(NotFoundError), session_scope(engine) as s:
        runs.get_run(s, "missing")
