"""Turn a snapshot (manifest + content-addressed images) into the contract's channel folders.

Only examples with a confirmed label train or validate, and a validation example with a copy
in train (`copiesInSplits`: a near-duplicate link found after both were assigned) is left out:
it would reward memorising in the sweep's objective. The channel holds `examples.jsonl` and
the images (hard links when the store is a local folder on the same file system, else
copies), so a trainer never needs access to the artifact store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from patient_ml.config.identifiers import require_safe_id
from patient_ml.exceptions import PatientMLError
from patient_ml.storage import ArtifactStore, LocalArtifactStore
from patient_ml.training.contract import CHANNELS, JobLayout


@dataclass(frozen=True)
class ChannelStats:
    problem: dict[str, Any]
    counts: dict[str, int]
    left_out: int = 0  # validation examples with a copy in train


def snapshot_prefix(dataset_id: str) -> str:
    return f"datasets/{require_safe_id(dataset_id, 'dataset id')}"


def manifest_key(dataset_id: str, snapshot_id: str) -> str:
    return f"{snapshot_prefix(dataset_id)}/snapshots/{snapshot_id}/manifest.jsonl"


def iter_manifest(store: ArtifactStore, key: str) -> Iterator[dict[str, Any]]:
    """The header, then every example of a snapshot manifest."""
    with store.open_read(key) as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def materialize_channels(
    store: ArtifactStore,
    dataset_id: str,
    snapshot_id: str,
    layout: JobLayout,
    splits: Sequence[str] = CHANNELS,
) -> ChannelStats:
    entries = iter_manifest(store, manifest_key(dataset_id, snapshot_id))
    header = next(entries)
    problem = {"problemType": header["problemType"], "labels": header["labels"]}
    writers = {}
    counts = dict.fromkeys(splits, 0)
    left_out = 0
    prefix = snapshot_prefix(dataset_id)
    try:
        for split in splits:
            layout.channel(split).mkdir(parents=True, exist_ok=True)
            writers[split] = open(layout.channel(split) / "examples.jsonl", "wb")  # noqa: SIM115
        for example in entries:
            split, label = example["split"], example["label"]
            if split not in writers or label.get("status") != "confirmed":
                continue
            if split == "validation" and "train" in example.get("copiesInSplits", ()):
                left_out += 1
                continue
            channel = layout.channel(split)
            line: dict[str, Any] = {"id": example["id"], "image": example["image"]["key"]}
            _place(store, f"{prefix}/{example['image']['key']}", channel / line["image"])
            if header["problemType"] == "imgClf":
                line["label"] = label["classes"][0]
            else:
                line["mask"] = label["mask"]["key"]
                _place(store, f"{prefix}/{line['mask']}", channel / line["mask"])
            writers[split].write(orjson.dumps(line) + b"\n")
            counts[split] += 1
    finally:
        for writer in writers.values():
            writer.close()
    for split in splits:
        if split in CHANNELS and counts[split] == 0:
            copies = (
                f" (its {left_out} confirmed validation examples each have a copy in train)"
                if split == "validation" and left_out
                else ""
            )
            raise PatientMLError(
                f"Snapshot {snapshot_id[:12]} has no confirmed examples in {split}{copies}.",
                fix="confirm more labels (or add data) and curate again",
            )
    return ChannelStats(problem, counts, left_out)


def _place(store: ArtifactStore, key: str, dest: Path) -> None:
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(store, LocalArtifactStore):
        try:
            os.link(store.root / key, dest)
            return
        except OSError:
            pass  # another file system: copy
    store.get_file(key, dest)
