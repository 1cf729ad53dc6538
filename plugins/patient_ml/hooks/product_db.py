"""Airflow hook for the product database (connection type `patient_ml_db`).

A connection may hold a full SQLAlchemy URL in its extra (`{"sqlalchemy_url": "..."}`) or the
usual fields (host, port, login, password, schema = database name) of a PostgreSQL server.
Plain `postgres` connections work too. Operators use this hook; the CLI reaches the same
database through `PATIENT_ML_DATABASE_URL` or `PATIENT_ML_CONN_ID`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from patient_ml.db.engine import get_engine, session_scope, url_from_connection


class ProductDatabaseHook(BaseHook):
    conn_name_attr = "patient_ml_conn_id"
    default_conn_name = "patient_ml_default"
    conn_type = "patient_ml_db"
    hook_name = "Patient ML product database"

    def __init__(
        self, patient_ml_conn_id: str = default_conn_name, *, logger_name: str | None = None
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.patient_ml_conn_id = patient_ml_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"schema": "Database"},
            "placeholders": {
                "host": "127.0.0.1",
                "port": "5432",
                "schema": "patient_ml",
                "extra": '{"sqlalchemy_url": "sqlite:////opt/airflow/patient_ml/patient_ml.db"}',
            },
        }

    def get_database_url(self) -> str:
        conn = self.get_connection(self.patient_ml_conn_id)
        return url_from_connection(self.patient_ml_conn_id, conn)

    def get_engine(self, *, check_schema: bool = True) -> Engine:
        return get_engine(self.get_database_url(), check_schema=check_schema)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction on the product DB: committed on success, rolled back on error."""
        with session_scope(self.get_engine()) as session:
            yield session


def product_engine(conn_id: str | None = None) -> Engine:
    """The product DB of an operator: its Airflow connection when given, else the package's
    resolution (PATIENT_ML_DATABASE_URL, PATIENT_ML_CONN_ID, SQLite under PATIENT_ML_HOME)."""
    return ProductDatabaseHook(conn_id).get_engine() if conn_id else get_engine()
