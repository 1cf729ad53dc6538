"""NDJSON reading: files and folders, gzip, blank lines, CRLF, malformed lines passed through."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from patient_ml.fhir.ndjson import (
    NdjsonSourceError,
    file_resource_type_matches,
    iter_ndjson_lines,
    ndjson_files,
)

DOC = b'{"resourceType":"DocumentReference","id":"d1"}'
OBS = b'{"resourceType":"Observation","id":"o1"}'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "DocumentReference.ndjson").write_bytes(
        DOC + b"\r\n\n   \n" + b'{"resourceType": "Docum' + b"\r\n" + DOC.replace(b"d1", b"d2")
    )
    with gzip.open(tmp_path / "Observation.ndjson.gz", "wb") as f:
        f.write(OBS + b"\n\n" + OBS.replace(b"o1", b"o2") + b"\n")
    (tmp_path / "notes.txt").write_text("not ndjson")
    (tmp_path / "ObservationDefinition.ndjson").write_bytes(b"{}\n")
    return tmp_path


def test_folder_lines_come_out_raw_with_file_and_line_number(folder: Path) -> None:
    lines = [(Path(s).name, n, raw) for s, n, raw in iter_ndjson_lines(folder)]
    assert lines == [
        ("DocumentReference.ndjson", 1, DOC),
        ("DocumentReference.ndjson", 4, b'{"resourceType": "Docum'),  # malformed, passed on
        ("DocumentReference.ndjson", 5, DOC.replace(b"d1", b"d2")),  # no final newline
        ("Observation.ndjson.gz", 1, OBS),
        ("Observation.ndjson.gz", 3, OBS.replace(b"o1", b"o2")),
        ("ObservationDefinition.ndjson", 1, b"{}"),
    ]


def test_only_files_of_one_resource_type(folder: Path) -> None:
    names = [p.name for p in ndjson_files(folder, resource_type="Observation")]
    assert names == ["Observation.ndjson.gz"]
    sources = {Path(s).name for s, _, _ in iter_ndjson_lines(folder, resource_type="Document")}
    assert sources == set()  # a prefix of a type name is not the type
    assert file_resource_type_matches("1.Observation.ndjson", "Observation")
    assert file_resource_type_matches("Observation-part2.ndjson.gz", "Observation")
    assert not file_resource_type_matches("ObservationDefinition.ndjson", "Observation")


def test_a_single_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + OBS + b"\n")
    assert list(iter_ndjson_lines(path)) == [(str(path), 1, OBS)]


def test_reading_streams_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson.gz"
    with gzip.open(path, "wb") as f:
        for n in range(20_000):
            f.write(b'{"resourceType":"Observation","id":"o%d"}\n' % n)
    lines = iter_ndjson_lines(path)
    assert next(lines) == (str(path), 1, b'{"resourceType":"Observation","id":"o0"}')
    assert sum(1 for _ in lines) == 19_999


def test_missing_empty_and_truncated_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NdjsonSourceError, match="does not exist") as caught:
        list(iter_ndjson_lines(tmp_path / "nope"))
    assert "Fix:" in str(caught.value)
    with pytest.raises(NdjsonSourceError, match=r"holds no \*\.ndjson"):
        list(iter_ndjson_lines(tmp_path))
    truncated = tmp_path / "Patient.ndjson.gz"
    truncated.write_bytes(gzip.compress(b"{}\n" * 1000)[:-20])
    with pytest.raises(NdjsonSourceError, match="could not be read after line"):
        list(iter_ndjson_lines(truncated))
