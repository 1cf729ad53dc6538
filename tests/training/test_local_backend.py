"""The local backend on a real process that follows the contract: success, failure text,
crash, timeout, pruning, garbage logs, and a metric that never matches."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from patient_ml.exceptions import PatientMLError
from patient_ml.training.backends.local import LocalBackend, image_repository
from patient_ml.training.contract import hyperparameters_as_strings
from tests.training.helpers import IMAGE, backend, job


def test_success_streams_logs_and_parses_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="patient_ml.training")
    seen: list[tuple[str, float, int]] = []
    result = backend().run(
        job(tmp_path, epochs=4, score=0.8, learning_rate=0.01),
        on_metric=lambda n, v, s: seen.append((n, v, s)) and False,
    )
    assert result.succeeded and result.exit_code == 0 and result.failure is None
    assert result.metrics == {"validation:accuracy": 0.8, "validation:loss": 0.2}
    assert [s for n, _, s in seen if n == "validation:accuracy"] == [0, 1, 2, 3]
    assert (tmp_path / "model" / "model.json").exists()
    assert "epoch=4 val_loss=0.2000" in caplog.text  # live in the task log
    hps = json.loads((tmp_path / "input/config/hyperparameters.json").read_text())
    assert hps == {"epochs": "4", "learning_rate": "0.01", "score": "0.8"}


def test_failure_text_is_kept(tmp_path: Path) -> None:
    result = backend().run(job(tmp_path, mode="fail"))
    assert result.status == "failed" and result.exit_code == 1
    assert result.failure == "learning_rate='abc' is not a number"


def test_crash_without_failure_file(tmp_path: Path) -> None:
    result = backend().run(job(tmp_path, mode="crash"))
    assert result.status == "failed" and result.exit_code == 3
    assert "exited with code 3" in (result.failure or "")


def test_hanging_trainer_times_out_and_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    result = backend().run(job(tmp_path, mode="hang", timeout=2))
    assert result.status == "timed_out" and "timeout of 2 s" in (result.failure or "")
    assert time.monotonic() - started < 15


def test_pruning_stops_the_process(tmp_path: Path) -> None:
    result = backend().run(
        job(tmp_path, epochs=50, delay=0.2),
        on_metric=lambda name, value, step: name == "validation:accuracy" and step >= 1,
    )
    assert result.status == "stopped"
    assert result.metrics["validation:accuracy"] < 0.5  # it never reached the end
    assert not (tmp_path / "model" / "model.json").exists()


def test_kill_from_another_thread(tmp_path: Path) -> None:
    local = backend()
    threading.Timer(1.0, local.kill, args=("killme",)).start()
    result = local.run(job(tmp_path, name="killme", mode="hang", timeout=60))
    assert result.status == "failed" and result.exit_code == -15


def test_garbage_in_the_log_and_a_metric_that_never_matches(tmp_path: Path) -> None:
    training = job(tmp_path, mode="garbage", epochs=2, score=0.6)
    training.metric_parser.definitions.append(
        ("validation:auc", __import__("re").compile(r"val_auc=([0-9.]+)"))
    )
    result = backend().run(training)
    assert result.succeeded
    assert result.metrics["validation:accuracy"] == 0.6
    assert result.unmatched_metrics == ["validation:auc"]
    assert training.metric_parser.skipped >= 2  # '1.2.3' and an infinite loss were skipped


def test_unknown_image_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PatientMLError, match="no trainer for image") as info:
        LocalBackend({}).run(job(tmp_path))
    assert "PATIENT_ML_LOCAL_TRAINERS" in (info.value.fix or "")


def test_image_names_and_hyperparameter_strings() -> None:
    assert image_repository(IMAGE) == "patient-ml/scripted-trainer"
    assert image_repository("reg:5000/a/b:1.0@sha256:ab") == "reg:5000/a/b"
    assert image_repository("reg:5000/a/b") == "reg:5000/a/b"
    assert hyperparameters_as_strings({"a": 1, "b": 0.1, "c": True, "d": "x"}) == {
        "a": "1",
        "b": "0.1",
        "c": "true",
        "d": "x",
    }


def test_an_ecr_image_name_maps_to_a_local_trainer_by_its_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference SDK writes AWS ECR names only: PATIENT_ML_LOCAL_TRAINERS maps the name's
    repository (any tag or digest) to a trainer folder; the exact name (with tag) wins."""
    from patient_ml.training.backends.local import REFERENCE_TRAINERS, default_trainer_dirs

    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/img-clf-trainer"
    seg = REFERENCE_TRAINERS / "img_seg"
    monkeypatch.setenv(
        "PATIENT_ML_LOCAL_TRAINERS",
        f"{ecr}={REFERENCE_TRAINERS / 'img_clf'}, {ecr}:segment={seg}",
    )
    local = LocalBackend(default_trainer_dirs())
    assert local.resolve(f"{ecr}:v1") == REFERENCE_TRAINERS / "img_clf" / "train"
    assert local.resolve(f"{ecr}:v2", "serve") == REFERENCE_TRAINERS / "img_clf" / "serve"
    assert local.resolve(f"{ecr}@sha256:{'a' * 64}") == REFERENCE_TRAINERS / "img_clf" / "train"
    assert local.resolve(f"{ecr}:segment") == seg / "train"
    with pytest.raises(PatientMLError, match="no trainer for image") as info:
        local.resolve("123456789012.dkr.ecr.us-east-1.amazonaws.com/other:v1")
    assert "PATIENT_ML_LOCAL_TRAINERS" in (info.value.fix or "")
