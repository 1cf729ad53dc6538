"""Channels from a snapshot: confirmed examples only, and validation examples with a copy in
train left out (counted), so the sweep's objective never rewards memorising."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from patient_ml.exceptions import PatientMLError
from patient_ml.storage import LocalArtifactStore
from patient_ml.training.channels import manifest_key, materialize_channels
from patient_ml.training.contract import CHANNELS, JobLayout


def _write_snapshot(store: LocalArtifactStore, examples: list[dict[str, object]]) -> None:
    header = {"format": "patient-ml-snapshot/2", "problemType": "imgClf",
              "labels": [{"index": 0, "name": "a"}, {"index": 1, "name": "b"}]}  # fmt: skip
    lines = [orjson.dumps(header)] + [orjson.dumps(e) for e in examples]
    store.put_bytes(manifest_key("ds1", "snap"), b"\n".join(lines) + b"\n")
    for e in examples:
        key = e["image"]["key"]  # type: ignore[index]
        store.put_bytes(f"datasets/ds1/{key}", b"\x89PNG fake bytes")


def _example(doc: str, split: str, copies: list[str] | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "id": doc, "split": split, "cluster": doc, "patientKey": doc,
        "image": {"key": f"images/{doc}.png"},
        "label": {"status": "confirmed", "classes": [int(doc[-1]) % 2]},
    }  # fmt: skip
    if copies:
        out["copiesInSplits"] = copies
    return out


def test_validation_copies_of_train_are_left_out(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    _write_snapshot(store, [
        _example("t1", "train"), _example("t2", "train", ["validation"]),
        _example("v1", "validation"), _example("v2", "validation", ["train"]),
        _example("v3", "validation", ["test"]), _example("x1", "test", ["train"]),
    ])  # fmt: skip
    layout = JobLayout(tmp_path / "job")
    stats = materialize_channels(store, "ds1", "snap", layout, CHANNELS)
    assert stats.counts == {"train": 2, "validation": 2}
    assert stats.left_out == 1
    ids = [
        orjson.loads(line)["id"]
        for line in (layout.channel("validation") / "examples.jsonl").read_bytes().splitlines()
    ]
    assert ids == ["v1", "v3"]


def test_a_validation_split_of_only_copies_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    _write_snapshot(store, [_example("t1", "train"), _example("v2", "validation", ["train"])])
    expected = "its 1 confirmed validation examples each have a copy in train"
    with pytest.raises(PatientMLError, match=re.escape(expected)):
        materialize_channels(store, "ds1", "snap", JobLayout(tmp_path / "job"), CHANNELS)
