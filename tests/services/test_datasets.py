"""Dataset configs: label ids and indices stay stable, are never reused, and every change is
audited with its before/after state."""

from __future__ import annotations

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.exceptions import ConfigValidationError, ConflictError, NotFoundError
from patient_ml.services import audit, datasets
from tests.helpers import example


def _labels(ds) -> dict[str, int]:
    return {lab["name"]: lab["index"] for lab in ds.problem_definition["labelDefinition"]["labels"]}


def _create(engine, data) -> str:
    with session_scope(engine) as s:
        return datasets.create_dataset(s, data, actor="alice").id


def _update(engine, ref, data):
    with session_scope(engine) as s:
        return datasets.update_dataset(s, ref, data, actor="bob")


def test_create_assigns_ids_indices_and_audits(engine) -> None:
    data = example("brain_mri_dataset")
    for label in data["problemDefinition"]["labelDefinition"]["labels"]:
        del label["index"]
    ds_id = _create(engine, data)
    with session_scope(engine) as s:
        ds = datasets.get_dataset(s, "brain-mri-tumour")
        assert ds.id == ds_id
        assert _labels(ds) == {"no_tumour": 0, "tumour": 1}
        assert ds.problem_definition["labelDefinition"]["maxLabelIndex"] == 1
        assert all(lab["id"] for lab in ds.problem_definition["labelDefinition"]["labels"])
        (event,) = audit.events_for(s, "dataset", ds_id)
        assert (event.actor, event.action, event.before) == ("alice", "dataset.create", None)
        assert event.after["name"] == "brain-mri-tumour"


def test_segmentation_indices_start_at_one(engine) -> None:
    data = example("nuclei_dataset")
    del data["problemDefinition"]["labelDefinition"]["labels"][0]["index"]
    _create(engine, data)
    with session_scope(engine) as s:
        assert _labels(datasets.get_dataset(s, "nuclei-segmentation")) == {"nucleus": 1}


def test_update_keeps_indices_and_never_reuses_a_retired_one(engine) -> None:
    data = example("brain_mri_dataset")
    _create(engine, data)
    labels = data["problemDefinition"]["labelDefinition"]["labels"]
    # Retire 'tumour' (index 1) and add two classes without indices.
    labels[:] = [
        {"name": "no_tumour"},
        {"name": "glioma"},
        {"name": "meningioma", "description": "new"},
    ]
    ds = _update(engine, "brain-mri-tumour", data)
    assert _labels(ds) == {"no_tumour": 0, "glioma": 2, "meningioma": 3}
    assert ds.problem_definition["labelDefinition"]["maxLabelIndex"] == 3
    assert ds.revision == 2

    # Re-adding a label with the retired index 1 is refused, and nothing changes.
    labels.append({"name": "tumour", "index": 1})
    with pytest.raises(ConfigValidationError) as info:
        _update(engine, "brain-mri-tumour", data)
    (error,) = info.value.errors
    assert error.field == "problemDefinition.labelDefinition.labels[3].index"
    assert "never reused" in error.message
    with session_scope(engine) as s:
        assert datasets.get_dataset(s, "brain-mri-tumour").revision == 2


def test_update_refuses_renumbering(engine) -> None:
    data = example("brain_mri_dataset")
    _create(engine, data)
    data["problemDefinition"]["labelDefinition"]["labels"][1]["index"] = 7
    with pytest.raises(ConfigValidationError) as info:
        _update(engine, "brain-mri-tumour", data)
    (error,) = info.value.errors
    assert error.field == "problemDefinition.labelDefinition.labels[1].index"
    assert "has had index 1" in error.message


def test_max_label_index_only_grows(engine) -> None:
    data = example("brain_mri_dataset")
    _create(engine, data)
    labels = data["problemDefinition"]["labelDefinition"]["labels"]
    labels.append({"name": "unsure"})
    assert _labels(_update(engine, "brain-mri-tumour", data))["unsure"] == 2
    labels.pop()
    data["problemDefinition"]["labelDefinition"]["maxLabelIndex"] = 1
    with pytest.raises(ConfigValidationError) as info:
        _update(engine, "brain-mri-tumour", data)
    (error,) = info.value.errors
    assert error.field == "problemDefinition.labelDefinition.maxLabelIndex"
    assert "only grows; it is 2" in error.message


def test_label_renamed_by_id_keeps_its_index(engine) -> None:
    _create(engine, example("brain_mri_dataset"))
    with session_scope(engine) as s:
        wire = datasets.dataset_to_wire(datasets.get_dataset(s, "brain-mri-tumour"))
    wire["problemDefinition"]["labelDefinition"]["labels"][1]["name"] = "tumor"
    del wire["problemDefinition"]["labelDefinition"]["labels"][1]["index"]
    ds = _update(engine, wire["id"], wire)  # a GET response sent back, read-only fields too
    assert _labels(ds) == {"no_tumour": 0, "tumor": 1}


def test_problem_type_cannot_change(engine) -> None:
    data = example("brain_mri_dataset")
    _create(engine, data)
    data["problemDefinition"]["problemType"] = "imgSeg"
    data["problemDefinition"]["labelDefinition"]["labels"][0]["index"] = 5
    with pytest.raises(ConfigValidationError, match="cannot change from 'imgClf'"):
        _update(engine, "brain-mri-tumour", data)


def test_names_are_unique_and_lookups_explain(engine) -> None:
    _create(engine, example("brain_mri_dataset"))
    with pytest.raises(ConflictError, match="already exists"):
        _create(engine, example("brain_mri_dataset"))
    with pytest.raises(NotFoundError, match="patient-ml datasets list"), session_scope(engine) as s:
        datasets.get_dataset(s, "nope")


def test_delete_is_audited(engine) -> None:
    ds_id = _create(engine, example("nuclei_dataset"))
    with session_scope(engine) as s:
        datasets.delete_dataset(s, ds_id, actor="carol")
    with session_scope(engine) as s:
        assert datasets.list_datasets(s) == []
        events = audit.events_for(s, "dataset", ds_id)
    assert [e.action for e in events] == ["dataset.create", "dataset.delete"]
    assert events[-1].before["id"] == ds_id and events[-1].after is None
