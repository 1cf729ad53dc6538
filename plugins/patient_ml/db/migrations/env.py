"""Alembic environment of the product database (driven by patient_ml.db.schema)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from patient_ml.db.models import Base

config = context.config
target_metadata = Base.metadata
VERSION_TABLE = "pml_alembic_version"


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=True,
        include_name=_own_tables_only,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError(
                "alembic: no connection and no sqlalchemy.url; run migrations through "
                "patient_ml.db.schema (e.g. `patient-ml db upgrade`)"
            )
        engine = create_engine(url)
        with engine.connect() as conn:
            _run(conn)
        engine.dispose()
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_own_tables_only,
    )
    with context.begin_transaction():
        context.run_migrations()


def _own_tables_only(name: str | None, type_: str, parent_names: object) -> bool:
    """The product DB also holds Optuna's study tables (RDB storage); migrations manage only
    the `pml_*` tables."""
    return type_ != "table" or bool(name and name.startswith("pml_"))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
