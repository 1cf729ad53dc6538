"""The gate through the REST API: the extended run shows the operating point and the gate, the
reference run shows neither (the reference SDK forbids extra fields); approving a challenger
that fails a rule is refused on `override` (422) until an override with its own justification
is sent, which is recorded with the decision; the OpenAPI document declares `override`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.services.evaluated import evaluated_run, model_with_champion

RULE = {"metric": "sensitivity:positive", "margin": 0.02}


def test_override_through_the_rest_api(api: Any, engine: Any, tmp_path: Path) -> None:
    model_id = model_with_champion(engine, tmp_path, {"nonInferiority": [RULE]})
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.5, seed=11)
    path = f"/models/{model_id}/runs/{run_id}"
    extended = api("editor").get(f"{path}?view=extended").json()["run"]
    [rule] = extended["gate"]["rules"]
    assert rule["metric"] == "sensitivity:positive" and rule["passed"] is False
    assert extended["gate"]["overrideRequired"] is True
    assert extended["operatingPoint"]["rule"] == "youden"
    reference = api("editor").get(path).json()["run"]
    assert "gate" not in reference and "operatingPoint" not in reference

    body = {"decision": "approved", "description": "needed at site B"}
    refused = api("editor").post(f"{path}/approvals", json=body)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["error"]["errors"]
    assert error["field"] == "override" and "Sensitivity of positive" in error["message"]
    empty = api("editor").post(f"{path}/approvals", json={**body, "override": {}})
    assert empty.status_code == 422  # the override needs its justification
    done = api("editor").post(
        f"{path}/approvals",
        json={**body, "override": {"justification": "a second reader covers it"}},
    )
    assert done.status_code == 200, done.text
    criteria = done.json()["approvalDecision"]["criteria"]
    assert criteria["override"]["justification"] == "a second reader covers it"
    assert criteria["override"]["failedRules"] == ["sensitivity:positive"]


def test_the_openapi_document_declares_the_override(api: Any) -> None:
    document = api("viewer").get("/openapi.json").json()
    schema = document["components"]["schemas"]["ApprovalDecisionInput"]["properties"]
    assert "override" in schema
