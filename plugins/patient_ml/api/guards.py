"""Checks of a request that no route should repeat, run before its handler.

PostgreSQL text cannot hold NUL (U+0000): an id in the path or a string in a JSON body with one
made the database fail, which the API answered as 503 ("database unavailable", so clients
retried). Such requests are refused with 422 naming each field instead, on SQLite too, so both
databases answer the same.

A JSON body holding one key twice in an object (issue 33) is refused with 422 naming each
duplicated field: JSON parsers keep the last value silently.

The same module bounds every request's inputs in one place (issue 16): a body above
MAX_CONFIG_BYTES is refused with 413 before it is parsed (`BodySizeLimit`); path parameters
and query strings longer than MAX_PARAM_LENGTH, or holding control or bidi characters, get
422; `run_id` must be a safe id and `example_id` a FHIR id (`patient_ml.config.identifiers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patient_ml.api.auth import CurrentUser
from patient_ml.config.duplicates import json_duplicate_keys, loads_json
from patient_ml.config.identifiers import ID_RULE, is_fhir_id, is_safe_id, text_problem
from patient_ml.config.limits import MAX_CONFIG_BYTES
from patient_ml.exceptions import ConfigValidationError, FieldError, PayloadTooLargeError

NUL = "\x00"
_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it"
MAX_PARAM_LENGTH = 2048  # a path parameter or query value (names are at most 128)
_PATH_ID_RULES = {
    "run_id": (is_safe_id, f"must be a run id: {ID_RULE}"),
    "example_id": (is_fhir_id, "must be a FHIR id: 1-64 ASCII letters, digits, '-' or '.'"),
}


async def refuse_nul_characters(request: Request, user: CurrentUser) -> None:
    """Router dependency: 422 for NUL in a path parameter or anywhere in a JSON body (keys
    included), and for a key that appears twice in one object of a JSON body. It depends on
    the user so that credentials are checked first."""
    errors = [
        FieldError(name, _MESSAGE, value)
        for name, value in request.path_params.items()
        if NUL in str(value)
    ]
    errors += _parameter_errors(request) if not errors else []
    raw = await request.body()  # Starlette caches it: the handler reads the same bytes
    if b"\\u0000" in raw:  # the only way JSON text carries NUL
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: FastAPI answers that itself
        errors += [FieldError(path, _MESSAGE, text[:200]) for path, text in _nul_strings(body)]
    errors += _duplicate_key_errors(raw) if not errors else []
    if errors:
        raise ConfigValidationError("request", errors)


def _duplicate_key_errors(raw: bytes) -> list[FieldError]:
    if raw.lstrip()[:1] not in (b"{", b"["):
        return []
    try:
        body = loads_json(raw)
    except (ValueError, RecursionError):
        return []  # not JSON: FastAPI answers that itself
    return json_duplicate_keys(body)


def _nul_strings(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(wire path, string) of every string holding NUL, keys included, in a JSON value."""
    if isinstance(value, str):
        if NUL in value:
            yield path or "(root)", value
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                yield where, str(key)
            yield from _nul_strings(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_strings(item, f"{path}[{index}]")


class BodySizeLimit:
    """ASGI middleware: a request body above `limit` bytes gets 413 before it is parsed,
    whether it declares its length or arrives in chunks (FastAPI reads the whole body before
    any dependency runs, so this cannot be a route dependency)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_CONFIG_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, int(declared))
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to the aborted read is replaced below
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            exceeded = True
        if exceeded and not started:
            await self._refuse(scope, receive, send, received)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        from patient_ml.api.errors import error_response

        error = _too_large(size)
        response = error_response(error.http_status, error.message, fix=error.fix)
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(size: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body holds more than {MAX_CONFIG_BYTES} bytes ({size} at least).",
        fix="a config or label is a few kB; check what is being sent",
    )


def _parameter_errors(request: Request) -> list[FieldError]:
    errors = []
    params = [(name, str(value)) for name, value in request.path_params.items()]
    params += [(f"query.{name}", value) for name, value in request.query_params.multi_items()]
    for name, value in params:
        if len(value) > MAX_PARAM_LENGTH:
            errors.append(FieldError(name, f"is longer than {MAX_PARAM_LENGTH} characters", value))
            continue
        problem = text_problem(value)
        if problem:
            errors.append(FieldError(name, problem, value))
            continue
        rule = _PATH_ID_RULES.get(name)
        if rule and not rule[0](value):
            errors.append(FieldError(name, rule[1], value))
    return errors
