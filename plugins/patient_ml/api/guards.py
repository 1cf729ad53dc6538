"""Checks of a request that no route should repeat, run before its handler.

PostgreSQL text cannot hold NUL (U+0000): an id in the path or a string in a JSON body with one
made the database fail, which the API answered as 503 ("database unavailable", so clients
retried). Such requests are refused with 422 naming each field instead, on SQLite too, so both
databases answer the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from patient_ml.api.auth import CurrentUser
from patient_ml.exceptions import ConfigValidationError, FieldError

NUL = "\x00"
_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it"


async def refuse_nul_characters(request: Request, user: CurrentUser) -> None:
    """Router dependency: 422 for NUL in a path parameter or anywhere in a JSON body (keys
    included). It depends on the user so that credentials are checked first."""
    errors = [
        FieldError(name, _MESSAGE, value)
        for name, value in request.path_params.items()
        if NUL in str(value)
    ]
    raw = await request.body()  # Starlette caches it: the handler reads the same bytes
    if b"\\u0000" in raw:  # the only way JSON text carries NUL
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: FastAPI answers that itself
        errors += [FieldError(path, _MESSAGE, text[:200]) for path, text in _nul_strings(body)]
    if errors:
        raise ConfigValidationError("request", errors)


def _nul_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
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
