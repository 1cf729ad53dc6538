"""Plain-text tables and YAML/JSON documents for the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from patient_ml.config.identifiers import escape_controls


def print_document(doc: Any, *, as_json: bool) -> None:
    """JSON escapes every non-ASCII character itself; YAML shows control and bidi characters
    of stored text as `\\uXXXX`, so a terminal never receives them raw."""
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        safe = _escaped(doc)
        print(yaml.safe_dump(safe, sort_keys=False, allow_unicode=True, width=100).rstrip())


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape_controls(value, keep="\n\t")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    if not rows:
        print(empty, file=sys.stderr)
        return
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return escape_controls(str(value))
