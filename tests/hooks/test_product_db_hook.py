"""The product-DB hook resolves its URL from an Airflow connection and reaches the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from patient_ml.db.engine import resolve_database_url
from patient_ml.db.models import Dataset
from patient_ml.exceptions import DatabaseError
from patient_ml.hooks.product_db import ProductDatabaseHook


def _set_conn(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_url_from_connection_fields(monkeypatch) -> None:
    _set_conn(monkeypatch, "pml_pg", conn_type="patient_ml_db", host="db.internal", port=5433,
              login="ml", password="s3cr/t", schema="patient_ml")  # fmt: skip
    url = make_url(ProductDatabaseHook("pml_pg").get_database_url())
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg", "db.internal", 5433, "patient_ml",
    )  # fmt: skip
    assert url.password == "s3cr/t"


def test_url_from_extra_and_missing_host(monkeypatch) -> None:
    _set_conn(monkeypatch, "pml_extra", conn_type="patient_ml_db",
              extra={"sqlalchemy_url": "sqlite:////tmp/x.db"})  # fmt: skip
    assert ProductDatabaseHook("pml_extra").get_database_url() == "sqlite:////tmp/x.db"
    _set_conn(monkeypatch, "pml_bad", conn_type="patient_ml_db")
    with pytest.raises(DatabaseError, match="has no host"):
        ProductDatabaseHook("pml_bad").get_database_url()


def test_hook_session_reaches_the_database(monkeypatch, db_url: str) -> None:
    _set_conn(monkeypatch, "patient_ml_default", conn_type="patient_ml_db",
              extra={"sqlalchemy_url": db_url})  # fmt: skip
    with ProductDatabaseHook().session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    monkeypatch.setenv("PATIENT_ML_CONN_ID", "patient_ml_default")
    assert resolve_database_url() == db_url.replace("postgresql+psycopg", "postgresql+psycopg")


def test_provider_info_is_valid_and_registers_the_connection_type() -> None:
    import importlib.resources

    import jsonschema
    from airflow.providers_manager import ProvidersManager

    from patient_ml.provider import get_provider_info

    schema = json.loads(
        importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text()
    )
    jsonschema.validate(get_provider_info(), schema)
    assert "patient-ml-airflow" in ProvidersManager().providers
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "patient_ml_db" in ProvidersManagerTaskRuntime().hooks


def test_plugin_is_discovered_by_airflow() -> None:
    from airflow import plugins_manager

    names = [info["name"] for info in plugins_manager.get_plugin_info()]
    assert names.count("patient_ml") == 1
    assert plugins_manager.get_import_errors() == {}
