"""Reading FHIR NDJSON files (the bulk-data format) line by line, without parsing.

A source is one file or a folder of `*.ndjson` / `*.ndjson.gz` files (read in name order, not
recursively). Every non-blank line comes out as `(source, line_number, raw)`: the file's path,
its 1-based physical line number and the line's bytes without the line ending (LF or CRLF; a last
line may lack one). Nothing is parsed here, so a malformed line reaches the caller, which
quarantines it with its file and line number. Memory use is one line at a time.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from patient_ml.exceptions import PatientMLError

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
_UTF8_BOM = b"\xef\xbb\xbf"
_EXPORT_PREFIX = re.compile(r"^\d+\.")  # bulk-export style names: 1.DocumentReference.ndjson


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


def iter_ndjson_file(path: str | Path) -> Iterator[tuple[str, int, bytes]]:
    """`(source, line_number, raw)` for every non-blank line of one file (gzip by suffix)."""
    file = Path(path)
    source = str(file)
    opener = gzip.open if file.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(file, "rb") as stream:
            for line in stream:
                line_number += 1
                if line_number == 1 and line.startswith(_UTF8_BOM):
                    line = line[len(_UTF8_BOM) :]
                raw = line.rstrip(b"\r\n")
                if raw.strip():
                    yield source, line_number, raw
    except (OSError, EOFError, zlib.error) as exc:
        raise NdjsonSourceError(
            f"NDJSON file {source!r} could not be read after line {line_number}: {exc}.",
            fix="export or copy the file again (a .gz file may be truncated or not gzip)",
        ) from None


def iter_ndjson_lines(
    path: str | Path, *, resource_type: str | None = None
) -> Iterator[tuple[str, int, bytes]]:
    """`(source, line_number, raw)` for every non-blank line of every file of a source.

    With `resource_type`, a folder contributes only files whose name starts with that type.
    """
    for file in ndjson_files(path, resource_type=resource_type):
        yield from iter_ndjson_file(file)
