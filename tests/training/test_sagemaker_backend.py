"""The SageMaker training backend against moto's server plus the training-instance emulator
(tests/sagemaker_server.py), which runs the scripted trainer as SageMaker would."""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.exceptions import PatientMLError
from patient_ml.services.runs import get_run
from patient_ml.services.tuning import TuningWorker, finish_tuning
from patient_ml.training.backends.base import TrainingOutcome
from patient_ml.training.backends.sagemaker import (
    SageMakerBackend,
    SageMakerSettings,
    sagemaker_job_name,
    training_job_request,
    upload_channels,
)
from patient_ml.training.metrics import MetricParser
from patient_ml.training.tuning import trial_artifact_key
from tests.sagemaker_server import ROLE_ARN, SageMakerEmulator
from tests.training.helpers import SCRIPTED, curated_run, job


def make_job(root: Path, **kwargs: Any) -> Any:
    j = job(root, **kwargs)
    j.layout.write_config(
        json.loads((j.layout.config_dir / "hyperparameters.json").read_text()),
        {
            "problemType": "imgClf",
            "labels": [{"index": 0, "name": "no"}, {"index": 1, "name": "yes"}],
        },
    )
    for channel, count in (("train", 3), ("validation", 2)):
        folder = j.layout.channel(channel)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            (folder / "images" / f"{channel}{i}.png").write_bytes(b"\x89PNG" + bytes([i]))
            lines.append(json.dumps({"id": f"{channel}{i}", "image": f"images/{channel}{i}.png",
                                     "label": i % 2}))  # fmt: skip
        (folder / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return j


def keys(emulator: SageMakerEmulator, prefix: str) -> list[str]:
    answer = emulator.client("s3").list_objects_v2(Bucket=emulator.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def test_a_trial_runs_as_a_training_job(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    sagemaker.run_instances(SCRIPTED)
    trial = make_job(tmp_path, epochs=3, score=0.9, learning_rate=0.01)
    seen: list[tuple[str, float, int]] = []
    result = SageMakerBackend().run(trial, lambda n, v, s: seen.append((n, v, s)) and False)

    assert result.succeeded, result.failure
    assert result.metrics == {"validation:accuracy": 0.9, "validation:loss": pytest.approx(0.1)}
    assert [s for n, _, s in seen if n == "validation:accuracy"] == [0, 1, 2]
    # the trainer's log came back through CloudWatch Logs, its model through S3
    assert result.log_lines >= 5
    assert json.loads((trial.layout.model_dir / "model.json").read_text()) == {"score": 0.9}
    # provenance: the image DescribeTrainingJob says the job ran (a tag: no digest to record)
    assert result.image is not None and result.image.backend == "sagemaker"
    assert (result.image.resolved_image, result.image.digest) == (trial.image, None)

    ((name, request),) = sagemaker.requests.items()
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)
    assert request["HyperParameters"] == {"epochs": "3", "score": "0.9", "learning_rate": "0.01"}
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": trial.image,
        "TrainingInputMode": "File",
        "MetricDefinitions": [
            {"Name": "validation:accuracy", "Regex": r"val_accuracy=([0-9.]+)"},
            {"Name": "validation:loss", "Regex": r"val_loss=([0-9.eE+-]+)"},
        ],
    }
    assert request["RoleArn"] == ROLE_ARN
    assert request["EnableNetworkIsolation"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 60}
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}  # fmt: skip
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://{sagemaker.bucket}/sm/jobs"}
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    source = channels["train"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["S3Uri"].endswith("/train/")
    assert request["Environment"]["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    # channels (with problem.json in train) stay for reuse; the job's output is deleted
    uploaded = keys(sagemaker, "sm/channels/")
    assert any(k.endswith("/train/problem.json") for k in uploaded)
    assert any(k.endswith("/validation/images/validation1.png") for k in uploaded)
    assert keys(sagemaker, "sm/jobs/") == []


def test_channels_upload_once_per_content(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    settings = SageMakerSettings.from_env(sagemaker.server.conn_id)
    s3 = sagemaker.client("s3")
    first = upload_channels(s3, settings, make_job(tmp_path / "a").layout)
    again = upload_channels(s3, settings, make_job(tmp_path / "b").layout)
    assert first["uploaded"] == 3 + 2 + 2 + 1  # images, examples.jsonl, problem.json
    assert again == {**first, "uploaded": 0}
    other = make_job(tmp_path / "c")
    (other.layout.channel("train") / "examples.jsonl").write_text("{}\n")
    assert upload_channels(s3, settings, other.layout)["channels"] != first["channels"]


def test_failure_reason_becomes_the_failure_text(
    sagemaker: SageMakerEmulator, tmp_path: Path
) -> None:
    sagemaker.run_instances(SCRIPTED)
    result = SageMakerBackend().run(make_job(tmp_path, mode="fail"))
    assert result.status == "failed"
    assert "learning_rate='abc' is not a number" in (result.failure or "")
    assert result.failure.startswith("SageMaker training job pml") or "failed:" in result.failure


def test_pruning_stops_the_job(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    sagemaker.run_instances(SCRIPTED)
    trial = make_job(tmp_path, epochs=50, delay=0.2)
    result = SageMakerBackend().run(trial, lambda name, value, step: step >= 1)
    assert result.status == "stopped"
    assert len(sagemaker.stops) == 1
    assert sagemaker.job(sagemaker.stops[0]).training_job_status == "Stopped"


def test_timeout_stops_the_job(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    sagemaker.run_instances(SCRIPTED)
    result = SageMakerBackend().run(make_job(tmp_path, mode="hang", timeout=1.5))
    assert result.status == "timed_out"
    assert "timeout of 2 s" in (result.failure or "")
    assert len(sagemaker.stops) == 1


def test_kill_stops_the_running_job(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    sagemaker.run_instances(SCRIPTED)
    backend, trial = SageMakerBackend(), make_job(tmp_path, mode="hang")
    results: list[TrainingOutcome] = []
    thread = threading.Thread(target=lambda: results.append(backend.run(trial)))
    thread.start()
    name = sagemaker.wait_for_job()
    while name not in sagemaker._procs:  # the instance runs the trainer
        thread.join(timeout=0.05)
    backend.kill(trial.name)
    thread.join(timeout=30)
    assert sagemaker.stops == [name]
    assert results[0].status == "failed"
    assert "was stopped outside this trial" in (results[0].failure or "")


def test_a_refused_request_names_the_reason(sagemaker: SageMakerEmulator, tmp_path: Path) -> None:
    trial = make_job(tmp_path)
    trial.metric_parser = MetricParser.from_config([{"name": "m", "regex": "(" + "x" * 600 + ")"}])
    settings = SageMakerSettings.from_env()
    with pytest.raises(PatientMLError, match="metricDefinitions 'm': the regex is 602 char"):
        training_job_request(sm_name="x", job=trial, settings=settings, channels={})


def test_settings_name_the_variable_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_ROLE_ARN", "patient-ml-role")
    with pytest.raises(PatientMLError, match="PATIENT_ML_SAGEMAKER_ROLE_ARN='patient-ml-role'"):
        SageMakerSettings.from_env()
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_S3_URI", "bucket/prefix")
    with pytest.raises(PatientMLError, match="PATIENT_ML_SAGEMAKER_S3_URI='bucket/prefix'"):
        SageMakerSettings.from_env()
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_S3_URI", "s3://b/p/")
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_INSTANCE_TYPE", "m5.large")
    with pytest.raises(PatientMLError, match=r"INSTANCE_TYPE='m5\.large' is not a SageMaker"):
        SageMakerSettings.from_env()
    monkeypatch.setenv("PATIENT_ML_SAGEMAKER_INSTANCE_TYPE", "ml.g5.xlarge")
    settings = SageMakerSettings.from_env("aws_x")
    assert (settings.bucket, settings.prefix, settings.serve_instance_type) == (
        "b",
        "p",
        "ml.g5.xlarge",
    )
    assert settings.aws_conn_id == "aws_x"


def test_job_names_are_fresh_and_valid() -> None:
    names = {sagemaker_job_name("pml-0123abcd-t7") for _ in range(200)}
    assert len(names) == 200  # mostly in one second: the random part keeps them apart
    long = sagemaker_job_name("run_" + "x" * 200)
    assert len(long) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", long)


def snapshot_run(engine: Engine, tmp_path: Path, approach: dict[str, Any]) -> tuple[str, Any]:
    """A run of a model with `approach` on a real curated snapshot (local artifact store)."""
    model = {
        "trainingApproach": {"type": "tuningJob", **approach},
        "deployApproach": {"type": "edge", "inferenceImage": approach["trainingImage"]},
    }
    return curated_run(engine, tmp_path, model, patients=24)


def test_a_sweep_on_sagemaker_stores_the_best_model(
    sagemaker: SageMakerEmulator, engine: Engine, tmp_path: Path
) -> None:
    """A tuning worker with the SageMaker backend, on a curated snapshot, with the reference
    image classifier: problem.json reaches it through the train channel, and the best trial's
    model lands in the artifact store."""
    from patient_ml.training.backends.local import REFERENCE_TRAINERS

    sagemaker.run_instances(REFERENCE_TRAINERS / "img_clf")
    run_id, store = snapshot_run(engine, tmp_path, {
        "trainingImage": "patient-ml/img-clf-trainer:0.1.0",
        "metricDefinitions": [
            {"name": "validation:balancedAccuracy", "regex": "val_balanced_accuracy=([0-9.]+)"}
        ],
        "objective": {"metric": "validation:balancedAccuracy", "direction": "maximize"},
        "searchSpace": [{"type": "integer", "name": "epochs", "min": 1, "max": 2}],
        "maxTrials": 2,
        "seed": 3,
    })  # fmt: skip
    worker = TuningWorker(engine=engine, store=store, backend=SageMakerBackend(), run_id=run_id,
                          worker="0", workdir=tmp_path / "tune")  # fmt: skip
    outcomes = worker.run()
    assert [o.state for o in outcomes] == ["complete", "complete"], [o.failure for o in outcomes]
    result = finish_tuning(engine, store, run_id, actor="t")
    key = trial_artifact_key(run_id, result["bestTrial"])
    assert result["modelArtifactUri"] == store.uri(key)
    assert len(sagemaker.requests) == 2
    channels = {json.dumps(r["InputDataConfig"]) for r in sagemaker.requests.values()}
    assert len(channels) == 1  # both trials train on the one upload
    with tarfile.open(fileobj=io.BytesIO(store.read_bytes(key)), mode="r:gz") as tar:
        assert tar.getnames()  # the reference trainer's model, back from "S3"
        assert "environment.json" in tar.getnames()
    # provenance: the resolved image, the trainer's own report, the sampler's seed
    with session_scope(engine) as session:
        recorded = get_run(session, run_id).provenance
    assert recorded is not None
    assert recorded["training"] == {
        "role": "training",
        "reference": "patient-ml/img-clf-trainer:0.1.0",
        "backend": "sagemaker",
        "resolvedImage": "patient-ml/img-clf-trainer:0.1.0",
        "repoDigests": [],
    }
    assert recorded["trainer"]["reportedBy"] == "trainer"
    assert {"torch", "numpy"} <= set(recorded["trainer"]["libraries"])
    assert recorded["sampler"]["seed"] == 3 and recorded["bestTrial"] == result["bestTrial"]
