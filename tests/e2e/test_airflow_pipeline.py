"""End to end on real Airflow: API server, scheduler, DAG processor and triggerer as separate
processes (PostgreSQL as the metadata DB and product DB when reachable, as in CI), the
repository's DAG file, real curation, a real sweep, real `serve` processes.

1. A run triggered through the Airflow REST API (JWT) waits in `await_approval` (deferred to
   the triggerer), is approved by a named user, deploys, becomes champion, emits the champion
   Asset event and leaves an audit trail.
2. A run started from the product (`patient-ml runs create`) is rejected and never deployed.
3. The schedule (`retrainEvery`) starts a run as soon as the DAG is unpaused; it is linked to its
   DAG run like the others and is rejected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from include.airflow_stack import AirflowStack, ApiClient
from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Dataset, Model
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from patient_ml.services.runs import find_run_for_dag_run, get_run, run_to_wire
from tests.curation.cohort import Cohort, dataset_config
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment
from tests.operators.lifecycle import model_config

MODEL = "e2e-classifier"
DAG_ID = "patient_ml__e2e_classifier"
CLI = str(Path(sys.executable).with_name("patient-ml"))


@pytest.fixture(scope="module")
def deployment(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    """This module's dataset (a synthetic cohort as NDJSON) and model on the shared Airflow."""
    root, engine = airflow_deployment.root, airflow_deployment.engine
    cohort = Cohort(airflow_deployment.sources / "e2e-cohort", "e2e01", "urn:test:e2e-dataset")
    cohort.add_patients(0, 60)
    source = cohort.write_ndjson(root / "ndjson")
    with session_scope(engine) as session:
        ds = dataset_config("e2e-dataset", "e2e01")
        ds["source"] = {"type": "ndjson", "uri": str(source)}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        config = model_config(MODEL, dataset_id)
        config["trainingApproach"]["retrainEvery"] = 86_400_000  # daily: a run when unpaused
        # An image name in the reference API's ECR form (mapped to the img_clf trainer), so the
        # reference client (test_reference_client.py, same deployment) sees this model in its
        # lists (the reference view leaves out models with other image names).
        config["trainingApproach"]["trainingImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        config["deployApproach"]["inferenceImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        model = create_model(session, config, actor="e2e")
        model_id = model.id
    try:
        airflow_deployment.wait_for_dag(DAG_ID)  # unpaused: the schedule starts a run at once
        yield {
            "stack": airflow_deployment.stack,
            "api": airflow_deployment.api,
            "engine": engine,
            "model_id": model_id,
            "dataset_id": dataset_id,
            "root": root,
        }
    finally:
        stop_old_endpoints(engine, model_id, keep=None, actor="e2e-cleanup")


def _cli(stack: AirflowStack, *args: str, user: str) -> dict[str, Any]:
    done = subprocess.run(
        [CLI, "--json", *args],
        env={**stack.env, "PATIENT_ML_USER": user},
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _wait_for_task(
    stack: AirflowStack, api: ApiClient, dag_run_id: str, task: str, states: set[str]
) -> dict[str, str]:
    def reached() -> dict[str, str] | None:
        current = api.task_states(DAG_ID, dag_run_id)
        failed = [
            t for t, s in current.items() if s in ("failed", "upstream_failed", "up_for_retry")
        ]
        assert not failed, f"tasks failed: {current}\n{stack.log_tail('scheduler')}"
        return current if current.get(task) in states else None

    return stack.wait_for(reached, 420, f"{task} to be {states} in {dag_run_id}")


def _wait_for_dag_run(stack: AirflowStack, api: ApiClient, dag_run_id: str) -> str:
    return stack.wait_dag_run(api, DAG_ID, dag_run_id)


def _run_of(engine: Any, dag_run_id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        run = find_run_for_dag_run(session, DAG_ID, dag_run_id)
        assert run is not None, f"no product run for DAG run {dag_run_id}"
        return run_to_wire(session, run)


def test_rest_trigger_approve_deploy_then_cli_run_rejected(deployment: dict[str, Any]) -> None:
    stack, api, engine = deployment["stack"], deployment["api"], deployment["engine"]

    # 0. the schedule: unpausing a retrainEvery DAG starts its first run at once
    def scheduled_run() -> str | None:
        found = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled")["dag_runs"]
        return found[0]["dag_run_id"] if found else None

    scheduled = stack.wait_for(scheduled_run, 120, "the first scheduled run")
    _wait_for_task(stack, api, scheduled, "await_approval", {"deferred"})
    by_schedule = _run_of(engine, scheduled)
    assert by_schedule["triggeredBy"] == "airflow:schedule"
    _cli(stack, "runs", "reject", "--run", by_schedule["id"], "--reason", "e2e: scheduled",
         user="dr-approver")  # fmt: skip
    assert _wait_for_dag_run(stack, api, scheduled) == "success"

    # 1. The Airflow REST API with a JWT; conf overrides the sweep size through the params
    created = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"maxTrials": 1}}
    )
    first = created["dag_run_id"]
    _wait_for_task(stack, api, first, "await_approval", {"deferred"})
    run = _run_of(engine, first)
    assert run["status"] == "succeeded" and run["approvalStatus"] == "pending"
    assert run["airflow"] == {"dagId": DAG_ID, "runId": first}
    assert run["triggeredBy"] == "airflow-user:admin"
    assert {m["name"] for m in run["metrics"]["challenger"]} >= {"balancedAccuracy"}
    assert run["evaluation"]["testSetSha256"]

    approval = _cli(
        stack, "runs", "approve", "--run", run["id"], "--reason", "e2e: good", user="dr-approver"
    )
    assert approval["decision"] == "approved" and approval["user"] == "dr-approver"
    assert _wait_for_dag_run(stack, api, first) == "success"
    states = api.task_states(DAG_ID, first)
    assert states["deploy"] == "success" and states["record"] == "success"
    with session_scope(engine) as session:
        model = session.get(Model, deployment["model_id"])
        assert model is not None and model.champion_id == run["id"]
        assert get_run(session, run["id"]).deploy_status == "succeeded"
        actions = [
            e.action
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.entity_id.in_([run["id"], model.id]))
            )
        ]
    for expected in ("run.create", "run.succeeded", "run.approved", "model.champion"):
        assert any(a.startswith(expected) for a in actions), (expected, actions)
    events = api.get("/api/v2/assets/events?limit=50")["asset_events"]
    champion_events = [e for e in events if e["uri"].endswith("/e2e_classifier/champion")]
    assert champion_events and champion_events[-1]["extra"]["runId"] == run["id"]
    assert any(e["uri"].endswith("/e2e_dataset/snapshot") for e in events)

    # the REST API plugin on the same API server, with the same JWTs
    api_run = api.get(f"/v1/patient-ml/models/{deployment['model_id']}/runs/{run['id']}")["run"]
    assert api_run["id"] == run["id"] and api_run["approvals"][0]["user"] == "dr-approver"
    viewer = stack.client("viewer")
    refused = viewer.request("POST", f"/v1/patient-ml/models/{deployment['model_id']}/runs",
                             ok=(403,))  # fmt: skip
    assert refused["error"]["status"] == 403

    # 2. The product's createRun (CLI): a product run first, its DAG run with conf.runId
    started = _cli(stack, "runs", "create", MODEL, "--max-trials", "1", user="ml-engineer")
    second = started["airflow"]["runId"]
    assert started["status"] == "running" and started["triggeredBy"] == "ml-engineer"
    _wait_for_task(stack, api, second, "await_approval", {"deferred"})
    assert _run_of(engine, second)["id"] == started["id"]  # the same run, not a new one
    _cli(stack, "runs", "reject", "--run", started["id"], "--reason", "e2e: no", user="dr-approver")
    assert _wait_for_dag_run(stack, api, second) == "success"
    states = api.task_states(DAG_ID, second)
    assert states["await_approval"] == "skipped" and states["deploy"] == "skipped"
    assert states["record"] == "success"
    rejected = _run_of(engine, second)
    assert rejected["approvalStatus"] == "rejected" and "deployStatus" not in rejected
    with session_scope(engine) as session:
        model = session.get(Model, deployment["model_id"])
        assert model is not None and model.champion_id == run["id"]  # never deployed

    # Provenance: what trained and served each run; the image tag did not move between them.
    _provenance(api, deployment, run["id"], started["id"])

    # Every other endpoint of the plugin through the running API server.
    _rest_api_endpoints(stack, api, deployment, run["id"])


def _provenance(api: ApiClient, deployment: dict[str, Any], first: str, second: str) -> None:
    v1, model_id = "/v1/patient-ml", deployment["model_id"]
    image = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
    seen = {}
    for run_id in (first, second):
        wire = api.get(f"{v1}/models/{model_id}/runs/{run_id}?view=extended")["run"]
        prov = wire["provenance"]
        training, inference = prov["training"], prov["inference"]
        assert training["reference"] == image and training["backend"] in ("docker", "local")
        assert training["digest"].startswith(("sha256:", "local-sha256:")), training
        assert inference["reference"] == image and inference["digest"], inference
        # the reference trainer reports its own interpreter and libraries (environment.json)
        assert prov["trainer"]["reportedBy"] == "trainer" and prov["trainer"]["python"]
        assert {"torch", "numpy"} <= set(prov["trainer"]["libraries"])
        assert prov["package"]["version"] and prov["package"]["commit"]
        assert prov["sampler"]["seed"] == int(wire["trainingApproach"].get("seed") or 0)
        assert prov["tagMoved"] == [], prov["tagMoved"]  # the same image both times
        assert "provenance" not in api.get(f"{v1}/models/{model_id}/runs/{run_id}")["run"]
        card = api.get(f"{v1}/models/{model_id}/runs/{run_id}/model-card/document")["modelCard"]
        lineage = card["lineage"]
        assert lineage["trainingImageDigest"] == training["digest"]
        assert lineage["inferenceImageDigest"] == inference["digest"]
        assert lineage["trainerPython"] == prov["trainer"]["python"]
        assert f"seed {prov['sampler']['seed']}" in lineage["sampler"]
        assert lineage.get("tagMoves", []) == []
        seen[run_id] = training["digest"]
    assert seen[first] == seen[second]


def _rest_api_endpoints(
    stack: AirflowStack, api: ApiClient, deployment: dict[str, Any], run_id: str
) -> None:
    v1, model_id = "/v1/patient-ml", deployment["model_id"]
    dataset_id = deployment["dataset_id"]
    assert model_id in {m["id"] for m in api.get(f"{v1}/models")["models"]}
    assert api.get(f"{v1}/models/{model_id}")["model"]["championId"] == run_id
    assert run_id in {r["id"] for r in api.get(f"{v1}/models/{model_id}/runs")["runs"]}
    assert api.get(f"{v1}/datasets/{dataset_id}")["dataset"]["id"] == dataset_id
    assert dataset_id in {d["id"] for d in api.get(f"{v1}/datasets")["datasets"]}
    # logs: the trials' trainer output and the evaluation's progress, paged by marker
    logs = api.get(f"{v1}/models/{model_id}/runs/{run_id}/logs")["events"]
    assert {e["stage"] for e in logs} == {"training", "evaluation"}
    page = api.get(f"{v1}/models/{model_id}/runs/{run_id}/logs?limit=2&filter=%22trial%200%22")
    assert len(page["events"]) == 2 and page["marker"]
    assert all("trial 0" in e["payload"] for e in page["events"])
    api.get(f"{v1}/models/{model_id}/runs/{run_id}/logs?filter=%5Btrial", ok=(422,))
    # the model artifact downloads with the same credentials
    url = api.get(f"{v1}/models/{model_id}/runs/{run_id}/model-artifact")["url"]
    artifact = api.session.get(url, timeout=60)
    assert artifact.status_code == 200 and artifact.content[:2] == b"\x1f\x8b"  # gzip
    # examples, a draft label written back to the source, the champion's prediction
    unlabelled = api.get(f"{v1}/datasets/{dataset_id}/examples?hasLabel=false&limit=3")
    example_id = unlabelled["examples"][0]["id"]
    saved = api.request("PUT", f"{v1}/datasets/{dataset_id}/examples/{example_id}/label",
                        {"labelType": "imgClf", "classes": [1]})  # fmt: skip
    assert saved["label"]["isConfirmed"] is False and saved["label"]["classes"] == [1]
    read = api.get(f"{v1}/datasets/{dataset_id}/examples/{example_id}")["example"]
    assert read["label"]["classes"] == [1]
    answer = api.get(f"{v1}/models/{model_id}/predictions?exampleId={example_id}")
    assert answer["predictionType"] == "imgClf" and len(answer["predictions"]) == 2
    viewer = stack.client("viewer")
    refused = viewer.request("PUT", f"{v1}/datasets/{dataset_id}/examples/{example_id}/label",
                             {"labelType": "imgClf", "classes": [0]}, ok=(403,))  # fmt: skip
    assert refused["error"]["status"] == 403
    assert viewer.get(f"{v1}/openapi.json")["paths"]
    # the docs page and its Swagger UI assets come from this server (no CDN)
    page = viewer.session.get(f"{stack.url}{v1}/docs", timeout=60)
    assert page.status_code == 200 and f"{v1}/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    bundle = viewer.session.get(f"{stack.url}{v1}/docs-assets/swagger-ui-bundle.js", timeout=60)
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text


def _where(dataset: dict[str, Any]) -> tuple[str, str]:
    return dataset["namespace"], dataset["name"]


def _facet(dataset: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(dataset.get("facets", {}).get(name) or {})


def _of_run(facets: list[dict[str, Any]], run_id: str) -> bool:
    return any(f.get("runId") == run_id for f in facets)


def test_openlineage_events_walk_from_the_endpoint_to_the_fhir_source(
    deployment: dict[str, Any], airflow_deployment: E2EDeployment
) -> None:
    """From the OpenLineage events alone (the provider's file transport): the champion's
    endpoint → the artifact deploy read → the evaluate event that wrote it (with its metrics) →
    the snapshot it read → the curate event that wrote it → the FHIR source (this module's
    NDJSON folder); the approval event names the approver. Needs the first test's champion."""
    events_file = airflow_deployment.lineage_events
    if events_file is None:
        pytest.skip("apache-airflow-providers-openlineage is not installed (the lineage extra)")
    engine, stack = deployment["engine"], deployment["stack"]
    with session_scope(engine) as session:
        model = session.get(Model, deployment["model_id"])
        assert model is not None and model.champion_id, "the first test deploys a champion"
        champion = get_run(session, model.champion_id)
        run_id, snapshot_id = champion.id, champion.snapshot_id
        artifact_sha256 = champion.model_artifact_sha256
        dataset = session.get(Dataset, model.dataset_id)
        assert dataset is not None
        source_uri = str(dataset.source["uri"])

    def complete(task: str) -> list[dict[str, Any]]:
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        events = [json.loads(line) for line in lines if line.strip()]
        name = f"{DAG_ID}.{task}"
        return [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == name]

    def deployed() -> list[dict[str, Any]]:
        return [
            e for e in complete("deploy")
            if _of_run([_facet(o, "patientMl_endpoint") for o in e["outputs"]], run_id)
        ]  # fmt: skip

    deploy = stack.wait_for(deployed, 90, "the deploy task's COMPLETE event")[-1]
    (artifact,) = deploy["inputs"]
    assert _facet(artifact, "version")["datasetVersion"] == artifact_sha256
    assert _facet(artifact, "patientMl_modelArtifact")["runId"] == run_id

    evaluations = [
        e for e in complete("evaluate")
        if any(_where(o) == _where(artifact) for o in e["outputs"])
    ]  # fmt: skip
    assert evaluations, "no evaluate event wrote the deployed artifact"
    metrics = evaluations[-1]["run"]["facets"]["patientMl_metrics"]
    assert metrics["runId"] == run_id
    assert any(m["name"] == "balancedAccuracy" and "low" in m for m in metrics["metrics"])
    (snapshot,) = [i for i in evaluations[-1]["inputs"] if _facet(i, "patientMl_snapshot")]
    assert _facet(snapshot, "version")["datasetVersion"] == snapshot_id

    curations = [
        e for e in complete("curate")
        if any(_where(o) == _where(snapshot) for o in e["outputs"])
    ]  # fmt: skip
    assert curations, "no curate event wrote the evaluated snapshot"
    (source,) = curations[-1]["inputs"]
    assert _where(source) == ("file", str(Path(source_uri).resolve()))
    assert _facet(source, "patientMl_fhirSource")["datasetId"] == deployment["dataset_id"]

    tunes = [
        e for e in complete("tune")
        if any(_facet(i, "version").get("datasetVersion") == snapshot_id for i in e["inputs"])
    ]  # fmt: skip
    assert tunes, "no tune event read the snapshot"
    approvals = [
        e["run"]["facets"]["patientMl_approval"] for e in complete("await_approval")
        if _of_run([e["run"].get("facets", {}).get("patientMl_approval") or {}], run_id)
    ]  # fmt: skip
    assert approvals, "no await_approval event carries this run's decision"
    assert approvals[-1]["decision"] == "approved" and approvals[-1]["user"] == "dr-approver"
    assert approvals[-1]["_schemaURL"].endswith("/ApprovalRunFacet.json")


def test_mlflow_mirrors_the_trials_the_version_and_the_champion_alias(
    deployment: dict[str, Any], airflow_deployment: E2EDeployment
) -> None:
    """The tasks of real Airflow mirrored the first test's runs to a real `mlflow server`
    (docs/mlflow.md): the champion's run with its trials as nested runs, its registered version
    holding the alias `champion` with the approver in its tags, nothing reported as failed.
    Needs the first test's champion."""
    if airflow_deployment.mlflow_url is None:
        pytest.skip("mlflow is not installed (the mlflow extra)")
    from mlflow import MlflowClient

    from patient_ml.db.models import Approval

    engine = deployment["engine"]
    with session_scope(engine) as session:
        model = session.get(Model, deployment["model_id"])
        assert model is not None and model.champion_id, "the first test deploys a champion"
        champion_id = model.champion_id
        approval = session.scalars(
            select(Approval)
            .where(Approval.run_id == champion_id, Approval.decision == "approved")
            .order_by(Approval.id.desc())
        ).first()
        assert approval is not None
        approver = approval.user or approval.actor
        from patient_ml.db.models import Run

        runs = select(Run.id).where(Run.model_id == model.id)
        failed = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "run.mlflow.failed", AuditEvent.entity_id.in_(runs)
            )
        ).all()
        assert not failed, [f.after for f in failed]
    client = MlflowClient(tracking_uri=airflow_deployment.mlflow_url)
    experiment = client.get_experiment_by_name(f"patient-ml/{MODEL}")
    assert experiment is not None
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`patient_ml.run_id` = '{champion_id}' and tags.`patient_ml.role` = 'run'",
    )
    assert parent.info.status == "FINISHED" and parent.data.params
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert trials and all(t.data.tags["patient_ml.trial_state"] for t in trials)
    assert any(t.data.tags["patient_ml.trial_state"] == "complete" for t in trials)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["patient_ml.run_id"] == champion_id
    assert champion.run_id == parent.info.run_id
    assert champion.tags["patient_ml.approved_by"] == approver
    assert champion.tags["patient_ml.deploy_action"] == "promote"
