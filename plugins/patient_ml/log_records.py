"""Run log objects: what a run's stages print, kept in the artifact store for the logs API.

The Airflow task log shows a task's output while it runs; the product keeps its own copy so
`GET /models/{id}/runs/{runId}/logs` can serve it from the artifact store after Airflow's log
retention, from any API server, without access to the workers' log folders.

Format (one object per log source, UTF-8 JSON lines, one JSON object per logged line):

    {"timestamp": 1714567890123.456, "message": "[trial 3] epoch=1 val_loss=0.4"}

- `timestamp`: when the line was logged, in milliseconds since the Unix epoch (a float).
- `message`: the line as logged, without its line ending; lines longer than
  `MAX_MESSAGE_CHARS` are cut and end with `TRUNCATED`. Readers ignore any other key.

Writers append and flush line by line, so an object cut short (a killed worker, an upload of a
file still being written) can end with a torn line: readers skip lines that do not parse.

Keys: `runs/<run_id>/logs/<stage>.jsonl` or `runs/<run_id>/logs/<stage>/<name>.jsonl`; the
first segment after `logs/` names the stage (`training`, `evaluation`) and the rest of the
key, without `.jsonl`, names the source (`training/trial-3`, `evaluation`).

Only the product's and the trainer's own progress lines go here, exactly as they already go to
the Airflow task log: never example data, images or patient identifiers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

SUFFIX = ".jsonl"
MAX_MESSAGE_CHARS = 65_536
TRUNCATED = " [truncated]"


def run_logs_prefix(run_id: str) -> str:
    """The folder-like prefix under which every log object of run `run_id` lives."""
    return f"runs/{run_id}/logs"


def encode(message: str, timestamp_ms: float | None = None) -> bytes:
    """One record as a JSON line (with its newline)."""
    if timestamp_ms is None:
        timestamp_ms = round(time.time() * 1000, 3)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - len(TRUNCATED)] + TRUNCATED
    line = json.dumps({"timestamp": timestamp_ms, "message": message}, ensure_ascii=False)
    return line.encode("utf-8", "replace") + b"\n"


def decode(data: bytes) -> Iterator[tuple[int, float, str]]:
    """(line index, timestamp in ms, message) of every well-formed record of an object.

    The index counts every line, good or not, so a record keeps its index when a torn last
    line is completed by a later upload of the same object.
    """
    for index, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:  # a torn or foreign line: skipped, never an error
            continue
        if not isinstance(record, dict):
            continue
        timestamp, message = record.get("timestamp"), record.get("message")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
            continue
        if isinstance(message, str):
            yield index, float(timestamp), message


def stage_and_source(prefix: str, key: str) -> tuple[str, str] | None:
    """(stage, source) of a log object's key under `prefix` (run_logs_prefix), None for keys
    that are not log objects."""
    head = prefix.rstrip("/") + "/"
    if not key.startswith(head) or not key.endswith(SUFFIX):
        return None
    source = key[len(head) : -len(SUFFIX)]
    if not source:
        return None
    return source.split("/", 1)[0], source


class LogFile:
    """Appends records to a local file, flushed line by line; `path=None` records nothing.

    Thread-safe, so a job's pump thread and its control thread may both write.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()/__exit__

    def write(self, message: str, timestamp_ms: float | None = None) -> None:
        if self._fh is None:
            return
        data = encode(message, timestamp_ms)
        with self._lock:
            if self._fh is not None:
                self._fh.write(data)
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> LogFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProgressLog:
    """Logs a stage's progress messages to a logger *and* records them for the run's logs.

    For stages with a few lines (evaluation): records stay in memory and `data()` is the
    object to upload when the stage ends, successful or not.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._lock = threading.Lock()
        self._records: list[bytes] = []

    def log(self, level: int, message: str, *args: object) -> None:
        self.logger.log(level, message, *args)
        text = message % args if args else message
        with self._lock:
            self._records.append(encode(text))

    def info(self, message: str, *args: object) -> None:
        self.log(logging.INFO, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(logging.ERROR, message, *args)

    def data(self) -> bytes:
        with self._lock:
            return b"".join(self._records)
