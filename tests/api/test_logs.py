"""GET /models/{id}/runs/{runId}/logs through TestClient with Airflow's real auth manager: the
reference event shape from the log objects in the API's artifact store, CloudWatch filters,
marker paging, limits, and the one error shape (401, 404, 422 naming the field)."""

from __future__ import annotations

from typing import Any

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.log_records import encode
from patient_ml.services import runs
from patient_ml.storage import default_artifact_store
from patient_ml.training.tuning import trial_log_key
from tests.helpers import example

TRIAL_0 = [
    (1_700_000_000_000.0, "[trial 0] training on 40 examples"),
    (1_700_000_001_000.0, "[trial 0] epoch=1 val_loss=0.5000 val_accuracy=0.5000"),
    (1_700_000_003_000.0, "[trial 0] done"),
]
TRIAL_1 = [(1_700_000_002_000.0, "[trial 1] ERROR learning_rate='abc' is not a number")]
EVALUATION = [(1_700_000_004_000.0, "evaluating run on 12 confirmed test examples")]


@pytest.fixture
def model_ids(api: Any) -> tuple[str, str]:
    """Two models (brain MRI and nuclei), made through the API as in test_api."""
    admin = api("admin")
    ids = []
    for dataset, model in (("brain_mri_dataset", "brain_mri_model"),
                           ("nuclei_dataset", "nuclei_model")):  # fmt: skip
        assert admin.post("/datasets", json=example(dataset)).status_code == 200
        created = admin.post("/models", json=example(model))
        assert created.status_code == 200, created.text
        ids.append(created.json()["model"]["id"])
    return ids[0], ids[1]


def new_run(engine: Any, model_id: str) -> str:
    with session_scope(engine) as session:
        return str(runs.create_run(session, model_id, actor="t").id)


@pytest.fixture
def logged_run(engine: Any, model_ids: tuple[str, str]) -> tuple[str, str]:
    """(model id, run id) of a run whose log objects are in the API's artifact store."""
    model_id = model_ids[0]
    run_id = new_run(engine, model_id)
    store = default_artifact_store()
    for key, records in (
        (trial_log_key(run_id, 0), TRIAL_0),
        (trial_log_key(run_id, 1), TRIAL_1),
        (f"runs/{run_id}/logs/evaluation.jsonl", EVALUATION),
    ):
        store.put_bytes(key, b"".join(encode(message, t) for t, message in records))
    return model_id, run_id


def test_credentials_are_required(api: Any, logged_run: tuple[str, str]) -> None:
    model_id, run_id = logged_run
    response = api(None).get(f"/models/{model_id}/runs/{run_id}/logs")
    assert response.status_code == 401
    assert response.json()["error"]["status"] == 401


def test_events_in_the_reference_shape(api: Any, logged_run: tuple[str, str]) -> None:
    model_id, run_id = logged_run
    response = api("viewer").get(f"/models/{model_id}/runs/{run_id}/logs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "events": [
            {"type": "logEntry", "timestamp": t, "payload": p, "stage": s}
            for t, p, s in sorted(
                [(t, p, "training") for t, p in TRIAL_0 + TRIAL_1]
                + [(t, p, "evaluation") for t, p in EVALUATION]
            )
        ]
    }
    assert [e["stage"] for e in body["events"]][-1] == "evaluation"


def test_filter(api: Any, logged_run: tuple[str, str]) -> None:
    model_id, run_id = logged_run
    path = f"/models/{model_id}/runs/{run_id}/logs"
    viewer = api("viewer")

    def payloads(pattern: str) -> list[str]:
        response = viewer.get(path, params={"filter": pattern})
        assert response.status_code == 200, response.text
        return [e["payload"] for e in response.json()["events"]]

    assert payloads("") == [p for _, p in sorted(TRIAL_0 + TRIAL_1 + EVALUATION)]
    assert payloads('"[trial 0]" -done') == [p for _, p in TRIAL_0[:2]]
    assert payloads("?ERROR ?evaluating") == [TRIAL_1[0][1], EVALUATION[0][1]]
    assert payloads("error") == []  # case-sensitive
    refused = viewer.get(path, params={"filter": '{ $.level = "ERROR" }'})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert "JSON filter patterns are not supported" in error["message"]
    assert "plain-text" in error["fix"]
    assert [e["field"] for e in error["errors"]] == ["filter"]


def test_marker_paging_and_limit(api: Any, logged_run: tuple[str, str]) -> None:
    model_id, run_id = logged_run
    path = f"/models/{model_id}/runs/{run_id}/logs"
    viewer = api("viewer")
    everything = viewer.get(path).json()["events"]
    pages, marker = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"marker": marker} if marker else {})}
        body = viewer.get(path, params=params).json()
        pages.append(body["events"])
        marker = body.get("marker")
        if marker is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [e for page in pages for e in page] == everything
    for limit in (0, 10_001, "many"):
        too = viewer.get(path, params={"limit": limit})
        assert too.status_code == 422, limit
        assert too.json()["error"]["errors"][0]["field"].endswith("limit")


def test_bad_marker_is_422_naming_the_field(api: Any, logged_run: tuple[str, str]) -> None:
    model_id, run_id = logged_run
    response = api("viewer").get(
        f"/models/{model_id}/runs/{run_id}/logs", params={"marker": "not-our-marker"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["errors"] == [
        {"field": "marker", "message": error["errors"][0]["message"], "value": "not-our-marker"}
    ]
    assert "previous response" in error["fix"]


def test_a_run_of_another_model_or_an_unknown_one_is_404(
    api: Any, engine: Any, logged_run: tuple[str, str], model_ids: tuple[str, str]
) -> None:
    model_id, run_id = logged_run
    other_model = model_ids[1]
    admin = api("admin")
    wrong = admin.get(f"/models/{other_model}/runs/{run_id}/logs")
    assert wrong.status_code == 404
    assert "has no run" in wrong.json()["error"]["message"]
    assert admin.get(f"/models/{model_id}/runs/no-such-run/logs").status_code == 404
    assert admin.get(f"/models/no-such-model/runs/{run_id}/logs").status_code == 404
    # A run without any log object yet: no events, not an error.
    quiet = new_run(engine, other_model)
    assert admin.get(f"/models/{other_model}/runs/{quiet}/logs").json() == {"events": []}


def test_openapi_lists_the_logs_path(api: Any) -> None:
    paths = api(None).get("/openapi.json").json()["paths"]
    parameters = paths["/models/{model_id}/runs/{run_id}/logs"]["get"]["parameters"]
    assert {"filter", "marker", "limit"} <= {p["name"] for p in parameters}
