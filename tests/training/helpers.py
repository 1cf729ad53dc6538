"""Builders for training tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser

SCRIPTED = Path(__file__).parent / "scripted_trainer"
IMAGE = "patient-ml/scripted-trainer:1"
METRICS = [
    {"name": "validation:accuracy", "regex": r"val_accuracy=([0-9.]+)"},
    {"name": "validation:loss", "regex": r"val_loss=([0-9.eE+-]+)"},
]


def backend() -> LocalBackend:
    return LocalBackend({"patient-ml/scripted-trainer": SCRIPTED})


def job(root: Path, name: str | None = None, timeout: float = 60, **hps: Any) -> TrainingJob:
    layout = JobLayout(root).create()
    layout.write_config(hps, {"problemType": "imgClf", "labels": []})
    return TrainingJob(
        name=name or f"job-{uuid.uuid4().hex[:8]}",
        layout=layout,
        image=IMAGE,
        metric_parser=MetricParser.from_config(METRICS),
        timeout_seconds=timeout,
    )
