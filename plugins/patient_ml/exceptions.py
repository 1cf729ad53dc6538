"""One exception hierarchy for the whole package.

Every error a user can see names the field (or object), the value and the fix. The CLI maps
each class to an exit code and the REST API (later) to an HTTP status, so both stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PatientMLError(Exception):
    """Base class of every error raised on purpose by patient_ml."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a config: where, what was given, what is wrong."""

    field: str
    message: str
    value: object = None

    def __str__(self) -> str:
        shown = _short_repr(self.value)
        return f"{self.field}: {self.message}" + (f" (got {shown})" if shown is not None else "")

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message, "value": bounded_value(self.value)}


MAX_SHOWN_VALUE = 200  # characters of a refused value echoed back (API bodies, CLI --json)


def bounded_value(value: object) -> object:
    """A refused value as echoed in an error: scalars as given, long text cut to
    MAX_SHOWN_VALUE characters, containers as a shortened repr (never a whole document)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_SHOWN_VALUE else value[: MAX_SHOWN_VALUE - 3] + "..."
    if isinstance(value, dict | list | tuple | set | bytes):
        return _short_repr(value, MAX_SHOWN_VALUE)
    return value


def _short_repr(value: object, limit: int = 80) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # repr of a huge string costs its full size
    text = reprlib_repr(value) if isinstance(value, dict | list | tuple | set) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reprlib_repr(value: object) -> str:
    """repr of a container that stops early (an alias-expanded YAML tree can be huge)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 3, 10, 10, 80
    return short.repr(value)


class ConfigValidationError(PatientMLError):
    """A dataset or model config was refused; `errors` holds one entry per bad field."""

    exit_code = 3
    http_status = 422

    def __init__(self, kind: str, errors: list[FieldError]) -> None:
        self.kind = kind
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"Invalid {kind} ({len(errors)} {noun}); nothing was saved:\n{lines}")


class InvalidInputError(PatientMLError):
    """A request other than a config (a label, a mask, a filter, a marker) was refused;
    `errors` holds one entry per bad field."""

    exit_code = 3
    http_status = 422

    def __init__(self, message: str, errors: list[FieldError], *, fix: str | None = None) -> None:
        self.errors = errors
        super().__init__(message, fix=fix)


class ConfigFileError(PatientMLError):
    """A config file could not be read or parsed (missing, not YAML/JSON, not a mapping)."""

    exit_code = 3
    http_status = 400


class PayloadTooLargeError(ConfigFileError):
    """A config file or request body above the size limit (MAX_CONFIG_BYTES)."""

    http_status = 413


class NotFoundError(PatientMLError):
    exit_code = 4
    http_status = 404


class ConflictError(PatientMLError):
    """The request contradicts stored state (duplicate name, immutable field, decided run)."""

    exit_code = 5
    http_status = 409


class DatabaseError(PatientMLError):
    """The product database failed; the message explains the likely cause."""

    exit_code = 1
    http_status = 503


class SchemaVersionError(DatabaseError):
    """The product database schema is missing, older or newer than this package expects."""

    exit_code = 6


class PermissionDeniedError(PatientMLError):
    """The user may not do this (e.g. decide on a run without being one of its approvers)."""

    exit_code = 7
    http_status = 403
