"""Deploy and roll back through the REST API (what the web UI's buttons call): the same checks as
a decision (read access, the decision right on the DAG, the approvers list), the same audit and
champion history as the deploy task and `patient-ml runs deploy`, and the API's error text."""

from __future__ import annotations

from typing import Any

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.services.audit import events_for
from tests.api.test_api import _evaluated_run, _set_approvers
from tests.helpers import example

EDGE = {"type": "edge", "inferenceImage": "patient-ml/img-clf-trainer:0.1.0"}
UI = {"X-Patient-ML-Channel": "ui"}


@pytest.fixture
def edge_model(api: Any) -> dict[str, Any]:
    """The example model deployed to the edge (no endpoint to start: the run becomes champion
    and its artifact is the download), decided by anyone with the decision right."""
    admin = api("admin")
    assert admin.post("/datasets", json=example("brain_mri_dataset")).status_code == 200
    config = example("brain_mri_model")
    config["approvalPolicy"]["approvers"] = []
    saved = admin.post("/models", json={**config, "deployApproach": EDGE})
    assert saved.status_code == 200, saved.text
    return saved.json()["model"]


def _approve(api: Any, model_id: str, run_id: str, user: str = "editor") -> None:
    decided = api(user).post(
        f"/models/{model_id}/runs/{run_id}/approvals",
        json={"decision": "approved", "description": "better on the test set"},
    )
    assert decided.status_code == 200, decided.text


def _options(api: Any, user: str, model_id: str, run_id: str) -> dict[str, Any]:
    got = api(user).get(f"/models/{model_id}/runs/{run_id}/deploy-options")
    assert got.status_code == 200, got.text
    return got.json()["deployOptions"]


def _champion(api: Any, model_id: str) -> str | None:
    return api("viewer").get(f"/models/{model_id}").json()["model"].get("championId")


def test_deploy_then_roll_back_and_deploy_again(
    api: Any, edge_model: dict[str, Any], engine: Any
) -> None:
    model_id = edge_model["id"]
    editor = api("editor")
    first, second = _evaluated_run(engine, model_id), _evaluated_run(engine, model_id)

    undecided = editor.post(f"/models/{model_id}/runs/{first}/deployment")
    assert undecided.status_code == 409, undecided.text
    assert "only an approved run is deployed" in undecided.json()["error"]["message"]
    options = _options(api, "editor", model_id, first)
    assert options["deploy"] == {"allowed": False,
                                 "reason": undecided.json()["error"]["message"]}  # fmt: skip
    assert "was never champion" in options["rollback"]["reason"]

    for run_id, action in ((first, "promote"), (second, "promote")):
        _approve(api, model_id, run_id)
        deployed = editor.post(f"/models/{model_id}/runs/{run_id}/deployment", headers=UI)
        assert deployed.status_code == 200, deployed.text
        assert deployed.json()["deployment"]["action"] == action
        assert deployed.json()["deployment"]["deployType"] == "edge"
        assert _champion(api, model_id) == run_id
    again = editor.post(f"/models/{model_id}/runs/{second}/deployment")
    assert again.status_code == 200 and again.json()["deployment"]["alreadyDeployed"] is True

    assert _options(api, "editor", model_id, first)["rollback"] == {"allowed": True}
    assert not _options(api, "editor", model_id, second)["rollback"]["allowed"]
    plain = editor.post(f"/models/{model_id}/runs/{first}/deployment")
    assert plain.status_code == 409  # an earlier champion comes back only through a rollback
    assert "needs its own approval with a justification" in plain.json()["error"]["message"]
    path = f"/models/{model_id}/runs/{first}/rollback"
    empty = editor.post(path, json={"description": "  "}, headers=UI)
    assert empty.status_code == 422, empty.text
    assert empty.json()["error"]["errors"][0]["field"] == "description"
    rolled = editor.post(path, json={"description": "run 2 misses small tumours"}, headers=UI)
    assert rolled.status_code == 200, rolled.text
    answer = rolled.json()
    assert answer["approvalDecision"]["criteria"]["rollback"] is True
    assert answer["approvalDecision"]["channel"] == "ui"
    assert answer["deployment"]["action"] == "rollback"
    assert answer["deployment"]["previousChampionId"] == second
    assert _champion(api, model_id) == first
    history = api("viewer").get(f"/models/{model_id}/deployments").json()["deployments"]
    assert [(d["runId"], d["action"], d["isCurrent"]) for d in history] == [
        (first, "rollback", True),
        (second, "promote", False),
        (first, "promote", False),
    ]
    assert history[0]["actor"] == "editor" and history[0]["reason"] == "run 2 misses small tumours"

    # ... and forward again: run 2 was champion, so it can be restored the same way.
    forward = editor.post(
        f"/models/{model_id}/runs/{second}/rollback", json={"description": "fixed the data"}
    )
    assert forward.status_code == 200, forward.text
    assert _champion(api, model_id) == second

    with session_scope(engine) as s:
        requested = [e.after for e in events_for(s, "run", first)
                     if e.action == "run.deploy.requested"]  # fmt: skip
        actions = {e.action for e in events_for(s, "run", first)}
    assert requested[0] == {"channel": "ui", "rollback": False,
                            "detail": {"airflowUserId": "editor"}}  # fmt: skip
    assert requested[-1]["rollback"] is True
    assert {"run.rollback_approved", "run.deploy.deploying", "run.deploy.succeeded"} <= actions


def test_rollback_restores_only_an_earlier_champion(
    api: Any, edge_model: dict[str, Any], engine: Any
) -> None:
    model_id = edge_model["id"]
    editor = api("editor")
    champion, approved_only = _evaluated_run(engine, model_id), _evaluated_run(engine, model_id)
    _approve(api, model_id, champion)
    assert editor.post(f"/models/{model_id}/runs/{champion}/deployment").status_code == 200
    body = {"description": "restore"}

    current = editor.post(f"/models/{model_id}/runs/{champion}/rollback", json=body)
    assert current.status_code == 409
    assert "is the current champion" in current.json()["error"]["message"]
    never = editor.post(f"/models/{model_id}/runs/{approved_only}/rollback", json=body)
    assert never.status_code == 409
    assert "was never champion" in never.json()["error"]["message"]
    assert never.json()["error"]["fix"]
    missing = editor.post(f"/models/{model_id}/runs/no-such-run/rollback", json=body)
    assert missing.status_code == 404
    assert _champion(api, model_id) == champion


def test_deploying_needs_the_decision_right_and_the_approvers_list(
    api: Any, edge_model: dict[str, Any], engine: Any
) -> None:
    model_id = edge_model["id"]
    run_id = _evaluated_run(engine, model_id)
    _approve(api, model_id, run_id)
    path = f"/models/{model_id}/runs/{run_id}/deployment"

    viewer = api("viewer").post(path)
    assert viewer.status_code == 403, viewer.text
    assert "read access is not enough" in viewer.json()["error"]["message"]
    refused = _options(api, "viewer", model_id, run_id)
    assert (
        not refused["deploy"]["allowed"]
        and "'viewer' may not deploy" in refused["deploy"]["reason"]
    )
    assert _options(api, "editor", model_id, run_id)["deploy"] == {"allowed": True}
    assert api(None).post(path).status_code == 401

    _set_approvers(api, edge_model, ["dr-a"])
    editor = api("editor").post(path)
    assert editor.status_code == 403, editor.text
    assert "approvers are dr-a" in editor.json()["error"]["message"]
    rollback = api("editor").post(f"/models/{model_id}/runs/{run_id}/rollback",
                                  json={"description": "x"})  # fmt: skip
    assert rollback.status_code == 403
    assert _champion(api, model_id) is None
    assert api("viewer").get(f"/models/{model_id}/deployments").json()["deployments"] == []

    _set_approvers(api, edge_model, ["editor"])
    assert api("editor").post(path).status_code == 200
    assert _champion(api, model_id) == run_id


def test_a_run_whose_pipeline_still_runs_is_deployed_by_it(
    edge_model: dict[str, Any], engine: Any, tmp_path: Any
) -> None:
    """While the run's Airflow DAG run is queued or running its deploy task deploys it, so a
    deployment on request is refused; once the DAG run ended without deploying, it is done."""
    from patient_ml.deploy import deploy_on_request
    from patient_ml.services.approvals import decide
    from patient_ml.storage import artifact_store_from_uri

    run_id = _evaluated_run(engine, edge_model["id"])
    with session_scope(engine) as s:
        decide(s, run_id, "approved", user="editor", reason="good", channel="api")
    store = artifact_store_from_uri(str(tmp_path))
    seen: list[str] = []

    def state(value: str) -> Any:
        def pipeline_state(run: Any) -> str:
            seen.append(run.id)
            return value

        return pipeline_state

    kwargs = {"user": "editor", "channel": "ui", "server": None}
    from patient_ml.exceptions import ConflictError

    with pytest.raises(ConflictError, match="deploys it after the approval"):
        deploy_on_request(engine, store, run_id, pipeline_state=state("running"), **kwargs)
    done = deploy_on_request(engine, store, run_id, pipeline_state=state("failed"), **kwargs)
    assert done["deployment"]["action"] == "promote" and seen == [run_id, run_id]


def test_the_airflow_hook_reads_the_dag_run_state(airflow_auth: Any) -> None:
    """The pipeline's state comes from Airflow's metadata DB; an unknown DAG run is None."""
    from patient_ml.hooks.airflow_dag_runs import AirflowDagRunHook

    assert AirflowDagRunHook("rest_api").dag_run_state("patient_ml__nope", "manual__x") is None
