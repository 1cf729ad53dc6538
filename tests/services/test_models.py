"""Model configs: dataset resolution, cross-entity rules, immutable champion, audit."""

from __future__ import annotations

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.exceptions import ConfigValidationError, ConflictError
from patient_ml.services import audit, datasets, models, runs
from tests.helpers import example


@pytest.fixture
def brain_dataset_id(engine) -> str:
    with session_scope(engine) as s:
        return datasets.create_dataset(s, example("brain_mri_dataset"), actor="alice").id


def _create(engine, data):
    with session_scope(engine) as s:
        return models.create_model(s, data, actor="alice")


def test_create_resolves_dataset_name_and_audits(engine, brain_dataset_id) -> None:
    model = _create(engine, example("brain_mri_model"))
    assert model.dataset_id == brain_dataset_id
    assert model.slug == "brain_mri_tumour_classifier"
    with session_scope(engine) as s:
        wire = models.model_to_wire(models.get_model(s, model.id))
        (event,) = audit.events_for(s, "model", model.id)
    assert wire["dagId"] == "patient_ml__brain_mri_tumour_classifier"
    assert wire["trainingApproach"]["searchSpace"][2]["values"] == ["48", "64"]
    assert wire["championId"] is None
    assert event.action == "model.create" and event.after["name"] == model.name


def test_platform_metric_must_fit_the_problem_type(engine, brain_dataset_id) -> None:
    data = example("brain_mri_model")
    data["trainingApproach"]["objective"] = {"metric": "meanDice", "direction": "maximize"}
    with pytest.raises(ConfigValidationError) as info:
        _create(engine, data)
    (error,) = info.value.errors
    assert error.field == "trainingApproach.objective.metric"
    assert "imgSeg metric" in error.message and "balancedAccuracy" in error.message


def test_names_and_dag_ids_are_unique(engine, brain_dataset_id) -> None:
    _create(engine, example("brain_mri_model"))
    clash = example("brain_mri_model")
    clash["name"] = "Brain MRI Tumour Classifier!"  # same DAG id, different name
    with pytest.raises(ConflictError, match="DAG id patient_ml__brain_mri_tumour_classifier"):
        _create(engine, clash)


def test_update_keeps_champion_and_refuses_to_set_it(engine, brain_dataset_id) -> None:
    model = _create(engine, example("brain_mri_model"))
    with session_scope(engine) as s:
        wire = models.model_to_wire(models.get_model(s, model.id))
    wire["trainingApproach"]["maxTrials"] = 12
    with session_scope(engine) as s:
        updated = models.update_model(s, model.id, wire, actor="bob")
    assert updated.training_approach["maxTrials"] == 12 and updated.revision == 2
    wire["championId"] = "some-run"
    with pytest.raises(ConfigValidationError, match="approve a run"), session_scope(engine) as s:
        models.update_model(s, model.id, wire, actor="bob")
    with session_scope(engine) as s:
        events = audit.events_for(s, "model", model.id)
    assert [e.action for e in events] == ["model.create", "model.update"]
    assert events[1].before["trainingApproach"]["maxTrials"] == 8
    assert events[1].after["trainingApproach"]["maxTrials"] == 12


def test_dataset_cannot_change_once_the_model_has_runs(engine, brain_dataset_id) -> None:
    model = _create(engine, example("brain_mri_model"))
    with session_scope(engine) as s:
        other = example("brain_mri_dataset")
        other["name"] = "brain-mri-2"
        datasets.create_dataset(s, other, actor="alice")
        runs.create_run(s, model.id, actor="alice")
    data = example("brain_mri_model")
    data["datasetId"] = "brain-mri-2"
    with pytest.raises(ConfigValidationError, match="has 1 run"), session_scope(engine) as s:
        models.update_model(s, model.id, data, actor="bob")
    with pytest.raises(ConflictError, match="has 1 run"), session_scope(engine) as s:
        models.delete_model(s, model.id, actor="bob")
    with pytest.raises(ConflictError, match="used by 1 model"), session_scope(engine) as s:
        datasets.delete_dataset(s, brain_dataset_id, actor="bob")
