"""Request-scoped access to the product DB (the package's resolution: PATIENT_ML_DATABASE_URL,
PATIENT_ML_CONN_ID or SQLite under PATIENT_ML_HOME, as for the CLI and the operators)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import sqlalchemy.orm
from fastapi import Depends, Request

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def product_engine() -> sqlalchemy.Engine:
    from patient_ml.db.engine import get_engine

    return get_engine()


def product_session(request: Request) -> Iterator[sqlalchemy.orm.Session]:
    """One transaction per request: committed when the handler returns, rolled back on error.

    Requests that only read (GET, HEAD) get a read-only transaction, so they never queue
    behind a writer's lock (SQLite) and cannot write by mistake."""
    from patient_ml.db.engine import read_scope, session_scope

    scope = read_scope if request.method in READ_METHODS else session_scope
    with scope(product_engine()) as session:
        yield session


Session = Annotated[sqlalchemy.orm.Session, Depends(product_session)]
Engine = Annotated[sqlalchemy.Engine, Depends(product_engine)]
