"""Rows that must exist (a foreign key points at them): an explicit error instead of `assert`,
which `python -O` strips."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

from patient_ml.exceptions import DatabaseError

T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """`value`, or DatabaseError saying that `what` is missing from the product DB."""
    if value is None:
        raise DatabaseError(
            f"The product DB has no {what}, although another row points at it.",
            fix="the database is inconsistent (a row deleted by hand?); restore it from a "
            "backup or run `patient-ml db upgrade` and retry",
        )
    return value


def required(session: Session, cls: type[T], key: object, *, of: str) -> T:
    """The `cls` row with primary key `key`, which `of` (e.g. "run 1234") refers to."""
    return present(session.get(cls, key), f"{cls.__name__.lower()} {key!r} of {of}")
