"""The API app's lifespan, which Airflow's API server enters for every FastAPI app a plugin
mounts: the heap built at startup is left out of garbage collections until the server stops."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from patient_ml.api.app import create_app


def test_the_startup_heap_is_frozen_while_the_server_runs() -> None:
    assert gc.get_freeze_count() == 0
    with TestClient(create_app()) as client:
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # everything imported so far: FastAPI, SQLAlchemy, the plugin
        assert client.get("/openapi.json").status_code == 200
        assert gc.get_freeze_count() <= frozen  # what requests allocate is not frozen
    assert gc.get_freeze_count() == 0
