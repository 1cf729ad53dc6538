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

import pytest

from include.faults import FAULT_TRAINING, MAX_TRIALS, RunRecords, survive_faults, task_instance
from patient_ml.deploy import stop_old_endpoints
from tests.e2e.conftest import E2EDeployment, register_cohort_model

MODEL = "e2e-faults-classifier"
DAG_ID = "patient_ml__e2e_faults_classifier"


@pytest.fixture(scope="module")
def faults(airflow_deployment: E2EDeployment) -> Iterator[tuple[E2EDeployment, str]]:
    d = airflow_deployment
    model_id = register_cohort_model(
        d,
        dataset="e2e-faults-dataset",
        salt="faults01",
        model=MODEL,
        approvers=["admin"],
        training=FAULT_TRAINING,
    )
    try:
        d.wait_for_dag(DAG_ID)
        yield d, model_id
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def test_a_run_survives_a_killed_task_and_a_scheduler_down_at_approval(
    faults: tuple[E2EDeployment, str],
) -> None:
    d, model_id = faults
    run = survive_faults(d.stack, d.api, d.engine, DAG_ID, model_id)
    assert run.state == "success"
    states = d.api.task_states(DAG_ID, run.dag_run)
    assert states["await_approval"] == "skipped" and states["record"] == "success", states
    assert task_instance(d.api, DAG_ID, run.dag_run, "tune", 0)["try_number"] == 2
    with pytest.raises(ProcessLookupError):  # the killed task's trainer is gone
        os.killpg(run.killed_trainer, 0)
    records = RunRecords.of(d.engine, run.run_id)
    assert records.problems(MAX_TRIALS) == []
    assert records.stale, "the killed trial is failed as stale, not counted"
