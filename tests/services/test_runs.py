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


DAG = "patient_ml__brain_mri_tumour_classifier"


def test_every_dag_run_gets_one_run_and_product_runs_are_linked(engine, model_id) -> None:
    # a DAG run started in Airflow (UI, schedule, REST API): a new run, once per DAG run
    with session_scope(engine) as s:
        made = runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="scheduled__1", actor="airflow"
        ).id
    with session_scope(engine) as s:
        again = runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="scheduled__1", actor="airflow"
        ).id
        assert runs.find_run_for_dag_run(s, DAG, "scheduled__1").id == made == again
    # a product run named in conf.runId is linked to its DAG run, and stays with it
    with session_scope(engine) as s:
        product = runs.create_run(s, model_id, actor="ml-engineer").id
    with session_scope(engine) as s:
        linked = runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="manual__2", actor="x",
            requested_run_id=product,
        )  # fmt: skip
        assert (linked.id, linked.airflow_run_id) == (product, "manual__2")
    with session_scope(engine) as s, pytest.raises(ConflictError, match="already belongs"):
        runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="manual__3", actor="x",
            requested_run_id=product,
        )  # fmt: skip
    with session_scope(engine) as s, pytest.raises(NotFoundError, match=r"conf\.runId"):
        runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="manual__4", actor="x",
            requested_run_id="no-such-run",
        )  # fmt: skip


def test_conf_run_id_of_another_model_is_refused(engine, model_id) -> None:
    with session_scope(engine) as s:
        datasets.create_dataset(s, example("nuclei_dataset"), actor="a")
        other = models.create_model(s, example("nuclei_model"), actor="a").id
        foreign = runs.create_run(s, other, actor="a").id
    with session_scope(engine) as s, pytest.raises(ConflictError, match="not of"):
        runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG, airflow_run_id="m", actor="x",
            requested_run_id=foreign,
        )  # fmt: skip


def test_start_run_saves_the_run_then_triggers_its_dag_run(engine, model_id) -> None:
    calls = []

    def trigger(dag_id: str, run_id: str, conf: dict, user: str) -> str:
        calls.append((dag_id, run_id, conf, user))
        with session_scope(engine) as s:  # the DAG run can already see its product run
            assert runs.find_run_for_dag_run(s, dag_id, run_id) is not None
        return "queued"

    run, triggered = runs.start_run(engine, model_id, actor="ann", trigger=trigger, max_trials=3)
    assert triggered == "queued"
    [(dag_id, airflow_run_id, conf, user)] = calls
    assert dag_id == DAG and conf == {"runId": run.id, "maxTrials": 3} and user == "ann"
    assert (run.airflow_dag_id, run.airflow_run_id, run.status) == (DAG, airflow_run_id, "running")


def test_start_run_refused_by_airflow_ends_failed(engine, model_id) -> None:
    def refuse(*args: object) -> None:
        raise NotFoundError("Airflow has no DAG 'x' yet.", fix="wait")

    with pytest.raises(NotFoundError):
        runs.start_run(engine, model_id, actor="ann", trigger=refuse)
    with session_scope(engine) as s:
        [run] = runs.list_runs(s, model_id)
        assert run.status == "failed" and "Airflow has no DAG" in run.error
    with pytest.raises(Exception, match="maxTrials"):
        runs.start_run(engine, model_id, actor="ann", trigger=refuse, max_trials=0)


def test_tune_and_evaluate_refuse_a_run_without_a_snapshot(engine, model_id, tmp_path) -> None:
    from patient_ml.evaluation.evaluate import EvaluationError
    from patient_ml.exceptions import PatientMLError
    from patient_ml.services.evaluation_run import evaluate_run
    from patient_ml.services.tuning import load_run_spec
    from patient_ml.storage.local import LocalArtifactStore

    with session_scope(engine) as s:
        run_id = runs.create_run(s, model_id, actor="a").id
    with pytest.raises(PatientMLError, match="no snapshot yet, so there is nothing to train on"):
        load_run_spec(engine, run_id)
    with pytest.raises(EvaluationError, match="no snapshot yet, so there is no test split") as e:
        evaluate_run(engine, LocalArtifactStore(tmp_path), None, run_id, tmp_path, actor="a")
    assert e.value.fix == "run the curate task of this run first"
