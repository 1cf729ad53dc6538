"""The test set read from a snapshot manifest: clusters (format 2's `cluster`, else the
`patientKey` of format 1, else each example alone), and test examples with a copy in train
left out and counted, with no identifier in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from patient_ml.evaluation.evaluate import (
    EvaluationError,
    load_split,
    load_splits,
    load_test_set,
)
from patient_ml.storage import LocalArtifactStore

DATASET, SNAPSHOT = "ds-clusters", "snap-clusters"
HEADER = {
    "problemType": "imgClf",
    "labels": [{"index": 0, "name": "no"}, {"index": 1, "name": "yes"}],
}


def _entry(i: int, split: str = "test", status: str = "confirmed", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"doc-{i}",
        "split": split,
        "image": {"key": f"images/{i}.png", "sha256": f"{i:064x}"},
        "label": {"status": status, "classes": [i % 2]},
        **extra,
    }


def _store(tmp_path: Path, entries: list[dict[str, Any]], header: dict[str, Any]) -> Any:
    store = LocalArtifactStore(tmp_path / "artifacts")
    lines = [orjson.dumps(header), *map(orjson.dumps, entries)]
    store.put_bytes(f"datasets/{DATASET}/snapshots/{SNAPSHOT}/manifest.jsonl",
                    b"\n".join(lines) + b"\n")  # fmt: skip
    return store


def test_format_2_clusters_and_copies_in_train_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entries = [
        _entry(0, cluster="a" * 16, patientKey="p0"),
        _entry(1, cluster="a" * 16, patientKey="p1"),  # a copy of 0's slice: one cluster
        _entry(2, cluster="b" * 16, patientKey="p2"),
        _entry(3, cluster="c" * 16, patientKey="p3", copiesInSplits=["train"]),
        _entry(4, cluster="d" * 16, patientKey="p4", copiesInSplits=["validation", "train"]),
        _entry(5, cluster="e" * 16, patientKey="p5", copiesInSplits=["validation"]),  # kept
        _entry(6, split="train", cluster="c" * 16, patientKey="p6"),
        _entry(7, status="draft", cluster="f" * 16, patientKey="p7", copiesInSplits=["train"]),
    ]
    store = _store(tmp_path, entries, {**HEADER, "format": "patient-ml-snapshot/2"})
    with caplog.at_level(logging.INFO, logger="patient_ml.evaluation"):
        test = load_test_set(store, DATASET, SNAPSHOT)
    assert [e.id for e in test.examples] == ["doc-0", "doc-1", "doc-2", "doc-5"]
    assert test.clusters == 3 and test.cluster_field == "cluster"
    assert test.left_out == ("doc-3", "doc-4")  # the draft one was never in the test set
    [message] = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert "2 confirmed test example(s) left out: a copy is in train" in message
    assert "doc-" not in message and "p3" not in message  # counts only


def test_format_1_falls_back_to_the_patient(tmp_path: Path) -> None:
    entries = [_entry(i, patientKey=f"p{i // 3}") for i in range(9)]
    test = load_test_set(_store(tmp_path, entries, HEADER), DATASET, SNAPSHOT)
    assert len(test.examples) == 9 and test.clusters == 3
    assert test.cluster_field == "patientKey" and test.left_out == ()


def test_without_patients_each_example_stands_alone(tmp_path: Path) -> None:
    test = load_test_set(_store(tmp_path, [_entry(i) for i in range(4)], HEADER), DATASET, SNAPSHOT)
    assert test.clusters == 4 and test.cluster_field == "id"


def test_every_test_example_copied_in_train_says_so(tmp_path: Path) -> None:
    entries = [_entry(i, cluster=f"{i:016x}", copiesInSplits=["train"]) for i in range(3)]
    with pytest.raises(EvaluationError, match=r"\(3 left out: a copy is in train\)"):
        load_test_set(_store(tmp_path, entries, HEADER), DATASET, SNAPSHOT)


def test_several_splits_from_one_read_are_each_split_read_alone(tmp_path: Path) -> None:
    """`load_splits` (the monitor's reference reads train, validation and test at once) gives
    what one `load_split` per split gives, each split with its own cluster field."""
    entries = [
        _entry(0, split="train", cluster="a" * 16, patientKey="p0"),
        _entry(1, split="train", cluster="a" * 16, patientKey="p1"),
        _entry(2, split="validation", patientKey="p2", copiesInSplits=["train"]),
        _entry(3, split="validation", patientKey="p3"),
        _entry(4, cluster="b" * 16, patientKey="p4"),
        _entry(5, status="draft", cluster="c" * 16, patientKey="p5"),
    ]
    store = _store(tmp_path, entries, {**HEADER, "format": "patient-ml-snapshot/2"})
    splits = ("train", "validation", "test")
    together = load_splits(store, DATASET, SNAPSHOT, splits)
    assert together == {s: load_split(store, DATASET, SNAPSHOT, s) for s in splits}
    assert [e.id for e in together["train"].examples] == ["doc-0", "doc-1"]
    assert together["validation"].left_out == ("doc-2",)
    assert together["validation"].cluster_field == "patientKey"
    assert together["test"].cluster_field == "cluster"
