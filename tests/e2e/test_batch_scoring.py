"""Batch scoring end to end on the shared real Airflow and a real FHIR server (sekmet): a model
whose dataset lives on the FHIR server is trained and deployed by its DAG; the factory then
builds its scoring DAG (`patient_ml_score__<slug>`), which scores every image in mapped chunks
and writes one preliminary Observation per image back to the FHIR server, found by a FHIR
search. With the model server frozen, one chunk's task is failed while it waits on it (Airflow
kills it mid-chunk) and the DAG run is cleared: chunks already scored are not scored again, the
killed one is, and no Observation is duplicated.
The finish task emits the model's predictions Asset event, which starts the training DAG of a
chained model whose dataset takes its examples from those predictions (`source.fromModel`)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Endpoint, ScoringBatch, ScoringChunk, Snapshot
from patient_ml.deploy import stop_old_endpoints
from patient_ml.fhir import mapping
from patient_ml.fhir.client import FhirClient
from patient_ml.scoring.observations import identifier_value
from patient_ml.services.datasets import create_dataset
from patient_ml.services.runs import find_run_for_dag_run
from tests.curation.cohort import Cohort, dataset_config
from tests.e2e.conftest import E2EDeployment, create_classifier_model, wait_dag_run
from tests.fhir_server import running_fhir_server

MODEL = "e2e-scored"
DAG_ID = "patient_ml__e2e_scored"
SCORING_DAG_ID = "patient_ml_score__e2e_scored"
PREDICTIONS_URI = "x-patient-ml://models/e2e_scored/predictions"
CONN_ID = "e2e_fhir"
CHAINED = "e2e-second-read"
CHAINED_DAG_ID = "patient_ml__e2e_second_read"
PREDICTION_CODE = f"{mapping.LABEL_CODE_SYSTEM}|{mapping.PREDICTION_CODE}"
# both models' runs are approved by the change-control plan (no person needed here)
AUTO_APPROVAL = {"autoApproval": {"enabled": True, "allowWithoutChampion": True}}


@pytest.fixture(scope="module")
def scored_model(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    d = airflow_deployment
    with running_fhir_server(d.root / "sekmet-scoring") as server:
        client = FhirClient(server.base_url)
        cohort = Cohort(d.sources / "scoring-cohort", "sco01", "urn:test:e2e-scoring-dataset")
        cohort.add_patients(0, 40)
        client.transaction(cohort.transaction())
        d.api.post("/api/v2/connections", {"connection_id": CONN_ID, "conn_type": "fhir",
                                           "host": server.base_url})  # fmt: skip
        with session_scope(d.engine) as session:
            ds = dataset_config("e2e-scoring-dataset", "sco01")
            ds["source"] = {"type": "fhirServer", "connId": CONN_ID}
            dataset_id = create_dataset(session, ds, actor="e2e").id
            model_id = create_classifier_model(
                session, model=MODEL, dataset_id=dataset_id, approval_policy=AUTO_APPROVAL
            )
        try:
            d.wait_for_dag(DAG_ID)
            run_id = _train_and_deploy(d)
            d.wait_for_dag(SCORING_DAG_ID)  # built on the next parse: the model has a champion
            yield {"d": d, "client": client, "model_id": model_id, "run_id": run_id,
                   "images": [doc["id"] for doc in cohort.docs]}  # fmt: skip
        finally:
            stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _train_and_deploy(d: E2EDeployment) -> str:
    body = {"logical_date": None, "conf": {"maxTrials": 1}}
    dag_run = d.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", body)["dag_run_id"]
    assert wait_dag_run(d.stack, d.api, DAG_ID, dag_run) == "success", d.api.task_states(
        DAG_ID, dag_run
    )
    with session_scope(d.engine) as session:
        run = find_run_for_dag_run(session, DAG_ID, dag_run)
        assert run is not None and run.deploy_status == "succeeded"
        return run.id


def _observations(client: FhirClient, model_id: str, image_id: str) -> list[dict[str, Any]]:
    token = f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|{identifier_value(model_id, image_id)}"
    return list(client.search("Observation", {"identifier": token}))


@pytest.fixture
def chained_model(scored_model: dict[str, Any]) -> Iterator[str]:
    """A second model whose dataset takes the images the scored model predicted (either label:
    the selection rules are checked in tests/services/test_upstream.py), with the same source
    and labels; its training DAG waits for the scored model's predictions Asset."""
    d = scored_model["d"]
    with session_scope(d.engine) as session:
        ds = dataset_config("e2e-flagged", "sco01")
        ds["problemDefinition"]["labelSystem"] = "urn:test:e2e-scoring-dataset"
        upstream = {"model": MODEL, "labels": ["negative", "positive"]}
        ds["source"] = {"type": "fhirServer", "connId": CONN_ID, "fromModel": upstream}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        model_id = create_classifier_model(
            session, model=CHAINED, dataset_id=dataset_id, approval_policy=AUTO_APPROVAL
        )
    try:
        d.wait_for_dag(CHAINED_DAG_ID)
        assert d.api.dag_runs(CHAINED_DAG_ID) == []  # nothing runs until predictions exist
        yield model_id
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def test_scoring_dag_writes_predictions_to_fhir_and_survives_a_killed_chunk(
    scored_model: dict[str, Any], chained_model: str
) -> None:
    d, client = scored_model["d"], scored_model["client"]
    model_id, images = scored_model["model_id"], sorted(scored_model["images"])
    conf = {"chunkSize": 10, "split": "all", "since": "", "writeBack": True}
    chunks = -(-len(images) // 10)
    # Freeze the champion's model server (SIGSTOP), so every chunk task waits on it mid-chunk;
    # then fail chunk 1's task through Airflow's API: Airflow kills its process. Only then let
    # the server go on: the other chunks finish, chunk 1 never did.
    with session_scope(d.engine) as session:
        endpoint = session.scalars(select(Endpoint).where(
            Endpoint.model_id == model_id, Endpoint.status == "healthy")).one()  # fmt: skip
        server = int(endpoint.handle or 0)
    os.killpg(server, signal.SIGSTOP)
    try:
        dag_run = d.api.post(f"/api/v2/dags/{SCORING_DAG_ID}/dagRuns",
                             {"logical_date": None, "conf": conf})["dag_run_id"]  # fmt: skip

        def running() -> bool:
            state = d.api.task_states(SCORING_DAG_ID, dag_run).get("score[1]")
            assert state not in ("success", "failed"), state  # it cannot end while frozen
            return state == "running"

        d.stack.wait_for(running, 300, "chunk 1 of the batch to start")

        def scoring() -> bool:  # inside score_chunk: its attempt is counted, nothing done yet
            with session_scope(d.engine) as session:
                chunk = session.scalars(select(ScoringChunk).where(
                    ScoringChunk.position == 1, ScoringChunk.batch_id.in_(
                        select(ScoringBatch.id).where(ScoringBatch.model_id == model_id)))
                ).one_or_none()  # fmt: skip
                return chunk is not None and chunk.attempts == 1 and chunk.status == "pending"

        d.stack.wait_for(scoring, 120, "chunk 1 to be scoring (waiting on the frozen server)")
        d.api.patch(f"/api/v2/dags/{SCORING_DAG_ID}/dagRuns/{dag_run}/taskInstances/score/1",
                    {"new_state": "failed"})  # fmt: skip
        time.sleep(20)  # Airflow stops the task's process at its next heartbeat
    finally:
        os.killpg(server, signal.SIGCONT)
    assert wait_dag_run(d.stack, d.api, SCORING_DAG_ID, dag_run) == "failed"
    states = d.api.task_states(SCORING_DAG_ID, dag_run)
    assert states["score[1]"] == "failed" and states["finish"] == "failed", states
    assert all(states[f"score[{i}]"] == "success" for i in range(chunks) if i != 1), states
    batch = d.api.get(f"/v1/patient-ml/models/{model_id}/scoring-batches")["batches"][0]
    assert batch["status"] == "failed" and batch["chunks"] == chunks
    assert batch["chunksDone"] == chunks - 1, batch  # the killed chunk never finished
    assert batch["total"] == len(images) and batch["runId"] == scored_model["run_id"]

    # clear the failed tasks: the killed chunk is scored (again), the others are not
    d.api.post(f"/api/v2/dags/{SCORING_DAG_ID}/clearTaskInstances",
               {"dry_run": False, "dag_run_id": dag_run, "only_failed": True,
                "reset_dag_runs": True})  # fmt: skip
    time.sleep(2)
    assert wait_dag_run(d.stack, d.api, SCORING_DAG_ID, dag_run) == "success"
    detail = d.api.get(f"/v1/patient-ml/models/{model_id}/scoring-batches/{batch['id']}")
    assert detail["batch"]["status"] == "succeeded", detail
    assert detail["batch"]["scored"] == len(images) == detail["batch"]["written"]
    attempts = {c["position"]: c["attempts"] for c in detail["chunks"]}
    assert attempts == {**dict.fromkeys(range(chunks), 1), 1: 2}, attempts  # only 1 again

    found = {image: _observations(client, model_id, image) for image in images}
    assert {k: len(v) for k, v in found.items()} == dict.fromkeys(images, 1)
    assert all(v[0]["status"] == "preliminary" for v in found.values())
    assert len(list(client.search("Observation", {"code": PREDICTION_CODE}))) == len(images)

    events = d.api.get("/api/v2/assets/events?limit=200")["asset_events"]
    scored = [e for e in events if e["uri"] == PREDICTIONS_URI]
    assert len(scored) == 1 and scored[0]["extra"]["batchId"] == batch["id"], scored
    assert scored[0]["extra"]["written"] == len(images)

    # the event starts the chained model's training: it curates the images those predictions
    # selected (the newest prediction per image, this batch's), trains, is approved and deployed
    def started() -> str | None:
        runs = d.api.dag_runs(CHAINED_DAG_ID)
        return runs[0]["dag_run_id"] if runs else None

    chained_run = d.stack.wait_for(started, 120, "the predictions Asset to start the chained DAG")
    assert d.api.dag_run(CHAINED_DAG_ID, chained_run)["run_type"] == "asset_triggered"
    state = wait_dag_run(d.stack, d.api, CHAINED_DAG_ID, chained_run)
    assert state == "success", d.api.task_states(CHAINED_DAG_ID, chained_run)
    with session_scope(d.engine) as session:
        run = find_run_for_dag_run(session, CHAINED_DAG_ID, chained_run)
        assert run is not None and run.model_id == chained_model and run.snapshot_id
        snapshot = session.get(Snapshot, run.snapshot_id)
        assert snapshot is not None
        upstream = snapshot.report["upstream"]
    assert upstream["modelId"] == model_id and upstream["imagesSelected"] == len(images)
    assert [b["batchId"] for b in upstream["batches"]] == [batch["id"]], upstream
    assert upstream["leftOutWithoutPrediction"] == 0
