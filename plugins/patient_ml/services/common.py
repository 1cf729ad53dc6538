"""Helpers shared by the services: look-ups by id or name, wire timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.config.identifiers import normalized_name
from patient_ml.db.models import Dataset, Model
from patient_ml.exceptions import NotFoundError

NamedT = TypeVar("NamedT", Dataset, Model)


def find_by_id_or_name(session: Session, cls: type[NamedT], ref: str) -> NamedT | None:
    found = session.get(cls, ref)
    if found is None:  # names are stored in NFC: an NFD spelling finds the same one
        name = normalized_name(ref)
        found = session.scalars(select(cls).where(cls.name == name)).one_or_none()
    return found


def get_by_id_or_name(session: Session, cls: type[NamedT], ref: str) -> NamedT:
    found = find_by_id_or_name(session, cls, ref)
    if found is None:
        noun = "dataset" if cls is Dataset else "model"
        raise NotFoundError(
            f"No {noun} has the id or name {ref!r}.",
            fix=f"list them with `patient-ml {noun}s list`",
        )
    return found


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime (SQLite hands back naive UTC)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def to_millis(moment: datetime | None) -> int | None:
    """Wire timestamps are milliseconds since the UTC epoch, as in the reference API."""
    moment = as_utc(moment)
    return None if moment is None else int(moment.timestamp() * 1000)
