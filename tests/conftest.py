"""Shared fixtures: a migrated product database on SQLite and on PostgreSQL.

PostgreSQL tests use the server at PATIENT_ML_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres) and skip with a reason when it is unreachable,
unless PATIENT_ML_REQUIRE_POSTGRES=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from patient_ml.db import schema
from patient_ml.db.engine import dispose_engines, get_engine
from patient_ml.db.models import Base

# Airflow reads its configuration when first imported (nothing above imports it): the test
# session gets its own AIRFLOW_HOME (metadata DB, auth manager users, JWT secret), never ~/airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="pml-test-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,editor:user,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": f"{_AIRFLOW_HOME}/passwords.json",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        # createRun on a model whose DAG Airflow has not parsed answers at once in tests
        "PATIENT_ML_DAG_WAIT_SECONDS": "0",
    }
)
# Shared real-service fixtures (one server per test session).
pytest_plugins = [
    "tests.fhir_server",
    "tests.s3_server",
    "tests.sagemaker_server",
    "tests.docker_engine",
    "tests.mlflow_server",
]

ADMIN_URL = os.environ.get(
    "PATIENT_ML_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIGS = REPO_ROOT / "include" / "configs"


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {ADMIN_URL}: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test session (dropped after)."""
    reason = _postgres_unavailable_reason()
    if reason:
        if os.environ.get("PATIENT_ML_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (PATIENT_ML_REQUIRE_POSTGRES=1, so this is an error)")
        pytest.skip(reason)
    name = f"pml_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_server_url: str) -> str:
    schema.upgrade(get_engine(postgres_server_url, check_schema=False))
    return postgres_server_url


def _truncate(engine: Engine) -> None:
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty product database; every test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'patient_ml.db'}"
        schema.upgrade(get_engine(url, check_schema=False))
        yield url
        return
    url = request.getfixturevalue("_migrated_postgres")
    _truncate(get_engine(url))
    yield url


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's real product DB or Airflow home."""
    monkeypatch.setenv("PATIENT_ML_HOME", str(tmp_path / "pml-home"))
    monkeypatch.delenv("PATIENT_ML_DATABASE_URL", raising=False)
    monkeypatch.delenv("PATIENT_ML_CONN_ID", raising=False)
    monkeypatch.setenv("PATIENT_ML_USER", "test-user")
    # No MLflow mirroring unless a test asks for it (tests/mlflow_server.py)
    monkeypatch.setenv("PATIENT_ML_MLFLOW_CONN_ID", "off")


# Under pytest-xdist (`make test PYTEST_WORKERS=2` runs 2 processes with `--dist loadgroup`),
# the tests of these folders stay together on one worker: the end-to-end tests share one real
# Airflow per worker (tests/e2e/conftest.py) and some build on the tests before them in their
# module, and the compose stack is one long test. On workers they are collected first, so the
# two long groups start at once on different workers while the other tests fill the gaps; in
# one process the order is unchanged.
#
# The groups are made by this conftest's scheduler, not by `xdist_group` marks: pytest-xdist
# 3.8 writes a mark's group into `item._nodeid`, which pytest 9 no longer reads, so marked
# tests were spread over both workers (each started an Airflow of its own and split modules).
_GROUPS = {"e2e": "e2e", "compose": "compose"}
# modules of a grouped folder that start their own deployment (no shared fixture of the folder):
# a group of their own, so they run on the other worker while the folder's group runs
_OWN_GROUPS = {"tests/e2e/test_fab_roles.py": "e2e-fab"}
_FIRST = {"compose": 0, "e2e": 1, "e2e-fab": 1}


def _group_of_nodeid(nodeid: str) -> str | None:
    """`tests/e2e/test_x.py::test_y` → "e2e"; None for a test outside the grouped folders."""
    path = nodeid.split("::", 1)[0]
    if path in _OWN_GROUPS:
        return _OWN_GROUPS[path]
    parts = path.split("/")
    return _GROUPS.get(parts[1]) if len(parts) > 2 and parts[0] == "tests" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # on workers: the long groups first
        items.sort(key=lambda item: _FIRST.get(_group_of_nodeid(item.nodeid) or "", 2))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: xdist's load-by-scope scheduling with one scope per grouped folder
    and one per test elsewhere (what LoadGroupScheduling does with marks)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FolderGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of_nodeid(nodeid) or nodeid

    return FolderGroups(config, log)
