"""The tune stage: N mapped TuneWorkerOperators share the run's Optuna study, then
FinishTuningOperator records the best trial's model on the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from patient_ml.operators.common import RunOperator


def make_backend(
    kind: str, *, docker_conn_id: str | None = None, aws_conn_id: str | None = None
) -> Any:
    """`local`, `docker`, `sagemaker` (training jobs through the AWS connection, settings from
    PATIENT_ML_SAGEMAKER_*), or `auto` (Docker when an engine answers, else local)."""
    from patient_ml.training.backends.local import LocalBackend

    if kind == "local":
        return LocalBackend()
    if kind == "sagemaker":
        from patient_ml.training.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(aws_conn_id=aws_conn_id)
    from patient_ml.training.backends.docker import DockerBackend, docker_available

    if kind == "docker" or (kind == "auto" and docker_available(docker_conn_id)):
        return DockerBackend(docker_conn_id=docker_conn_id)
    return LocalBackend()


class TuneWorkerOperator(RunOperator):
    """One trial worker of a run's sweep; map it over `worker_index` for parallel trials.

    Claims trials from the run's Optuna study (in the product DB) until the sweep has
    `maxTrials`, runs each on the backend, streams the trainer's log into this task's log,
    prunes from the objective's intermediate values, and stores each completed trial's
    `model.tar.gz`. A retry fails the trials its crashed attempt left running and continues.

    :param worker_index: this worker's index (use `.expand(worker_index=range(n))`).
    :param backend: `auto`, `local`, `docker` or `sagemaker`.
    :param max_trials: overrides the config's `maxTrials` (templated, e.g. from params).
    :param trial_timeout: seconds before a trial's job is stopped as timed out.
    :param cpus: CPU limit of a trial (Docker) or thread count (local).
    :param memory_mb: memory limit of a trial container.
    :param docker_conn_id: Docker connection (registry credentials to pull the image).
    Other parameters: those of `RunOperator` (patient_ml.operators.common).
    """

    template_fields: Sequence[str] = ("run_id", "max_trials")
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        worker_index: int = 0,
        backend: str = "auto",
        max_trials: int | str | None = None,
        trial_timeout: float = 3600.0,
        cpus: float = 1.0,
        memory_mb: int = 2048,
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.worker_index = worker_index
        self.backend = backend
        self.max_trials = max_trials
        self.trial_timeout = trial_timeout
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.docker_conn_id = docker_conn_id
        self._worker: Any = None

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.training.tuning import Limits, TuningWorker

        workdir = Path(tempfile.mkdtemp(prefix=f"tune-{os.getpid()}-"))
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


class FinishTuningOperator(RunOperator):
    """Record the best trial (hyperparameters, model artifact + sha256, training metrics) on
    the run; fails with the trials' failure texts when none completed.

    Parameters: those of `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#ffe8cc"

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.training.tuning import finish_tuning

        return finish_tuning(self.engine(), self.store(), self.run_id, actor=self.actor)
