"""The reference trainer images on a real Docker engine through the Docker backend: built from
the local base image, trained with no network and read-only inputs, failure text on a bad
hyperparameter, and the metrics the example model configs' regexes expect."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.backends.docker import DockerBackend
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser
from tests.docker_engine import build_trainer_image
from tests.trainers.test_trainers import (
    CLF_PROBLEM,
    SEG_PROBLEM,
)

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"
CASES = {
    "img_clf": ("brain_mri_model", CLF_PROBLEM, "clf", "validation:balancedAccuracy"),
    "img_seg": ("nuclei_model", SEG_PROBLEM, "seg", "validation:dice"),
}


@pytest.fixture(scope="module")
def docker(docker_engine: Any) -> DockerBackend:
    for kind, (config, *_rest) in CASES.items():
        image = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())["trainingApproach"]
        build_trainer_image(docker_engine, kind, image["trainingImage"])
    return DockerBackend(client=docker_engine)


def job(tmp: Path, kind: str, data_dirs: dict[str, Path], **hps: Any) -> TrainingJob:
    config_name, problem, key, _ = CASES[kind]
    approach = yaml.safe_load((CONFIGS / f"{config_name}.yaml").read_text())["trainingApproach"]
    layout = JobLayout(tmp).create()
    for channel in ("train", "validation"):
        shutil.rmtree(layout.channel(channel))
        shutil.copytree(data_dirs[key] / channel, layout.channel(channel))
    layout.write_config(hps, problem)
    return TrainingJob(
        name=f"ref-{kind}-{tmp.name}",
        layout=layout,
        image=approach["trainingImage"],
        metric_parser=MetricParser.from_config(approach["metricDefinitions"]),
        timeout_seconds=300,
        cpus=1,
        memory_mb=1024,
    )


@pytest.mark.parametrize("kind", list(CASES))
def test_reference_image_trains_in_docker(
    kind: str,
    docker: DockerBackend,
    data: dict[str, Path],
    tmp_path: Path,
) -> None:
    result = docker.run(job(tmp_path, kind, data, epochs=5))
    assert result.succeeded, result.failure
    objective = CASES[kind][3]
    assert 0.0 <= result.metrics[objective] <= 1.0
    assert any((tmp_path / "model").iterdir())


@pytest.mark.parametrize("kind", list(CASES))
def test_reference_image_reports_bad_hyperparameters(
    kind: str,
    docker: DockerBackend,
    data: dict[str, Path],
    tmp_path: Path,
) -> None:
    result = docker.run(job(tmp_path, kind, data, learning_rate="abc"))
    assert result.status == "failed" and result.exit_code == 1
    assert "learning_rate" in (result.failure or "")
