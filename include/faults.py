"""Faults injected into a live run on a real Airflow (issue 34), and what a run must look like
afterwards; shared by the fault suite (tests/e2e/test_faults.py) and its benchmark
(benchmarks/faults.py).

- `kill_task_process`: SIGKILL of the process that runs one task instance (what an
  out-of-memory kill or a crashed interpreter does). Airflow's supervisor sees it die and
  retries the task; the trainer the task started (in a session of its own) does not die with
  it: the retry has to find it.
- `RunRecords.of`: the run's trials as the product and the Optuna study hold them, and what is
  left on this machine (processes labelled with the run, tune scratch folders), for the checks
  of a run that survived a fault.
- `survive_faults`: one run of a model through a killed task mid-trial, then the scheduler and
  the triggerer down while it awaits approval; the recovery times.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from include.airflow_stack import AirflowStack, ApiClient

TASK_TITLE = "airflow worker -- "
MAX_TRIALS = 4
# the model's sweep: 2 workers, trials of several seconds, so one is surely killed mid-trial
FAULT_TRAINING = {
    "maxTrials": MAX_TRIALS,
    "parallelTrials": 2,
    "searchSpace": [
        {"type": "categorical", "name": "epochs", "values": ["40"]},
        {"type": "categorical", "name": "patience", "values": ["40"]},
        {"type": "categorical", "name": "image_size", "values": ["32"]},
        {"type": "continuous", "name": "learning_rate", "min": 0.001, "max": 0.01},
    ],
}  # the task process's title (Airflow's task runner)


def task_instance(
    api: ApiClient, dag_id: str, dag_run: str, task: str, map_index: int = -1
) -> dict[str, Any]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{dag_run}/taskInstances/{task}"
    result: dict[str, Any] = api.get(path if map_index < 0 else f"{path}/{map_index}")
    return result


def task_processes(ti_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Process ids whose title is the task runner's for task instance `ti_id`."""
    wanted = f"{TASK_TITLE}{ti_id}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        if title == wanted:
            found.append(int(entry.name))
    return found


def kill_task_process(
    api: ApiClient, dag_id: str, dag_run: str, task: str, map_index: int = -1
) -> list[int]:
    """SIGKILL the process running this task instance now; the ids killed (none: not running
    on this machine)."""
    ti = task_instance(api, dag_id, dag_run, task, map_index)
    killed = []
    for pid in task_processes(str(ti["id"])):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


@dataclass(frozen=True)
class RunRecords:
    """A run's trials in the product (`pml_trials`) and in its Optuna study, and what of it is
    still on this machine."""

    product: dict[int, str]  # trial number → state
    optuna: dict[int, str]  # trial number → state, in the product's words
    stale: list[int]  # trials failed because their worker died (not counted)
    leftover_processes: list[int]  # process groups labelled with the run
    scratch_folders: list[str]  # tune scratch folders of the run

    @classmethod
    def of(cls, engine: Engine, run_id: str) -> RunRecords:
        import optuna

        from patient_ml.db.engine import session_scope
        from patient_ml.operators.tune import scratch_folders
        from patient_ml.services.training import list_trials
        from patient_ml.training import sweep
        from patient_ml.training.backends.labelled import labelled_groups

        with session_scope(engine) as session:
            rows = list_trials(session, run_id)
            product = {t.number: t.state for t in rows}
            stale = sorted(t.number for t in rows if t.failure == sweep.STALE_FAILURE)
        storage = sweep.optuna_storage(engine.url.render_as_string(hide_password=False))
        study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
        names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
        in_study = {t.number: names.get(t.state.name, t.state.name) for t in study.trials}
        storage.engine.dispose()
        folders = [str(path) for path in scratch_folders(run_id)]
        return cls(product, in_study, stale, labelled_groups({"run": run_id}), folders)

    @property
    def counted(self) -> int:
        """Trials the sweep counts towards maxTrials: all but those of a dead worker."""
        return len(self.product) - len(self.stale)

    def problems(self, max_trials: int) -> list[str]:
        """What is inconsistent or left behind ([] for a clean run)."""
        found = []
        if self.counted != max_trials:
            found.append(f"{self.counted} trials counted, not {max_trials}: {self.product}")
        running = sorted(n for n, s in {**self.product, **self.optuna}.items() if s == "running")
        if running:
            found.append(f"trials still running: {running}")
        if self.product != self.optuna:
            found.append(f"the product's trials {self.product} differ from Optuna's {self.optuna}")
        if self.leftover_processes:
            found.append(f"processes of the run left running: {self.leftover_processes}")
        if self.scratch_folders:
            found.append(f"scratch folders left: {self.scratch_folders}")
        return found


@dataclass(frozen=True)
class FaultRun:
    """What `survive_faults` did to one DAG run, and how long each recovery took (seconds)."""

    dag_run: str
    run_id: str
    killed_trainer: int  # the trainer process group of the killed task
    kill_to_retry: float  # task process killed → its retry running (Airflow's retry delay in it)
    kill_to_trainer_gone: float  # task process killed → its trainer stopped
    decision_to_end: float  # REST decision (scheduler and triggerer down) → the DAG run ended
    scheduler_down: float  # how long the scheduler was down
    state: str  # the DAG run's end state


def survive_faults(
    stack: AirflowStack,
    api: ApiClient,
    engine: Engine,
    dag_id: str,
    model_id: str,
    *,
    scheduler_down_seconds: float = 5.0,
) -> FaultRun:
    """Run the model's DAG once (2 trial workers) through two faults:

    1. tune[0]'s task process is SIGKILLed while its trainer trains; Airflow retries the task,
       the retry stops the trainer that outlived it and the sweep goes on;
    2. with the run in `await_approval`, the triggerer and the scheduler are stopped, the run is
       rejected through the REST API, and the scheduler starts again `scheduler_down_seconds`
       later (the triggerer only after the run ended: the decision must not need it).

    Returns the times; the caller checks the records (`RunRecords.of`)."""
    from patient_ml.db.engine import session_scope
    from patient_ml.services.runs import find_run_for_dag_run
    from patient_ml.training.backends.labelled import labelled_groups

    dag_run = api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]

    def product_run() -> str | None:
        with session_scope(engine) as session:
            run = find_run_for_dag_run(session, dag_id, dag_run)
            return run.id if run is not None else None

    run_id = str(stack.wait_for(product_run, 120, f"the product run of {dag_run}"))

    def ti(task: str, map_index: int = -1) -> dict[str, Any]:
        return task_instance(api, dag_id, dag_run, task, map_index)

    worker_0 = {"run": run_id, "worker": "0"}
    stack.wait_for(lambda: labelled_groups(worker_0), 420, "worker 0's first trial")
    [trainer] = labelled_groups(worker_0)
    if not kill_task_process(api, dag_id, dag_run, "tune", 0):
        raise AssertionError("tune[0] is not running on this machine")
    killed = time.monotonic()
    stack.wait_for(
        lambda: trainer not in labelled_groups({"run": run_id}), 300, "the trainer to be stopped"
    )
    trainer_gone = time.monotonic() - killed
    stack.wait_for(
        lambda: (t := ti("tune", 0))["try_number"] >= 2 and t["state"] in ("running", "success"),
        300,
        "the retry of tune[0]",
    )
    retry = time.monotonic() - killed

    stack.wait_for(lambda: ti("await_approval")["state"] == "deferred", 600, "await_approval")
    stack.stop_component("triggerer")
    stack.stop_component("scheduler")
    down = time.monotonic()
    try:
        api.post(
            f"/v1/patient-ml/models/{model_id}/runs/{run_id}/approvals",
            {"decision": "rejected", "description": "fault suite: not deployed"},
        )
        decided = time.monotonic()
        time.sleep(scheduler_down_seconds)
    finally:
        stack.start(("scheduler",))
    scheduler_down = time.monotonic() - down

    try:
        state = stack.wait_dag_run(api, dag_id, dag_run)
    finally:
        stack.start(("triggerer",))
    return FaultRun(
        dag_run, run_id, trainer, retry, trainer_gone, time.monotonic() - decided,
        scheduler_down, state,
    )  # fmt: skip
