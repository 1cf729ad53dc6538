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
"""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from include.airflow_stack import ApiClient

TASK_TITLE = "airflow worker -- "  # the task process's title (Airflow's task runner)


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
        from patient_ml.operators.tune import SCRATCH_PREFIX
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
        folders = sorted(
            str(p) for p in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{run_id}-w*")
        )
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
