"""Duplicated keys in YAML and JSON documents (configs, REST bodies) are refused (issue 33).

YAML and JSON parsers keep the last of two equal keys in one mapping and say nothing, so a
config holding `name` twice was saved with a value its author may never have read. Both
documents are checked where they are parsed: every duplicated key becomes a FieldError naming
its wire path (`trainingApproach.metricDefinitions[1].name`), the lines (YAML) and the value
that would have won. YAML keys are compared as values (`id` and `'id'`, `1` and `0x1` are one
key); a merge key (`<<: *base`) may still be overridden, which is what it is for.

FHIR records are parsed by orjson, which has no hook: `has_duplicate_keys` tells from the text
and the parsed value whether a key was dropped, cheaply enough for every record.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import yaml
from yaml.constructor import SafeConstructor

from patient_ml.exceptions import FieldError

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _message(lines: str = "") -> str:
    where = f" ({lines})" if lines else ""
    return (
        f"appears twice in one mapping{where}; a parser would silently keep the last value: "
        "keep one of them"
    )


def yaml_duplicate_keys(root: yaml.Node) -> list[FieldError]:
    """Duplicated keys of a composed YAML document (each aliased node checked once)."""
    constructor = SafeConstructor()
    errors: list[FieldError] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = _key_value(constructor, key_node)
                where = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    shown = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
                    lines = f"lines {first_line[key]} and {line}"
                    errors.append(FieldError(where, _message(lines), shown))
                else:
                    first_line[key] = line
                stack.append((value_node, where))
    return sorted(errors, key=lambda e: e.field)


def _key_value(
    constructor: SafeConstructor, node: yaml.ScalarNode
) -> str | int | float | bool | tuple[str, str] | None:
    try:
        value = constructor.construct_object(node, deep=True)
    except yaml.YAMLError:
        return ("text", node.value)
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


class _Duplicated(dict[str, Any]):
    """A JSON object in which a key appeared more than once: `duplicates` holds the later
    (key, value) pairs that overwrote earlier ones."""

    duplicates: list[tuple[str, Any]]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    later: list[tuple[str, Any]] = []
    for key, value in pairs:
        if key in result:
            later.append((key, value))
        result[key] = value
    if not later:
        return result
    marked = _Duplicated(result)
    marked.duplicates = later
    return marked


def loads_json(text: str | bytes) -> object:
    """`json.loads`, marking objects with duplicated keys for `json_duplicate_keys`."""
    return json.loads(text, object_pairs_hook=_pairs)


def json_duplicate_keys(data: object) -> list[FieldError]:
    """Duplicated keys of a document parsed by `loads_json`, by wire path."""
    errors: list[FieldError] = []
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, later in getattr(value, "duplicates", ()):
                where = f"{path}.{key}" if path else str(key)
                shown = later if not isinstance(later, dict | list) else None
                errors.append(FieldError(where, _message(), shown))
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return sorted(errors, key=lambda e: e.field)


FAST_CHECK_BYTES = 1 << 20  # longer texts (inline images) are never copied to be compared
# A JSON string (escapes included); in valid JSON every ':' outside strings ends one key.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def has_duplicate_keys(text: bytes, parsed: object) -> bool:
    """Whether valid JSON `text`, parsed (last value winning) into `parsed`, held a key twice
    in one object. Text in compact canonical form (what exporters write) re-serialises to
    itself, which proves it has none (about a microsecond); other text has its keys counted,
    each ':' outside strings, against the keys parsed."""
    if len(text) <= FAST_CHECK_BYTES and orjson.dumps(parsed) == text:
        return False
    return _JSON_STRING.sub(b"", text).count(b":") != _key_count(parsed)


def _key_count(value: object) -> int:
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return count
