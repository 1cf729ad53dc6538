"""CurateDatasetOperator in a model's pipeline: starts (or takes) the run of its DAG run, curates
the model's dataset into a snapshot linked to the run, and names it in the Asset event."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Asset

from patient_ml.db.engine import session_scope
from patient_ml.operators.curate import CurateDatasetOperator
from patient_ml.services import runs
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from tests.curation.cohort import Cohort, dataset_config
from tests.operators.lifecycle import model_config

SNAPSHOT = Asset(name="snap", uri="x-patient-ml://datasets/cohort/snapshot")


@pytest.fixture
def model_id(engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    cohort = Cohort(tmp_path / "cohort", "cur01", "urn:test:cohort")
    cohort.add_patients(0, 20)
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", str(cohort.images))
    config = dataset_config("cohort", "cur01")
    config["source"] = {"type": "ndjson", "uri": str(cohort.write_ndjson(tmp_path / "nd"))}
    with session_scope(engine) as s:
        dataset_id = create_dataset(s, config, actor="t").id
        return create_model(s, model_config("cohort-model", dataset_id), actor="t").id


def execute(model_id: str, dag_run_id: str, conf: dict[str, Any]) -> tuple[dict, dict]:
    op = CurateDatasetOperator(task_id="curate", model_id=model_id, outlets=[SNAPSHOT])
    events: dict[Any, Any] = defaultdict(lambda: SimpleNamespace(extra={}))
    context = {
        "dag_run": SimpleNamespace(run_id=dag_run_id, conf=conf, triggering_user_name="ann"),
        "params": {"runId": conf.get("runId"), "maxTrials": 1},
        "task": op,
        "outlet_events": events,
    }
    return op.execute(context), events


def test_starts_the_run_of_its_dag_run_and_curates(engine, model_id) -> None:
    result, events = execute(model_id, "manual__1", {})
    with session_scope(engine) as s:
        run = runs.get_run(s, result["runId"])
        assert run.airflow_run_id == "manual__1" and run.triggered_by == "airflow-user:ann"
        assert run.snapshot_id == result["snapshotId"] and result["exampleCount"] > 0
    assert events[SNAPSHOT].extra["snapshotId"] == result["snapshotId"]
    assert events[SNAPSHOT].extra["runId"] == result["runId"]
    again, _ = execute(model_id, "manual__1", {})  # a retry: the same run and snapshot
    assert (again["runId"], again["snapshotId"]) == (result["runId"], result["snapshotId"])
    assert again["created"] is False


def test_takes_the_product_run_named_in_conf(engine, model_id) -> None:
    with session_scope(engine) as s:
        product = runs.create_run(s, model_id, actor="ml-engineer").id
    result, _ = execute(model_id, "manual__2", {"runId": product})
    assert result["runId"] == product
    with session_scope(engine) as s:
        assert runs.get_run(s, product).airflow_run_id == "manual__2"
