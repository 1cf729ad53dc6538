"""Monitoring end to end on the shared real Airflow: a model trained and deployed by its own
DAG (1 trial), then its monitor DAG (`patient_ml_monitor__<slug>`, built by the factory once the
model has a champion) run twice:

1. unshifted images (REST predictions of the dataset's own examples): no alarm, the
   `signal_drift` task is skipped, no drift Asset event;
2. shifted images (blurred, as from a new scanner: through the predictions service and the
   CLI): a feature-drift breach event (REST, audit), the drift Asset event, and —
   `monitoring.retrainOnBreach` — a run of the model's training DAG queued by that Asset event.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from include.airflow_stack import AirflowStack, ApiClient
from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Model, PredictionRecord, Run
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from patient_ml.services.predictions import predict
from patient_ml.services.runs import find_run_for_dag_run
from patient_ml.storage import artifact_store_from_uri
from patient_ml.training.channels import iter_manifest, manifest_key, snapshot_prefix
from tests.curation.cohort import Cohort, dataset_config
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment, wait_dag_run, wait_task
from tests.operators.lifecycle import model_config

MODEL = "e2e-monitored"
DAG_ID = "patient_ml__e2e_monitored"
MONITOR_DAG_ID = "patient_ml_monitor__e2e_monitored"
DRIFT_URI = "x-patient-ml://models/e2e_monitored/drift"
WINDOW = 20
CLI = str(Path(sys.executable).with_name("patient-ml"))


@pytest.fixture(scope="module")
def monitored(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    """A deployed champion of this module's model (trained, approved, deployed by its DAG)."""
    d = airflow_deployment
    cohort = Cohort(d.sources / "monitor-cohort", "mon01", "urn:test:e2e-monitor-dataset")
    cohort.add_patients(0, 50)
    with session_scope(d.engine) as session:
        ds = dataset_config("e2e-monitor-dataset", "mon01")
        ds["source"] = {"type": "ndjson", "uri": str(cohort.write_ndjson(d.root / "mon-ndjson"))}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        config = model_config(MODEL, dataset_id)
        config["trainingApproach"]["trainingImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        config["deployApproach"]["inferenceImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        # checked only when triggered here (a yearly schedule), small windows, retrain on breach
        config["monitoring"] = {"schedule": "0 0 1 1 *", "windowSize": WINDOW, "minSamples": 15,
                                "retrainOnBreach": True}  # fmt: skip
        model_id = create_model(session, config, actor="e2e").id
    try:
        d.wait_for_dag(DAG_ID)
        run_id = _train_and_deploy(d)
        d.wait_for_dag(MONITOR_DAG_ID)  # built on the next parse: the model has a champion now
        yield {"d": d, "model_id": model_id, "dataset_id": dataset_id, "run_id": run_id}
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _train_and_deploy(d: E2EDeployment) -> str:
    body = {"logical_date": None, "conf": {"maxTrials": 1}}
    dag_run = d.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", body)["dag_run_id"]
    wait_task(d.stack, d.api, DAG_ID, dag_run, "await_approval", {"deferred"})
    with session_scope(d.engine) as session:
        run = find_run_for_dag_run(session, DAG_ID, dag_run)
        assert run is not None
        run_id = run.id
    _cli(d.stack, "runs", "approve", "--run", run_id, "--reason", "e2e: monitor me")
    assert wait_dag_run(d.stack, d.api, DAG_ID, dag_run) == "success"
    with session_scope(d.engine) as session:
        assert session.get(Run, run_id).deploy_status == "succeeded"
    return run_id


def _cli(stack: AirflowStack, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [CLI, "--json", *args], env={**stack.env, "PATIENT_ML_USER": "dr-monitor"},
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _check(d: E2EDeployment) -> dict[str, str]:
    """Run the monitor DAG once; its task states."""
    dag_run = d.api.post(f"/api/v2/dags/{MONITOR_DAG_ID}/dagRuns",
                         {"logical_date": None})["dag_run_id"]  # fmt: skip
    assert wait_dag_run(d.stack, d.api, MONITOR_DAG_ID, dag_run) == "success"
    return d.api.task_states(MONITOR_DAG_ID, dag_run)


def _shifted(data: bytes) -> bytes:
    """A softer image, as from a new scanner: blurred, its brightness and contrast unchanged
    (what the intensity statistics alone did not see, issue 39)."""
    from PIL import ImageFilter

    out = io.BytesIO()
    Image.open(io.BytesIO(data)).filter(ImageFilter.GaussianBlur(1.5)).save(out, format="PNG")
    return out.getvalue()


def _drift_events(api: ApiClient) -> list[dict[str, Any]]:
    events = api.get("/api/v2/assets/events?limit=200")["asset_events"]
    return [e for e in events if e["uri"] == DRIFT_URI]


def test_monitor_dag_quiet_on_unshifted_alarms_and_retrains_on_shifted(
    monitored: dict[str, Any],
) -> None:
    d, model_id = monitored["d"], monitored["model_id"]
    api, v1 = d.api, "/v1/patient-ml"
    store = artifact_store_from_uri((d.root / "artifacts").as_uri())
    with session_scope(d.engine) as session:
        snapshot_id = session.get(Run, monitored["run_id"]).snapshot_id
    entries = list(iter_manifest(store, manifest_key(monitored["dataset_id"], snapshot_id)))[1:]

    # 1. unshifted: the dataset's own images, through the REST predictions endpoint
    for entry in entries[:WINDOW]:
        answer = api.get(f"{v1}/models/{model_id}/predictions?exampleId={entry['id']}")
        assert answer["predictionType"] == "imgClf"
    with session_scope(d.engine) as session:
        logged = session.scalars(select(PredictionRecord).where(
            PredictionRecord.model_id == model_id)).all()  # fmt: skip
        assert len(logged) == WINDOW and {r.image_sha256 for r in logged} == {
            e["image"]["sha256"] for e in entries[:WINDOW]
        }
    states = _check(d)
    assert states == {"check": "success", "signal_drift": "skipped"}, states
    monitoring = api.get(f"{v1}/models/{model_id}/monitoring")
    assert monitoring["events"][0]["status"] == "ok", monitoring["events"][0]
    assert monitoring["reference"]["runId"] == monitored["run_id"]
    assert monitoring["monitoring"]["retrainOnBreach"] is True
    assert not _drift_events(api)

    # 2. shifted: the same kind of images, blurred, through the service and the CLI
    prefix = snapshot_prefix(monitored["dataset_id"])
    for entry in entries[WINDOW : 2 * WINDOW - 1]:
        image = store.read_bytes(f"{prefix}/{entry['image']['key']}")
        predict(d.engine, store, model_id, image=_shifted(image))
    shifted_file = d.root / "shifted.png"
    shifted_file.write_bytes(_shifted(image))
    assert _cli(d.stack, "models", "predict", MODEL, "--image", str(shifted_file))["runId"]
    states = _check(d)
    assert states == {"check": "success", "signal_drift": "success"}, states
    breach = api.get(f"{v1}/models/{model_id}/monitoring?status=breach")["events"][0]
    assert "featureDrift.images" in breach["breaches"], breach
    assert breach["window"]["predictions"] == WINDOW
    assert breach["details"]["estimatedPerformance"]["balancedAccuracy"]["value"] is not None
    with session_scope(d.engine) as session:
        audited = session.scalars(select(AuditEvent).where(
            AuditEvent.entity_id == model_id,
            AuditEvent.action == "model.monitoring.breach")).all()  # fmt: skip
        assert [a.after["eventId"] for a in audited] == [breach["id"]]
    drift = _drift_events(api)
    assert len(drift) == 1 and drift[0]["extra"]["monitoringEventId"] == breach["id"]
    assert d.stack.client("viewer").get(f"{v1}/models/{model_id}/monitoring")["events"]

    # the drift Asset event queues a run of the training DAG (data-aware scheduling)
    def queued() -> str | None:
        runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=asset_triggered")["dag_runs"]
        return runs[0]["dag_run_id"] if runs else None

    retrain = d.stack.wait_for(queued, 120, "the drift Asset to trigger the training DAG")
    # stop it here: it would curate and train again (evaluation and approval still gate it)
    api.patch(f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
    api.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{retrain}", {"state": "failed"})
    with session_scope(d.engine) as session:
        assert session.get(Model, model_id).champion_id == monitored["run_id"]
