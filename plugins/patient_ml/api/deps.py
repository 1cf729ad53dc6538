"""Request-scoped access to the product DB (the package's resolution: PATIENT_ML_DATABASE_URL,
PATIENT_ML_CONN_ID or SQLite under PATIENT_ML_HOME, as for the CLI and the operators)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends


def product_engine() -> Any:
    from patient_ml.db.engine import get_engine

    return get_engine()


def product_session() -> Iterator[Any]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    from patient_ml.db.engine import session_scope

    with session_scope(product_engine()) as session:
        yield session


Session = Annotated[Any, Depends(product_session)]
Engine = Annotated[Any, Depends(product_engine)]
