"""The tune stage: N mapped TuneWorkerOperators share the run's Optuna study, then
FinishTuningOperator records the best trial's model on the run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from patient_ml.operators.common import ContainerOperator, RunOperator

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from patient_ml.services.tuning import TuningWorker
    from patient_ml.training.backends.base import Backend


SCRATCH_PREFIX = "pml-tune-"


def make_backend(
    kind: str, *, docker_conn_id: str | None = None, aws_conn_id: str | None = None
) -> Backend:
    """`local`, `docker`, `sagemaker` (training jobs through the AWS connection, settings from
    PATIENT_ML_SAGEMAKER_*), or `auto` (Docker when an engine answers, else local); any other
    kind is refused (patient_ml.hooks.docker.resolve_backend), never run locally by default."""
    from patient_ml.hooks.docker import resolve_backend

    resolved = resolve_backend(kind, docker_conn_id=docker_conn_id)
    if resolved == "docker":
        from patient_ml.training.backends.docker import DockerBackend

        return DockerBackend(docker_conn_id=docker_conn_id)
    if resolved == "sagemaker":
        from patient_ml.training.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(aws_conn_id=aws_conn_id)
    from patient_ml.training.backends.local import LocalBackend

    return LocalBackend()


def fresh_scratch_folder(run_id: str, worker: int | str) -> Path:
    """The tune worker's scratch folder on this machine (the snapshot laid out, the trials'
    folders), empty: named by run and worker so that what a dead attempt left (its cleanup
    never ran) is found, here by its retry and by the run's last task (`scratch_folders`)."""
    path = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{run_id}-w{worker}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    return path


def scratch_folders(run_id: str) -> list[Path]:
    """Every tune worker's scratch folder of the run on this machine."""
    return sorted(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{run_id}-w*"))


def remove_scratch_folders(run_id: str) -> int:
    """Remove every tune worker's scratch folder of the run on this machine; how many."""
    found = scratch_folders(run_id)
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return len(found)


class TuneWorkerOperator(ContainerOperator):
    """One trial worker of a run's sweep; map it over `worker_index` for parallel trials.

    Claims trials from the run's Optuna study (in the product DB) until the sweep has
    `maxTrials`, runs each on the backend, streams the trainer's log into this task's log,
    prunes from the objective's intermediate values, and stores each completed trial's
    `model.tar.gz`. A retry fails the trials its crashed attempt left running and continues.

    :param worker_index: this worker's index (use `.expand(worker_index=range(n))`).
    :param max_trials: overrides the config's `maxTrials` (templated, e.g. from params).
    :param trial_timeout: seconds before a trial's job is stopped as timed out.
    Other parameters: those of `ContainerOperator` (backend, cpus, memory_mb, docker_conn_id)
    and `PatientMLBaseOperator` (patient_ml.operators.common). `on_kill` stops the running
    trial's job.
    """

    template_fields: Sequence[str] = ("run_id", "max_trials")
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        worker_index: int = 0,
        max_trials: int | str | None = None,
        trial_timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.worker_index = worker_index
        self.max_trials = max_trials
        self.trial_timeout = trial_timeout
        self._worker: TuningWorker | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.tuning import TuningWorker
        from patient_ml.training.tuning import Limits

        workdir = fresh_scratch_folder(self.run_id, self.worker_index)
        max_trials = int(self.max_trials) if self.max_trials not in (None, "", "None") else None
        try:
            self._worker = TuningWorker(
                engine=self.engine(),
                store=self.store(),
                backend=make_backend(
                    self.backend, docker_conn_id=self.docker_conn_id, aws_conn_id=self.aws_conn_id
                ),
                run_id=self.run_id,
                worker=str(self.worker_index),
                workdir=workdir,
                limits=Limits(self.trial_timeout, self.cpus, self.memory_mb),
                max_trials=max_trials,
            )
            outcomes = self._worker.run()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        states = [o.state for o in outcomes]
        return {s: states.count(s) for s in ("complete", "pruned", "failed")}

    def on_kill(self) -> None:
        if self._worker is not None:
            self._worker.kill()

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """OpenLineage (docs/lineage.md): the snapshot the trials trained on."""
        from patient_ml.operators.lineage import lineage_or_none
        from patient_ml.services.lineage import tune_lineage

        return lineage_or_none(self, lambda session: tune_lineage(session, self.run_id))


class FinishTuningOperator(RunOperator):
    """Record the best trial (hyperparameters, model artifact + sha256, training metrics) on
    the run; fails with the trials' failure texts when none completed. Then mirrors the trials
    to MLflow as nested runs when an MLflow connection exists (docs/mlflow.md).

    Parameters: those of `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#ffe8cc"

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.tuning import finish_tuning

        try:
            result = finish_tuning(self.engine(), self.store(), self.run_id, actor=self.actor)
        finally:  # the trials are mirrored whether or not one completed
            mirrored = self.mirror_to_mlflow()
        return {**result, "mlflow": mirrored} if mirrored is not None else result
