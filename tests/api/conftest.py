"""The REST API under test: the plugin's FastAPI app with Airflow's real auth manager (simple
auth manager users admin, editor, viewer from tests/conftest.py) on a migrated metadata DB."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from patient_ml.api.app import create_app

ROLES = {"admin": "admin", "editor": "user", "viewer": "viewer"}


@pytest.fixture(scope="session")
def airflow_auth() -> Callable[[str], str]:
    """A function user → Bearer JWT signed by Airflow's auth manager."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
    )
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()

    def token(user: str) -> str:
        return manager.generate_jwt(SimpleAuthManagerUser(username=user, role=ROLES[user]))

    return token


@pytest.fixture
def api(
    airflow_auth: Callable[[str], str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """`api(user)` → a TestClient sending that user's JWT (`api(None)`: no credentials)."""
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    app = create_app()

    def client(user: str | None) -> TestClient:
        headers = {"Authorization": f"Bearer {airflow_auth(user)}"} if user else {}
        return TestClient(app, headers=headers, raise_server_exceptions=False)

    yield client
