"""What the reference SDK (`phc`, `phc/services/patient_ml.py`) can read and send.

`reference_schema.json` next to this module is the JSON Schema of the SDK's own pydantic models
(generated from the release named in its `$comment` by `tests/e2e/reference_client_driver.py
schema`; the end-to-end test checks it is still what that release produces). With it:

- `problems(kind, wire)` lists, field by field, why the SDK would refuse an object
  (`ModelConfig`, `DatasetConfig`, `ModelRun`, `ModelConfigInput`, `DatasetConfigInput`, ...):
  an image name outside its AWS ECR pattern, more than 30 `maxTrials`, more than 10 filter
  codes, a field it forbids;
- `project(kind, wire)` keeps only the top-level fields of an object the SDK forbids extras on
  (a ModelRun, a prediction) — the reference view of the REST API;
- `strict()` is `PATIENT_ML_REFERENCE_STRICT=1`: configs the SDK could not read are refused when
  they are created or updated (`check_strict`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from patient_ml.exceptions import ConfigValidationError, FieldError
from patient_ml.settings import setting

SCHEMA_FILE = Path(__file__).with_name("reference_schema.json")
STRICT_ENV = "PATIENT_ML_REFERENCE_STRICT"
ECR_FORM = "<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>"


@cache
def schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text()))


def sdk_release() -> str:
    """`phc==1.6.0`: the release the schema was generated from."""
    comment = str(schema().get("$comment", ""))
    start = comment.find("phc==")
    return comment[start:].split(",")[0] if start >= 0 else "phc"


class _SchemaError(Protocol):
    """What is read of a `jsonschema.ValidationError` (jsonschema ships no types)."""

    validator: str
    validator_value: object
    instance: Any  # the JSON value that failed, as the document holds it
    schema: dict[str, Any]
    message: str
    context: list[_SchemaError]
    schema_path: Sequence[str | int]
    absolute_path: Sequence[str | int]


class _SchemaValidator(Protocol):
    def iter_errors(self, instance: object) -> Iterator[_SchemaError]: ...


@cache
def _validator(kind: str) -> _SchemaValidator:
    from jsonschema import Draft202012Validator

    defs = schema()["$defs"]
    if kind not in defs:
        raise KeyError(f"the reference schema has no {kind!r}")
    validator: _SchemaValidator = Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{kind}"})
    return validator


def strict() -> bool:
    return (setting(STRICT_ENV) or "").strip().lower() in ("1", "true", "yes", "on")


def problems(kind: str, wire: object) -> list[FieldError]:
    """Why the reference SDK's `kind` model would refuse `wire` (empty: it reads it)."""
    found: dict[str, FieldError] = {}
    for error in _validator(kind).iter_errors(wire):
        for leaf in _leaves(error):
            problem = _field_error(leaf)
            found.setdefault(problem.field, problem)
    return sorted(found.values(), key=lambda p: p.field)


def _leaves(error: _SchemaError) -> list[_SchemaError]:
    """The errors that explain `error`: for a union (anyOf), those of the member the value was
    meant to be (the one whose `type`/`problemType`/`actor`/... constant matched)."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    branches: dict[str | int, list[_SchemaError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    meant = [
        subs for subs in branches.values() if not any(s.validator == "const" for s in subs)
    ] or list(branches.values())
    best = min(meant, key=len)
    return [leaf for sub in best for leaf in _leaves(sub)]


def _path(error: _SchemaError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def _field_error(error: _SchemaError) -> FieldError:
    field, value, rule = _path(error), error.instance, error.validator_value
    sdk = sdk_release()
    if error.validator == "pattern" and "dkr" in str(rule):
        message = (
            f"is not an AWS ECR image name, the only form {sdk} reads; use "
            f"{ECR_FORM} and map it to an image or trainer you have (Docker: docker tag; "
            "local backend: PATIENT_ML_LOCAL_TRAINERS)"
        )
    elif error.validator in ("maximum", "minimum"):
        bound = "at most" if error.validator == "maximum" else "at least"
        message = f"must be {bound} {rule} for {sdk}; change it to fit"
    elif error.validator in ("maxItems", "minItems"):
        bound = "at most" if error.validator == "maxItems" else "at least"
        message = f"must have {bound} {rule} items for {sdk}"
        value = len(value) if isinstance(value, list) else value
    elif error.validator == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        message = f"has field(s) {', '.join(extra)} that {sdk} does not allow here"
        value = None
    elif error.validator == "required":
        message = f"misses a field {sdk} requires: {error.message.split(' is a ')[0]}"
        value = None
    else:
        message = f"is not readable by {sdk}: {error.message}"
    return FieldError(field, message, value if not isinstance(value, dict | list) else None)


def project(kind: str, wire: dict[str, Any]) -> dict[str, Any]:
    """`wire` with only the top-level fields the reference `kind` declares."""
    allowed = schema()["$defs"][kind].get("properties", {})
    return {k: v for k, v in wire.items() if k in allowed}


def check_strict(kind: str, wire: dict[str, Any], what: str) -> None:
    """With PATIENT_ML_REFERENCE_STRICT on, refuse (as an invalid config, HTTP 422) a config
    the reference SDK could not read back."""
    if not strict():
        return
    found = problems(kind, wire)
    if found:
        raise ConfigValidationError(
            what, [FieldError(p.field, f"{p.message} ({STRICT_ENV}=1)", p.value) for p in found]
        )
