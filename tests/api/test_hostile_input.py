"""The REST API under hostile input (issue 16): unsafe ids in bodies and paths, huge bodies,
control and bidi characters in parameters, huge values echoed back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from patient_ml.config.limits import MAX_CONFIG_BYTES
from tests.helpers import example


@pytest.mark.parametrize("bad", ["../../x", "a/b", "/abs", ".", "a\u202eb"])
def test_create_refuses_unsafe_ids(api: Any, bad: str) -> None:
    admin = api("admin")
    answer = admin.post("/datasets", json=example("brain_mri_dataset") | {"id": bad})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["error"]["errors"]] == ["id"]
    assert admin.get("/datasets").json()["datasets"] == []


def test_a_body_above_the_limit_is_refused_with_413(api: Any) -> None:
    admin = api("admin")
    config = example("brain_mri_dataset") | {"description": "x" * (MAX_CONFIG_BYTES + 10)}
    answer = admin.post("/datasets", json=config)
    assert answer.status_code == 413, answer.text
    assert len(answer.text) < 1000
    # Sent in chunks (no Content-Length), it is cut off while being read.
    chunks = iter([b'{"name": "' + b"y" * 65536] * (MAX_CONFIG_BYTES // 65536 + 2) + [b'"}'])
    chunked = admin.post("/datasets", content=chunks, headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    assert admin.get("/datasets").json()["datasets"] == []


def test_huge_field_values_are_not_echoed_whole(api: Any) -> None:
    answer = api("admin").post(
        "/datasets", json=example("brain_mri_dataset") | {"name": "n" * 500_000}
    )
    assert answer.status_code == 422
    assert len(answer.text) < 2000
    assert len(answer.json()["error"]["errors"][0]["value"]) <= 200


@pytest.mark.parametrize(
    "path",
    [
        "/models/some-model/runs/bad%20run!",
        "/models/some-model/runs/.hidden",
        "/datasets/some-dataset/examples/bad:id",
        "/datasets/some-dataset/examples/a%20b",
        "/datasets/red%1B%5B31m",
        "/datasets/x%E2%80%AEy",
        "/datasets/some-dataset/examples?patientId=%1B%5B2J",
        "/models/" + "m" * 3000,
    ],
)
def test_unsafe_path_and_query_parameters_get_422(api: Any, path: str) -> None:
    answer = api("admin").get(path)
    assert answer.status_code == 422, (path, answer.status_code, answer.text)
    assert "\x1b" not in answer.text


def test_a_duplicated_key_in_a_rest_body_is_refused_with_422(api: Any) -> None:
    admin = api("admin")
    body = json.dumps(example("brain_mri_dataset"))
    body = '{"name": "shadow-name", ' + body[1:]
    answer = admin.post("/datasets", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["error"]["errors"]] == ["name"]
    assert admin.get("/datasets").json()["datasets"] == []


@pytest.mark.parametrize("body", ['{"name": "x",', "not json", '{"a": 1}}'])
def test_a_malformed_json_body_is_a_400_naming_the_body(api: Any, body: str) -> None:
    """The README promises 400 for an unreadable body (issue 31: it was 422 `field "1"`)."""
    for path in ("/datasets", "/models"):
        answer = api("admin").post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["message"].startswith("The request body is not valid JSON: ")
        assert "at character" in error["message"] and "application/json" in error["fix"]
        assert [e["field"] for e in error["errors"]] == ["(body)"]


@pytest.mark.parametrize(
    "path",
    ["/models", "/datasets", "/model-summaries", "/models/m/runs", "/datasets/d/examples"],
)
@pytest.mark.parametrize("limit", ["100000", "0", "-1"])
def test_every_list_refuses_a_limit_out_of_range_with_422(api: Any, path: str, limit: str) -> None:
    """Issue 31: `GET /models?limit=100000` answered 200 while the other lists answered 422."""
    answer = api("admin").get(f"{path}?limit={limit}")
    assert answer.status_code == 422, (path, answer.status_code, answer.text)
    [error] = answer.json()["error"]["errors"]
    assert error["field"] == "query.limit" and str(error["value"]) == limit


def test_the_config_lists_page_with_limit_and_offset(api: Any) -> None:
    admin = api("admin")
    made = []
    for i in range(3):
        dataset = example("brain_mri_dataset") | {"name": f"paged-{i}"}
        made.append(admin.post("/datasets", json=dataset).json()["dataset"]["id"])
    assert [d["id"] for d in admin.get("/datasets?limit=2").json()["datasets"]] == made[:2]
    assert [d["id"] for d in admin.get("/datasets?limit=2&offset=2").json()["datasets"]] == [
        made[2]
    ]
    assert [d["id"] for d in admin.get("/datasets").json()["datasets"]] == made
