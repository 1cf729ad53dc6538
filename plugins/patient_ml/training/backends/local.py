"""Run the trainer's `train` entrypoint as a host process with the contract's layout.

The embedded default when no container engine is present. A training image name maps to a
local trainer folder holding `train` and `serve` (see `LocalBackend.resolve`); the process gets
the SM_* variables, its own process group (so a stop reaches every child), its job's labels in
its environment (so a retry or the run's end finds it when its task died: `labelled`), and a
CPU-thread limit; the layout's input folders are made read-only for the run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patient_ml.exceptions import PatientMLError
from patient_ml.settings import setting
from patient_ml.training.backends.base import (
    Backend,
    MetricCallback,
    TrainingJob,
    TrainingOutcome,
    follow,
    outcome,
    pump_lines,
)
from patient_ml.training.backends.labelled import label_environment, labelled_groups, stop_groups
from patient_ml.training.contract import sm_environment
from patient_ml.training.provenance import ImageRecord, folder_digest, host_environment

STOP_GRACE_SECONDS = 10.0
REFERENCE_TRAINERS = Path(__file__).resolve().parents[4] / "include" / "trainers"


def default_trainer_dirs() -> dict[str, Path]:
    """`patient-ml/img-clf-trainer` → include/trainers/img_clf (and every folder there), plus
    PATIENT_ML_LOCAL_TRAINERS=`image=folder,...`."""
    mapping: dict[str, Path] = {}
    if REFERENCE_TRAINERS.is_dir():
        for folder in sorted(REFERENCE_TRAINERS.iterdir()):
            if (folder / "train").is_file():
                mapping[f"patient-ml/{folder.name.replace('_', '-')}-trainer"] = folder
    for item in (setting("PATIENT_ML_LOCAL_TRAINERS") or "").split(","):
        if "=" in item:
            image, where = item.split("=", 1)
            mapping[image.strip()] = Path(where.strip()).expanduser()
    return mapping


def process_environment(cpus: int, contract: dict[str, str]) -> dict[str, str]:
    """Environment of a trainer's `train` or `serve` process: the host's without SM_* and
    Airflow variables, the contract's variables, unbuffered output, BLAS threads capped."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AIRFLOW"))},
        **contract,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(cpus),
        "OPENBLAS_NUM_THREADS": str(cpus),
        "MKL_NUM_THREADS": str(cpus),
    }


def image_repository(image: str) -> str:
    """`registry:5000/team/x:1.0@sha256:..` → `registry:5000/team/x`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    return name


class LocalBackend(Backend):
    name = "local"

    def __init__(self, trainer_dirs: dict[str, Path] | None = None) -> None:
        self.trainer_dirs = trainer_dirs if trainer_dirs is not None else default_trainer_dirs()
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()

    def resolve(self, image: str, command: str = "train") -> Path:
        # the exact name (with its tag) first, then its repository (any tag or digest)
        folder = self.trainer_dirs.get(image) or self.trainer_dirs.get(image_repository(image))
        if folder is None:
            known = ", ".join(sorted(self.trainer_dirs)) or "none"
            raise PatientMLError(
                f"The local backend has no trainer for image {image!r} (known: {known}).",
                fix="set PATIENT_ML_LOCAL_TRAINERS='image=/path/to/folder' or use the Docker "
                "backend",
            )
        script = folder / command
        if not script.is_file():
            raise PatientMLError(
                f"Trainer folder {folder} has no {command!r} entrypoint.",
                fix=f"add an executable {command} script (see the container contract)",
            )
        return script

    def command(self, image: str, command: str = "train") -> list[str]:
        script = self.resolve(image, command)
        first = script.read_bytes()[:64]
        if first.startswith(b"#!") and b"python" in first.split(b"\n", 1)[0]:
            return [sys.executable, str(script)]  # the same interpreter as Airflow's
        return [str(script)]

    def run(self, job: TrainingJob, on_metric: MetricCallback | None = None) -> TrainingOutcome:
        cmd = self.command(job.image)
        cpus = max(1, int(job.cpus))
        env = process_environment(cpus, sm_environment(job.layout, num_cpus=cpus))
        env.update(label_environment(job.labels))
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=job.layout.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        with self._lock:
            self._procs[job.name] = proc
        sink: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        if proc.stdout is None:  # Popen(stdout=PIPE) always gives one
            raise PatientMLError(f"The trial process of {job.name} has no output pipe.")
        pump = pump_lines(proc.stdout, sink)
        try:
            stopped, lines = follow(
                job,
                sink,
                is_running=lambda: proc.poll() is None,
                stop=lambda: self._terminate(proc),
                on_metric=on_metric,
                started=started,
            )
            exit_code = proc.wait()
            pump.join(timeout=5)
        finally:
            if proc.poll() is None:
                self._terminate(proc)
            with self._lock:
                self._procs.pop(job.name, None)
        result = outcome(job, stopped, exit_code, lines, started, self.image_record(job.image))
        if result.succeeded and result.environment is None and cmd[0] == sys.executable:
            result.environment = host_environment()  # the trainer ran on this interpreter
        return result

    def image_record(self, image: str) -> ImageRecord:
        """The trainer folder that stands for `image` here, by the sha256 of its files."""
        return ImageRecord(
            role="training", reference=image, backend="local", digest=self.digest(image)
        )

    def digest(self, image: str, command: str = "train") -> str:
        """`local-sha256:` of the trainer folder, with the `common` folder beside it when there
        is one (the reference trainers' shared code, include/trainers/README.md)."""
        folder = self.resolve(image, command).parent
        common = folder.parent / "common"
        return folder_digest(folder, *([common] if common.is_dir() else []))

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        """Stop the trainer (and model server) process groups labelled with all of `labels`
        that a dead task left running (their own sessions outlive it); how many."""
        return stop_groups(labelled_groups(labels), STOP_GRACE_SECONDS)

    def kill(self, job_name: str) -> None:
        with self._lock:
            proc = self._procs.get(job_name)
        if proc is not None:
            self._terminate(proc)

    @staticmethod
    def _terminate(proc: subprocess.Popen[str]) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period (on a thread)."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def escalate() -> None:
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        threading.Thread(target=escalate, daemon=True).start()
