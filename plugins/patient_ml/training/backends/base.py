"""What every backend shares: the job, its outcome, and the log/metric/stop loop.

Every line a job logs goes to the Airflow task log and, when the job names a `log_file`, to
that file as well (the run-log format of `patient_ml.log_records`), which the tuning worker
uploads to the artifact store for the logs API.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patient_ml.log_records import LogFile
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser
from patient_ml.training.provenance import (
    ImageRecord,
    TrainerEnvironment,
    read_trainer_environment,
)

log = logging.getLogger("patient_ml.training")

Status = Literal["succeeded", "failed", "timed_out", "stopped"]
# on_metric(name, value, step) -> True to stop the job (e.g. the trial was pruned)
MetricCallback = Callable[[str, float, int], bool]


@dataclass
class TrainingJob:
    name: str  # unique, safe for container names: e.g. run-<id>-trial-<n>
    layout: JobLayout
    image: str  # the config's trainingImage
    metric_parser: MetricParser
    timeout_seconds: float = 3600.0
    cpus: float = 1.0
    memory_mb: int = 2048
    log_prefix: str = ""
    log_file: Path | None = None  # also record every logged line here (JSON lines)
    # who started the job (run, worker): a retried worker finds what its dead attempt left
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainingOutcome:
    status: Status
    exit_code: int | None
    failure: str | None
    metrics: dict[str, float]
    seconds: float
    log_lines: int
    unmatched_metrics: list[str] = field(default_factory=list)
    # what ran (see patient_ml.training.provenance): the image as the backend resolved it, and
    # the trainer's environment.json (or, on the local backend, the host interpreter's)
    image: ImageRecord | None = None
    environment: TrainerEnvironment | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class Backend(ABC):
    name = "backend"

    @abstractmethod
    def run(self, job: TrainingJob, on_metric: MetricCallback | None = None) -> TrainingOutcome:
        """Run `job` to its end; `on_metric` may ask to stop it (pruning)."""

    @abstractmethod
    def kill(self, job_name: str) -> None:
        """Stop a running job by name (from `on_kill`, another thread)."""

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        """Stop and remove the jobs with all of `labels` (`TrainingJob.labels`) that an earlier
        attempt left running when its worker died; returns how many. A new attempt calls it
        before its first trial, and the run's last task with the run's label alone. By default
        (a backend whose jobs cannot outlive the task) there is nothing to find."""
        return 0


_EOF = object()


def pump_lines(lines: Iterable[str], sink: queue.Queue[Any]) -> threading.Thread:
    """Read `lines` on a thread into `sink`, ending with an EOF marker."""

    def work() -> None:
        try:
            for line in lines:
                sink.put(line)
        except Exception as exc:  # a broken log stream ends the log, not the job
            sink.put(f"[patient-ml] log stream ended: {type(exc).__name__}")
        finally:
            sink.put(_EOF)

    thread = threading.Thread(target=work, daemon=True, name="training-log")
    thread.start()
    return thread


def follow(
    job: TrainingJob,
    sink: queue.Queue[Any],
    *,
    is_running: Callable[[], bool],
    stop: Callable[[], None],
    on_metric: MetricCallback | None,
    started: float,
) -> tuple[Status | None, int]:
    """Log every line into the task log, parse metrics, enforce timeout and pruning.

    Returns (status if the job was stopped or timed out else None, number of log lines)."""
    with LogFile(job.log_file) as record:
        return _follow(job, sink, record, is_running, stop, on_metric, started)


def _follow(
    job: TrainingJob,
    sink: queue.Queue[Any],
    record: LogFile,
    is_running: Callable[[], bool],
    stop: Callable[[], None],
    on_metric: MetricCallback | None,
    started: float,
) -> tuple[Status | None, int]:
    lines = 0
    steps: dict[str, int] = {}
    deadline = started + job.timeout_seconds
    stopped: Status | None = None
    while True:
        try:
            item = sink.get(timeout=0.5)
        except queue.Empty:
            item = None
        if item is _EOF:
            break
        if item is not None:
            text = str(item).rstrip("\r\n")
            lines += 1
            log.info("%s%s", job.log_prefix, text)
            record.write(f"{job.log_prefix}{text}")
            for name, value in job.metric_parser.feed(text):
                steps[name] = steps.get(name, -1) + 1
                if (
                    stopped is None
                    and on_metric is not None
                    and on_metric(name, value, steps[name])
                ):
                    message = f"{job.log_prefix}stopping {job.name}: pruned at {name}={value:g}"
                    log.info("%s", message)
                    record.write(message)
                    stopped = "stopped"
                    stop()
        if stopped is None and time.monotonic() > deadline:
            message = f"{job.log_prefix}{job.name} timed out after {job.timeout_seconds:.0f} s"
            log.warning("%s", message)
            record.write(message)
            stopped = "timed_out"
            stop()
        if item is None and not is_running() and sink.empty():
            # the process ended but the pump has not delivered EOF yet; wait briefly
            continue
    return stopped, lines


def outcome(
    job: TrainingJob,
    stopped: Status | None,
    exit_code: int | None,
    lines: int,
    started: float,
    image: ImageRecord | None = None,
) -> TrainingOutcome:
    failure = job.layout.read_failure()
    if stopped == "timed_out":
        status: Status = "timed_out"
        failure = failure or f"training exceeded the timeout of {job.timeout_seconds:.0f} s"
    elif stopped == "stopped":
        status = "stopped"
    elif exit_code == 0:
        status = "succeeded"
        failure = None
    else:
        status = "failed"
        failure = failure or f"the trainer exited with code {exit_code} without a failure text"
    return TrainingOutcome(
        status=status,
        exit_code=exit_code,
        failure=failure,
        metrics=job.metric_parser.last(),
        seconds=round(time.monotonic() - started, 3),
        log_lines=lines,
        unmatched_metrics=job.metric_parser.never_matched(),
        image=image,
        environment=read_trainer_environment(job.layout.model_dir)
        if status == "succeeded"
        else None,
    )
