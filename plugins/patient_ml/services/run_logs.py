"""A run's logs as the reference API serves them: merged, sorted, filtered, paged.

The events come from the run's log objects in the artifact store (`patient_ml.log_records`:
one object per training trial, one for the evaluation). They are sorted by (timestamp, stage,
source, sequence), a total order that does not change when more objects or lines arrive later,
so a page marker can name "the last event returned" and the next page starts strictly after
it: no event is returned twice or skipped while paging, even as the run keeps logging.

A marker is opaque to clients: base64url of a small JSON naming that last event.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from patient_ml.log_records import decode, run_logs_prefix, stage_and_source
from patient_ml.services.log_filter import LogQueryError, parse_filter
from patient_ml.storage import ArtifactNotFoundError, ArtifactStore

log = logging.getLogger("patient_ml.services")

MAX_LIMIT = 10_000
MARKER_VERSION = 1

Position = tuple[float, str, str, int]  # (timestamp ms, stage, source, sequence)


@dataclass(frozen=True, order=True)
class LogEvent:
    timestamp: float  # ms since the Unix epoch
    stage: str
    source: str  # the log object, e.g. training/trial-3
    sequence: int  # the line's index in its object
    payload: str = field(compare=False)

    @property
    def position(self) -> Position:
        return (self.timestamp, self.stage, self.source, self.sequence)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "logEntry",
            "timestamp": self.timestamp,
            "payload": self.payload,
            "stage": self.stage,
        }


def read_events(store: ArtifactStore, run_id: str) -> list[LogEvent]:
    """Every well-formed event of the run's log objects, sorted. A missing object (deleted
    while listing) or a torn line is skipped, never an error."""
    prefix = run_logs_prefix(run_id)
    events: list[LogEvent] = []
    for key in store.list_keys(prefix):
        named = stage_and_source(prefix, key)
        if named is None:
            continue
        stage, source = named
        try:
            data = store.read_bytes(key)
        except ArtifactNotFoundError:
            log.info("log object %s disappeared while reading the logs of run %s", key, run_id)
            continue
        events.extend(
            LogEvent(timestamp, stage, source, index, message)
            for index, timestamp, message in decode(data)
        )
    events.sort()
    return events


def run_logs_page(
    store: ArtifactStore,
    run_id: str,
    *,
    filter_pattern: str | None = None,
    marker: str | None = None,
    limit: int = MAX_LIMIT,
) -> dict[str, Any]:
    """The reference `GetLogsResponse`: `events` (at most `limit`) after `marker` that match
    `filter_pattern`, and `marker` only when more events follow."""
    if not 1 <= limit <= MAX_LIMIT:
        raise LogQueryError(
            "limit", f"must be between 1 and {MAX_LIMIT}", limit, fix="pass a smaller limit"
        )
    matcher = parse_filter(filter_pattern)
    after = decode_marker(marker) if marker else None
    page: list[LogEvent] = []
    more = False
    for event in read_events(store, run_id):
        if after is not None and event.position <= after:
            continue
        if not matcher.matches(event.payload):
            continue
        if len(page) == limit:
            more = True
            break
        page.append(event)
    body: dict[str, Any] = {"events": [e.to_wire() for e in page]}
    if more:
        body["marker"] = encode_marker(page[-1].position)
    return body


def encode_marker(position: Position) -> str:
    timestamp, stage, source, sequence = position
    raw = json.dumps(
        {"v": MARKER_VERSION, "t": timestamp, "st": stage, "src": source, "seq": sequence},
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_marker(marker: str) -> Position:
    """The position a marker names; LogQueryError (field `marker`) when it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4))
        data = json.loads(raw)
        position = (data["t"], data["st"], data["src"], data["seq"])
        valid = (
            data.get("v") == MARKER_VERSION
            and isinstance(position[0], int | float)
            and not isinstance(position[0], bool)
            and isinstance(position[1], str)
            and isinstance(position[2], str)
            and isinstance(position[3], int)
            and not isinstance(position[3], bool)
        )
    except (binascii.Error, ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise LogQueryError(
            "marker",
            "is not a marker returned by this API",
            marker,
            fix="pass the `marker` of the previous response unchanged, or none for the first page",
        )
    return (float(position[0]), position[1], position[2], position[3])
