"""Plain-text tables and YAML/JSON documents for the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from patient_ml.config.identifiers import escape_controls

# Wire times (milliseconds since the epoch) that the YAML output shows as ISO 8601 UTC times:
# approval decisions' `timestamp` and a run's `approvalDeadline`. `--json` keeps the wire value.
READABLE_TIMES = ("timestamp", "approvalDeadline")


def print_document(doc: object, *, as_json: bool) -> None:
    """JSON escapes every non-ASCII character itself; YAML shows control and bidi characters
    of stored text as `\\uXXXX`, so a terminal never receives them raw."""
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        shown = _escaped(readable_times(doc))
        print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, width=100).rstrip())


def _escaped(value: object) -> object:
    if isinstance(value, str):
        return escape_controls(value, keep="\n\t")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def readable_times(doc: object) -> object:
    """`doc` with the READABLE_TIMES numbers as ISO times (`2026-11-29T13:08:25.123Z`)."""
    if isinstance(doc, dict):
        return {
            key: iso_millis(value)
            if key in READABLE_TIMES
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            else readable_times(value)
            for key, value in doc.items()
        }
    if isinstance(doc, list):
        return [readable_times(item) for item in doc]
    return doc


def iso_millis(millis: float) -> str:
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    if not rows:
        print(empty, file=sys.stderr)
        return
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return escape_controls(str(value))
