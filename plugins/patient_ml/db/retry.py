"""Transient database errors retried with bounded backoff.

A PostgreSQL restart, a failover or a dropped connection makes every open connection fail at
once. A sweep's workers write to the database a dozen times a trial (claim, one value per
reported epoch, the end, the product's trial record); without a retry, a 10-30 s outage failed
every running tune task at once and cost each its Airflow retry. `retry_transient` runs a
write again, with waits of 0.5, 1, 2, 4, then 5 s, until it succeeds or the budget
(`PATIENT_ML_DB_RETRY_SECONDS`, default 60) is spent; errors that are not about the connection
(a constraint, a missing table, SQLite's lock that already waited 30 s) are raised at once.

What is retried must be safe to run twice: the product's trial record is an upsert, a trial's
reported value keeps the first one, and a trial's end that reached the database before the
connection died is recognised (`patient_ml.training.sweep.ClaimedTrial.finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from patient_ml.settings import env_number

log = logging.getLogger("patient_ml.db")

T = TypeVar("T")

DEFAULT_BUDGET_SECONDS = 60.0
_FIRST_WAIT, _LONGEST_WAIT = 0.5, 5.0
# driver messages of operational errors that waiting does not mend
_PERMANENT = ("locked", "no such table", "does not exist", "password authentication", "readonly")


def budget_seconds() -> float:
    """PATIENT_ML_DB_RETRY_SECONDS: how long a write waits for the database (0: no retry)."""
    return env_number("PATIENT_ML_DB_RETRY_SECONDS", DEFAULT_BUDGET_SECONDS, low=0, high=3600)


def is_transient(error: BaseException) -> bool:
    """True when `error`, or one it was raised from, says the connection to the database
    failed (the server went away, refused, or dropped it), not what was asked of it."""
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DisconnectionError):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
            type(current).__name__ in ("OperationalError", "InterfaceError")
            and type(current).__module__.split(".")[0] in ("psycopg", "psycopg2")
        ):
            message = str(getattr(current, "orig", current)).lower()
            return not any(word in message for word in _PERMANENT)
        current = current.__cause__ or current.__context__
    return False


def retry_transient(
    action: Callable[[], T],
    what: str,
    *,
    budget: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`action()`, run again while it fails with a transient database error and the budget
    (seconds; default `budget_seconds()`) lasts; each wait is logged with `what` was tried."""
    budget = budget_seconds() if budget is None else budget
    deadline = time.monotonic() + budget
    wait = _FIRST_WAIT
    while True:
        try:
            return action()
        except Exception as error:
            left = deadline - time.monotonic()
            if not is_transient(error) or left < wait:
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            log.warning(
                "%s: the database is unreachable (%s); trying again in %.1f s (%.0f s left)",
                what,
                first,
                wait,
                left,
            )
            sleep(wait)
            wait = min(2 * wait, _LONGEST_WAIT)
