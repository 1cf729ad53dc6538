"""The product database's schema version: its revision table and the revision this package needs.

Read without Alembic, so `patient_ml.db.engine` checks a database that is up to date quickly;
`patient_ml.db.schema` (Alembic: migrations and the full check) reads the same table.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc

# The newest migration in patient_ml/db/migrations/versions; a test keeps the two in step.
HEAD_REVISION = "0013"
VERSION_TABLE = "pml_alembic_version"


def stored_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the DB, read without importing Alembic (fast CLI)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except sa_exc.SQLAlchemyError:
        return None
