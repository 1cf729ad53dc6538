"""URL resolution, session scope and error translation, append-only tables."""

from __future__ import annotations

import gc
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_ml.db.engine import (
    get_engine,
    normalize_url,
    read_scope,
    resolve_database_url,
    session_scope,
)
from patient_ml.db.models import AuditEvent, Dataset, SplitAssignment
from patient_ml.exceptions import ConflictError, DatabaseError
from patient_ml.services import audit


def test_url_resolution_order(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATIENT_ML_HOME", str(tmp_path))
    assert resolve_database_url() == f"sqlite:///{tmp_path / 'patient_ml.db'}"
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", "postgresql://u:p@db:5432/pml")
    assert resolve_database_url() == "postgresql+psycopg://u:p@db:5432/pml"
    assert resolve_database_url("sqlite:////x.db") == "sqlite:////x.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg2://h/db", "postgresql+psycopg2://h/db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://h/db", "not a url"])
def test_unsupported_urls_are_explained(url: str) -> None:
    with pytest.raises(DatabaseError) as info:
        normalize_url(url)
    assert "Fix:" in str(info.value)


def test_unreachable_server_is_explained() -> None:
    engine = get_engine("postgresql://nobody@127.0.0.1:1/none", check_schema=False)
    with pytest.raises(DatabaseError) as info, session_scope(engine) as session:
        session.execute(select(1))
    message = str(info.value)
    assert "Cannot use the product database" in message
    assert "PATIENT_ML_DATABASE_URL" in message


def _dataset(name: str) -> Dataset:
    return Dataset(
        name=name,
        problem_type="imgClf",
        problem_definition={},
        created_by="t",
    )


def test_session_scope_commits_or_rolls_back(engine) -> None:
    with session_scope(engine) as session:
        session.add(_dataset("kept"))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(_dataset("dropped"))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(engine) as session:
        names = session.scalars(select(Dataset.name)).all()
    assert names == ["kept"]


def test_sessions_are_plain_sessions_that_leave_no_garbage_cycles(engine) -> None:
    """A session per request must not build a Session subclass per call (sessionmaker(...)()
    does): a class lives in reference cycles that only the cyclic garbage collector frees, and
    those collections were the API's tail latency (benchmarks/api_load.py)."""

    def read_twice() -> None:
        for scope in (session_scope, read_scope):
            with scope(engine) as session:
                assert type(session) is Session
                session.scalars(select(Dataset.name)).all()

    read_twice()  # the first time builds the reader engine and caches the statement
    gc.collect()
    gc.disable()  # a class made per session would stay listed until a cyclic collection
    try:
        before = len(Session.__subclasses__())
        for _ in range(10):
            read_twice()
        # Counting the garbage a collection frees also counts what other threads of the test
        # process (servers, background index rebuilds) left meanwhile; the classes do not.
        assert len(Session.__subclasses__()) == before
    finally:
        gc.enable()


def test_integrity_errors_become_conflicts(engine) -> None:
    with session_scope(engine) as session:
        session.add(_dataset("same"))
    with pytest.raises(ConflictError) as info, session_scope(engine) as session:
        session.add(_dataset("same"))
    assert "refused the change" in str(info.value)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 1


def test_append_only_rows_cannot_change(engine) -> None:
    with session_scope(engine) as session:
        event = audit.record(session, actor="a", action="x", entity_type="t", entity_id="1")
    with pytest.raises(RuntimeError, match="append-only"), session_scope(engine) as session:
        stored = session.get(AuditEvent, event.id)
        stored.actor = "someone else"
    with pytest.raises(RuntimeError, match="append-only"), session_scope(engine) as session:
        session.delete(session.get(AuditEvent, event.id))
    with session_scope(engine) as session:
        assert session.get(AuditEvent, event.id).actor == "a"


def test_an_append_only_row_without_an_id_column_is_refused_by_its_key(engine) -> None:
    with session_scope(engine) as session:
        dataset = _dataset("kept")
        session.add(dataset)
        session.flush()
        key = (dataset.id, "patient", "p1")
        session.add(SplitAssignment(dataset_id=key[0], key_kind=key[1], key=key[2], split="test"))
    message = f"append-only; record a new row instead of changing row {', '.join(key)}"
    with pytest.raises(RuntimeError, match=message), session_scope(engine) as session:
        session.get(SplitAssignment, key).split = "train"
    with session_scope(engine) as session:
        assert session.get(SplitAssignment, key).split == "test"


def _dataset_count(engine) -> int:
    with read_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Dataset))


def test_reads_do_not_wait_for_a_writer_holding_the_lock(db_url: str) -> None:
    """A writer in another connection holds the write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL:
    an open write transaction); a read-only transaction answers at once with the committed
    state, where a write transaction on SQLite would queue for up to 30 s."""
    engine = get_engine(db_url)
    before = _dataset_count(engine)
    writer = engine.connect()
    try:
        # SQLite: the first statement begins the writer's transaction with BEGIN IMMEDIATE.
        writer.exec_driver_sql("SELECT 1")
        if engine.dialect.name != "sqlite":
            writer.exec_driver_sql("LOCK TABLE pml_datasets IN EXCLUSIVE MODE")
        started = time.monotonic()
        assert _dataset_count(engine) == before
        assert time.monotonic() - started < 1.0
    finally:
        writer.rollback()
        writer.close()


def test_a_write_in_a_read_scope_is_refused_and_rolled_back(db_url: str) -> None:
    engine = get_engine(db_url)
    with pytest.raises(DatabaseError) as info, read_scope(engine) as session:
        audit.record(session, actor="t", action="x.test", entity_type="x", entity_id="1")
        session.flush()
    assert "read-only transaction" in str(info.value)
    with read_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
