"""Read configs from YAML/JSON files or mappings and validate them in two passes: structure
(pydantic) then cross-field rules. Every problem becomes a FieldError with a wire path."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from patient_ml.config import models as config_models
from patient_ml.config.duplicates import json_duplicate_keys, loads_json, yaml_duplicate_keys
from patient_ml.config.identifiers import shorten
from patient_ml.config.limits import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_NODES
from patient_ml.config.models import DatasetConfig, ModelConfig
from patient_ml.config.rules import check_dataset_config, check_model_config
from patient_ml.config.wire import WireModel
from patient_ml.exceptions import ConfigFileError, ConfigValidationError, FieldError

T = TypeVar("T", bound=WireModel)

_UNION_TAGS = {"categorical", "continuous", "integer"}
# Fields the service adds to responses; accepted and ignored on input so a config fetched with
# `show` (or a reference client's GET) can be edited and sent back unchanged.
READ_ONLY_FIELDS = frozenset({"accountId", "slug", "dagId", "revision", "createdAt", "updatedAt"})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML or JSON file holding a single config mapping (at most MAX_CONFIG_BYTES,
    MAX_CONFIG_NODES values after YAML aliases are expanded, MAX_CONFIG_DEPTH levels)."""
    file = Path(path)
    shown = shorten(file, 200)
    try:
        if not file.is_file():
            raise ConfigFileError(f"Config file {shown!r} does not exist.", fix="check the path")
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigFileError(
                f"Config file {shown!r} holds {size} bytes, more than the limit of "
                f"{MAX_CONFIG_BYTES}.",
                fix="a config is a few kB; check that this is the right file",
            )
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)  # the file may grow after stat()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigFileError(
                f"Config file {shown!r} holds more than {MAX_CONFIG_BYTES} bytes.",
                fix="a config is a few kB; check that this is the right file",
            )
        text = raw.decode("utf-8")
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
    data = parse_config_text(text, is_json=is_json, where=f"Config file {shown!r}")
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"Config file {shown!r} holds a {type(data).__name__}, not a mapping of fields.",
            fix="write the config as 'name: ...', 'description: ...' at the top level",
        )
    return data


def parse_config_text(text: str, *, is_json: bool, where: str = "The config") -> object:
    """JSON or YAML text → Python values, refusing documents above the config limits before
    anything is expanded (a YAML alias bomb is refused while it is still a few hundred bytes)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigFileError(
            f"{where} holds more than {MAX_CONFIG_BYTES} bytes.",
            fix="a config is a few kB; check that this is the right document",
        )
    try:
        if is_json:
            data = loads_json(text)
            _check_shape(data, where)
            _refuse_duplicates(json_duplicate_keys(data))
            return data
        return _load_yaml(text, where)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        message = shorten(exc, 300)
        raise ConfigFileError(
            f"{where} is not valid {'JSON' if is_json else 'YAML'}: {message}",
            fix="fix the syntax at the position shown",
        ) from None
    except RecursionError:
        raise _too_deep(where) from None


def _load_yaml(text: str, where: str) -> object:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_nodes(node, where)
        _refuse_duplicates(yaml_duplicate_keys(node))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicates(errors: list[FieldError]) -> None:
    if errors:
        raise ConfigValidationError("config", errors)


def _count_nodes(root: yaml.Node, where: str) -> None:
    """Values of a composed YAML document with every alias expanded, counted without
    expanding them (an alias is the same node object; sizes are memoised per node)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_CONFIG_DEPTH or key in on_path:
            raise _too_deep(where)
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            on_path.add(key)
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_CONFIG_NODES:
                    raise _too_many(where)
            on_path.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _check_shape(data: object, where: str) -> None:
    """The same node and depth limits for an already parsed (JSON) document."""
    count = 0
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise _too_many(where)
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(where)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for pair in value.items() for v in pair)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _too_many(where: str) -> ConfigFileError:
    return ConfigFileError(
        f"{where} holds more than {MAX_CONFIG_NODES} values once YAML aliases are expanded.",
        fix="write the config out without deeply repeated aliases (&anchor / *alias)",
    )


def _too_deep(where: str) -> ConfigFileError:
    return ConfigFileError(
        f"{where} nests values more than {MAX_CONFIG_DEPTH} levels deep (or an alias refers "
        "to itself).",
        fix="a config nests a few levels; check the document",
    )


def parse_dataset_config(data: dict[str, Any]) -> DatasetConfig:
    return _parse(DatasetConfig, "dataset config", data, check_dataset_config)


def parse_model_config(data: dict[str, Any]) -> ModelConfig:
    return _parse(ModelConfig, "model config", data, check_model_config)


def _parse(cls: type[T], kind: str, data: object, rules: Callable[[T], list[FieldError]]) -> T:
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
