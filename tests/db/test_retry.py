"""Which database errors are waited out (the connection failed) and which are raised at once
(what was asked failed); the wait is bounded. The real outage:
tests/training/test_sweep_outage.py."""

from __future__ import annotations

import pytest
from optuna.exceptions import StorageInternalError
from sqlalchemy import exc as sa_exc

from patient_ml.db.retry import is_transient, retry_transient


def _operational(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception(message))


def _chained(outer: Exception, cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:
            raise outer from inner
    except Exception as error:
        return error


def test_connection_failures_are_transient_and_requests_are_not() -> None:
    assert is_transient(_operational("server closed the connection unexpectedly"))
    assert is_transient(_operational("connection refused"))
    assert is_transient(sa_exc.DisconnectionError("stale pooled connection"))
    # Optuna wraps the driver's error in its own
    assert is_transient(_chained(StorageInternalError("boom"), _operational("terminated")))
    assert not is_transient(_operational("database is locked"))  # SQLite already waited
    assert not is_transient(_operational('relation "pml_runs" does not exist'))
    assert not is_transient(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_transient(ValueError("not a database error"))


def test_the_wait_is_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise _operational("connection refused")
        return "written"

    assert retry_transient(flaky, "a write", budget=60, sleep=waits.append) == "written"
    assert waits == [0.5, 1.0, 2.0] and "a write: the database is unreachable" in caplog.text

    def down() -> None:
        raise _operational("connection refused")

    with pytest.raises(sa_exc.OperationalError):
        retry_transient(down, "a write", budget=0, sleep=waits.append)  # no budget: no wait
    with pytest.raises(sa_exc.IntegrityError):  # never waited for
        retry_transient(
            lambda: (_ for _ in ()).throw(sa_exc.IntegrityError("I", {}, Exception("dup"))),
            "a write",
            sleep=pytest.fail,
        )
