"""What a client built for the reference API (phc 1.6.0) sees: the default `reference` view
carries exactly what the SDK's models read (checked against the SDK's own JSON Schema, shipped
in patient_ml/config/reference_schema.json), lists leave out what it cannot read and say so in
the `Patient-ML-Omitted` header, `view=extended` shows everything, and
PATIENT_ML_REFERENCE_STRICT=1 refuses such configs with field-level 422s."""

from __future__ import annotations

from typing import Any

import pytest

from patient_ml.config import reference
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Metric, utcnow
from patient_ml.services import runs
from tests.helpers import example

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/img-clf-trainer:v1"
EXTENSIONS = {"snapshotId", "evaluation", "approvalStatus", "approvalDeadline", "airflow",
              "triggeredBy"}  # fmt: skip


def _ecr_model(name: str = "ecr-classifier") -> dict[str, Any]:
    model = example("brain_mri_model")
    model["name"] = name
    model["trainingApproach"]["trainingImage"] = ECR
    model["deployApproach"]["inferenceImage"] = ECR
    return model


@pytest.fixture
def stored(api: Any) -> dict[str, Any]:
    """The example dataset; a model the SDK reads (ECR images, 8 trials) and the example model,
    which it cannot (image `patient-ml/img-clf-trainer:0.1.0`)."""
    admin = api("admin")
    dataset = admin.post("/datasets", json=example("brain_mri_dataset")).json()["dataset"]
    readable = admin.post("/models", json=_ecr_model()).json()["model"]
    local = admin.post("/models", json=example("brain_mri_model")).json()["model"]
    return {"dataset": dataset, "readable": readable, "local": local}


def test_lists_leave_out_what_the_sdk_cannot_read_and_say_so(
    api: Any, stored: dict[str, Any]
) -> None:
    viewer = api("viewer")
    listed = viewer.get("/models")
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["models"]] == [stored["readable"]["id"]]
    for model in listed.json()["models"]:
        assert reference.problems("ModelConfig", model) == []
    note = listed.headers["Patient-ML-Omitted"]
    assert note.startswith("1 model(s) left out that phc==1.6.0 cannot read")
    assert (
        f"{stored['local']['id']} (deployApproach.inferenceImage, trainingApproach.trainingImage)"
        in note
    )
    assert "view=extended" in note
    every = viewer.get("/models?view=extended")
    assert {m["id"] for m in every.json()["models"]} == {
        stored["readable"]["id"],
        stored["local"]["id"],
    }
    assert "Patient-ML-Omitted" not in every.headers
    # a single read answers the model as stored (the SDK then names the field it refuses)
    one = viewer.get(f"/models/{stored['local']['id']}").json()["model"]
    assert [p.field for p in reference.problems("ModelConfig", one)] == [
        "deployApproach.inferenceImage",
        "trainingApproach.trainingImage",
    ]
    datasets = viewer.get("/datasets")
    assert "Patient-ML-Omitted" not in datasets.headers
    for dataset in datasets.json()["datasets"]:
        assert reference.problems("DatasetConfig", dataset) == []
    assert api("viewer").get("/models?view=everything").status_code == 422


def test_more_trials_than_the_sdk_reads_is_left_out_too(api: Any, stored: dict[str, Any]) -> None:
    admin = api("admin")
    many = _ecr_model("many-trials")
    many["trainingApproach"]["maxTrials"] = 40
    made = admin.post("/models", json=many)
    assert made.status_code == 200, made.text  # allowed: strict mode is off
    listed = admin.get("/models")
    assert made.json()["model"]["id"] not in [m["id"] for m in listed.json()["models"]]
    assert (
        f"{made.json()['model']['id']} (trainingApproach.maxTrials)"
        in (listed.headers["Patient-ML-Omitted"])
    )


def test_a_run_in_the_reference_view_is_exactly_the_reference_model_run(
    api: Any, stored: dict[str, Any], engine: Any
) -> None:
    model_id = stored["readable"]["id"]
    with session_scope(engine) as s:
        run = runs.create_run(s, model_id, actor="t")
        runs.finish_run(s, run.id, status="succeeded", actor="t")
        run.approval_requested_at = utcnow()
        run_id = run.id
        s.add(Metric(run_id=run_id, subject="challenger", stage="evaluation", name="accuracy",
                     value=0.9, direction="maximize", low=0.85, high=0.94))  # fmt: skip
    viewer = api("viewer")
    plain = viewer.get(f"/models/{model_id}/runs/{run_id}").json()["run"]
    allowed = set(reference.schema()["$defs"]["ModelRun"]["properties"])
    assert set(plain) <= allowed and not EXTENSIONS & set(plain)
    assert reference.problems("ModelRun", plain) == []
    # the interval is an extension: the SDK's Metric forbids other fields
    assert plain["metrics"]["challenger"] == [
        {"name": "accuracy", "value": 0.9, "stage": "evaluation", "direction": "maximize"}
    ]
    extended = viewer.get(f"/models/{model_id}/runs/{run_id}?view=extended").json()["run"]
    assert set(extended) >= {"approvalStatus", "airflow", "triggeredBy"}  # (others: null)
    assert extended["approvalStatus"] == "pending"
    [with_interval] = extended["metrics"]["challenger"]
    assert with_interval == plain["metrics"]["challenger"][0] | {"low": 0.85, "high": 0.94}
    assert [p.field for p in reference.problems("Metric", with_interval)] == ["(body)"]
    assert {k: v for k, v in extended.items() if k in allowed and k != "metrics"} == {
        k: v for k, v in plain.items() if k != "metrics"
    }
    listed = viewer.get(f"/models/{model_id}/runs").json()["runs"]
    assert listed == [plain]
    # the runs of a model the SDK cannot read (issue 31: the demo's model answered `[]` to the
    # SDK's get_runs although it had 3 runs): never an empty list that hides them. They are
    # answered as they are, so the SDK fails naming the field, and the header says why.
    with session_scope(engine) as s:
        other = runs.create_run(s, stored["local"]["id"], actor="t").id
    answer = viewer.get(f"/models/{stored['local']['id']}/runs")
    assert answer.status_code == 200
    [as_stored] = answer.json()["runs"]
    assert as_stored["id"] == other and not EXTENSIONS & set(as_stored)
    assert [p.field for p in reference.problems("ModelRun", as_stored)] == [
        "deployApproach.inferenceImage",
        "trainingApproach.trainingImage",
    ]
    note = answer.headers["Patient-ML-Omitted"]
    assert note.startswith("none of the 1 run(s) can be read by phc==1.6.0")
    assert f"{other} (deployApproach.inferenceImage, trainingApproach.trainingImage)" in note
    assert "rather than as an empty list" in note and "view=extended" in note
    assert viewer.get(f"/models/{stored['local']['id']}/runs?view=extended").json()["runs"]


def test_a_list_the_sdk_can_read_none_of_is_never_an_empty_list(api: Any) -> None:
    """Only models the SDK cannot read (the demo's two models): `GET /models` answers them
    with the reason in the header, not `[]`."""
    admin = api("admin")
    admin.post("/datasets", json=example("brain_mri_dataset"))
    local = admin.post("/models", json=example("brain_mri_model")).json()["model"]
    listed = admin.get("/models")
    assert [m["id"] for m in listed.json()["models"]] == [local["id"]]
    assert listed.headers["Patient-ML-Omitted"].startswith("none of the 1 model(s) can be read")
    datasets = admin.get("/datasets")  # a list the SDK reads whole: no header
    assert datasets.json()["datasets"] and "Patient-ML-Omitted" not in datasets.headers


def test_strict_compatibility_refuses_configs_the_sdk_cannot_read(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATIENT_ML_REFERENCE_STRICT", "1")
    admin = api("admin")
    dataset = example("brain_mri_dataset")
    dataset["problemDefinition"]["trainingDataFilter"]["codes"] = [
        f"http://loinc.org|{n}" for n in range(11)
    ]
    refused = admin.post("/datasets", json=dataset)
    assert refused.status_code == 422
    [error] = refused.json()["error"]["errors"]
    assert error["field"] == "problemDefinition.trainingDataFilter.codes"
    assert "at most 10" in error["message"] and "PATIENT_ML_REFERENCE_STRICT" in error["message"]
    assert error["value"] == 11
    assert admin.post("/datasets", json=example("brain_mri_dataset")).status_code == 200

    model = example("brain_mri_model")
    model["trainingApproach"]["maxTrials"] = 31
    refused = admin.post("/models", json=model)
    assert refused.status_code == 422
    errors = {e["field"]: e for e in refused.json()["error"]["errors"]}
    assert set(errors) == {
        "deployApproach.inferenceImage",
        "trainingApproach.maxTrials",
        "trainingApproach.trainingImage",
    }
    image = errors["trainingApproach.trainingImage"]
    assert image["value"] == "patient-ml/img-clf-trainer:0.1.0"
    assert "dkr.ecr" in image["message"] and "PATIENT_ML_LOCAL_TRAINERS" in image["message"]
    assert "at most 30" in errors["trainingApproach.maxTrials"]["message"]
    made = admin.post("/models", json=_ecr_model())
    assert made.status_code == 200, made.text
    # an update is checked the same way; nothing is saved
    bad = {**made.json()["model"], "trainingApproach": model["trainingApproach"]}
    again = admin.put(f"/models/{made.json()['model']['id']}", json=bad)
    assert again.status_code == 422
    assert admin.get(f"/models/{made.json()['model']['id']}").json()["model"]["revision"] == 1
