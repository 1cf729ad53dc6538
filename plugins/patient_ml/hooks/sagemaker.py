"""Amazon SageMaker, S3 and CloudWatch Logs clients through the Amazon provider's hooks.

Credentials, region and endpoint come from one Airflow AWS connection (`aws_conn_id`), as for
the S3 artifact store, so the same code talks to AWS or to a local emulator (the tests use
moto's server). Clients are built once per connection id and shared (boto3 clients are
thread-safe); `reset()` drops them after a connection is redefined in the same process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from patient_ml.exceptions import PatientMLError

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def _build(service: str, aws_conn_id: str) -> Any:
    if service == "sagemaker":
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=aws_conn_id).get_conn()
    if service == "logs":
        from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

        return AwsLogsHook(aws_conn_id=aws_conn_id).get_conn()
    if service == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=aws_conn_id).get_conn()
    if service == "sagemaker-runtime":
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sagemaker-runtime").get_conn()
    raise ValueError(service)


def client(service: str, aws_conn_id: str) -> Any:
    """A boto3 client of `service` (sagemaker, sagemaker-runtime, s3, logs) for the connection."""
    key = (service, aws_conn_id)
    with _lock:
        found = _clients.get(key)
        if found is None:
            try:
                found = _build(service, aws_conn_id)
            except Exception as exc:
                raise PatientMLError(
                    f"Cannot create a {service} client from Airflow connection {aws_conn_id!r} "
                    f"({type(exc).__name__}: {exc}).",
                    fix="check the AWS connection's credentials, region_name and endpoint_url",
                ) from None
            _clients[key] = found
        return found


def reset(aws_conn_id: str | None = None) -> None:
    with _lock:
        for key in [k for k in _clients if aws_conn_id is None or k[1] == aws_conn_id]:
            del _clients[key]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


TERMINAL = ("Completed", "Failed", "Stopped")
DEFAULT_MAX_POLL_ERRORS = 6


def training_job_state(description: dict[str, Any]) -> dict[str, Any]:
    """The parts of a DescribeTrainingJob answer the product uses, as JSON primitives."""
    status = str(description.get("TrainingJobStatus") or "Unknown")
    metrics = {
        str(m["MetricName"]): float(m["Value"])
        for m in description.get("FinalMetricDataList") or []
        if "MetricName" in m and "Value" in m
    }
    return {
        "jobName": description.get("TrainingJobName"),
        "status": status,
        "secondaryStatus": description.get("SecondaryStatus"),
        "terminal": status in TERMINAL,
        "failureReason": description.get("FailureReason"),
        "modelArtifact": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        "finalMetrics": metrics,
        "billableSeconds": description.get("BillableTimeInSeconds"),
        # the image SageMaker ran (provenance: a tag resolved by ECR, or a pinned digest)
        "trainingImage": (description.get("AlgorithmSpecification") or {}).get("TrainingImage"),
    }


def describe_training_job(aws_conn_id: str, job_name: str) -> dict[str, Any]:
    return dict(client("sagemaker", aws_conn_id).describe_training_job(TrainingJobName=job_name))


async def wait_for_training_job(
    job_name: str,
    *,
    aws_conn_id: str,
    poll_interval: float,
    timeout_seconds: float | None,
    max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
) -> dict[str, Any]:
    """Poll DescribeTrainingJob every `poll_interval` s until the job ends; its state
    (`training_job_state`), `{"status": "timedOut"}` after `timeout_seconds`, or
    `{"status": "error"}` when the job does not exist or `max_poll_errors` polls in a row failed.
    """
    started = time.monotonic()
    errors = 0
    while True:
        try:
            description = await asyncio.to_thread(describe_training_job, aws_conn_id, job_name)
        except Exception as exc:
            text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            errors += 1
            if error_code(exc) == "ValidationException" or errors >= max_poll_errors:
                return {"status": "error", "jobName": job_name, "error": text, "failures": errors}
        else:
            errors = 0
            state = training_job_state(description)
            if state["terminal"]:
                return state
        elapsed = time.monotonic() - started
        if timeout_seconds is not None and elapsed > timeout_seconds:
            return {"status": "timedOut", "jobName": job_name}
        await asyncio.sleep(poll_interval)
