"""Wait for an Amazon SageMaker training job to end: a deferrable trigger.

`SageMakerTrainingTrigger` polls DescribeTrainingJob through the Amazon provider's
SageMakerHook (its boto3 client, called in a thread: the provider's async client needs the
optional aiobotocore) every `poll_interval` seconds and fires once, when the job is
`Completed`, `Failed` or `Stopped`, with the job's state as primitives (`training_job_state`):
status, secondary status, FailureReason, the S3 model artifact and the final metrics. It fires
`{"status": "timedOut"}` when `timeout_seconds` pass first, and `{"status": "error"}` when the
job does not exist or `max_poll_errors` polls in a row failed. It serialises only primitives,
so the triggerer can run it. The waiting itself is
`patient_ml.hooks.sagemaker.wait_for_training_job`, which the SageMaker training backend awaits
in-process while it streams the job's log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from patient_ml.hooks.sagemaker import (
    DEFAULT_MAX_POLL_ERRORS,
    TERMINAL,
    training_job_state,
    wait_for_training_job,
)

__all__ = ["TERMINAL", "SageMakerTrainingTrigger", "training_job_state"]


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
        yield TriggerEvent(
            await wait_for_training_job(
                self.job_name,
                aws_conn_id=self.aws_conn_id,
                poll_interval=self.poll_interval,
                timeout_seconds=self.timeout_seconds,
                max_poll_errors=self.max_poll_errors,
            )
        )
