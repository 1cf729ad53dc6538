"""The NDJSON folder label sink on a real folder: appends, and refuses hostile files at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson
import pytest

from patient_ml.labels.sinks import LABELS_FILE, LabelSinkError, NdjsonFolderSink


def test_labels_are_appended_as_ndjson(tmp_path: Path) -> None:
    sink = NdjsonFolderSink(tmp_path)
    sink.write([{"resourceType": "Observation", "id": "a"}])
    sink.write([{"resourceType": "Observation", "id": "b"}])
    lines = (tmp_path / LABELS_FILE).read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["a", "b"]


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_fifo_or_symlink_in_place_of_the_labels_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / LABELS_FILE
    if kind == "fifo":
        os.mkfifo(target)  # no reader: a blocking open would wait forever
    else:
        os.symlink(tmp_path / "elsewhere.ndjson", target)
    sink = NdjsonFolderSink(tmp_path)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            sink.write([{"resourceType": "Observation", "id": "a"}])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(5)
    assert outcome, "the write blocked"
    assert isinstance(outcome[0], LabelSinkError)
    assert LABELS_FILE in str(outcome[0])
    assert not (tmp_path / "elsewhere.ndjson").exists()
