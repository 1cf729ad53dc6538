"""Run a trial as an Amazon SageMaker training job, with the same container contract.

SageMaker runs `docker run IMAGE train` itself, so the contract maps one to one:

- hyperparameters: the job's `HyperParameters` (every value a string), which SageMaker writes
  to `/opt/ml/input/config/hyperparameters.json`;
- channels: the worker's `train` and `validation` folders are uploaded once to
  `<PATIENT_ML_SAGEMAKER_S3_URI>/channels/<digest>/<channel>/` (content-addressed: the digest
  covers examples.jsonl and problem.json, so every worker and retry of a snapshot reuses the
  upload) and given as S3Prefix File channels. SageMaker fills `input/config` itself, so
  `problem.json` travels at the root of the train channel (the reference trainers look there
  when `input/config/problem.json` is absent);
- metrics: the config's `metricDefinitions` become the job's MetricDefinitions (CloudWatch
  metrics in the console) while the worker reads the job's CloudWatch log
  (`/aws/sagemaker/TrainingJobs`, streams `<job>/...`) through the same metric parser as the
  other backends, for pruning and the trial's log;
- failure: SageMaker turns `/opt/ml/output/failure` into the job's FailureReason, which becomes
  the trial's failure text;
- model: `ModelArtifacts.S3ModelArtifacts` (`model.tar.gz`) is unpacked into the trial's model
  folder, so the tuning worker packs and stores it in the artifact store like any other trial,
  and the job's output prefix is deleted.

No network inside the job (`EnableNetworkIsolation`), a `MaxRuntimeInSeconds` of the trial
timeout, one instance of PATIENT_ML_SAGEMAKER_INSTANCE_TYPE. Status is polled by
`patient_ml.hooks.sagemaker.wait_for_training_job` (the wait of
the deferrable `SageMakerTrainingTrigger`). A pruned or timed-out trial, and
`on_kill`, stop the job with StopTrainingJob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import queue
import re
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patient_ml.exceptions import PatientMLError
from patient_ml.storage.archives import safe_extract
from patient_ml.training.backends.base import (
    _EOF,
    Backend,
    MetricCallback,
    Status,
    TrainingJob,
    TrainingOutcome,
    follow,
    outcome,
)
from patient_ml.training.contract import CHANNELS, CONTAINER_ROOT, JobLayout, sm_environment
from patient_ml.training.provenance import sagemaker_image_record

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
JOB_NAME_LIMIT = 63
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_VALUE = 2500
MAX_METRIC_DEFINITIONS = 40
MAX_METRIC_REGEX = 500
MAX_ENV_VALUE = 512
UPLOAD_THREADS = 8
#: how long past the trial timeout the trigger keeps polling (SageMaker's own stop may lag)
TRIGGER_GRACE_SECONDS = 600.0


@dataclass(frozen=True)
class SageMakerSettings:
    """Where and as whom SageMaker jobs and endpoints run; from PATIENT_ML_SAGEMAKER_*."""

    role_arn: str
    bucket: str
    prefix: str
    aws_conn_id: str = "aws_default"
    instance_type: str = "ml.m5.large"
    serve_instance_type: str = "ml.m5.large"
    volume_gb: int = 30
    poll_seconds: float = 15.0
    endpoint_timeout_seconds: float = 1800.0

    @classmethod
    def from_env(cls, aws_conn_id: str | None = None) -> SageMakerSettings:
        from patient_ml.settings import env_number, setting
        from patient_ml.storage.s3 import parse_s3_url

        env = setting
        role = (env("PATIENT_ML_SAGEMAKER_ROLE_ARN") or "").strip()
        if not ROLE_ARN.match(role):
            raise PatientMLError(
                f"PATIENT_ML_SAGEMAKER_ROLE_ARN={role!r} is not an IAM role ARN.",
                fix="set it to the execution role SageMaker assumes, e.g. "
                "arn:aws:iam::123456789012:role/patient-ml-sagemaker",
            )
        uri = (env("PATIENT_ML_SAGEMAKER_S3_URI") or "").strip()
        try:
            bucket, prefix = parse_s3_url(uri)
        except PatientMLError:
            raise PatientMLError(
                f"PATIENT_ML_SAGEMAKER_S3_URI={uri!r} is not an S3 URL.",
                fix="set it to s3://bucket/prefix, where channels and job outputs go",
            ) from None
        types: dict[str, str] = {}
        # the serving instance type defaults to the training one
        for name, default in (("INSTANCE_TYPE", "ml.m5.large"), ("SERVE_INSTANCE_TYPE", "")):
            value = (env(f"PATIENT_ML_SAGEMAKER_{name}") or "").strip() or default
            value = value or types["INSTANCE_TYPE"]
            if not INSTANCE_TYPE.match(value):
                raise PatientMLError(
                    f"PATIENT_ML_SAGEMAKER_{name}={value!r} is not a SageMaker instance type.",
                    fix="use a type such as ml.m5.large or ml.g5.xlarge",
                )
            types[name] = value
        return cls(
            role_arn=role,
            bucket=bucket,
            prefix=prefix.strip("/"),
            aws_conn_id=aws_conn_id or env("PATIENT_ML_SAGEMAKER_CONN_ID") or "aws_default",
            instance_type=types["INSTANCE_TYPE"],
            serve_instance_type=types["SERVE_INSTANCE_TYPE"],
            volume_gb=int(env_number("PATIENT_ML_SAGEMAKER_VOLUME_GB", 30, low=1, high=16384)),
            poll_seconds=env_number("PATIENT_ML_SAGEMAKER_POLL_SECONDS", 15.0, low=0.05, high=600),
            endpoint_timeout_seconds=env_number(
                "PATIENT_ML_SAGEMAKER_ENDPOINT_TIMEOUT_SECONDS", 1800.0, low=1, high=86400
            ),
        )

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def sagemaker_job_name(name: str) -> str:
    """A fresh SageMaker job name for `name` (names are unique per account and never reused,
    so a retried trial needs a new one): [a-zA-Z0-9-], at most 63 characters. 32 random bits
    beside the second: names made in one second collide with odds about n² / 2³³ (16 bits made
    two of 20 equal in CI)."""
    base = re.sub(r"[^a-zA-Z0-9-]", "-", name).strip("-") or "pml"
    suffix = f"{int(time.time()) % 100_000_000:08d}-{uuid.uuid4().hex[:8]}"
    return f"{base[: JOB_NAME_LIMIT - len(suffix) - 1].rstrip('-')}-{suffix}"


def channel_digest(layout: JobLayout, problem: bytes) -> str:
    digest = hashlib.sha256(problem)
    for name in CHANNELS:
        digest.update(name.encode() + b"\0")
        examples = (layout.channel(name) / "examples.jsonl").read_bytes()
        digest.update(hashlib.sha256(examples).digest())
    return digest.hexdigest()


def upload_channels(s3: Any, settings: SageMakerSettings, layout: JobLayout) -> dict[str, Any]:
    """Upload the job's channels unless this content is there already; their S3 URIs."""
    problem = (layout.config_dir / "problem.json").read_bytes()
    base = ("channels", channel_digest(layout, problem)[:32])
    marker = settings.key(*base, "_complete")
    uris = {name: settings.uri(*base, name) + "/" for name in CHANNELS}
    try:
        s3.head_object(Bucket=settings.bucket, Key=marker)
        return {"channels": uris, "uploaded": 0}
    except Exception as exc:
        from patient_ml.hooks.sagemaker import error_code

        if error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise _aws_error(exc, f"reading s3://{settings.bucket}/{marker}") from None
    files: list[tuple[Path, str]] = []
    for name in CHANNELS:
        root = os.path.realpath(layout.channel(name))
        for folder, _, names in os.walk(root, followlinks=True):
            for file in names:
                path = Path(folder) / file
                files.append((path, settings.key(*base, name, path.relative_to(root).as_posix())))
    problem_key = settings.key(*base, "train", "problem.json")

    def put(item: tuple[Path, str]) -> None:
        s3.upload_file(str(item[0]), settings.bucket, item[1])

    try:
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(put, files))
        s3.put_object(Bucket=settings.bucket, Key=problem_key, Body=problem)
        s3.put_object(Bucket=settings.bucket, Key=marker, Body=b"")  # last: the upload is whole
    except Exception as exc:
        raise _aws_error(exc, f"uploading the channels to {settings.uri(*base)}") from None
    return {"channels": uris, "uploaded": len(files) + 1}


def training_job_request(
    *, sm_name: str, job: TrainingJob, settings: SageMakerSettings, channels: dict[str, str]
) -> dict[str, Any]:
    """The CreateTrainingJob request of a trial; checks SageMaker's limits first."""
    hps = json.loads((job.layout.config_dir / "hyperparameters.json").read_text())
    if len(hps) > MAX_HYPERPARAMETERS:
        raise PatientMLError(
            f"Trial {job.name} has {len(hps)} hyperparameters; SageMaker takes at most "
            f"{MAX_HYPERPARAMETERS}.",
            fix="shrink the search space (searchSpace) of the model config",
        )
    for name, value in hps.items():
        if len(value) > MAX_HYPERPARAMETER_VALUE:
            raise PatientMLError(
                f"Hyperparameter {name!r} of trial {job.name} is {len(value)} characters long; "
                f"SageMaker takes at most {MAX_HYPERPARAMETER_VALUE}.",
                fix="use shorter categorical values in searchSpace",
            )
    definitions = [{"Name": n, "Regex": p.pattern} for n, p in job.metric_parser.definitions]
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        raise PatientMLError(
            f"The model config has {len(definitions)} metricDefinitions; SageMaker takes at "
            f"most {MAX_METRIC_DEFINITIONS}.",
            fix="keep the metrics the objective and the evaluation need",
        )
    for item in definitions:
        if len(item["Regex"]) > MAX_METRIC_REGEX:
            raise PatientMLError(
                f"metricDefinitions {item['Name']!r}: the regex is {len(item['Regex'])} "
                f"characters long; SageMaker takes at most {MAX_METRIC_REGEX}.",
                fix="shorten the regex",
            )
    environment = {
        key: value
        for key, value in sm_environment(
            job.layout, num_cpus=max(1, int(job.cpus)), seen_as=JobLayout(CONTAINER_ROOT)
        ).items()
        if key not in {"SM_NUM_CPUS", "SM_NUM_GPUS"} and len(value) <= MAX_ENV_VALUE
    }
    return {
        "TrainingJobName": sm_name,
        "HyperParameters": hps,
        "AlgorithmSpecification": {
            "TrainingImage": job.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": definitions,
        },
        "RoleArn": settings.role_arn,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": channels[name],
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for name in CHANNELS
        ],
        "OutputDataConfig": {"S3OutputPath": settings.uri("jobs")},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": settings.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max(1, math.ceil(job.timeout_seconds))},
        "EnableNetworkIsolation": True,
        "Environment": environment,
        "Tags": [{"Key": "patient-ml.job", "Value": job.name[:256]}],
    }


def _aws_error(exc: BaseException, doing: str) -> PatientMLError:
    from patient_ml.hooks.sagemaker import error_code

    code = error_code(exc)
    message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message") or str(exc)
    fix = "check the AWS connection, the execution role and PATIENT_ML_SAGEMAKER_S3_URI"
    if code in {"AccessDenied", "AccessDeniedException", "403"}:
        fix = "grant the connection's IAM identity access (sagemaker:*TrainingJob, s3, logs)"
    elif code == "ResourceLimitExceeded":
        fix = "raise the account's SageMaker quota for the instance type or lower parallelTrials"
    return PatientMLError(f"SageMaker: {doing} failed: {code or type(exc).__name__}: {message}",
                          fix=fix)  # fmt: skip


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, settings: SageMakerSettings | None = None, aws_conn_id: str | None = None):
        self.settings = settings or SageMakerSettings.from_env(aws_conn_id)
        self._active: dict[str, str] = {}  # trial job name -> SageMaker job name
        self._lock = threading.Lock()

    def _client(self, service: str) -> Any:
        from patient_ml.hooks.sagemaker import client

        return client(service, self.settings.aws_conn_id)

    def run(self, job: TrainingJob, on_metric: MetricCallback | None = None) -> TrainingOutcome:
        started = time.monotonic()
        sagemaker, s3 = self._client("sagemaker"), self._client("s3")
        uploaded = upload_channels(s3, self.settings, job.layout)
        sm_name = sagemaker_job_name(job.name)
        request = training_job_request(
            sm_name=sm_name, job=job, settings=self.settings, channels=uploaded["channels"]
        )
        try:
            sagemaker.create_training_job(**request)
        except Exception as exc:
            raise _aws_error(exc, f"CreateTrainingJob {sm_name}") from None
        with self._lock:
            self._active[job.name] = sm_name
        sink: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        sink.put(
            f"[patient-ml] SageMaker training job {sm_name} on {self.settings.instance_type} "
            f"(channels {'uploaded' if uploaded['uploaded'] else 'reused'}: "
            f"{uploaded['channels']['train'].rsplit('/', 3)[-3]})"
        )
        result: dict[str, Any] = {}
        watcher = threading.Thread(
            target=lambda: asyncio.run(self._watch(sm_name, job, sink, result)),
            daemon=True,
            name="sagemaker-watch",
        )
        watcher.start()
        try:
            stopped, lines = follow(
                job,
                sink,
                is_running=lambda: "event" not in result,
                stop=lambda: self._stop(sm_name),
                on_metric=on_metric,
                started=started,
            )
            watcher.join()
            event = result.get("event") or {"status": "error", "error": "no status"}
            stopped, exit_code = self._settle(job, sm_name, event, stopped)
        finally:
            with self._lock:
                self._active.pop(job.name, None)
            self._cleanup_output(sm_name)
        image = sagemaker_image_record(job.image, event.get("trainingImage"), "training")
        return outcome(job, stopped, exit_code, lines, started, image)

    def _settle(
        self, job: TrainingJob, sm_name: str, event: dict[str, Any], stopped: Status | None
    ) -> tuple[Status | None, int | None]:
        """Fetch the model or write the failure text; (stopped status, exit code)."""
        status = event.get("status")
        if status == "Completed" and stopped is None:
            self._fetch_model(job, sm_name, event.get("modelArtifact"))
            return None, 0 if job.layout.read_failure() is None else 1
        if status == "Stopped" and (
            stopped is not None or event.get("secondaryStatus") == "MaxRuntimeExceeded"
        ):
            return stopped or "timed_out", None
        if status in {"timedOut", "error"}:
            self._stop(sm_name)
        reason = event.get("failureReason") or event.get("error")
        texts = {
            "Failed": f"SageMaker training job {sm_name} failed: {reason or 'no FailureReason'}",
            "Stopped": f"SageMaker training job {sm_name} was stopped outside this trial "
            "(console, API or on_kill)",
            "timedOut": f"SageMaker training job {sm_name} had not ended "
            f"{TRIGGER_GRACE_SECONDS:.0f} s after the trial timeout; it was stopped",
            "error": f"the status of SageMaker training job {sm_name} could not be read: {reason}",
        }
        if stopped is None:
            job.layout.output_dir.mkdir(parents=True, exist_ok=True)
            job.layout.failure_file.write_text(
                texts.get(str(status), f"SageMaker training job {sm_name} ended {status}")
            )
        return stopped, 1

    async def _watch(
        self, sm_name: str, job: TrainingJob, sink: queue.Queue[Any], result: dict[str, Any]
    ) -> None:
        """Await the job's end (the wait of SageMakerTrainingTrigger) while tailing its
        CloudWatch log into `sink`."""
        from patient_ml.hooks.sagemaker import wait_for_training_job

        done = asyncio.Event()

        async def status() -> None:
            try:
                result["event"] = await wait_for_training_job(
                    sm_name,
                    aws_conn_id=self.settings.aws_conn_id,
                    poll_interval=self.settings.poll_seconds,
                    timeout_seconds=job.timeout_seconds + TRIGGER_GRACE_SECONDS,
                )
            finally:
                done.set()

        async def tail() -> None:
            tokens: dict[str, str] = {}
            while True:
                finished = done.is_set()
                await asyncio.to_thread(self._read_log, sm_name, tokens, sink)
                if finished:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=self.settings.poll_seconds)

        try:
            await asyncio.gather(status(), tail())
        except Exception as exc:  # the log is best effort; the status decides
            sink.put(f"[patient-ml] reading the SageMaker log ended: {type(exc).__name__}: {exc}")
            result.setdefault("event", {"status": "error", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            sink.put(_EOF)

    def _read_log(self, sm_name: str, tokens: dict[str, str], sink: queue.Queue[Any]) -> None:
        from patient_ml.hooks.sagemaker import error_code

        logs = self._client("logs")
        try:
            streams = logs.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{sm_name}/"
            ).get("logStreams", [])
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return  # no log group yet: the instance has not started
            raise
        for stream in sorted(s["logStreamName"] for s in streams):
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream,
                                          "startFromHead": True}  # fmt: skip
                if stream in tokens:
                    kwargs["nextToken"] = tokens[stream]
                page = logs.get_log_events(**kwargs)
                for event in page.get("events", []):
                    sink.put(str(event.get("message", "")))
                token = page.get("nextForwardToken")
                if not token or token == tokens.get(stream) or not page.get("events"):
                    if token:
                        tokens[stream] = token
                    break
                tokens[stream] = token

    def _fetch_model(self, job: TrainingJob, sm_name: str, artifact: str | None) -> None:
        from patient_ml.storage.s3 import parse_s3_url

        target = job.layout.root / "sagemaker-model.tar.gz"
        try:
            if not artifact:
                raise ValueError("no ModelArtifacts.S3ModelArtifacts")
            bucket, key = parse_s3_url(artifact)
            self._client("s3").download_file(bucket, key, str(target))
            job.layout.model_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(target, "r:gz") as tar:
                safe_extract(tar, job.layout.model_dir)
        except Exception as exc:
            job.layout.output_dir.mkdir(parents=True, exist_ok=True)
            job.layout.failure_file.write_text(
                f"SageMaker training job {sm_name} completed but its model artifact {artifact} "
                f"could not be read: {type(exc).__name__}: {exc}"
            )
        finally:
            target.unlink(missing_ok=True)

    def _cleanup_output(self, sm_name: str) -> None:
        """Delete the job's output prefix (its model is in the artifact store by now)."""
        s3 = self._client("s3")
        prefix = self.settings.key("jobs", sm_name) + "/"
        with contextlib.suppress(Exception):  # best effort: a lifecycle rule is the backstop
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.settings.bucket, Prefix=prefix
            )
            keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                s3.delete_objects(
                    Bucket=self.settings.bucket, Delete={"Objects": keys[start : start + 1000]}
                )

    def _stop(self, sm_name: str) -> None:
        from patient_ml.hooks.sagemaker import error_code

        try:
            self._client("sagemaker").stop_training_job(TrainingJobName=sm_name)
        except Exception as exc:
            if error_code(exc) != "ValidationException":  # it has ended already
                raise _aws_error(exc, f"StopTrainingJob {sm_name}") from None

    def kill(self, job_name: str) -> None:
        with self._lock:
            sm_name = self._active.get(job_name)
        if sm_name:
            self._stop(sm_name)
