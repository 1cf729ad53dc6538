"""The stored configs (datasets and models) in one repository: create, update, read, list and
delete, with an audit event per change. The rules of one kind (a model's dataset resolved, a
dataset in use kept, label indices never reused, ...) are the hooks its subclass fills in
(`patient_ml.services.datasets`, `patient_ml.services.models`)."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.config import reference
from patient_ml.config.models import DatasetConfig, ModelConfig
from patient_ml.db.models import Dataset, Model, utcnow
from patient_ml.exceptions import ConfigValidationError, ConflictError, FieldError
from patient_ml.services import audit
from patient_ml.services.common import get_by_id_or_name

RowT = TypeVar("RowT", Dataset, Model)
ConfigT = TypeVar("ConfigT", DatasetConfig, ModelConfig)


class ConfigRepository(ABC, Generic[RowT, ConfigT]):
    """Create/update/read/delete for one kind of stored config.

    `row` is the ORM class, `kind` the audit entity type and the noun in messages ("dataset",
    "model"), `parse` turns a raw dict into the config model (raising the field-level 422),
    `to_wire` is the wire shape written to the audit trail, `reference_input` the reference
    SDK's input model and `reference_fields` the wire fields it reads (checked with
    PATIENT_ML_REFERENCE_STRICT=1)."""

    def __init__(
        self,
        *,
        row: type[RowT],
        kind: str,
        parse: Callable[[dict[str, Any]], ConfigT],
        to_wire: Callable[[RowT], dict[str, Any]],
        reference_input: str,
        reference_fields: tuple[str, ...],
    ) -> None:
        self.row: type[RowT] = row
        self.kind = kind
        self.parse: Callable[[dict[str, Any]], ConfigT] = parse
        self.to_wire: Callable[[RowT], dict[str, Any]] = to_wire
        self.reference_input = reference_input
        self.reference_fields = reference_fields

    # ------------------------------------------------------------------------- hooks

    def check(
        self, session: Session, cfg: ConfigT, stored: RowT | None, errors: list[FieldError]
    ) -> dict[str, Any]:
        """The kind's rules for `cfg` (replacing `stored`, None on create): a FieldError
        appended per broken rule; returns the column values the checks resolved."""
        return {}

    @abstractmethod
    def columns(self, cfg: ConfigT, stored: RowT | None) -> dict[str, Any]:
        """The column values `cfg` stores (besides those `check` resolved); may raise a
        ConfigValidationError for rules that need the stored row."""

    @abstractmethod
    def refuse_taken_name(self, session: Session, cfg: ConfigT, own_id: str | None) -> None:
        """Raise a ConflictError when another config of this kind holds `cfg`'s name."""

    def refuse_delete(self, session: Session, stored: RowT) -> None:
        """Raise a ConflictError when `stored` may not be deleted (something depends on it)."""

    # ------------------------------------------------------------------------- operations

    def create(self, session: Session, data: dict[str, Any], *, actor: str) -> RowT:
        cfg = self._parsed(data)
        resolved = self._checked(session, cfg, None)
        if cfg.id is not None and session.get(self.row, cfg.id) is not None:
            raise ConflictError(
                f"A {self.kind} with id {cfg.id!r} already exists.",
                fix=f"leave 'id' out to get a new one, or update that {self.kind}",
            )
        self.refuse_taken_name(session, cfg, None)
        stored = self.row(
            id=cfg.id or str(uuid.uuid4()),
            **{**self.columns(cfg, None), **resolved},  # what `check` resolved wins
            created_by=actor,
        )
        session.add(stored)
        session.flush()
        self._audit(session, "create", stored, actor=actor, after=self.to_wire(stored))
        return stored

    def update(self, session: Session, ref: str, data: dict[str, Any], *, actor: str) -> RowT:
        """Replace a config (PUT semantics); what the kind keeps (label indices, the champion)
        is kept by its hooks."""
        stored = self.get(session, ref)
        cfg = self._parsed(data)
        resolved = self._checked(session, cfg, stored)
        self.refuse_taken_name(session, cfg, stored.id)
        before = self.to_wire(stored)
        for name, value in {**self.columns(cfg, stored), **resolved}.items():
            setattr(stored, name, value)
        stored.revision += 1
        stored.updated_at = utcnow()
        session.flush()
        after = self.to_wire(stored)
        self._audit(session, "update", stored, actor=actor, before=before, after=after)
        return stored

    def get(self, session: Session, ref: str) -> RowT:
        """The config with id or name `ref` (NotFoundError, 404, when none has it)."""
        return get_by_id_or_name(session, self.row, ref)

    def list(self, session: Session) -> list[RowT]:
        row = self.row
        return list(session.scalars(select(row).order_by(row.created_at, row.name)))

    def delete(self, session: Session, ref: str, *, actor: str) -> str:
        stored = self.get(session, ref)
        self.refuse_delete(session, stored)
        before = self.to_wire(stored)
        session.delete(stored)
        session.flush()
        self._audit(session, "delete", stored, actor=actor, before=before)
        return stored.id

    # ------------------------------------------------------------------------- plumbing

    def _parsed(self, data: dict[str, Any]) -> ConfigT:
        cfg = self.parse(data)
        if reference.strict():
            wire = cfg.to_wire()
            reference_wire = {name: wire.get(name) for name in self.reference_fields}
            reference.check_strict(self.reference_input, reference_wire, f"{self.kind} config")
        return cfg

    def _checked(self, session: Session, cfg: ConfigT, stored: RowT | None) -> dict[str, Any]:
        errors: list[FieldError] = []
        if stored is not None and cfg.id is not None and cfg.id != stored.id:
            errors.append(
                FieldError(
                    "id", f"does not match the {self.kind} being updated ({stored.id})", cfg.id
                )
            )
        resolved = self.check(session, cfg, stored, errors)
        if errors:
            raise ConfigValidationError(f"{self.kind} config", errors)
        return resolved

    def _audit(
        self,
        session: Session,
        action: str,
        stored: RowT,
        *,
        actor: str,
        **states: dict[str, Any] | None,
    ) -> None:
        audit.record(
            session,
            actor=actor,
            action=f"{self.kind}.{action}",
            entity_type=self.kind,
            entity_id=stored.id,
            **states,
        )
