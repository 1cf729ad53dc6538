"""The examples of a dataset as its FHIR source holds them *now* (not as of the last
snapshot), so labellers see their own work at once: every DocumentReference the dataset selects,
with the label its label Observations resolve to, filtered and paged for the REST API.

Resolution follows curation (`patient_ml.curation.resolve`): the newest version of each
record counts; confirmed labels that agree make the label confirmed; confirmed labels that
disagree show the newest one as *unconfirmed* (it needs a person again); else the newest draft.

Reading a FHIR server's records costs seconds for large datasets (about a minute for 100,000
examples in NDJSON), so an index is kept per dataset revision in this process. Once it is older
than `PATIENT_ML_EXAMPLES_CACHE_SECONDS` (default 10 s; 0 turns the cache off) requests go on
being answered from it while one background thread rebuilds it from the source (changes made
outside this process appear after that rebuild). A label saved through this process re-reads only
the records of that one example (where the source can find them) and updates the index in place,
so the labeller sees the save at once and a save costs the same at any dataset size.
"""

from __future__ import annotations

import base64
import bisect
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from patient_ml.curation import records as rec
from patient_ml.curation.pipeline import DatasetView
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.curation.staging import instant, newer_version
from patient_ml.curation.upstream import UpstreamPrediction, upstream_prediction
from patient_ml.exceptions import FieldError, InvalidInputError, NotFoundError
from patient_ml.fhir import mapping

if TYPE_CHECKING:
    from patient_ml.curation.upstream import UpstreamPlan

_log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000


class PredictedExamples(Protocol):
    """The examples a model's champion has predicted (`services.example_predictions`)."""

    @property
    def versions(self) -> dict[str, str | None]:  # example id → the image version predicted
        ...

    def has(self, example_id: str, image_version: str | None) -> bool: ...


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
class Lookup:
    status_at: list[str] = field(default_factory=list)  # per position
    by_status: dict[str, list[int]] = field(default_factory=dict)
    by_label: dict[int, list[int]] = field(default_factory=dict)
    by_split: dict[str, list[int]] = field(default_factory=dict)
    by_patient: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class ExampleIndex:
    dataset: DatasetView
    examples: dict[str, Example]
    ids: list[str] = field(default_factory=list)
    built: float = field(default_factory=time.monotonic)
    # Every version of every label Observation of the dataset, per image id (oldest first).
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Split of each pseudonymous patient key (the dataset's split assignments), when loaded.
    split_of_patient: dict[str, str] = field(default_factory=dict)
    # When an example was last re-read alone (a save through this process), time.monotonic().
    refreshed_at: dict[str, float] = field(default_factory=dict)
    _patient_keys: dict[str, str] = field(default_factory=dict)
    _lookup: Lookup | None = None

    def lookup(self) -> Lookup:
        """Positions (in `ids`) per status, label, split and patient key, built on first use
        (after the split assignments are set), so a filtered page or its counts walk only the
        examples that may match instead of every example."""
        if self._lookup is None:
            found = Lookup()
            for position, example_id in enumerate(self.ids):
                example = self.examples[example_id]
                found.status_at.append(status_of(example))
                found.by_status.setdefault(found.status_at[-1], []).append(position)
                if example.label is not None:
                    label = _class_index(example.label.record)
                    if label is not None:
                        found.by_label.setdefault(label, []).append(position)
                found.by_split.setdefault(self.split(example) or "unassigned", []).append(position)
                found.by_patient.setdefault(self.patient_key(example), []).append(position)
            self._lookup = found
        return self._lookup

    def replace_example(self, example_id: str, part: ExampleIndex) -> None:
        """Take the example `example_id` (its label, observations and history) from `part`, an
        index built from the records that concern it, in place of this index's copy. Readers in
        other threads see either the old or the new example: lists are replaced, not edited."""
        new = part.examples.get(example_id)
        old = self.examples.get(example_id)
        self.refreshed_at[example_id] = time.monotonic()
        history = part.history.get(example_id)
        if history:
            self.history[example_id] = history
        else:
            self.history.pop(example_id, None)
        lookup = self._lookup
        if new is None or old is None or new.image.patient_ref != old.image.patient_ref:
            # appears, disappears or moves to another patient: positions or keys change
            if new is None:
                self.examples.pop(example_id, None)
                self.ids = [i for i in self.ids if i != example_id]
            else:
                self.examples[example_id] = new
                if old is None:
                    self.ids = sorted([*self.ids, example_id])
            self._lookup = None
            return
        self.examples[example_id] = new
        if lookup is None:
            return
        position = bisect.bisect_left(self.ids, example_id)
        was, now = lookup.status_at[position], status_of(new)
        if was != now:
            lookup.by_status[was] = _without(lookup.by_status.get(was, []), position)
            lookup.by_status[now] = _inserted(lookup.by_status.get(now, []), position)
            lookup.status_at[position] = now
        old_label = _class_index(old.label.record) if old.label is not None else None
        new_label = _class_index(new.label.record) if new.label is not None else None
        if old_label != new_label:
            if old_label is not None:
                lookup.by_label[old_label] = _without(lookup.by_label.get(old_label, []), position)
            if new_label is not None:
                lookup.by_label[new_label] = _inserted(lookup.by_label.get(new_label, []), position)

    def patient_key(self, example: Example) -> str:
        """The example's pseudonymous patient key (as curation computes it), memoised."""
        from patient_ml.curation.splits import patient_key

        ref = example.image.patient_ref
        key = self._patient_keys.get(ref)
        if key is None:
            key = self._patient_keys[ref] = patient_key(self.dataset.salt, ref)
        return key

    def split(self, example: Example) -> str | None:
        return self.split_of_patient.get(self.patient_key(example))

    def get(self, example_id: str) -> Example:
        found = self.examples.get(example_id)
        if found is None:
            raise NotFoundError(
                f"Dataset {self.dataset.name!r} has no example {example_id!r}.",
                fix="list its examples with GET /v1/patient-ml/datasets/{datasetId}/examples; "
                "an example is a DocumentReference the dataset's trainingDataFilter selects",
            )
        return found


def _without(positions: list[int], position: int) -> list[int]:
    """A copy of the sorted `positions` without `position`."""
    at = bisect.bisect_left(positions, position)
    if at < len(positions) and positions[at] == position:
        return positions[:at] + positions[at + 1 :]
    return list(positions)


def _inserted(positions: list[int], position: int) -> list[int]:
    """A sorted copy of `positions` with `position` in it."""
    found = list(positions)
    at = bisect.bisect_left(found, position)
    if at == len(found) or found[at] != position:
        found.insert(at, position)
    return found


def build_index(
    dataset: DatasetView,
    records: Iterable[tuple[str, Any, Any]],
    written_at: Callable[[str], float | None] | None = None,
) -> ExampleIndex:
    """Read every record once, keep the newest version of each, resolve each image's label.
    Malformed records are skipped here (curation quarantines and reports them). A chained
    dataset (`source.fromModel`) holds only the images its upstream model's newest prediction
    selects, as curation selects them."""
    upstream = dataset.upstream
    chosen: dict[str, UpstreamPrediction] = {}  # image id -> the upstream model's newest
    docs: dict[str, dict[str, Any]] = {}
    observations: dict[str, dict[str, Any]] = {}
    versions: dict[tuple[str, str], dict[str, Any]] = {}  # (id, version) -> resource
    written: dict[str, float | None] = {}  # resource id -> when its NDJSON file was written
    version_written: dict[tuple[str, str], float | None] = {}  # the same, of label versions
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
        elif kind == "Observation" and rec.has_patient_ml_code(resource, mapping.LABEL_CODE):
            _keep_newest(observations, rid, resource)
            key = (rid, str(rec.resource_version(resource) or ""))
            versions[key] = resource
            version_written[key] = _file_time(file_times, position, written_at)
        elif (
            kind == "Observation"
            and upstream is not None
            and rec.has_patient_ml_code(resource, mapping.PREDICTION_CODE)
        ):
            _keep_newest_prediction(chosen, resource, upstream)
    type_filter = rec.TokenFilter(dataset.filter_codes)
    labels_of: dict[str, list[tuple[rec.LabelRecord, dict[str, Any]]]] = {}
    for resource in observations.values():
        label = label_of(resource, dataset)
        if label is not None:
            labels_of.setdefault(label.image_id, []).append((label, resource))
    examples: dict[str, Example] = {}
    for rid, resource in docs.items():
        if upstream is not None and not (rid in chosen and chosen[rid].selected):
            continue  # not an example of this chained dataset
        try:
            image = rec.image_record(resource, type_filter)
        except QuarantineError:
            continue
        if isinstance(image, rec.ImageRecord):
            examples[rid] = example_of(image, resource, labels_of.get(rid, []), written.get(rid))
    history: dict[str, list[dict[str, Any]]] = {}
    for key, resource in versions.items():
        entry = history_entry(resource, dataset, version_written.get(key))
        if entry is not None and entry["exampleId"] in examples:
            history.setdefault(entry.pop("exampleId"), []).append(entry)
    for entries in history.values():
        entries.sort(key=lambda e: (e.get("at") or 0.0, e["observation"]))
    return ExampleIndex(dataset, examples, sorted(examples), history=history)


def history_entry(
    resource: dict[str, Any], dataset: DatasetView, written_ms: float | None = None
) -> dict[str, Any] | None:
    """One version of a label Observation of this dataset as the label history shows it: who
    saved it (its performer, for confirmed labels), when, its status and value. When is its
    `meta.lastUpdated`, else `issued`, else (hand-made or bulk NDJSON without either) when its
    NDJSON file was written (`written_ms`): the history never shows a label without a date
    that its source can tell (issue 31)."""
    try:
        label = rec.label_record(
            resource, label_system=dataset.label_system, problem_type=dataset.problem_type
        )
    except QuarantineError:
        return None
    if label is None or not label.image_id:
        return None
    names = dict(dataset.labels)
    entry: dict[str, Any] = {
        "exampleId": label.image_id,
        "observation": history_ref("Observation", label.id, label.version),
        "status": "superseded" if label.status == "excluded" else label.status,
        "fhirStatus": resource.get("status"),
        "at": _millis(label.updated) or _millis(resource.get("issued")) or written_ms,
    }
    if label.status == "excluded":
        notes = resource.get("note") or []
        if notes and isinstance(notes[-1], dict) and isinstance(notes[-1].get("text"), str):
            entry["note"] = notes[-1]["text"][:300]
    if label.performer:
        entry["by"] = label.performer
    index = _class_index(label)
    if dataset.problem_type == "imgClf" and index is not None:
        entry.update(labelIndex=index, labelName=names.get(index))
    elif label.mask:
        entry["value"] = "mask"
    return entry


def _keep_newest_prediction(
    chosen: dict[str, UpstreamPrediction], resource: dict[str, Any], upstream: UpstreamPlan
) -> None:
    try:
        found = upstream_prediction(resource, upstream)
    except QuarantineError:
        return
    if found is None:
        return
    old = chosen.get(found.doc_id)
    if old is None or newer_version(found.version, found.updated, old.version, old.updated):
        chosen[found.doc_id] = found


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


STATUSES = ("unlabeled", "draft", "confirmed")
SPLITS = ("train", "validation", "test", "unassigned")


def status_of(example: Example) -> str:
    """`unlabeled`, `draft` (also confirmed labels that disagree) or `confirmed`."""
    if example.label is None:
        return "unlabeled"
    return "confirmed" if example.label.confirmed else "draft"


@dataclass(frozen=True)
class Filters:
    """What the examples list may be narrowed by (reference filters and extensions)."""

    has_label: bool | None = None
    has_unconfirmed_label: bool | None = None
    patient_id: str | None = None
    status: str | None = None  # one of STATUSES
    label_index: int | None = None  # imgClf: the label's index
    split: str | None = None  # one of SPLITS (by the patient's split assignment)
    patient_key: str | None = None  # the pseudonymous key curation gives the patient
    # Whether the model's current champion has predicted the example (needs `predicted`).
    has_prediction: bool | None = None
    predicted: PredictedExamples | None = field(default=None, compare=False)

    def matches(self, index: ExampleIndex, example: Example, *, status: bool = True) -> bool:
        label = example.label
        if self.has_prediction is not None:
            found = self.predicted is not None and self.predicted.has(
                example.id, example.image.version
            )
            if found != self.has_prediction:
                return False
        if self.has_label is not None and (label is not None) != self.has_label:
            return False
        unconfirmed = label is not None and not label.confirmed
        if self.has_unconfirmed_label is not None and unconfirmed != self.has_unconfirmed_label:
            return False
        if self.patient_id and example.image.patient_ref != f"Patient/{self.patient_id}":
            return False
        if status and self.status is not None and status_of(example) != self.status:
            return False
        if self.label_index is not None and (
            label is None or _class_index(label.record) != self.label_index
        ):
            return False
        if self.patient_key is not None and index.patient_key(example) != self.patient_key:
            return False
        return self.split is None or (index.split(example) or "unassigned") == self.split


def candidates(index: ExampleIndex, filters: Filters, *, status: bool = True) -> Sequence[int]:
    """Positions of the examples that may match: the shortest list of the indexed filters
    (status, label, split, patient key); every position when none is given."""
    lookup = index.lookup()
    lists: list[Sequence[int]] = []
    if status and filters.status is not None:
        lists.append(lookup.by_status.get(filters.status, []))
    if filters.label_index is not None:
        lists.append(lookup.by_label.get(filters.label_index, []))
    if filters.split is not None:
        lists.append(lookup.by_split.get(filters.split, []))
    if filters.patient_key is not None:
        lists.append(lookup.by_patient.get(filters.patient_key, []))
    if filters.has_prediction:
        lists.append(_positions(index, filters.predicted.versions if filters.predicted else {}))
    return min(lists, key=len) if lists else range(len(index.ids))


def _positions(index: ExampleIndex, example_ids: Iterable[str]) -> list[int]:
    """Positions (in `ids`) of those of `example_ids` the index has, in order."""
    ids = index.ids
    found = []
    for example_id in example_ids:
        at = bisect.bisect_left(ids, example_id)
        if at < len(ids) and ids[at] == example_id:
            found.append(at)
    return sorted(found)


def select(
    index: ExampleIndex,
    *,
    has_label: bool | None = None,
    has_unconfirmed_label: bool | None = None,
    patient_id: str | None = None,
    marker: str | None = None,
    limit: int = DEFAULT_PAGE,
    filters: Filters | None = None,
) -> tuple[list[Example], str | None]:
    """One page of examples in id order after `marker`, and the marker of the next page."""
    chosen = filters or Filters(has_label, has_unconfirmed_label, patient_id)
    after = decode_marker(marker) if marker else None
    start = bisect.bisect_right(index.ids, after) if after is not None else 0
    positions = candidates(index, chosen)
    first = bisect.bisect_left(positions, start)
    page: list[Example] = []
    for at in range(first, len(positions)):  # by index: no walk over the skipped ones
        example = index.examples[index.ids[positions[at]]]
        if not chosen.matches(index, example):
            continue
        if len(page) == limit:
            return page, encode_marker(page[-1].id)
        page.append(example)
    return page, None


def counts(index: ExampleIndex, filters: Filters) -> dict[str, int]:
    """How many examples the filters select, per status (the status filter itself left out,
    so the counts say what each status tab would show), and `total`."""
    found = dict.fromkeys(STATUSES, 0)
    narrowed = (
        filters.has_label,
        filters.has_unconfirmed_label,
        filters.patient_id,
        filters.has_prediction,
        filters.label_index,
        filters.split,
        filters.patient_key,
    )
    indexed = [v for v in narrowed[4:] if v is not None]
    lookup = index.lookup()
    if all(value is None for value in narrowed):  # the status tabs of the whole dataset
        for status, positions in lookup.by_status.items():
            found[status] = len(positions)
    elif len(indexed) == 1 and all(v is None for v in narrowed[:4]):  # its list is the answer
        status_at = lookup.status_at
        found.update(Counter(status_at[p] for p in candidates(index, filters, status=False)))
    else:
        for position in candidates(index, filters, status=False):
            example = index.examples[index.ids[position]]
            if filters.matches(index, example, status=False):
                found[status_of(example)] += 1
    return {"total": sum(found.values()), **found}


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


def label_version(example: Example) -> str:
    """The version of the example's label a save must start from (`If-Match` of PUT label):
    its newest label Observation's history reference, `none` when it has none."""
    if not example.observations:
        return "none"
    newest = example.observations[-1]
    return history_ref("Observation", str(newest.get("id")), rec.resource_version(newest))


def extension_fields(index: ExampleIndex, example: Example) -> dict[str, Any]:
    """The extended view's fields of an example (the UI's): status, its FHIR references, the
    pseudonymous patient key and split, the label's version and name."""
    fields: dict[str, Any] = {
        "status": status_of(example),
        "documentReference": history_ref("DocumentReference", example.id, example.image.version),
        "patient": example.image.patient_ref,
        "patientKey": index.patient_key(example),
        "split": index.split(example) or "unassigned",
        "labelVersion": label_version(example),
        "contentType": example.image.content_type,
    }
    if example.label is not None:
        found = _class_index(example.label.record)
        if found is not None:
            fields["labelName"] = dict(index.dataset.labels).get(found)
        if example.label.conflicting:
            fields["conflict"] = True
    return fields


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
    from patient_ml.settings import env_number

    return env_number("PATIENT_ML_EXAMPLES_CACHE_SECONDS", 10, low=0, high=86_400)


_REBUILDING: set[tuple[str, int]] = set()
_REFRESH_LOCK = threading.Lock()  # an example's refresh vs. a rebuilt index taking its place


def cached_index(key: tuple[str, int], build: Callable[[], ExampleIndex]) -> ExampleIndex:
    """The index of a dataset revision. The first request builds it; once it is older than
    `cache_seconds()` it is still served while one background thread rebuilds it (so no request
    waits for a rebuild of a large dataset); with 0 every request builds its own."""
    ttl = cache_seconds()
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        stale = found is not None and time.monotonic() - found.built >= ttl
        start = stale and key not in _REBUILDING
        if start:
            _REBUILDING.add(key)
    if found is not None and ttl > 0:
        if start:
            threading.Thread(
                target=_rebuild, args=(key, build), name=f"examples-index-{key[0]}", daemon=True
            ).start()
        return found
    return _store(key, build(), ttl)


def _store(key: tuple[str, int], index: ExampleIndex, ttl: float) -> ExampleIndex:
    if ttl > 0:
        with _CACHE_LOCK:
            for old in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[old]
            _CACHE[key] = index
    return index


def _rebuild(key: tuple[str, int], build: Callable[[], ExampleIndex]) -> None:
    started = time.monotonic()
    try:
        index = build()
    except Exception as exc:  # the stale index stays; the next stale request tries again
        _log.warning("rebuilding the examples index of dataset %s failed: %s", key[0], exc)
    else:
        with _CACHE_LOCK:
            current = _CACHE.get(key)
        if current is not None and current.built > started:
            return  # replaced meanwhile (a first build of a new revision)
        with _REFRESH_LOCK:
            if current is not None:
                _carry_over(current, index, started)
            _store(key, index, cache_seconds())
        _log.info(
            "rebuilt the examples index of dataset %s: %d examples in %.1f s",
            key[0], len(index.ids), time.monotonic() - started,
        )  # fmt: skip
    finally:
        with _CACHE_LOCK:
            _REBUILDING.discard(key)


def _carry_over(current: ExampleIndex, rebuilt: ExampleIndex, started: float) -> None:
    """Saves made through this process while the rebuild read the source may be missing from
    it; the examples they updated are taken from the current index."""
    for example_id in [i for i, at in current.refreshed_at.items() if at >= started]:
        part = ExampleIndex(current.dataset, {}, [])
        if example_id in current.examples:
            part.examples[example_id] = current.examples[example_id]
        if example_id in current.history:
            part.history[example_id] = current.history[example_id]
        rebuilt.replace_example(example_id, part)
        rebuilt.refreshed_at[example_id] = current.refreshed_at[example_id]


def apply_refresh(
    key: tuple[str, int], index: ExampleIndex, example_id: str, part: ExampleIndex
) -> None:
    """Put the example re-read alone (`part`) into `index` and into the cached index of `key`
    when a background rebuild has replaced `index` meanwhile."""
    with _REFRESH_LOCK:
        index.replace_example(example_id, part)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None and cached is not index:
            cached.replace_example(example_id, part)


def forget(dataset_id: str) -> None:
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[0] == dataset_id]:
            del _CACHE[old]
