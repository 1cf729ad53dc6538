"""The examples of a dataset as its FHIR source holds them *now* (not as of the last
snapshot), so labellers see their own work at once: every DocumentReference the dataset selects,
with the label its label Observations resolve to, filtered and paged for the REST API.

Resolution follows curation (`patient_ml.curation.resolve`): the newest version of each
record counts; confirmed labels that agree make the label confirmed; confirmed labels that
disagree show the newest one as *unconfirmed* (it needs a person again); else the newest draft.

Reading a FHIR server's records costs seconds for large datasets, so an index is kept per
dataset revision for `PATIENT_ML_EXAMPLES_CACHE_SECONDS` (default 10 s) in this process and
dropped when a label is written through it.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from patient_ml.curation import records as rec
from patient_ml.curation.pipeline import DatasetView
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.curation.staging import instant, newer_version
from patient_ml.exceptions import FieldError, InvalidInputError, NotFoundError

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class ExampleLabel:
    status: str  # "confirmed" | "draft" (also for confirmed labels that disagree)
    record: rec.LabelRecord
    conflicting: bool = False

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"


@dataclass(frozen=True)
class Example:
    id: str
    image: rec.ImageRecord
    updated_ms: float
    label: ExampleLabel | None
    # Every label Observation of this dataset still in use for the image (raw, newest version).
    observations: tuple[dict[str, Any], ...] = ()


@dataclass
class ExampleIndex:
    dataset: DatasetView
    examples: dict[str, Example]
    ids: list[str] = field(default_factory=list)
    built: float = field(default_factory=time.monotonic)

    def get(self, example_id: str) -> Example:
        found = self.examples.get(example_id)
        if found is None:
            raise NotFoundError(
                f"Dataset {self.dataset.name!r} has no example {example_id!r}.",
                fix="list its examples with GET /v1/patient-ml/datasets/{datasetId}/examples; "
                "an example is a DocumentReference the dataset's trainingDataFilter selects",
            )
        return found


def build_index(
    dataset: DatasetView,
    records: Iterable[tuple[str, Any, Any]],
    written_at: Callable[[str], float | None] | None = None,
) -> ExampleIndex:
    """Read every record once, keep the newest version of each, resolve each image's label.
    Malformed records are skipped here (curation quarantines and reports them)."""
    docs: dict[str, dict[str, Any]] = {}
    observations: dict[str, dict[str, Any]] = {}
    written: dict[str, float | None] = {}  # resource id -> when its NDJSON file was written
    file_times: dict[str, float | None] = {}
    for position, _expected, raw in records:
        try:
            resource = rec.parse_resource(raw)
        except QuarantineError:
            continue
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rid, str) or not rid:
            continue
        if kind == "DocumentReference":
            _keep_newest(docs, rid, resource)
            if docs[rid] is resource:
                written[rid] = _file_time(file_times, position, written_at)
        elif kind == "Observation" and rec.is_label_observation(resource):
            _keep_newest(observations, rid, resource)
    type_filter = rec.TokenFilter(dataset.filter_codes)
    labels_of: dict[str, list[tuple[rec.LabelRecord, dict[str, Any]]]] = {}
    for resource in observations.values():
        label = label_of(resource, dataset)
        if label is not None:
            labels_of.setdefault(label.image_id, []).append((label, resource))
    examples: dict[str, Example] = {}
    for rid, resource in docs.items():
        try:
            image = rec.image_record(resource, type_filter)
        except QuarantineError:
            continue
        if isinstance(image, rec.ImageRecord):
            examples[rid] = example_of(image, resource, labels_of.get(rid, []), written.get(rid))
    return ExampleIndex(dataset, examples, sorted(examples))


def _keep_newest(seen: dict[str, dict[str, Any]], rid: str, resource: dict[str, Any]) -> None:
    old = seen.get(rid)
    if old is None or newer_version(
        rec.resource_version(resource),
        rec.resource_updated(resource),
        rec.resource_version(old),
        rec.resource_updated(old),
    ):
        seen[rid] = resource


def label_of(resource: dict[str, Any], dataset: DatasetView) -> rec.LabelRecord | None:
    """The label an Observation gives in this dataset; None when it gives none (another
    dataset's, excluded, malformed or an unknown class: curation quarantines those)."""
    try:
        label = rec.label_record(
            resource, label_system=dataset.label_system, problem_type=dataset.problem_type
        )
    except QuarantineError:
        return None
    if label is None or label.status == "excluded":
        return None
    indices = {index for index, _ in dataset.labels}
    if dataset.problem_type == "imgClf" and _class_index(label) not in indices:
        return None
    return label


def _file_time(
    seen: dict[str, float | None],
    position: str,
    written_at: Callable[[str], float | None] | None,
) -> float | None:
    """When the local NDJSON file a record came from was last written (milliseconds), for
    records without `meta.lastUpdated` (a FHIR server always sets it; bulk exports and hand-made
    NDJSON may not). None for sources that cannot tell (a FHIR server, S3)."""
    if written_at is None:
        return None
    file = str(position).rsplit(":", 1)[0]
    if file not in seen:
        moment = written_at(str(position))
        seen[file] = None if moment is None else round(moment * 1000, 3)
    return seen[file]


def example_of(
    image: rec.ImageRecord,
    doc: dict[str, Any],
    labels: list[tuple[rec.LabelRecord, dict[str, Any]]],
    written_ms: float | None = None,
) -> Example:
    """`updatedAt` is the newest of the DocumentReference's `meta.lastUpdated` (else
    `written_ms`, when its source file was written) and its label records' times."""
    ordered = sorted(labels, key=lambda pair: (_millis(pair[0].updated) or 0.0, pair[0].id))
    confirmed = [label for label, _ in ordered if label.status == "confirmed"]
    drafts = [label for label, _ in ordered if label.status == "draft"]
    label = None
    if confirmed:
        values = {(lbl.class_code, _mask_identity(lbl.mask)) for lbl in confirmed}
        if len(values) > 1:
            label = ExampleLabel("draft", confirmed[-1], conflicting=True)
        else:
            label = ExampleLabel("confirmed", confirmed[-1])
    elif drafts:
        label = ExampleLabel("draft", drafts[-1])
    updated = max(
        [_millis(rec.resource_updated(doc)) or written_ms or 0.0]
        + [_millis(lbl.updated) or 0.0 for lbl, _ in ordered]
    )
    return Example(image.id, image, updated, label, tuple(raw for _, raw in ordered))


def _mask_identity(mask: dict[str, Any] | None) -> str | None:
    if not mask:
        return None
    return str(mask.get("hash") or mask.get("url") or hash(str(mask.get("data"))))


# --------------------------------------------------------------------------- listing


def select(
    index: ExampleIndex,
    *,
    has_label: bool | None = None,
    has_unconfirmed_label: bool | None = None,
    patient_id: str | None = None,
    marker: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[Example], str | None]:
    """One page of examples in id order after `marker`, and the marker of the next page."""
    after = decode_marker(marker) if marker else None
    patient_ref = f"Patient/{patient_id}" if patient_id else None
    page: list[Example] = []
    for example_id in index.ids:
        if after is not None and example_id <= after:
            continue
        example = index.examples[example_id]
        if has_label is not None and (example.label is not None) != has_label:
            continue
        unconfirmed = example.label is not None and not example.label.confirmed
        if has_unconfirmed_label is not None and unconfirmed != has_unconfirmed_label:
            continue
        if patient_ref is not None and example.image.patient_ref != patient_ref:
            continue
        if len(page) == limit:
            return page, encode_marker(page[-1].id)
        page.append(example)
    return page, None


def encode_marker(after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def decode_marker(marker: str) -> str:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)))
        after = doc["after"]
        if not isinstance(after, str):
            raise TypeError
        return after
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise InvalidInputError(
            "The marker is not one this API gave out.",
            [FieldError("marker", "must be the marker of the previous page, unchanged", marker)],
            fix="leave marker out for the first page, then pass each response's marker",
        ) from None


# --------------------------------------------------------------------------- wire


def example_to_wire(example: Example, problem_type: str) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": example.id,
        "updatedAt": example.updated_ms,
        "exampleType": problem_type,
        "image": {"fileId": history_ref("DocumentReference", example.id, example.image.version)},
    }
    if example.label is not None:
        wire["label"] = label_to_wire(example.label, problem_type)
    return wire


def label_to_wire(label: ExampleLabel, problem_type: str) -> dict[str, Any]:
    record = label.record
    wire: dict[str, Any] = {"labelType": problem_type, "isConfirmed": label.confirmed}
    if problem_type == "imgClf":
        wire["classes"] = [_class_index(record)]
    else:
        wire["mask"] = {"fileId": history_ref("Observation", record.id, record.version)}
    if label.confirmed and record.performer:
        wire["lastConfirmedBy"] = record.performer
    updated = _millis(record.updated)
    if updated is not None:
        wire["updatedAt"] = updated
    if label.conflicting:
        wire["tags"] = [{"name": "conflict", "value": "confirmed labels disagree"}]
    return wire


def history_ref(resource_type: str, rid: str, version: str | None) -> str:
    return f"{resource_type}/{rid}" + (f"/_history/{version}" if version else "")


def _class_index(label: rec.LabelRecord) -> int | None:
    return rec.label_index(label.class_code)


def _millis(text: str | None) -> float | None:
    moment = instant(text)
    return None if moment is None else round(moment.timestamp() * 1000, 3)


# --------------------------------------------------------------------------- cache

_CACHE: dict[tuple[str, int], ExampleIndex] = {}
_CACHE_LOCK = threading.Lock()


def cache_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "10")))
    except ValueError:
        return 10.0


def cached_index(key: tuple[str, int], build: Any) -> ExampleIndex:
    """The index of a dataset revision, rebuilt when older than `cache_seconds()`."""
    ttl = cache_seconds()
    with _CACHE_LOCK:
        found = _CACHE.get(key)
    if found is not None and time.monotonic() - found.built < ttl:
        return found
    index = build()
    if ttl > 0:
        with _CACHE_LOCK:
            for old in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[old]
            _CACHE[key] = index
    return index


def forget(dataset_id: str) -> None:
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[0] == dataset_id]:
            del _CACHE[old]
