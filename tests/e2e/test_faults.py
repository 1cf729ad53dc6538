"""Faults during a live run on real Airflow (issue 34's fault suite, on the shared deployment:
LocalExecutor, the local training backend).

One run of a model with 2 trial workers and 4 trials meets, in order:

1. **A tune task's process killed mid-trial** (SIGKILL: an out-of-memory kill, a crashed
   interpreter). Its trainer runs in a session of its own and is not killed with it, as a
   container is not killed with its worker. Airflow retries the task; the retry stops what is
   left of that trainer (found by the labels in its environment), fails the trial in Optuna
   and in the product as stale (not counted), and the sweep still ends with exactly 4 counted
   trials.
2. **Scheduler and triggerer down while the run awaits approval.** A decision through the REST
   API is stored and closes the Required Action at once (in the API server); once the scheduler
   is back the run ends without the triggerer.

Afterwards the product and the Optuna study agree trial by trial, none is `running`, and
nothing of the run is left on the machine (processes labelled with it, tune scratch folders).
The database outage is tested at the sweep (tests/training/test_sweep_outage.py);
benchmarks/faults.py prints the recovery time of each fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from include.faults import RunRecords, kill_task_process, task_instance
from patient_ml.db.engine import session_scope
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.runs import find_run_for_dag_run
from patient_ml.training.backends.labelled import labelled_groups
from tests.e2e.conftest import E2EDeployment, register_cohort_model, wait_dag_run

MODEL = "e2e-faults-classifier"
DAG_ID = "patient_ml__e2e_faults_classifier"
MAX_TRIALS = 4
# trials of several seconds, so that one is surely killed while it trains
TRAINING = {
    "maxTrials": MAX_TRIALS,
    "parallelTrials": 2,
    "searchSpace": [
        {"type": "categorical", "name": "epochs", "values": ["40"]},
        {"type": "categorical", "name": "patience", "values": ["40"]},
        {"type": "categorical", "name": "image_size", "values": ["32"]},
        {"type": "continuous", "name": "learning_rate", "min": 0.001, "max": 0.01},
    ],
}


@pytest.fixture(scope="module")
def faults(airflow_deployment: E2EDeployment) -> Iterator[tuple[E2EDeployment, str]]:
    d = airflow_deployment
    model_id = register_cohort_model(
        d,
        dataset="e2e-faults-dataset",
        salt="faults01",
        model=MODEL,
        approvers=["admin"],
        training=TRAINING,
    )
    try:
        d.wait_for_dag(DAG_ID)
        yield d, model_id
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _run_id(d: E2EDeployment, dag_run: str) -> str:
    def found() -> str | None:
        with session_scope(d.engine) as session:
            run = find_run_for_dag_run(session, DAG_ID, dag_run)
            return run.id if run is not None else None

    return str(d.stack.wait_for(found, 120, f"the product run of {dag_run}"))


def _state(d: E2EDeployment, dag_run: str, task: str, map_index: int = -1) -> dict[str, Any]:
    return task_instance(d.api, DAG_ID, dag_run, task, map_index)


def test_a_run_survives_a_killed_task_and_a_scheduler_down_at_approval(
    faults: tuple[E2EDeployment, str],
) -> None:
    d, model_id = faults
    dag_run = d.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None})["dag_run_id"]
    run_id = _run_id(d, dag_run)

    # 1. worker 0's task process dies while its trainer trains
    d.stack.wait_for(
        lambda: labelled_groups({"run": run_id, "worker": "0"}), 420, "worker 0's first trial"
    )
    [trainer] = labelled_groups({"run": run_id, "worker": "0"})
    killed = kill_task_process(d.api, DAG_ID, dag_run, "tune", 0)
    assert killed, "tune[0] was not running here"
    # (the trainer outlives it, in its own session, until its next line meets the closed pipe
    # or the retry stops it; tests/training/test_leftover_processes.py shows the retry's part)
    d.stack.wait_for(
        lambda: (
            _state(d, dag_run, "tune", 0)["try_number"] >= 2
            and _state(d, dag_run, "tune", 0)["state"] in ("running", "success")
        ),
        300,
        "the retry of tune[0]",
    )
    d.stack.wait_for(
        lambda: trainer not in labelled_groups({"run": run_id}), 60, "the retry to stop it"
    )
    with pytest.raises(ProcessLookupError):
        os.killpg(trainer, 0)

    # 2. scheduler and triggerer down while the run awaits approval; a REST decision
    d.stack.wait_for(
        lambda: _state(d, dag_run, "await_approval")["state"] == "deferred",
        600,
        "await_approval",
    )
    d.stack.stop_component("triggerer")
    d.stack.stop_component("scheduler")
    try:
        decided = d.api.post(
            f"/v1/patient-ml/models/{model_id}/runs/{run_id}/approvals",
            {"decision": "rejected", "description": "e2e: faults, not deployed"},
        )
        assert decided["approvalDecision"]["decision"] == "rejected"
    finally:
        d.stack.start(("scheduler",))
    try:
        assert wait_dag_run(d.stack, d.api, DAG_ID, dag_run) == "success"
    finally:
        d.stack.start(("triggerer",))
    states = d.api.task_states(DAG_ID, dag_run)
    assert states["await_approval"] == "skipped" and states["record"] == "success", states

    records = RunRecords.of(d.engine, run_id)
    assert records.problems(MAX_TRIALS) == []
    assert records.stale, "the killed trial is failed as stale, not counted"
