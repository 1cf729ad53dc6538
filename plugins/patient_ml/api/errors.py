"""One JSON shape for every error the API returns, never a stack trace:

{"error": {"status": 422, "message": "...", "fix": "...",
           "errors": [{"field": "...", "message": "...", "value": ...}]}}
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from patient_ml.api.schemas import document_error_shape
from patient_ml.exceptions import (
    ConfigValidationError,
    InvalidInputError,
    PatientMLError,
    bounded_value,
)

log = logging.getLogger("patient_ml.api")

if TYPE_CHECKING:
    from pydantic import JsonValue


def error_response(
    status: int, message: str, *, fix: str | None = None, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if fix:
        body["fix"] = fix
    if errors:
        body["errors"] = errors
    return JSONResponse({"error": body}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    document_error_shape(app)  # the OpenAPI document tells this shape for every route

    @app.exception_handler(PatientMLError)
    async def product_error(request: Request, exc: PatientMLError) -> JSONResponse:
        errors = None
        if isinstance(exc, ConfigValidationError | InvalidInputError):
            errors = [e.as_dict() for e in exc.errors]
        return error_response(exc.http_status, exc.message, fix=exc.fix, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if malformed:
            return _malformed_json(malformed[0])
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "message": _json_safe(e.get("msg", "invalid")),
                "value": _json_safe(bounded_value(e.get("input"))),
            }
            for e in exc.errors()
        ]
        return error_response(422, "The request is not valid.", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "Internal error; nothing about it is shown here.",
            fix="read the Airflow API server's log for the traceback",
        )


def _malformed_json(error: dict[str, Any]) -> JSONResponse:
    """400 for a body that is not JSON at all (FastAPI reports it as a validation error whose
    location is the character offset, which would read as a field named "8")."""
    loc = [p for p in error.get("loc", ()) if p != "body"]
    at = loc[0] if loc and isinstance(loc[0], int) else None
    reason = str((error.get("ctx") or {}).get("error") or error.get("msg") or "JSON decode error")
    where = f" at character {at}" if at is not None else ""
    return error_response(
        400,
        f"The request body is not valid JSON: {reason}{where}.",
        fix="send one JSON object with Content-Type: application/json",
        errors=[{"field": "(body)", "message": f"{reason}{where}", "value": None}],
    )


def _json_safe(value: object) -> JsonValue:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)[:200]
