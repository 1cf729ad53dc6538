"""RecordRunOperator: the product run reflects its DAG run (failed tasks, rejection, no run)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from patient_ml.db.engine import session_scope
from patient_ml.db.models import utcnow
from patient_ml.operators.record import RecordRunOperator
from patient_ml.services import datasets, models, runs
from patient_ml.services.approvals import decide
from tests.helpers import example

DAG_ID = "patient_ml__brain_mri_tumour_classifier"


@pytest.fixture
def model_id(engine, db_url, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    with session_scope(engine) as s:
        datasets.create_dataset(s, example("brain_mri_dataset"), actor="a")
        return models.create_model(s, example("brain_mri_model"), actor="a").id


def record_task() -> RecordRunOperator:
    with DAG(DAG_ID, schedule=None):
        upstream = [EmptyOperator(task_id=t) for t in ("curate", "tune", "evaluate")]
        record = RecordRunOperator(task_id="record")
        upstream[0] >> upstream[1] >> upstream[2] >> record
    return record


def context(dag_run_id: str, states: dict[str, str] | Exception) -> dict[str, Any]:
    def get_task_states(**kwargs: Any) -> dict[str, Any]:
        assert kwargs == {"dag_id": DAG_ID, "run_ids": [dag_run_id]}
        if isinstance(states, Exception):
            raise states
        return {dag_run_id: states}

    return {
        "ti": SimpleNamespace(get_task_states=get_task_states),
        "dag_run": SimpleNamespace(run_id=dag_run_id),
    }


def start(engine, model_id: str, dag_run_id: str) -> str:
    with session_scope(engine) as s:
        return runs.start_run_for_dag_run(
            s, model_id, airflow_dag_id=DAG_ID, airflow_run_id=dag_run_id, actor="t"
        ).id


def test_a_failed_task_ends_the_run_failed_and_fails_the_dag_run(engine, model_id) -> None:
    run_id = start(engine, model_id, "manual__1")
    states = {"curate": "success", "tune_0": "failed", "tune_1": "success",
              "evaluate": "upstream_failed", "record": "running"}  # fmt: skip
    with pytest.raises(AirflowFailException, match="failed task\\(s\\): evaluate, tune"):
        record_task().execute(context("manual__1", states))
    with session_scope(engine) as s:
        run = runs.get_run(s, run_id)
        assert run.status == "failed"
        assert "stopped at evaluate, tune" in run.error and "manual__1" in run.error


def test_a_rejected_run_is_recorded_and_the_dag_run_succeeds(engine, model_id) -> None:
    run_id = start(engine, model_id, "manual__2")
    with session_scope(engine) as s:
        runs.finish_run(s, run_id, status="succeeded", actor="t")
        runs.get_run(s, run_id).approval_requested_at = utcnow()
    with session_scope(engine) as s:
        decide(s, run_id, "rejected", user="dr-approver", reason="worse", channel="api")
    states = {"curate": "success", "await_approval": "skipped", "deploy": "skipped"}
    summary = record_task().execute(context("manual__2", states))
    assert summary["runId"] == run_id and summary["status"] == "succeeded"
    assert summary["approvalStatus"] == "rejected" and summary["isChampion"] is False


def test_no_product_run_means_the_first_task_failed(engine, model_id) -> None:
    with pytest.raises(AirflowFailException, match=r"No product run was started.*curate"):
        record_task().execute(context("manual__3", {"curate": "failed"}))


def test_without_task_states_the_product_run_still_decides(engine, model_id) -> None:
    run_id = start(engine, model_id, "manual__4")  # still running: something stopped it
    with pytest.raises(AirflowFailException, match="ended failed"):
        record_task().execute(context("manual__4", RuntimeError("old API server")))
    with session_scope(engine) as s:
        assert runs.get_run(s, run_id).status == "failed"


def test_the_run_end_stops_what_a_dead_task_of_the_run_left(
    engine, model_id, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local evaluation server labelled with the run (its evaluate task died, so its own stop
    never ran) and a tune scratch folder of the run are gone after `record`; another run's server
    and a deployed endpoint (no run label) stay."""
    import tempfile

    from patient_ml.operators.tune import fresh_scratch_folder
    from patient_ml.serving.servers import LocalServer
    from patient_ml.training.backends.labelled import labelled_groups

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_id = start(engine, model_id, "manual__leftovers")
    scratch = fresh_scratch_folder(run_id, 0)
    trainer = tmp_path / "pinger"  # a `serve` that answers /ping, as the contract asks
    trainer.mkdir()
    (trainer / "serve").write_text(_PINGER)
    image, model_dir = "test/pinger:1", tmp_path / "model"
    model_dir.mkdir()
    server = LocalServer(trainer_dirs={"test/pinger": trainer})
    ours = server.start(name="eval", image=image, model_dir=model_dir, labels={"run": run_id})
    other = server.start(name="other", image=image, model_dir=model_dir, labels={"run": "x" * 32})
    deployed = server.start(name="endpoint", image=image, model_dir=model_dir)
    try:
        task = record_task()
        task.backend = "local"
        with pytest.raises(AirflowFailException):  # the run never ended: recorded failed
            task.execute(context("manual__leftovers", {"curate": "success", "tune": "failed"}))
        assert labelled_groups({"run": run_id}) == [] and not server.is_running(ours.handle)
        assert not scratch.exists()
        assert server.is_running(other.handle) and server.is_running(deployed.handle)
    finally:
        for handle in (ours, other, deployed):
            server.stop(handle.handle)


_PINGER = """#!/usr/bin/env python3
import http.server, os

class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(os.environ["SM_SERVE_PORT"])), Ping).serve_forever()
"""
