"""Amazon SageMaker for tests: moto's server (the `s3_server` of tests/s3_server.py, which
serves every AWS API on one local port) plus what moto leaves out of a training job.

moto stores CreateTrainingJob requests but never runs anything: a job is `Completed` the
moment it is created, with no log, no model and no StopTrainingJob. `SageMakerEmulator` plays
the part of SageMaker's training instance, over the same HTTP API the product uses:

- new jobs start `InProgress`; the full CreateTrainingJob request (as sent over HTTP) is kept
  in `requests[name]`, since moto rewrites some of it;
- `run_instances(trainer)` starts a thread that runs each new job the way SageMaker runs
  `docker run IMAGE train`: it downloads the job's S3 channels into a fresh `/opt/ml`-like
  folder, writes the job's HyperParameters to `input/config/hyperparameters.json` (and nothing
  else there, like SageMaker), runs `trainer/train` as a process with the job's Environment
  (paths moved from /opt/ml to that folder), sends every output line to CloudWatch Logs
  (`/aws/sagemaker/TrainingJobs`, stream `<job>/algo-1-...`), and at the end uploads
  `model/` as `model.tar.gz` to the job's S3ModelArtifacts (Completed, FinalMetricDataList
  from the job's MetricDefinitions) or sets FailureReason from `output/failure` (Failed);
- StopTrainingJob (added to moto's API) stops the running process: `Stopped`.

Everything else (S3, CloudWatch Logs, models, endpoint configs, endpoints) is moto's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import REGION, S3Server

ROLE_ARN = "arn:aws:iam::123456789012:role/patient-ml-test"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]


@dataclass
class SageMakerEmulator:
    server: S3Server
    bucket: str
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    stops: list[str] = field(default_factory=list)
    _started: set[str] = field(default_factory=set)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _halt: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.server.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )

    def job(self, name: str) -> Any:
        return _backend().training_jobs[name]

    def wait_for_job(self, timeout: float = 20.0) -> str:
        """The name of the first training job created (waits for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.requests:
                return next(iter(self.requests))
            time.sleep(0.02)
        raise AssertionError("no training job was created")

    # --- the training instance -------------------------------------------------------------

    def run_instances(self, trainer: Path) -> None:
        """Run every job created from now on with `trainer/train` (see the module docstring)."""

        def loop() -> None:
            while not self._halt.is_set():
                for name in list(self.requests):
                    if name not in self._started:
                        self._started.add(name)
                        threading.Thread(
                            target=self.run_job, args=(name, trainer), daemon=True
                        ).start()
                time.sleep(0.02)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run_job(self, name: str, trainer: Path) -> None:
        job, request = self.job(name), self.requests[name]
        s3, logs = self.client("s3"), self.client("logs")
        with tempfile.TemporaryDirectory(prefix="pml-sm-instance-") as tmp:
            root = Path(tmp)
            for folder in ("input/config", "model", "output/data"):
                (root / folder).mkdir(parents=True)
            (root / "input/config/hyperparameters.json").write_text(
                json.dumps(request["HyperParameters"])
            )
            for channel in request["InputDataConfig"]:
                uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
                bucket, prefix = uri.removeprefix("s3://").split("/", 1)
                dest = root / "input/data" / channel["ChannelName"]
                dest.mkdir(parents=True)
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in (o for page in pages for o in page.get("Contents", [])):
                    target = dest / obj["Key"][len(prefix) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(target))
            env = {k: v.replace("/opt/ml", str(root)) for k, v in request["Environment"].items()}
            env.update(PATH=os.environ["PATH"], PYTHONUNBUFFERED="1")
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_group(logGroupName=LOG_GROUP)
            stream = f"{name}/algo-1-{int(time.time())}"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            job.secondary_status = "Training"
            proc = subprocess.Popen(
                [sys.executable, str(trainer / "train")],  # what the image's python would be
                env=env,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._procs[name] = proc
            lines: list[str] = []
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                lines.append(line)
                logs.put_log_events(
                    logGroupName=LOG_GROUP,
                    logStreamName=stream,
                    logEvents=[{"timestamp": int(time.time() * 1000), "message": line}],
                )
            code = proc.wait()
            self._procs.pop(name, None)
            if job.training_job_status == "Stopping":
                job.training_job_status = job.secondary_status = "Stopped"
            elif code == 0:
                raw = io.BytesIO()
                with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                    tar.add(root / "model", arcname=".")
                bucket, key = job.model_artifacts["S3ModelArtifacts"][5:].split("/", 1)
                s3.put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
                job.final_metric_data_list = self._final_metrics(request, lines)
                job.training_job_status = job.secondary_status = "Completed"
            else:
                failure = root / "output/failure"
                reason = failure.read_text() if failure.exists() else ""
                job.failure_reason = f"AlgorithmError: {reason}, exit code: {code}"
                job.training_job_status = job.secondary_status = "Failed"

    @staticmethod
    def _final_metrics(request: dict[str, Any], lines: list[str]) -> list[dict[str, Any]]:
        found = {}
        for md in request["AlgorithmSpecification"].get("MetricDefinitions", []):
            for line in lines:
                match = re.search(md["Regex"], line)
                if match:
                    with contextlib.suppress(ValueError):
                        found[md["Name"]] = float(match.group(1))
        return [{"MetricName": k, "Value": v, "Timestamp": time.time()} for k, v in found.items()]

    def finish(self, name: str, status: str, reason: str | None = None) -> None:
        """End a job by hand (failure injection for trigger tests)."""
        job = self.job(name)
        job.failure_reason = reason
        job.training_job_status = job.secondary_status = status

    def close(self) -> None:
        self._halt.set()
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def sagemaker(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[SageMakerEmulator]:
    """moto with the emulator's additions, PATIENT_ML_SAGEMAKER_* set for a fresh bucket and
    the Airflow connection `aws_test` pointing at it."""
    from moto.sagemaker import models, responses

    from patient_ml.hooks import sagemaker as hooks

    emulator = SageMakerEmulator(s3, s3.new_bucket())
    original_create = responses.SageMakerResponse.create_training_job
    original_init = models.FakeTrainingJob.__init__

    def create_training_job(self: Any) -> Any:
        request = json.loads(self.body)
        answer = original_create(self)
        # recorded only once moto holds the job: the instance loop starts a job it sees here
        emulator.requests[request["TrainingJobName"]] = request
        return answer

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.training_job_status, self.secondary_status = "InProgress", "Starting"
        self.final_metric_data_list = []

    def stop_training_job(self: Any) -> Any:
        from moto.core.responses import EmptyResult
        from moto.sagemaker.exceptions import ValidationError

        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None or job.training_job_status != "InProgress":
            raise ValidationError(message=f"The training job {name} is not in progress.")
        emulator.stops.append(name)
        proc = emulator._procs.get(name)
        if proc is None:
            job.training_job_status = job.secondary_status = "Stopped"
        else:
            job.training_job_status = job.secondary_status = "Stopping"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        return EmptyResult()

    monkeypatch.setattr(responses.SageMakerResponse, "create_training_job", create_training_job)
    monkeypatch.setattr(models.FakeTrainingJob, "__init__", init)
    monkeypatch.setattr(
        responses.SageMakerResponse, "stop_training_job", stop_training_job, raising=False
    )
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_S3_URI", f"s3://{emulator.bucket}/sm")
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_POLL_SECONDS", "0.1")
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_CONN_ID", s3.conn_id)
    hooks.reset(s3.conn_id)
    try:
        yield emulator
    finally:
        emulator.close()
        hooks.reset(s3.conn_id)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
