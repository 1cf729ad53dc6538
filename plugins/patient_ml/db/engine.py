"""Engines and sessions of the product database.

`resolve_database_url` decides which database to use, `get_engine` builds (and caches) an engine
and checks the schema version once, and `session_scope` commits or rolls back and turns driver
errors into `DatabaseError`/`ConflictError` with an explanation the user can act on.
`read_scope` is its read-only twin for requests that only read: on SQLite its transactions begin
deferred on a `query_only` connection of a companion reader engine (WAL readers never wait for
the writer's lock), on PostgreSQL they are `READ ONLY` transactions.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from patient_ml import settings
from patient_ml.db.version import HEAD_REVISION, stored_revision
from patient_ml.exceptions import ConflictError, DatabaseError, PatientMLError
from patient_ml.settings import setting

if TYPE_CHECKING:
    from airflow.sdk import Connection as AirflowConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

_ENGINES: dict[str, Engine] = {}
_READERS: dict[str, Engine] = {}
_CHECKED: set[str] = set()
_LOCK = threading.Lock()


def resolve_database_url(explicit: str | None = None) -> str:
    """The product DB URL: explicit argument, then PATIENT_ML_DATABASE_URL, then the Airflow
    connection named by PATIENT_ML_CONN_ID, then SQLite under PATIENT_ML_HOME."""
    if explicit:
        return normalize_url(explicit)
    from_env = setting("PATIENT_ML_DATABASE_URL")
    if from_env:
        return normalize_url(from_env)
    conn_id = setting("PATIENT_ML_CONN_ID")
    if conn_id:
        # Airflow's connection lookup (secrets backends included); lazy: the CLI and the API
        # without PATIENT_ML_CONN_ID never import Airflow here. The same reading as the hook's
        # (patient_ml.hooks.product_db), which sits above this layer.
        from airflow.sdk import BaseHook

        return url_from_connection(conn_id, BaseHook.get_connection(conn_id))
    return settings.default_database_url()


def url_from_connection(conn_id: str, conn: AirflowConnection) -> str:
    """The SQLAlchemy URL an Airflow connection of type `patient_ml_db` names: the extra's
    `sqlalchemy_url`, a `sqlite` connection's file, or the PostgreSQL fields."""
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return normalize_url(str(extra["sqlalchemy_url"]))
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host or conn.schema}"
    if not conn.host:
        raise DatabaseError(
            f"Airflow connection {conn_id!r} has no host and no 'sqlalchemy_url' extra.",
            fix="set the PostgreSQL host/port/login/schema, or put a full SQLAlchemy URL in "
            "the extra as {'sqlalchemy_url': ...}",
        )
    url = URL.create(
        "postgresql+psycopg",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host,
        port=conn.port or 5432,
        database=conn.schema or None,
    )
    return url.render_as_string(hide_password=False)


def normalize_url(url: str) -> str:
    """Accept the URL spellings people use and pick the driver we ship (psycopg 3)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise DatabaseError(
            f"Product database URL {url!r} is not a valid SQLAlchemy URL.",
            fix="use e.g. 'postgresql://user@127.0.0.1:5432/patient_ml' or "
            "'sqlite:////absolute/path/patient_ml.db'",
        ) from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.split("+")[0] not in ("postgresql", "sqlite"):
        raise DatabaseError(
            f"Product database URL uses {parsed.drivername!r}; only PostgreSQL and SQLite are "
            "supported.",
            fix="point PATIENT_ML_DATABASE_URL at a PostgreSQL database or a SQLite file",
        )
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def get_engine(url: str | None = None, *, check_schema: bool = True) -> Engine:
    """A cached engine for `url` (resolved when None); checks the schema version once."""
    resolved = resolve_database_url(url)
    with _LOCK:
        engine = _ENGINES.get(resolved)
        if engine is None:
            engine = _create_engine(resolved)
            _ENGINES[resolved] = engine
    if check_schema and resolved not in _CHECKED:
        if stored_revision(engine) != HEAD_REVISION:
            from patient_ml.db.schema import check_schema_version  # imports Alembic: slow

            check_schema_version(engine)
        _CHECKED.add(resolved)
    return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, forked workers)."""
    with _LOCK:
        for engine in [*_ENGINES.values(), *_READERS.values()]:
            engine.dispose()
        _ENGINES.clear()
        _READERS.clear()
        _CHECKED.clear()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 10, "application_name": "patient-ml"},
    )


def _create_sqlite_engine(url: str, *, read_only: bool = False) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")  # WAL mode is the writer's to set
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: two writers wait for each other (busy_timeout)
        # instead of failing with "database is locked" when a read transaction upgrades to a
        # write. Readers begin deferred and, in WAL mode, read a snapshot without any lock.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def reader_of(engine: Engine) -> Engine:
    """The engine whose transactions only read the same database as `engine`.

    SQLite: a companion engine (its own pool) whose connections are `query_only` and begin
    deferred, so a reader takes no lock and, in WAL mode, never waits for a writer. An in-memory
    database cannot be shared by two pools, so there the writer engine itself is used.
    PostgreSQL: the same pool with `READ ONLY` transactions.
    """
    if engine.dialect.name != "sqlite":
        return engine.execution_options(postgresql_readonly=True)
    url = engine.url.render_as_string(hide_password=False)
    if engine.url.database in (None, "", ":memory:"):
        return engine
    with _LOCK:
        reader = _READERS.get(url)
        if reader is None:
            reader = _create_sqlite_engine(url, read_only=True)
            _READERS[url] = reader
    return reader


@contextmanager
def read_scope(engine: Engine | None = None) -> Iterator[Session]:
    """`session_scope` for work that only reads (a write in it fails and is rolled back)."""
    with session_scope(reader_of(engine or get_engine())) as session:
        yield session


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on any error.

    Driver errors become `ConflictError` (a constraint was violated, e.g. by a concurrent
    writer) or `DatabaseError` (cannot connect, locked, schema drift) with an explanation.
    """
    engine = engine or get_engine()
    # A plain Session: `sessionmaker(...)()` would build a new Session subclass per call, which
    # only the cyclic garbage collector frees (see `patient_ml.api.app`'s note on the GC).
    session = Session(bind=engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except PatientMLError:
        session.rollback()
        raise
    except sa_exc.SQLAlchemyError as exc:
        session.rollback()
        raise translate_error(exc, engine) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def translate_error(exc: sa_exc.SQLAlchemyError, engine: Engine) -> PatientMLError:
    where = redact(str(engine.url))
    original = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else repr(exc)
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(
            f"The product database refused the change: {original}.",
            fix="another change touched the same record at the same time or the value is "
            "already taken; reload and try again",
        )
    lowered = original.lower()
    if "readonly database" in lowered or "read-only transaction" in lowered:
        return DatabaseError(
            f"A read-only transaction on the product database {where} tried to write: {original}.",
            fix="this is a bug: report it; the change was rolled back and nothing was written",
        )
    if isinstance(exc, sa_exc.OperationalError):
        if "locked" in original.lower():
            return DatabaseError(
                f"The SQLite product database {where} stayed locked for 30 s: {original}.",
                fix="another process holds a long write; retry, or use PostgreSQL "
                "(PATIENT_ML_DATABASE_URL) when many workers write at once",
            )
        if "no such table" in original.lower() or "does not exist" in original.lower():
            return DatabaseError(
                f"The product database {where} lacks a table: {original}.",
                fix="run `patient-ml db upgrade`",
            )
        return DatabaseError(
            f"Cannot use the product database {where}: {original}.",
            fix="check that the database server is running and reachable and that "
            "PATIENT_ML_DATABASE_URL (or the Airflow connection) is right",
        )
    return DatabaseError(f"Product database error on {where}: {original}.")
