"""Read configs from YAML/JSON files or mappings and validate them in two passes: structure
(pydantic) then cross-field rules. Every problem becomes a FieldError with a wire path."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from patient_ml.config import models as config_models
from patient_ml.config.models import DatasetConfig, ModelConfig, WireModel
from patient_ml.config.rules import check_dataset_config, check_model_config
from patient_ml.exceptions import ConfigFileError, ConfigValidationError, FieldError

T = TypeVar("T", bound=WireModel)

_UNION_TAGS = {"categorical", "continuous", "integer"}
# Fields the service adds to responses; accepted and ignored on input so a config fetched with
# `show` (or a reference client's GET) can be edited and sent back unchanged.
READ_ONLY_FIELDS = frozenset({"accountId", "slug", "dagId", "revision", "createdAt", "updatedAt"})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML or JSON file holding a single config mapping."""
    file = Path(path)
    shown = str(file) if len(str(file)) <= 200 else str(file)[:197] + "..."
    try:
        if not file.is_file():
            raise ConfigFileError(f"Config file {shown!r} does not exist.", fix="check the path")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(
            f"Config file {shown!r} cannot be read: {exc.strerror or exc}.",
            fix="check the path and its permissions",
        ) from None
    except UnicodeDecodeError:
        raise ConfigFileError(
            f"Config file {shown!r} is not UTF-8 text.", fix="save it as UTF-8 YAML or JSON"
        ) from None
    is_json = file.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(
            f"Config file {str(file)!r} is not valid {'JSON' if is_json else 'YAML'}: {exc}",
            fix="fix the syntax at the position shown",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"Config file {str(file)!r} holds a {type(data).__name__}, not a mapping of fields.",
            fix="write the config as 'name: ...', 'description: ...' at the top level",
        )
    return data


def parse_dataset_config(data: dict[str, Any]) -> DatasetConfig:
    return _parse(DatasetConfig, "dataset config", data, check_dataset_config)


def parse_model_config(data: dict[str, Any]) -> ModelConfig:
    return _parse(ModelConfig, "model config", data, check_model_config)


def _parse(cls: type[T], kind: str, data: Any, rules: Any) -> T:
    if not isinstance(data, dict):
        raise ConfigValidationError(
            kind, [FieldError("(root)", "must be an object of fields", type(data).__name__)]
        )
    data = {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
    try:
        cfg = cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigValidationError(kind, pydantic_field_errors(exc)) from None
    errors = rules(cfg)
    if errors:
        raise ConfigValidationError(kind, errors)
    return cfg


def pydantic_field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into FieldErrors with wire paths and actionable wording."""
    result = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if part not in _UNION_TAGS]
        field = _format_loc(loc)
        kind = err["type"]
        value = err.get("input")
        if kind == "missing":
            message = "is required; add it"
            value = None
        elif kind == "extra_forbidden":
            name = str(loc[-1]) if loc else ""
            guess = difflib.get_close_matches(name, _known_field_names(), n=1, cutoff=0.75)
            hint = f"did you mean '{guess[0]}'?" if guess else "remove it"
            message = f"is not a known field; {hint}"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            message = f"has type {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}"
            field = f"{field}.type"
            value = ctx.get("tag")
        elif kind == "too_short" and err.get("ctx", {}).get("actual_length") == 0:
            message = "must not be empty; list at least one entry"
            value = None
        elif kind == "union_tag_not_found":
            message = "needs a 'type' (categorical, continuous or integer)"
            field = f"{field}.type"
            value = None
        else:
            message = err["msg"].replace("Input should be", "must be").replace("Value error, ", "")
        if isinstance(value, dict | list) and kind != "extra_forbidden":
            value = None  # do not echo whole sub-documents back
        result.append(FieldError(field or "(root)", message, value))
    return result


def _format_loc(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_FIELD_NAMES: list[str] = []


def _known_field_names() -> list[str]:
    if not _FIELD_NAMES:
        names: set[str] = set()
        for obj in vars(config_models).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
                for name, info in obj.model_fields.items():
                    names.add(info.alias or name)
        _FIELD_NAMES.extend(sorted(names))
    return _FIELD_NAMES
