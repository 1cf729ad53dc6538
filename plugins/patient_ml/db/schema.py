"""Schema migrations (Alembic) and the schema-version check.

The migration scripts ship inside the package (`patient_ml/db/migrations`), so
`patient-ml db upgrade` works from any installation. Alembic's version table is named
`pml_alembic_version` so it never collides with Airflow's `alembic_version` when both share
one PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from patient_ml.db.version import VERSION_TABLE
from patient_ml.exceptions import SchemaVersionError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
UPGRADE_HINT = "run `patient-ml db upgrade` (it is safe to run more than once)"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    if len(heads) != 1:  # a packaging mistake, not a user error
        raise RuntimeError(f"patient_ml migrations must have one head, found {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to `revision`; returns (revision before, revision after)."""
    before = current_revision(engine)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(engine) or ""


def check_schema_version(engine: Engine) -> None:
    """Raise SchemaVersionError unless the database is at this package's head revision."""
    where = engine.url.render_as_string(hide_password=True)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        tables = inspect(engine).get_table_names()
        has_tables = any(t.startswith("pml_") and t != VERSION_TABLE for t in tables)
        state = "has pml_ tables but no schema version" if has_tables else "has no schema yet"
        raise SchemaVersionError(f"The product database {where} {state}.", fix=UPGRADE_HINT)
    known = {rev.revision for rev in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if current not in known:
        raise SchemaVersionError(
            f"The product database {where} is at schema revision {current!r}, which this "
            f"version of patient-ml does not know (its newest is {head!r}); a newer patient-ml "
            "has migrated it.",
            fix="upgrade the patient-ml package on this machine to the version the other "
            "machines run",
        )
    raise SchemaVersionError(
        f"The product database {where} is at schema revision {current!r}; this version of "
        f"patient-ml needs {head!r}.",
        fix=UPGRADE_HINT,
    )
