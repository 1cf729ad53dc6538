"""Reading FHIR NDJSON files (the bulk-data format) line by line, without parsing.

A source is one file or a folder of `*.ndjson` / `*.ndjson.gz` files (read in name order, not
recursively). Every non-blank line comes out as `(source, line_number, raw)`: the file's path,
its 1-based physical line number and the line's bytes without the line ending (LF or CRLF; a last
line may lack one). Nothing is parsed here, so a malformed line reaches the caller, which
quarantines it with its file and line number.

Memory use is one line at a time, and a line is never held beyond `max_line_bytes` (issue 33:
a 1 MB `.ndjson.gz` can inflate to a gigabyte on one line): a longer line comes out as a
`LineTooLong` in its place, read past in 1 MiB pieces, so the next lines are still read.
`max_line_bytes_for` gives the limit that fits the largest inline image a dataset allows.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from patient_ml.exceptions import PatientMLError

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
_UTF8_BOM = b"\xef\xbb\xbf"
_EXPORT_PREFIX = re.compile(r"^\d+\.")  # bulk-export style names: 1.DocumentReference.ndjson


SKIP_CHUNK = 1 << 20  # a line above the limit is read past in pieces of this size
RECORD_MARGIN = 1 << 20  # bytes of a record besides its inline image


def max_line_bytes_for(max_inline_bytes: int) -> int:
    """The longest line a record may take when it carries an inline image of
    `max_inline_bytes`: its base64 text with MIME line breaks (CRLF every 76 characters,
    escaped as four characters in JSON), plus RECORD_MARGIN for the rest of the record."""
    encoded = 4 * math.ceil(max_inline_bytes / 3)
    return encoded + 4 * math.ceil(encoded / 76) + RECORD_MARGIN


DEFAULT_MAX_LINE_BYTES = max_line_bytes_for(50_000_000)  # curation.maxImageBytes' default


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class LineTooLong:
    """Stands for a line longer than `limit` bytes; `size` is its length (at least)."""

    size: int
    limit: int


class NdjsonSourceError(PatientMLError):
    """An NDJSON source is missing, empty or unreadable (e.g. a truncated .gz file)."""

    exit_code = 1
    http_status = 400


def file_resource_type_matches(name: str, resource_type: str) -> bool:
    """True when a file name starts with the resource type: `Observation.ndjson`,
    `Observation-2.ndjson.gz`, `1.Observation.ndjson` (not `ObservationDefinition.ndjson`)."""
    stem = _EXPORT_PREFIX.sub("", Path(name).name)
    if not stem.startswith(resource_type):
        return False
    rest = stem[len(resource_type) :]
    return not rest[:1].isalpha()


def ndjson_files(path: str | Path, *, resource_type: str | None = None) -> list[Path]:
    """The files a source stands for: the file itself, or a folder's NDJSON files by name."""
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise NdjsonSourceError(
            f"NDJSON source {str(source)!r} does not exist.",
            fix="give a folder of *.ndjson / *.ndjson.gz files or one such file",
        )
    files = sorted(
        p
        for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(NDJSON_SUFFIXES)
    )
    if not files:
        raise NdjsonSourceError(
            f"NDJSON folder {str(source)!r} holds no *.ndjson or *.ndjson.gz files.",
            fix="put the exported NDJSON files in the folder (names ending .ndjson or .ndjson.gz)",
        )
    if resource_type:
        files = [p for p in files if file_resource_type_matches(p.name, resource_type)]
    return files


def iter_ndjson_file(
    path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[tuple[str, int, bytes | LineTooLong]]:
    """`(source, line_number, raw)` for every non-blank line of one file (gzip by suffix); a
    line longer than `max_line_bytes` (without its line ending) comes as a LineTooLong."""
    file = Path(path)
    source = str(file)
    opener = gzip.open if file.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(file, "rb") as stream:
            while line := stream.readline(max_line_bytes + 2):  # + CRLF
                line_number += 1
                if line_number == 1 and line.startswith(_UTF8_BOM):
                    line = line[len(_UTF8_BOM) :]
                complete = line.endswith(b"\n") or len(line) < max_line_bytes + 2
                raw = line.rstrip(b"\r\n")
                del line  # at most one copy of a line is held
                if len(raw) > max_line_bytes or not complete:
                    size = len(raw) + (0 if complete else _skip_line(stream))
                    del raw
                    yield source, line_number, LineTooLong(size, max_line_bytes)
                elif raw and not raw.isspace():
                    yield source, line_number, raw
    except (OSError, EOFError, zlib.error) as exc:
        raise NdjsonSourceError(
            f"NDJSON file {source!r} could not be read after line {line_number}: {exc}.",
            fix="export or copy the file again (a .gz file may be truncated or not gzip)",
        ) from None


def _skip_line(stream: _Lines) -> int:
    """Read past the rest of a line, a piece at a time; returns how many bytes it had."""
    skipped = 0
    while piece := stream.readline(SKIP_CHUNK):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped


def iter_ndjson_lines(
    path: str | Path,
    *,
    resource_type: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[tuple[str, int, bytes | LineTooLong]]:
    """`(source, line_number, raw)` for every non-blank line of every file of a source.

    With `resource_type`, a folder contributes only files whose name starts with that type.
    """
    for file in ndjson_files(path, resource_type=resource_type):
        yield from iter_ndjson_file(file, max_line_bytes=max_line_bytes)
