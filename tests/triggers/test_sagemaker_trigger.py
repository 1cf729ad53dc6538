"""SageMakerTrainingTrigger against moto's server (jobs stay InProgress until the test ends
them, see tests/sagemaker_server.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from patient_ml.triggers.sagemaker import SageMakerTrainingTrigger, training_job_state
from tests.sagemaker_server import ROLE_ARN, SageMakerEmulator, unique


def first_event(trigger: SageMakerTrainingTrigger) -> dict[str, Any]:
    async def collect() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(collect(), timeout=30))


def create_job(emulator: SageMakerEmulator) -> str:
    name = unique("job")
    emulator.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img:1", "TrainingInputMode": "File"},
        RoleArn=ROLE_ARN,
        OutputDataConfig={"S3OutputPath": f"s3://{emulator.bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    return name


def test_serializes_primitives_only() -> None:
    trigger = SageMakerTrainingTrigger("job-1", "aws_x", poll_interval=2, timeout_seconds=9)
    path, kwargs = trigger.serialize()
    assert path == "patient_ml.triggers.sagemaker.SageMakerTrainingTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    again = SageMakerTrainingTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)


def test_fires_with_the_failure_reason_when_the_job_fails(sagemaker: SageMakerEmulator) -> None:
    name = create_job(sagemaker)
    timer = threading.Timer(
        0.5, sagemaker.finish, (name, "Failed", "AlgorithmError: out of memory, exit code: 137")
    )
    timer.start()
    event = first_event(SageMakerTrainingTrigger(name, sagemaker.server.conn_id, 0.05))
    timer.join()
    assert event["status"] == "Failed" and event["terminal"] is True
    assert event["failureReason"] == "AlgorithmError: out of memory, exit code: 137"
    assert event["jobName"] == name
    assert event["modelArtifact"].endswith(f"/out/{name}/output/model.tar.gz")


def test_fires_when_completed(sagemaker: SageMakerEmulator) -> None:
    name = create_job(sagemaker)
    sagemaker.finish(name, "Completed")
    event = first_event(SageMakerTrainingTrigger(name, sagemaker.server.conn_id, 0.05))
    assert event["status"] == "Completed" and event["failureReason"] is None


def test_an_unknown_job_is_an_error_event(sagemaker: SageMakerEmulator) -> None:
    event = first_event(SageMakerTrainingTrigger("no-such-job", sagemaker.server.conn_id, 0.05))
    assert event["status"] == "error"
    assert "no-such-job" in event["error"]


def test_times_out(sagemaker: SageMakerEmulator) -> None:
    name = create_job(sagemaker)
    trigger = SageMakerTrainingTrigger(name, sagemaker.server.conn_id, 0.05, timeout_seconds=0.3)
    assert first_event(trigger) == {"status": "timedOut", "jobName": name}


def test_state_reads_final_metrics() -> None:
    state = training_job_state(
        {
            "TrainingJobName": "j",
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "FinalMetricDataList": [{"MetricName": "acc", "Value": 0.5}],
        }
    )
    assert state["terminal"] is False and state["finalMetrics"] == {"acc": 0.5}
