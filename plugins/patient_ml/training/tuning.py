"""A sweep worker: the trials of one run's sweep, shared by the Airflow operators and the CLI
through `patient_ml.services.tuning` (which loads the run and records each trial).

A worker gets the run's training spec (its model config and snapshot), lays the snapshot's
train and validation channels out once in its scratch folder, then claims trials from the
run's Optuna study until the sweep has `maxTrials`. Each trial gets its own job folder
(config, model, output) that points at the shared channels, runs on a backend, and on success
its model folder is packed into `runs/<run>/trials/<n>/model.tar.gz` in the artifact store.
Every trial's log lines (complete, failed or pruned) are uploaded to
`runs/<run>/logs/training/trial-<n>.jsonl` for the logs API (see `patient_ml.log_records`).
`patient_ml.services.tuning.finish_tuning` picks the best trial and records it on the run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import shutil
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from patient_ml.log_records import run_logs_prefix
from patient_ml.storage import ArtifactStore
from patient_ml.training import sweep
from patient_ml.training.backends.base import Backend, TrainingJob
from patient_ml.training.channels import materialize_channels
from patient_ml.training.contract import CHANNELS, JobLayout
from patient_ml.training.metrics import MetricParser

log = logging.getLogger("patient_ml.training")


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    dataset_id: str
    snapshot_id: str
    approach: dict[str, Any]  # the model config's trainingApproach

    @property
    def objective(self) -> str:
        return str(self.approach["objective"]["metric"])

    @property
    def direction(self) -> str:
        return str(self.approach["objective"].get("direction", "maximize"))


@dataclass
class Limits:
    timeout_seconds: float = 3600.0
    cpus: float = 1.0
    memory_mb: int = 2048


def sweep_spec(spec: RunSpec, max_trials: int | None = None) -> sweep.SweepSpec:
    approach = spec.approach
    return sweep.SweepSpec(
        run_id=spec.run_id,
        space=sweep.search_space(approach.get("searchSpace") or []),
        max_trials=int(max_trials or approach.get("maxTrials") or 10),
        seed=int(approach.get("seed") or 0),
        objective=spec.objective,
        direction=spec.direction,
    )


def trial_artifact_key(run_id: str, number: int) -> str:
    return f"runs/{run_id}/trials/{number}/model.tar.gz"


def trial_log_key(run_id: str, number: int) -> str:
    """The trial's log object (stage `training`), read by the logs API."""
    return f"{run_logs_prefix(run_id)}/training/trial-{number}.jsonl"


def pack_model(model_dir: Path, dest: Path) -> str:
    """A reproducible model.tar.gz (sorted entries, zeroed times and owners); returns sha256."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path in sorted(model_dir.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(model_dir).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    with open(dest, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return hashlib.sha256(dest.read_bytes()).hexdigest()


class SweepWorker(ABC):
    """Claims and runs trials of `spec`'s sweep from its Optuna study (in `engine`'s DB);
    a subclass records each trial's state (`record_trial`)."""

    def __init__(
        self,
        *,
        engine: Engine,
        store: ArtifactStore,
        backend: Backend,
        spec: RunSpec,
        worker: str,
        workdir: Path,
        limits: Limits | None = None,
        max_trials: int | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.backend = backend
        self.worker = worker
        self.workdir = Path(workdir)
        self.limits = limits or Limits()
        self.spec = spec
        self.sweep = sweep_spec(self.spec, max_trials)
        self.current_job: str | None = None

    def run(self) -> list[sweep.TrialOutcome]:
        # A stored metric regex the engine cannot run fails the stage before any trial starts.
        MetricParser.from_config(self.spec.approach.get("metricDefinitions") or [])
        shared = JobLayout(self.workdir / "shared")
        stats = materialize_channels(
            self.store, self.spec.dataset_id, self.spec.snapshot_id, shared, CHANNELS
        )
        self.problem = stats.problem
        log.info(
            "worker %s: snapshot %s laid out (%s) for up to %d trials",
            self.worker,
            self.spec.snapshot_id[:12],
            ", ".join(f"{k} {v}" for k, v in stats.counts.items()),
            self.sweep.max_trials,
        )
        if stats.left_out:
            log.warning(
                "worker %s: %d validation examples left out: a copy of each is in train (a "
                "near-duplicate link found after both were assigned; the curation report "
                "lists them under nearDuplicates.crossSplit)",
                self.worker,
                stats.left_out,
            )
        removed = self.backend.remove_leftovers(self.job_labels)
        if removed:
            log.warning(
                "worker %s: stopped and removed %d job(s) an earlier attempt left running",
                self.worker,
                removed,
            )
        storage = sweep.optuna_storage(self.engine.url.render_as_string(hide_password=False))
        return sweep.run_worker(
            self.engine, storage, self.sweep, self.worker, self.execute, self.record_stale
        )

    @property
    def job_labels(self) -> dict[str, str]:
        """Who starts this worker's jobs: a retry finds what its earlier attempt left behind."""
        return {"run": self.spec.run_id, "worker": self.worker}

    def record_stale(self, trials: list[Any]) -> None:
        """The trials an earlier attempt left running, failed in the study: failed here too."""
        for trial in trials:
            hps = trial.user_attrs.get(sweep.HPARAMS_ATTR) or trial.params
            self.record_trial(trial.number, "failed", hps, failure=sweep.STALE_FAILURE)

    def execute(
        self, number: int, hps: dict[str, Any], on_metric: Callable[[str, float, int], bool]
    ) -> sweep.TrialOutcome:
        layout = JobLayout(self.workdir / f"trial-{number}")
        if layout.root.exists():
            shutil.rmtree(layout.root)  # a retried trial starts clean
        for path in (layout.config_dir, layout.model_dir, layout.output_dir / "data"):
            path.mkdir(parents=True)
        layout.data_dir.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.workdir / "shared" / "input" / "data", layout.data_dir)
        layout.write_config(hps, self.problem)
        # outside the job folder, which a completed trial removes before the upload
        log_file = self.workdir / "logs" / f"trial-{number}.jsonl"
        log_file.unlink(missing_ok=True)  # a leftover of a crashed attempt
        job = TrainingJob(
            name=f"pml-{self.spec.run_id[:8]}-t{number}",
            layout=layout,
            image=self.spec.approach["trainingImage"],
            metric_parser=MetricParser.from_config(self.spec.approach["metricDefinitions"]),
            timeout_seconds=self.limits.timeout_seconds,
            cpus=self.limits.cpus,
            memory_mb=self.limits.memory_mb,
            log_prefix=f"[trial {number}] ",
            log_file=log_file,
            labels=self.job_labels,
        )
        try:
            return self._execute(number, hps, on_metric, job)
        finally:
            self._upload_log(number, job)

    def _execute(
        self,
        number: int,
        hps: dict[str, Any],
        on_metric: Callable[[str, float, int], bool],
        job: TrainingJob,
    ) -> sweep.TrialOutcome:
        layout = job.layout
        self.record_trial(number, "running", hps)
        self.current_job = job.name
        reported: list[float] = []

        def report(name: str, value: float, step: int) -> bool:
            if name == self.spec.objective:
                reported.append(value)
            return bool(on_metric(name, value, step))

        try:
            result = self.backend.run(job, report)
        finally:
            self.current_job = None
        if result.status == "stopped":
            # As Optuna keeps it: the last objective value reported before the pruner stopped
            # it (the job may log more lines while it stops; those are not the trial's value).
            last = reported[-1] if reported and math.isfinite(reported[-1]) else None
            self.record_trial(number, "pruned", hps, value=last)
            return sweep.TrialOutcome("pruned", last, None, result.metrics)
        value = result.metrics.get(self.spec.objective)
        failure = result.failure
        if result.succeeded and value is None:
            regex = next(
                md["regex"]
                for md in self.spec.approach["metricDefinitions"]
                if md["name"] == self.spec.objective
            )
            failure = (
                f"the objective metric {self.spec.objective!r} never appeared in the training "
                f"log (regex {regex!r}); fix metricDefinitions or the trainer's output"
            )
        if failure is not None or value is None:
            self.record_trial(number, "failed", hps, failure=failure)
            return sweep.TrialOutcome("failed", None, failure, result.metrics)
        packed = layout.root / "model.tar.gz"
        pack_model(layout.model_dir, packed)
        key = trial_artifact_key(self.spec.run_id, number)
        self.store.put_file(key, packed)
        self.record_trial(number, "complete", hps, value=value, artifact_uri=self.store.uri(key))
        shutil.rmtree(layout.root, ignore_errors=True)
        provenance = {
            "image": result.image.to_wire() if result.image else None,
            "environment": result.environment.to_wire() if result.environment else None,
        }
        return sweep.TrialOutcome("complete", value, None, result.metrics, provenance)

    def _upload_log(self, number: int, job: TrainingJob) -> None:
        """Best effort: a trial's outcome never depends on keeping its log."""
        path = job.log_file
        if path is None or not path.is_file():
            return  # the backend failed before the job logged anything
        key = trial_log_key(self.spec.run_id, number)
        try:
            self.store.put_file(key, path)
        except Exception as exc:
            log.warning("trial %d: its log was not kept at %s: %s", number, key, exc)
        else:
            path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.current_job:
            self.backend.kill(self.current_job)

    @abstractmethod
    def record_trial(
        self,
        number: int,
        state: str,
        hps: dict[str, Any],
        *,
        value: float | None = None,
        failure: str | None = None,
        artifact_uri: str | None = None,
    ) -> None:
        """Record trial `number` as `state` (running, pruned, failed, complete) with its
        hyperparameters, and its value, failure or artifact when it has one."""
