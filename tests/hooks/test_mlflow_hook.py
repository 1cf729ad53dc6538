"""MlflowHook: the tracking URI and bounds from an Airflow connection, the absent connection
(mirroring off, one info line), and a real `mlflow server` (tests/mlflow_server.py) reached
and missed through the same tracker."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from patient_ml.hooks.mlflow_tracking import (
    MlflowHook,
    MlflowUnavailableError,
    mirror_tracker,
    settings_of,
)
from tests.mlflow_server import MlflowServer, free_port


class _Conn:
    """The fields of an Airflow Connection that settings_of reads."""

    def __init__(self, host: str = "", extra: dict[str, Any] | None = None, **fields: Any) -> None:
        self.host = host
        self.extra_dejson = extra or {}
        self.schema = fields.get("schema")
        self.port = fields.get("port")
        self.login = fields.get("login")
        self.password = fields.get("password")


def test_settings_from_the_connection_fields() -> None:
    plain = settings_of("m", _Conn("http://mlflow:5000/"))
    assert (plain.tracking_uri, plain.timeout, plain.max_retries) == ("http://mlflow:5000", 10, 2)
    built = settings_of("m", _Conn("mlflow.example.org", schema="https", port=8443))
    assert built.tracking_uri == "https://mlflow.example.org:8443"
    tuned = settings_of(
        "m",
        _Conn("x", {"tracking_uri": "http://t:1", "timeout": 3, "max_retries": 0,
                    "experiment_prefix": "team/"}, login="u", password="p"),
    )  # fmt: skip
    assert (tuned.tracking_uri, tuned.timeout, tuned.max_retries) == ("http://t:1", 3, 0)
    assert tuned.environment()["MLFLOW_TRACKING_USERNAME"] == "u"
    assert tuned.environment()["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert tuned.experiment_prefix == "team/"
    with pytest.raises(MlflowUnavailableError, match=r"extra.max_retries"):
        settings_of("m", _Conn("http://t", {"max_retries": 99}))
    with pytest.raises(MlflowUnavailableError, match="no MLflow tracking URI"):
        settings_of("m", _Conn(""))


def test_no_connection_turns_mirroring_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="patient_ml.mlflow"):
        assert mirror_tracker("mlflow_absent_here") is None
    assert mirror_tracker("off") is None and mirror_tracker(None) is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "patient_ml.mlflow"]
    assert "mirroring is off" in line and "mlflow_absent_here" in line


def test_a_real_server_answers_and_a_dead_one_fails_within_bounds(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_HOOK_T", mlflow_server.connection_json())
    ok, text = MlflowHook("mlflow_hook_t").test_connection()
    assert ok, text
    tracker = mirror_tracker("mlflow_hook_t")
    assert tracker is not None
    name = f"hook-test-{time.time_ns()}"
    experiment = tracker.experiment_id(name, {"k": "v"})
    assert tracker.experiment_id(name, {}) == experiment  # found, not created twice
    run = tracker.create_run(experiment, name="r", start_ms=None, tags={"patient_ml.run_id": "x"})
    assert tracker.find_run(experiment, {"patient_ml.run_id": "x"}).info.run_id == run

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_HOOK_DEAD",
        json.dumps({"conn_type": "patient_ml_mlflow", "host": dead,
                    "extra": {"max_retries": 1, "backoff_factor": 0, "timeout": 2}}),
    )  # fmt: skip
    missing = mirror_tracker("mlflow_hook_dead")
    assert missing is not None
    started = time.monotonic()
    with pytest.raises(MlflowUnavailableError, match="failed to find or create experiment"):
        missing.experiment_id(name, {})
    assert time.monotonic() - started < 30
    ok, text = MlflowHook("mlflow_hook_dead").test_connection()
    assert not ok and dead in text
