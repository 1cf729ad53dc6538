"""The REST API through TestClient: reference shapes, Airflow auth (401/403 with a viewer, an
editor and an admin), one error shape with field detail, never a stack trace."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.db.models import utcnow
from patient_ml.hooks.airflow_dag_runs import AirflowDagRunHook, TriggeredDagRun
from patient_ml.services import runs
from patient_ml.storage import artifact_store_from_uri
from tests.helpers import example

V1 = "/v1/patient-ml"  # mounted there by the plugin; the app itself serves from /


@pytest.fixture
def configs(api: Any) -> dict[str, Any]:
    admin = api("admin")
    dataset = admin.post("/datasets", json=example("brain_mri_dataset"))
    assert dataset.status_code == 200, dataset.text
    config = example("brain_mri_model")
    config["approvalPolicy"]["approvers"] = []  # the test users decide (the example names one)
    model = admin.post("/models", json=config)
    assert model.status_code == 200, model.text
    return {"dataset": dataset.json()["dataset"], "model": model.json()["model"]}


def test_credentials_are_required(api: Any) -> None:
    missing = api(None).get("/models")
    assert missing.status_code == 401
    assert missing.json() == {"error": {"status": 401, "message": "Not authenticated"}}
    forged = api(None).get("/models", headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.status_code == 403


def test_viewer_reads_but_cannot_change(api: Any, configs: dict[str, Any]) -> None:
    viewer = api("viewer")
    model_id = configs["model"]["id"]
    # the example model's image is no AWS ECR name: the reference view leaves it out
    assert [m["id"] for m in viewer.get("/models?view=extended").json()["models"]] == [model_id]
    got = viewer.get(f"/models/{model_id}").json()["model"]
    assert got["name"] == "brain-mri-tumour-classifier" and got["accountId"] == "default"
    assert viewer.get("/datasets").json()["datasets"][0]["id"] == configs["dataset"]["id"]
    for method, path, body in (
        ("post", "/models", example("brain_mri_model")),
        ("put", f"/models/{model_id}", configs["model"]),
        ("delete", f"/models/{model_id}", None),
        ("post", f"/models/{model_id}/runs", None),
        ("post", "/datasets", example("nuclei_dataset")),
    ):
        response = getattr(viewer, method)(path, **({"json": body} if body else {}))
        assert response.status_code == 403, (method, path, response.text)
        assert "viewer" in response.json()["error"]["message"]


def test_editor_updates_and_deletes(api: Any, configs: dict[str, Any]) -> None:
    editor = api("editor")
    model = dict(configs["model"], description="Changed by the editor.")
    updated = editor.put(f"/models/{model['id']}", json=model)
    assert updated.status_code == 200, updated.text
    assert updated.json()["model"]["description"] == "Changed by the editor."
    assert editor.delete(f"/models/{model['id']}").json() == {"id": model["id"]}
    assert editor.get(f"/models/{model['id']}").status_code == 404


def test_errors_have_one_shape_with_field_detail(api: Any, configs: dict[str, Any]) -> None:
    admin = api("admin")
    bad = example("brain_mri_model")
    bad["name"] = "another"
    bad["trainingApproach"]["maxTrials"] = 0
    invalid = admin.post("/models", json=bad)
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert error["status"] == 422
    assert {e["field"] for e in error["errors"]} == {"trainingApproach.maxTrials"}
    taken = admin.post("/models", json=example("brain_mri_model"))
    assert taken.status_code == 409 and "fix" in taken.json()["error"]
    missing = admin.get("/models/no-such-model")
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    not_json = admin.post("/datasets", content=b"{", headers={"Content-Type": "application/json"})
    # a body that is not JSON is the README's 400, naming the body (issue 31: was 422 "1")
    assert not_json.status_code == 400 and not_json.json()["error"]["status"] == 400
    assert [e["field"] for e in not_json.json()["error"]["errors"]] == ["(body)"]


def test_an_internal_error_shows_no_stack_trace(
    api: Any, configs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr("patient_ml.services.models.MODELS.list", boom)
    response = api("admin").get("/models")
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text


def test_create_run_triggers_the_models_dag_run(
    api: Any, configs: dict[str, Any], engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = configs["model"]["id"]
    calls: list[tuple[Any, ...]] = []

    def trigger(self: Any, dag_id: str, run_id: str, conf: dict, user: str) -> TriggeredDagRun:
        calls.append((self.triggered_by, dag_id, conf, user))
        return TriggeredDagRun(dag_id, run_id, "queued", paused=False)

    monkeypatch.setattr(AirflowDagRunHook, "trigger", trigger)
    monkeypatch.setattr(AirflowDagRunHook, "require_runnable", lambda self, dag_id: None)
    created = api("editor").post(f"/models/{model_id}/runs", json={"maxTrials": 2})
    assert created.status_code == 200, created.text
    run_id = created.json()["runId"]
    [(via, dag_id, conf, user)] = calls
    assert (via, dag_id, user) == ("rest_api", configs["model"]["dagId"], "editor")
    assert conf == {"runId": run_id, "maxTrials": 2}
    listed = api("viewer").get(f"/models/{model_id}/runs?view=extended").json()["runs"]
    assert [r["id"] for r in listed] == [run_id]
    run = api("viewer").get(f"/models/{model_id}/runs/{run_id}?view=extended").json()["run"]
    assert run["status"] == "running" and run["triggeredBy"] == "editor"
    assert run["problemDefinition"]["problemType"] == "imgClf"


def test_create_run_without_the_dag_in_airflow_is_409_and_saves_nothing(
    api: Any, configs: dict[str, Any]
) -> None:
    """A client that retries (the reference client retries every error 3 times) must not leave
    failed runs behind while Airflow parses a model saved moments ago."""
    model_id = configs["model"]["id"]
    for _ in range(3):
        response = api("admin").post(f"/models/{model_id}/runs")
        assert response.status_code == 409
        assert "has not parsed the DAG" in response.json()["error"]["message"]
    assert api("admin").get(f"/models/{model_id}/runs").json()["runs"] == []


def test_update_from_a_reference_client_keeps_the_extension_fields(
    api: Any, configs: dict[str, Any]
) -> None:
    """A reference client cannot send extension fields: leaving them out keeps them."""
    admin, model = api("admin"), configs["model"]
    policy = {**model["approvalPolicy"], "approvers": ["dr-a"]}
    model = admin.put(f"/models/{model['id']}", json={**model, "approvalPolicy": policy})
    model = model.json()["model"]
    reference = {k: model[k] for k in ("name", "datasetId", "trainingApproach", "deployApproach")}
    reference["trainingApproach"] = {
        k: v
        for k, v in model["trainingApproach"].items()
        if k not in ("parallelTrials", "seed", "schedule")
    }
    updated = admin.put(f"/models/{model['id']}", json={**reference, "description": "new"})
    assert updated.status_code == 200, updated.text
    after = updated.json()["model"]
    assert after["description"] == "new"
    assert after["approvalPolicy"] == model["approvalPolicy"]
    assert after["trainingApproach"]["seed"] == model["trainingApproach"]["seed"]
    dataset = configs["dataset"]
    sent = {k: dataset[k] for k in ("name", "description")}
    sent["problemDefinition"] = {
        k: v for k, v in dataset["problemDefinition"].items() if k != "labelSystem"
    }
    kept = admin.put(f"/datasets/{dataset['id']}", json=sent).json()["dataset"]
    assert kept["source"] == dataset["source"] and kept["curation"] == dataset["curation"]
    assert kept["problemDefinition"]["labelSystem"] == dataset["problemDefinition"]["labelSystem"]
    explicit = admin.put(f"/models/{model['id']}", json={**reference, "approvalPolicy": {}})
    assert explicit.json()["model"]["approvalPolicy"]["approvers"] == []  # sent: changed


def _evaluated_run(engine: Any, model_id: str, artifact: bytes | None = None) -> str:
    with session_scope(engine) as s:
        run = runs.create_run(s, model_id, actor="t")
        if artifact is not None:
            from patient_ml import settings

            store = artifact_store_from_uri(settings.artifact_uri())
            key = f"runs/{run.id}/model.tar.gz"
            store.put_bytes(key, artifact)
            run.model_artifact_uri = store.uri(key)
            run.model_artifact_sha256 = hashlib.sha256(artifact).hexdigest()
        runs.finish_run(s, run.id, status="succeeded", actor="t")
        run.approval_requested_at = utcnow()
        return run.id


def _set_approvers(api: Any, model: dict[str, Any], approvers: list[str]) -> None:
    policy = {**model["approvalPolicy"], "approvers": approvers}
    updated = api("admin").put(f"/models/{model['id']}", json={**model, "approvalPolicy": policy})
    assert updated.status_code == 200, updated.text


def _approvals_of(engine: Any, run_id: str) -> list[Any]:
    from patient_ml.services.approvals import decisions_of

    with session_scope(engine) as s:
        return [(a.decision, a.user, a.channel) for a in decisions_of(s, run_id)]


def test_approval_decisions(api: Any, configs: dict[str, Any], engine: Any) -> None:
    model_id = configs["model"]["id"]
    run_id = _evaluated_run(engine, model_id)
    path = f"/models/{model_id}/runs/{run_id}/approvals"
    no_reason = api("editor").post(path, json={"decision": "approved"})
    assert no_reason.status_code == 422
    decided = api("editor").post(path, json={"decision": "rejected", "description": "worse"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["approvalDecision"] == {
        **decided.json()["approvalDecision"],
        "decision": "rejected",
        "actor": "user",
        "user": "editor",
        "description": "worse",
        "channel": "api",
    }
    again = api("admin").post(path, json={"decision": "approved", "description": "no, good"})
    assert again.status_code == 409
    wrong_model = api("admin").post(
        "/models/no-such/runs/x/approvals", json={"decision": "approved", "description": "x"}
    )
    assert wrong_model.status_code == 404
    with session_scope(engine) as s:
        from patient_ml.services.audit import events_for

        audited = [e.after for e in events_for(s, "run", run_id) if e.action == "run.rejected"]
    assert audited[0]["channel"] == "api" and audited[0]["detail"] == {"airflowUserId": "editor"}


def test_deciding_needs_the_decision_right_and_the_approvers_list(
    api: Any, configs: dict[str, Any], engine: Any
) -> None:
    """Read access is not enough (viewer, even when named an approver); the edit right is not
    enough either when the model names other approvers; an approver with the right decides."""
    model = configs["model"]
    run_id = _evaluated_run(engine, model["id"])
    path = f"/models/{model['id']}/runs/{run_id}/approvals"
    body = {"decision": "approved", "description": "better on the test set"}

    _set_approvers(api, model, ["viewer", "editor"])
    viewer = api("viewer").post(path, json=body)
    assert viewer.status_code == 403, viewer.text
    message = viewer.json()["error"]["message"]
    assert "'viewer' may not approve or reject runs of model" in message
    assert "read access is not enough" in message and "patient_ml__" in message
    assert _approvals_of(engine, run_id) == []

    _set_approvers(api, model, ["dr-a"])
    editor = api("editor").post(path, json=body)
    assert editor.status_code == 403, editor.text
    assert "'editor' may not decide on runs of model" in editor.json()["error"]["message"]
    assert "approvers are dr-a" in editor.json()["error"]["message"]
    assert _approvals_of(engine, run_id) == []

    _set_approvers(api, model, ["editor"])
    ui = {"X-Patient-ML-Channel": "ui"}
    spoofed = api("editor").post(path, json=body, headers={"X-Patient-ML-Channel": "cli"})
    assert spoofed.status_code == 422  # only api and ui can be claimed over HTTP
    approved = api("editor").post(path, json=body, headers=ui)
    assert approved.status_code == 200, approved.text
    assert approved.json()["approvalDecision"]["channel"] == "ui"
    assert _approvals_of(engine, run_id) == [("approved", "editor", "ui")]


def test_model_artifact_url_downloads_it(api: Any, configs: dict[str, Any], engine: Any) -> None:
    model_id = configs["model"]["id"]
    run_id = _evaluated_run(engine, model_id, artifact=b"model bytes")
    viewer = api("viewer")
    url = viewer.get(f"/models/{model_id}/runs/{run_id}/model-artifact").json()["url"]
    downloaded = viewer.get(url)
    assert downloaded.status_code == 200 and downloaded.content == b"model bytes"
    assert api(None).get(url).status_code == 401
    bare = _evaluated_run(engine, model_id)
    assert viewer.get(f"/models/{model_id}/runs/{bare}/model-artifact").status_code == 404


def test_openapi_document_lists_the_reference_paths(api: Any) -> None:
    paths = api(None).get("/openapi.json").json()["paths"]
    for path in (
        "/models", "/models/{model_id}", "/models/{model_id}/runs",
        "/models/{model_id}/runs/{run_id}", "/models/{model_id}/runs/{run_id}/model-artifact",
        "/models/{model_id}/runs/{run_id}/approvals", "/models/{model_id}/predictions",
        "/datasets", "/datasets/{dataset_id}",
    ):  # fmt: skip
        assert path in paths, path
