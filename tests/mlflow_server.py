"""A real MLflow tracking server for the tests (SQLite backend, artifacts proxied by the
server), one per test session; skipped with the reason when the `mlflow` extra is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CONN_ID = "mlflow_test"
START_TIMEOUT = 300.0  # the server imports a lot; a loaded 2-core machine takes a minute


@dataclass(frozen=True)
class MlflowServer:
    url: str
    folder: Path

    def connection_json(self, **extra: object) -> str:
        return json.dumps({"conn_type": "patient_ml_mlflow", "host": self.url, "extra": extra})

    def client(self):  # type: ignore[no-untyped-def]
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_cli() -> str:
    found = Path(sys.executable).with_name("mlflow")
    return str(found) if found.exists() else (shutil.which("mlflow") or "mlflow")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed (the `mlflow` extra; `make setup` installs it)")
    folder = tmp_path_factory.mktemp("mlflow-server")
    running = os.environ.get("PATIENT_ML_TEST_MLFLOW_URL")  # a server already up (development)
    if running:
        yield MlflowServer(running.rstrip("/"), folder)
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("wb")
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    process = subprocess.Popen(
        [
            _mlflow_cli(), "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                text = (folder / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start at {url}:\n{text}")
            time.sleep(0.5)
        yield MlflowServer(url, folder)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def mlflow_conn(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """`mlflow_server` as Airflow connection `mlflow_test`, named by PATIENT_ML_MLFLOW_CONN_ID."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", mlflow_server.connection_json())
    monkeypatch.setenv("PATIENT_ML_MLFLOW_CONN_ID", CONN_ID)
    return mlflow_server
