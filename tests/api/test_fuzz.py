"""Property-based fuzzing of the REST API against its own OpenAPI document (schemathesis).

`test_generated_requests_get_documented_answers` calls every operation of `/openapi.json` as an
admin with generated requests: the document's examples, schemathesis' coverage cases (values at
the edges of each schema, valid and invalid), then random valid and invalid data. Every answer
must be no 5xx, a documented status code with the documented content type and headers, and a
body that matches the documented schema. Schemathesis cannot guess ids, so a dataset, a model
and three runs are seeded with fixed ids: example and coverage cases act on them, fuzzed cases
use a generated or a seeded id at random. `test_real_ids_answer_as_documented` then calls each
operation of models, datasets and runs with the seeded ids, also checking that the typed
response models left the wire bytes as the services build them.

The fuzzing runs on SQLite only (the API layer under test is the same on PostgreSQL),
deterministically (fixed seed, derandomized Hypothesis) and within a time budget
(`MAX_EXAMPLES` per operation in the fuzzing phase). Strings PostgreSQL cannot take (NUL) and
huge numbers, which failed in the database there, are checked on both databases by
`test_nul_characters_and_huge_limits_are_refused_with_422`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine

from patient_ml.api.app import create_app
from patient_ml.api.schemas import PredictionResponse
from patient_ml.api.views import reference_prediction
from patient_ml.config import reference
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Metric, Model, Run, utcnow
from patient_ml.services import runs
from patient_ml.services.datasets import dataset_to_wire, get_dataset
from patient_ml.services.models import model_to_wire
from tests.helpers import example

MAX_EXAMPLES = 12  # per operation in the fuzzing phase, on top of examples and coverage cases
SEED = 20261123
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# The wire as the routes wrote it before they declared response models: FastAPI serialized the
# returned dict with pydantic (`dict[str, Any]`), and the typed models must not change a byte.
AS_DICT = TypeAdapter(dict[str, Any])
# Fixed ids of the seeded objects: the examples and coverage cases are built when the tests are
# collected, before anything is seeded, and should act on existing objects.
SEEDED = {
    "dataset": "5eed0000-0000-4000-8000-00000000da7a",
    "model": "5eed0000-0000-4000-8000-0000000d0de1",
    "evaluated": "5eed0000-0000-4000-8000-000000000001",
    "decided": "5eed0000-0000-4000-8000-000000000002",
    "running": "5eed0000-0000-4000-8000-000000000003",
}
REAL_IDS = {
    "dataset_id": [SEEDED["dataset"]],
    "model_id": [SEEDED["model"]],
    "run_id": [SEEDED["evaluated"], SEEDED["decided"], SEEDED["running"]],
}


@pytest.fixture
def seeded(api: Callable[..., Any], engine: Engine) -> dict[str, str]:
    """A dataset and a model (through the API) and three runs of the model (through the
    services, as the DAG would record them): `evaluated` has metrics, a model artifact and a
    pending approval; `decided` was rejected by the automatic policy; `running` has just begun."""
    admin = api("admin")
    dataset = admin.post(
        "/datasets", json={**example("brain_mri_dataset"), "id": SEEDED["dataset"]}
    )
    assert dataset.status_code == 200, dataset.text
    config = example("brain_mri_model")
    config["approvalPolicy"]["approvers"] = []  # admin decides (the example names its approver)
    model = admin.post("/models", json={**config, "id": SEEDED["model"]})
    assert model.status_code == 200, model.text
    from patient_ml import settings
    from patient_ml.storage import artifact_store_from_uri

    with session_scope(engine) as s:

        def new_run(name: str) -> Run:
            run = runs.create_run(s, SEEDED["model"], actor="fuzz")
            run.id = SEEDED[name]  # nothing refers to the new run yet
            s.flush()
            return run

        evaluated = new_run("evaluated")
        store = artifact_store_from_uri(settings.artifact_uri())
        key = f"runs/{evaluated.id}/model.tar.gz"
        store.put_bytes(key, b"model bytes")
        evaluated.model_artifact_uri = store.uri(key)
        evaluated.model_artifact_sha256 = hashlib.sha256(b"model bytes").hexdigest()
        evaluated.hyperparameters = [{"name": "learning_rate", "value": "0.001"}]
        evaluated.evaluation = {"testExamples": 12, "balancedAccuracy": 0.75}
        s.add_all(
            [
                Metric(
                    run_id=evaluated.id,
                    subject="challenger",
                    stage="evaluation",
                    name="balancedAccuracy",
                    value=0.75,
                    direction="maximize",
                    description="Mean recall over labels.",
                ),
                Metric(
                    run_id=evaluated.id,
                    subject="challenger",
                    stage="training",
                    name="validation:loss",
                    value=1.0,
                ),
            ]
        )
        runs.finish_run(s, evaluated.id, status="succeeded", actor="fuzz")
        evaluated.approval_requested_at = utcnow()
        decided = new_run("decided")
        runs.finish_run(s, decided.id, status="succeeded", actor="fuzz")
        s.add(
            Approval(
                run_id=decided.id,
                decision="rejected",
                actor="system",
                description="balancedAccuracy did not improve",
                criteria={"policy": "autoApproval", "passed": False, "criteria": []},
            )
        )
        new_run("running")
    return SEEDED


@pytest.fixture
def admin(airflow_auth: Callable[[str], str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {airflow_auth('admin')}"}


# The app's own OpenAPI document, loaded by schemathesis, calling the app in-process (the `api`
# fixture points it at the test's database). Loaded at import: schemathesis' lazy loader
# (`schemathesis.pytest.from_fixture`) does not run under pytest 9.2 (it sets Node._nodeid).
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",  # valid and invalid requests
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "with-security-parameters": False,  # the admin JWT, not generated credentials
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


_cycle = itertools.count()  # spreads coverage cases over the seeded runs


def map_case(context: Any, case: schemathesis.Case) -> schemathesis.Case:
    """Examples and coverage cases act on the seeded objects: they vary bodies and queries at
    the edges of the schema, which only matters for an object that exists."""
    phase = case.meta.phase.name if case.meta is not None else None
    if case.path_parameters and phase in (TestPhase.EXAMPLES, TestPhase.COVERAGE):
        for name, ids in REAL_IDS.items():
            if name in case.path_parameters:
                case.path_parameters[name] = ids[next(_cycle) % len(ids)]
    return case


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Fuzzed cases use each generated id or a seeded one of the same kind (schemathesis cannot
    guess ids), so both unknown and existing objects are fuzzed."""
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *REAL_IDS.get(name, [])])
            for name, value in path_parameters.items()
        }
    )


@SQLITE_ONLY
@schema.hooks.apply(map_case)
@schema.hooks.apply(flatmap_path_parameters)
@schema.parametrize()
# One seeded database per operation, shared by its generated requests (which may add to it).
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_requests_get_documented_answers(
    case: schemathesis.Case, seeded: dict[str, str], admin: dict[str, str]
) -> None:
    case.call_and_validate(headers=admin, checks=CHECKS)


def _call(
    headers: dict[str, str],
    method: str,
    path: str,
    *,
    expect: int,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    body: Any = None,
) -> Any:
    """Call one operation with real ids and check the answer against the document."""
    operation = schema[path][method]
    kwargs: dict[str, Any] = {"path_parameters": path_parameters or {}, "query": query}
    if body is not None:
        kwargs["body"] = body
        kwargs["media_type"] = "application/json"
    case = operation.Case(**kwargs)
    response = case.call(headers=headers)
    assert response.status_code == expect, (method, path, response.text[:500])
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response


@SQLITE_ONLY
def test_real_ids_answer_as_documented(
    seeded: dict[str, str], admin: dict[str, str], engine: Engine
) -> None:
    model = {"model_id": seeded["model"]}
    dataset = {"dataset_id": seeded["dataset"]}

    def run(name: str) -> dict[str, str]:
        return {**model, "run_id": seeded[name]}

    # Reads: documented, and byte for byte what the services build.
    with session_scope(engine) as s:
        stored_model = s.get(Model, seeded["model"])
        expected = {
            "/models": {"models": [model_to_wire(stored_model)]},
            "/models/{model_id}": {"model": model_to_wire(stored_model)},
            "/datasets": {"datasets": [dataset_to_wire(get_dataset(s, seeded["dataset"]))]},
            "/datasets/{dataset_id}": {
                "dataset": dataset_to_wire(get_dataset(s, seeded["dataset"]))
            },
            "/models/{model_id}/runs": {
                "runs": runs.runs_to_wire(s, runs.list_runs(s, seeded["model"])),
                "totalEntries": 3,  # extension: for paging with offset
            },
        }
        run_wires = {
            name: runs.run_to_wire(s, runs.get_run(s, seeded[name]))
            for name in ("evaluated", "decided", "running")
        }
    for path, wire in expected.items():
        params = dataset if "{dataset_id}" in path else model if "{model_id}" in path else {}
        query = {"view": "extended"} if path in ("/models", "/datasets") or "runs" in path else None
        response = _call(admin, "GET", path, expect=200, path_parameters=params, query=query)
        assert response.content == AS_DICT.dump_json(wire), path
    for name, wire in run_wires.items():
        response = _call(admin, "GET", "/models/{model_id}/runs/{run_id}", expect=200,
                         path_parameters=run(name), query={"view": "extended"})  # fmt: skip
        assert response.content == AS_DICT.dump_json({"run": wire}), name
        # the default (reference) view: exactly the reference ModelRun's fields
        response = _call(admin, "GET", "/models/{model_id}/runs/{run_id}", expect=200,
                         path_parameters=run(name))  # fmt: skip
        shaped = reference.project("ModelRun", wire)
        assert response.content == AS_DICT.dump_json({"run": shaped}), name
        assert "snapshotId" not in response.json()["run"]
    approvals = run_wires["decided"]["approvals"]
    assert approvals[0]["actor"] == "system" and "user" not in approvals[0]
    assert "end" not in run_wires["running"] and "modelArtifactUri" not in run_wires["running"]
    _call(admin, "GET", "/models/{model_id}/runs", expect=200, path_parameters=model,
          query={"limit": 1})  # fmt: skip

    # A fetched config is a valid request body (read-only fields are documented and ignored).
    document = schema.raw_schema
    for path, key, params in (
        ("/models/{model_id}", "model", model),
        ("/datasets/{dataset_id}", "dataset", dataset),
    ):
        fetched = _call(admin, "GET", path, expect=200, path_parameters=params).json()[key]
        request_schema = document["paths"][path]["put"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        jsonschema.Draft202012Validator({**request_schema, **document}).validate(fetched)
        _call(admin, "PUT", path, expect=200, path_parameters=params, body=fetched)
        _call(admin, "DELETE", path, expect=409, path_parameters=params)  # in use / has runs

    # Runs: the DAG is not in Airflow (409, not a 5xx); approvals; the artifact; predictions.
    _call(admin, "POST", "/models/{model_id}/runs", expect=409, path_parameters=model,
          body={"maxTrials": 2})  # fmt: skip
    approvals_path = "/models/{model_id}/runs/{run_id}/approvals"
    decision = {"decision": "approved", "description": "better on every metric"}
    _call(
        admin, "POST", approvals_path, expect=200, path_parameters=run("evaluated"), body=decision
    )
    _call(
        admin, "POST", approvals_path, expect=409, path_parameters=run("evaluated"), body=decision
    )
    _call(admin, "POST", approvals_path, expect=422, path_parameters=run("running"),
          body={"decision": "approved"})  # fmt: skip
    artifact = "/models/{model_id}/runs/{run_id}/model-artifact"
    url = _call(admin, "GET", artifact, expect=200, path_parameters=run("evaluated")).json()["url"]
    assert url.endswith(
        f"/models/{seeded['model']}/runs/{seeded['evaluated']}/model-artifact/download"
    )
    download = _call(admin, "GET", artifact + "/download", expect=200,
                     path_parameters=run("evaluated"))  # fmt: skip
    assert download.content == b"model bytes"
    _call(admin, "GET", artifact, expect=404, path_parameters=run("running"))
    _call(admin, "GET", "/models/{model_id}/predictions", expect=409, path_parameters=model,
          query={"exampleId": "no-champion-yet"})  # fmt: skip
    _call(admin, "GET", "/models/{model_id}/runs/{run_id}", expect=404,
          path_parameters={**model, "run_id": "no-such-run"})  # fmt: skip


@SQLITE_ONLY
def test_the_documented_examples_are_accepted(
    seeded: dict[str, str], admin: dict[str, str]
) -> None:
    """The request examples in the document are valid configs (renamed, since the seeded
    configs have their names; the model example names the seeded dataset by its name)."""
    document = schema.raw_schema
    for path in ("/datasets", "/models"):
        content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        body = {**content["examples"]["imgClf"]["value"], "name": f"documented{path[1:]}"}
        _call(admin, "POST", path, expect=200, body=body)


def test_nul_characters_and_huge_limits_are_refused_with_422(api: Callable[..., Any]) -> None:
    """NUL in an id or a body string, and a huge `limit`, reached the database, which failed
    (503 on PostgreSQL; 500 on SQLite for the limit); they are 422 naming the field, on both."""
    admin = api("admin")
    assert admin.post("/datasets", json=example("brain_mri_dataset")).status_code == 200
    model = admin.post("/models", json=example("brain_mri_model")).json()["model"]
    bad_model = example("brain_mri_model")
    bad_model["trainingApproach"]["searchSpace"][0]["name"] = "learning\x00rate"
    bad_model["approvalPolicy"]["approvers"] = ["alice", "b\x00b"]
    for method, path, body, fields in (
        ("get", "/models/a%00b", None, ["model_id"]),
        ("get", f"/models/{model['id']}/runs/a%00b", None, ["run_id"]),
        ("delete", "/datasets/%00", None, ["dataset_id"]),
        ("post", "/datasets", {**example("brain_mri_dataset"), "name": "x\x00"}, ["name"]),
        ("put", f"/models/{model['id']}", bad_model, [
            "trainingApproach.searchSpace[0].name", "approvalPolicy.approvers[1]"
        ]),
        ("post", f"/models/{model['id']}/runs/r/approvals",
         {"decision": "approved", "description": "ok\x00"}, ["description"]),
        ("get", f"/models/{model['id']}/runs?limit={2**63}", None, ["query.limit"]),
    ):  # fmt: skip
        response = admin.request(method, path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert [e["field"] for e in response.json()["error"]["errors"]] == fields, path
    assert api(None).get("/models/a%00b").status_code == 401  # credentials are checked first


REFERENCE_OPERATIONS = {
    ("post", "/models"): ("ModelConfigInput", "CreateModelResponse"),
    ("get", "/models"): (None, "GetModelsResponse"),
    ("get", "/models/{model_id}"): (None, "GetModelResponse"),
    ("put", "/models/{model_id}"): ("ModelConfigInput", "UpdateModelResponse"),
    ("delete", "/models/{model_id}"): (None, "DeleteModelResponse"),
    ("post", "/datasets"): ("DatasetConfigInput", "CreateDatasetResponse"),
    ("get", "/datasets"): (None, "GetDatasetsResponse"),
    ("get", "/datasets/{dataset_id}"): (None, "GetDatasetResponse"),
    ("put", "/datasets/{dataset_id}"): ("DatasetConfigInput", "UpdateDatasetResponse"),
    ("delete", "/datasets/{dataset_id}"): (None, "DeleteDatasetResponse"),
    ("post", "/models/{model_id}/runs"): (None, "CreateRunResponse"),
    # view=reference (the default) or view=extended
    ("get", "/models/{model_id}/runs"): (None, ("GetRunsResponse", "GetRunsExtendedResponse")),
    ("get", "/models/{model_id}/runs/{run_id}"): (
        None,
        ("GetRunResponse", "GetRunExtendedResponse"),
    ),
    ("post", "/models/{model_id}/runs/{run_id}/approvals"): (
        "ApprovalDecisionInput",
        "CreateApprovalDecisionResponse",
    ),
    ("get", "/models/{model_id}/runs/{run_id}/model-artifact"): (None, "GetModelArtifactResponse"),
}


def test_the_document_types_the_reference_operations() -> None:
    """Request and response bodies of the reference operations are named schemas, and every
    documented error, on every route, is the one ErrorResponse shape the API answers."""
    document = create_app().openapi()
    components = document["components"]["schemas"]
    for (method, path), (request, response) in REFERENCE_OPERATIONS.items():
        operation = document["paths"][path][method]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        if isinstance(response, tuple):
            refs = [{"$ref": f"#/components/schemas/{name}"} for name in response]
            assert ok.get("anyOf") == refs, (method, path)
            view = [p for p in operation["parameters"] if p["name"] == "view"]
            assert view and view[0]["in"] == "query", (method, path)
        else:
            assert ok == {"$ref": f"#/components/schemas/{response}"}, (method, path)
        if request:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{request}"}, (method, path)
    assert {"ModelConfig", "DatasetConfig", "ModelRun", "ErrorResponse"} <= set(components)
    assert "HTTPValidationError" not in json.dumps(document)  # FastAPI's 422, not ours
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status >= "400":
                    shape = answer["content"]["application/json"]["schema"]
                    assert shape == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    "answer",
    [
        {
            "predictionType": "imgClf",
            "modelId": "m",
            "runId": "r",
            "problemType": "imgClf",
            "exampleId": "e",
            "predictions": [
                {"index": 1, "value": True, "confidence": 0.75, "name": "tumour"},
                {"index": 0, "value": False, "confidence": 0.25, "name": None},
            ],
        },
        {
            "predictionType": "imgSeg",
            "modelId": "m",
            "runId": "r",
            "problemType": "imgSeg",
            "mask": "iVBORw0KGgo=",
            "width": 64,
            "height": None,
        },
        {
            "predictionType": "imgClf",
            "predictions": [
                {"index": 1, "value": True, "confidence": 0.75},
                {"index": 0, "value": False, "confidence": 0.25},
            ],
        },
    ],
    ids=["imgClf-extended", "imgSeg", "imgClf-reference"],
)
def test_prediction_answers_pass_the_response_model_unchanged(answer: dict[str, Any]) -> None:
    """What the predictions route returns (the service's answer plus predictionType), through
    the route's response model as FastAPI serializes it: the same bytes. (The route itself
    needs a deployed champion, which these tests do not start.)"""
    model = TypeAdapter(PredictionResponse)
    serialized = model.dump_json(model.validate_python(answer), exclude_unset=True)
    assert serialized == AS_DICT.dump_json(answer)


def test_the_reference_view_of_a_prediction_is_exactly_the_reference_shape() -> None:
    extended = {
        "predictionType": "imgClf", "modelId": "m", "runId": "r", "problemType": "imgClf",
        "exampleId": "e",
        "predictions": [{"index": 1, "name": "tumour", "confidence": 0.75, "value": True}],
    }  # fmt: skip
    shaped = reference_prediction(extended)
    assert shaped == {
        "predictionType": "imgClf",
        "predictions": [{"index": 1, "confidence": 0.75, "value": True}],
    }
    assert reference.problems("ImageClassificationPredictionResponse", shaped) == []
    assert reference.problems("ImageClassificationPredictionResponse", extended)
