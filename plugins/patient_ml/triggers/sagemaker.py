"""Wait for an Amazon SageMaker training job to end: a deferrable trigger.

`SageMakerTrainingTrigger` polls DescribeTrainingJob through the Amazon provider's
SageMakerHook (its boto3 client, called in a thread: the provider's async client needs the
optional aiobotocore) every `poll_interval` seconds and fires once, when the job is
`Completed`, `Failed` or `Stopped`, with the job's state as primitives (`training_job_state`):
status, secondary status, FailureReason, the S3 model artifact and the final metrics. It fires
`{"status": "timedOut"}` when `timeout_seconds` pass first, and `{"status": "error"}` when the
job does not exist or `max_poll_errors` polls in a row failed. It serialises only primitives,
so the triggerer can run it; the SageMaker training backend awaits the same trigger in-process
while it streams the job's log (see `patient_ml.training.backends.sagemaker`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

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
    }


def describe_training_job(aws_conn_id: str, job_name: str) -> dict[str, Any]:
    from patient_ml.hooks.sagemaker import client

    return dict(client("sagemaker", aws_conn_id).describe_training_job(TrainingJobName=job_name))


class SageMakerTrainingTrigger(BaseTrigger):
    """Fires when SageMaker training job `job_name` ends (see the module docstring)."""

    def __init__(
        self,
        job_name: str,
        aws_conn_id: str = "aws_default",
        poll_interval: float = 30.0,
        timeout_seconds: float | None = None,
        max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.aws_conn_id = aws_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout_seconds = None if timeout_seconds is None else float(timeout_seconds)
        self.max_poll_errors = max(1, int(max_poll_errors))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "patient_ml.triggers.sagemaker.SageMakerTrainingTrigger",
            {
                "job_name": self.job_name,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval": self.poll_interval,
                "timeout_seconds": self.timeout_seconds,
                "max_poll_errors": self.max_poll_errors,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from patient_ml.hooks.sagemaker import error_code

        started = time.monotonic()
        errors = 0
        while True:
            try:
                description = await asyncio.to_thread(
                    describe_training_job, self.aws_conn_id, self.job_name
                )
            except Exception as exc:
                text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                errors += 1
                if error_code(exc) == "ValidationException" or errors >= self.max_poll_errors:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "jobName": self.job_name,
                            "error": text,
                            "failures": errors,
                        }
                    )
                    return
            else:
                errors = 0
                state = training_job_state(description)
                if state["terminal"]:
                    yield TriggerEvent(state)
                    return
            elapsed = time.monotonic() - started
            if self.timeout_seconds is not None and elapsed > self.timeout_seconds:
                yield TriggerEvent({"status": "timedOut", "jobName": self.job_name})
                return
            await asyncio.sleep(self.poll_interval)
