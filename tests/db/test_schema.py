"""Migrations, the schema-version check and the agreement of ORM and migration scripts."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from patient_ml.db import schema
from patient_ml.db.engine import get_engine
from patient_ml.db.models import Base
from patient_ml.db.version import HEAD_REVISION, VERSION_TABLE
from patient_ml.exceptions import SchemaVersionError


def test_head_constant_matches_migration_scripts() -> None:
    assert schema.head_revision() == HEAD_REVISION


def test_upgrade_creates_every_table_at_head(db_url: str) -> None:
    engine = get_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert schema.current_revision(engine) == HEAD_REVISION
    schema.check_schema_version(engine)


def _ours(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """The product's tables (`pml_`) only: the database may hold Optuna's or Airflow's too."""
    if type_ == "schema":
        return True
    table = name if type_ == "table" else parent_names.get("table_name")
    return table is None or table.startswith("pml_")


def test_migrations_match_the_orm(db_url: str) -> None:
    """Autogenerate finds nothing to do: the migration scripts build exactly the ORM's schema."""
    engine = get_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"version_table": VERSION_TABLE, "compare_type": True, "include_name": _ours},
        )
        diff = [d for d in compare_metadata(ctx, Base.metadata) if d[0] != "remove_table"]
    assert diff == []


def test_upgrade_is_idempotent(db_url: str) -> None:
    engine = get_engine(db_url)
    assert schema.upgrade(engine) == (HEAD_REVISION, HEAD_REVISION)


def test_empty_database_is_refused_with_the_command_to_run(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(SchemaVersionError) as info:
        get_engine(url)
    assert "has no schema yet" in str(info.value)
    assert "patient-ml db upgrade" in str(info.value)


def test_older_schema_is_refused_with_the_command_to_run(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = get_engine(url, check_schema=False)
    schema.upgrade(engine)
    schema_downgrade(engine)
    with pytest.raises(SchemaVersionError) as info:
        schema.check_schema_version(engine)
    assert "has no schema yet" in str(info.value)
    schema.upgrade(engine)
    schema.check_schema_version(engine)


def test_newer_schema_asks_to_upgrade_the_package(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = get_engine(url, check_schema=False)
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(SchemaVersionError) as info:
        schema.check_schema_version(engine)
    assert "'9999'" in str(info.value)
    assert "upgrade the patient-ml package" in str(info.value)
    assert info.value.exit_code == 6


def schema_downgrade(engine) -> None:
    from alembic import command

    cfg = schema.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {VERSION_TABLE}
