"""Curate one dataset: FHIR records → images and labels checked → splits → snapshot.

Stages (each streams; per-record state lives in a scratch SQLite file):
1. read records (a line longer than the record limit of the dataset's maxImageBytes is read
   past, never held); select the dataset's DocumentReferences (inline images are decoded into
   scratch files as they are read); fetch, decode and store each image (content-addressed, in
   a thread pool); stage label Observations; quarantine bad records;
2. imgSeg: fetch and check masks against their image;
3. resolve labels per image and collapse identical images;
4. assign patient-level splits, keeping every earlier assignment (under a lock on the dataset);
5. write the manifest (sorted, canonical JSON lines); its sha256 is the snapshot id; register
   it, or reuse the snapshot when it already exists (same inputs → same id).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from patient_ml.config.identifiers import is_fhir_id, require_safe_id, shorten
from patient_ml.curation import inline
from patient_ml.curation import records as rec
from patient_ml.curation.attributes import AttributePlan, document_attributes, patient_attributes
from patient_ml.curation.quarantine import QuarantineError, with_validation_detail
from patient_ml.curation.resolve import collapse_identical_images, resolve_labels
from patient_ml.curation.sources import RecordSource
from patient_ml.curation.splits import patient_key
from patient_ml.curation.staging import Staging, version_key
from patient_ml.curation.upstream import (
    NoUpstreamPredictionsError,
    UpstreamPlan,
    upstream_prediction,
)
from patient_ml.fhir import mapping
from patient_ml.fhir.ndjson import LineTooLong, max_line_bytes_for

log = logging.getLogger("patient_ml.curation")


@dataclass(frozen=True)
class DatasetView:
    """What curation needs of a dataset, read once at the start."""

    id: str
    name: str
    problem_type: str
    labels: tuple[tuple[int, str], ...]  # (index, name)
    label_system: str
    filter_codes: tuple[str, ...]
    split_ratios: dict[str, float]
    max_image_bytes: int
    max_image_pixels: int
    min_image_side: int
    salt: str
    fingerprint: str | None = None  # near-duplicate signature kind; None = off
    near_duplicate_min_correlation: float = 0.94
    near_duplicate_transforms: tuple[str, ...] = ("mirror",)
    deprecated_settings: tuple[str, ...] = ()
    attributes: AttributePlan = field(default_factory=AttributePlan)  # subgroups to keep
    upstream: UpstreamPlan | None = None  # source.fromModel: predictions select the images

    @property
    def prefix(self) -> str:
        return f"datasets/{require_safe_id(self.id, 'dataset id')}"


@dataclass
class CurationStats:
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    selected_images: int = 0
    not_selected: int = 0
    excluded_by_status: int = 0
    label_records: int = 0
    other_labels: int = 0
    images_stored: int = 0
    quarantined: int = 0
    document_versions: int = 0  # DocumentReference records with an id, every version
    superseded_versions: int = 0  # older versions replaced by a newer one of the same id
    orphan_labels: int = 0  # labels whose DocumentReference is not in the source
    # source.fromModel: the upstream model's predictions read, and the selected images they
    # left out (no prediction of that model; a prediction that does not select the image)
    upstream_predictions: int = 0
    upstream_unscored: int = 0
    upstream_not_selected: int = 0
    last_log: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.records / max(time.monotonic() - self.started, 1e-9)


class Progress:
    """Logs counts and rates at most every `every` seconds: visible in the Airflow task log."""

    def __init__(self, stats: CurationStats, every: float = 5.0) -> None:
        self.stats, self.every = stats, every

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.stats.last_log >= self.every:
            s = self.stats
            log.info(
                "curation: %d records read (%.0f/s), %d images stored, %d label records, "
                "%d quarantined",
                s.records, s.rate(), s.images_stored, s.label_records, s.quarantined,
            )  # fmt: skip
            s.last_log = now


def stage_records(
    source: RecordSource,
    dataset: DatasetView,
    staging: Staging,
    store_image: Callable[[rec.ImageRecord], tuple[Any, str]],
    *,
    workers: int,
    stats: CurationStats,
) -> None:
    """Stage 1: read every record (staging the newest version of each DocumentReference and
    the labels), then fetch/check/store the images of the winning versions in a pool."""
    type_filter = rec.TokenFilter(dataset.filter_codes)
    progress = Progress(stats)
    limit_records = getattr(source, "limit_record_bytes", None)
    if callable(limit_records):  # a record may carry an inline image of maxImageBytes
        limit_records(max_line_bytes_for(dataset.max_image_bytes))
    for position, expected, raw in source.records():
        stats.records += 1
        _dispatch(position, expected, raw, dataset, type_filter, staging, stats)
        del raw  # before the next line is read: one record in memory at a time
        progress.tick()
    if dataset.upstream is not None and not stats.upstream_predictions:
        plan = dataset.upstream
        raise NoUpstreamPredictionsError(
            f"Dataset {dataset.name!r} takes its examples from the predictions of model "
            f"{plan.model_name!r} (source.fromModel), but {source.description} holds none.",
            fix="run that model's scoring DAG with writeBack on (it writes to the source of its "
            "dataset), or point this dataset's source where its predictions are written",
        )
    inflight: set[Future[tuple[Any, ...]]] = set()
    limit = max(4 * workers, 8)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate-fetch") as pool:
        for position, image in _winning_images(staging, stats, dataset.upstream):
            inflight.add(pool.submit(_fetch_job, store_image, image, position))
            if len(inflight) >= limit:
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                _collect(done, dataset, staging, stats)
            progress.tick()
        done, _ = wait(inflight)
        _collect(done, dataset, staging, stats)
    _quarantine_orphan_labels(staging, stats)
    progress.tick(force=True)


def _dispatch(
    position: str,
    expected: str | None,
    raw: bytes | str | dict[str, Any] | LineTooLong,
    dataset: DatasetView,
    type_filter: rec.TokenFilter,
    staging: Staging,
    stats: CurationStats,
) -> None:
    resource: dict[str, Any] | None = None
    try:
        resource = rec.parse_resource(raw)
        rtype = resource["resourceType"]
        stats.by_type[rtype] += 1
        if expected in rec_types() and rtype != expected:
            raise QuarantineError("wrong_resource_type", f"{rtype} where {expected} expected")
        if rtype == "Patient":
            _stage_patient(resource, dataset, staging)
        elif rtype == "DocumentReference":
            _stage_document(resource, position, type_filter, dataset, staging, stats)
        elif rtype == "Observation" and rec.has_patient_ml_code(resource, mapping.LABEL_CODE):
            label = rec.label_record(
                resource, label_system=dataset.label_system, problem_type=dataset.problem_type
            )
            if label is None:
                stats.other_labels += 1
            elif label.status == "excluded":
                stats.other_labels += 1
                _stage_label(label, dataset, staging)  # hides earlier versions of it
            else:
                stats.label_records += 1
                _stage_label(label, dataset, staging)
        elif (
            rtype == "Observation"
            and dataset.upstream is not None
            and rec.has_patient_ml_code(resource, mapping.PREDICTION_CODE)
        ):
            prediction = upstream_prediction(resource, dataset.upstream)
            if prediction is not None:
                stats.upstream_predictions += 1
                staging.add_prediction(
                    (prediction.doc_id, prediction.obs_id, prediction.version,
                     prediction.updated, int(prediction.selected), prediction.batch_id,
                     prediction.run_id)
                )  # fmt: skip
    except QuarantineError as q:
        resource = resource if resource is not None else q.resource
        kind = resource.get("resourceType") if isinstance(resource, dict) else expected
        rid = resource.get("id") if isinstance(resource, dict) else None
        if isinstance(resource, dict):
            q = with_validation_detail(q, inline.without_large_data(resource))
        _quarantine(staging, stats, str(kind or "record"), rid, position, q)


def _stage_patient(resource: dict[str, Any], dataset: DatasetView, staging: Staging) -> None:
    """Keep what the dataset's subgroups need of a Patient (nothing when they need nothing of
    it); a Patient without a valid id is skipped: no image can reference it."""
    rid = resource.get("id")
    if not dataset.attributes.needs_patients or not isinstance(rid, str) or not is_fhir_id(rid):
        return
    found = patient_attributes(resource, dataset.attributes)
    if found:
        staging.add_patient(f"Patient/{rid}", orjson.dumps(found).decode())


def _stage_document(
    resource: dict[str, Any],
    position: str,
    type_filter: rec.TokenFilter,
    dataset: DatasetView,
    staging: Staging,
    stats: CurationStats,
) -> None:
    """Stage one version of a DocumentReference with what it would mean (selected, not
    selected, excluded by status, or quarantined); only the newest version of an id counts.
    Inline image data is decoded into a scratch file now, so no staged row holds it."""
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        image = rec.image_record(resource, type_filter)  # raises missing_id when selected
        stats.not_selected += image == rec.NOT_SELECTED
        return
    stats.document_versions += 1
    payload: dict[str, Any]
    canonical = inline.canonical_sha(resource)
    try:
        image = rec.image_record(resource, type_filter)
        if isinstance(image, rec.ImageRecord):
            outcome = "selected"
            attachment, spilled = _spill_inline(image.attachment, dataset, staging)
            payload = {
                "version": image.version,
                "patient": image.patient_ref,
                "attachment": attachment,
                "contentType": image.content_type,
                "inlineFile": spilled,
            }
            if dataset.attributes.attributes:
                payload["attributes"] = document_attributes(resource, dataset.attributes)
        else:
            outcome, payload = str(image), {}
    except QuarantineError as q:
        q = with_validation_detail(q, inline.without_large_data(resource))
        outcome, payload = "quarantined", {"reason": q.reason, "detail": q.detail}
    key = version_key(rec.resource_version(resource), rec.resource_updated(resource), canonical)
    staging.add_document((rid, *key, outcome, orjson.dumps(payload).decode(), position))


def _spill_inline(
    attachment: dict[str, Any], dataset: DatasetView, staging: Staging
) -> tuple[dict[str, Any], tuple[str, int] | None]:
    """The attachment without its inline data, and (scratch file, size) of the data decoded
    there; (attachment, None) when it has no inline data."""
    if not attachment.get("data"):
        return attachment, None
    path = staging.scratch_file()
    size = inline.spill(attachment["data"], path, dataset.max_image_bytes)
    return {k: v for k, v in attachment.items() if k != "data"}, (str(path), size)


def _restored(attachment: dict[str, Any], spilled: object) -> dict[str, Any]:
    """The attachment to fetch: with its inline data read back from the scratch file
    (`spilled`: the staged `[path, size]` of `_spill_inline`, or None when nothing was)."""
    if not isinstance(spilled, list | tuple) or not spilled:
        return attachment
    return inline.SpilledData.of(attachment, Path(spilled[0]), int(spilled[1]))


def _winning_images(
    staging: Staging, stats: CurationStats, upstream: UpstreamPlan | None = None
) -> Iterator[tuple[str, Any]]:
    """The newest version of each DocumentReference, by id: the selected ones to fetch (with
    `upstream`, only those its newest prediction selects); the others counted (not selected,
    excluded by status, left out by the upstream model) or quarantined."""
    stats.superseded_versions = stats.document_versions - staging.count(
        "SELECT count(*) FROM documents"
    )
    last = ""
    while True:
        rows = list(
            staging.query(
                "SELECT d.doc_id, d.outcome, d.payload, d.position, p.selected "
                "FROM documents d LEFT JOIN predictions p ON p.doc_id = d.doc_id "
                "WHERE d.doc_id > ? ORDER BY d.doc_id LIMIT 500",
                (last,),
            )
        )
        if not rows:
            return
        for doc_id, outcome, payload_text, position, chosen in rows:
            payload = orjson.loads(payload_text)
            if outcome == "selected" and upstream is not None and not chosen:
                if chosen is None:
                    stats.upstream_unscored += 1
                else:
                    stats.upstream_not_selected += 1
            elif outcome == "selected":
                stats.selected_images += 1
                yield (
                    position,
                    rec.ImageRecord(
                        id=doc_id,
                        version=payload["version"],
                        patient_ref=payload["patient"],
                        attachment=_restored(payload["attachment"], payload.get("inlineFile")),
                        content_type=payload["contentType"],
                    ),
                )
            elif outcome == rec.NOT_SELECTED:
                stats.not_selected += 1
            elif outcome == rec.EXCLUDED:
                stats.excluded_by_status += 1
            else:
                error = QuarantineError(payload["reason"], payload["detail"])
                _quarantine(staging, stats, "DocumentReference", doc_id, position, error)
        last = rows[-1][0]


def _quarantine_orphan_labels(staging: Staging, stats: CurationStats) -> None:
    """Labels of this dataset whose DocumentReference is not among the records read: listed
    in the report (`label_orphan`), never dropped silently."""
    rows = list(
        staging.query(
            "SELECT obs_id, doc_id FROM labels WHERE status != 'excluded' "
            "AND doc_id NOT IN (SELECT doc_id FROM documents) ORDER BY obs_id"
        )
    )
    stats.orphan_labels = len(rows)
    for obs_id, doc_id in rows:
        error = QuarantineError("label_orphan", f"DocumentReference/{doc_id}")
        _quarantine(staging, stats, "Observation", obs_id, "labels", error)


def rec_types() -> tuple[str, ...]:
    return ("DocumentReference", "Observation", "Patient")


def _stage_label(label: rec.LabelRecord, dataset: DatasetView, staging: Staging) -> None:
    class_index = None
    if dataset.problem_type == "imgClf" and label.status != "excluded":
        indices = {index for index, _ in dataset.labels}
        class_index = rec.label_index(label.class_code)
        if class_index is None:
            raise QuarantineError(
                "label_malformed", f"code {shorten(label.class_code)!r} is not a label index"
            )
        if class_index not in indices:
            raise QuarantineError(
                "label_unknown_class", f"code {label.class_code!r} is not one of {sorted(indices)}"
            )
    mask_json = None
    if label.mask is not None:
        mask, spilled = _spill_inline(label.mask, dataset, staging)
        mask_json = orjson.dumps({"attachment": mask, "inlineFile": spilled}).decode()
    staging.add_label(
        (label.id, label.version, label.image_id, label.status, class_index, mask_json,
         None, None, None, label.performer, label.updated)
    )  # fmt: skip


def _fetch_job(
    store_image: Callable[[rec.ImageRecord], tuple[Any, str]],
    image: rec.ImageRecord,
    position: str,
) -> tuple[Any, ...]:
    try:
        info, key = store_image(image)
        return ("ok", image, position, info, key)
    except QuarantineError as q:
        return ("quarantined", image, position, q)
    finally:
        if isinstance(image.attachment, inline.SpilledData):
            image.attachment.release()  # fetched once: its scratch file is done


def _collect(
    done: set[Future[tuple[Any, ...]]], dataset: DatasetView, staging: Staging, stats: CurationStats
) -> None:
    for future in done:
        outcome = future.result()  # infrastructure errors (artifact store down) fail the task
        image: rec.ImageRecord = outcome[1]
        if outcome[0] == "quarantined":
            _quarantine(staging, stats, "DocumentReference", image.id, outcome[2], outcome[3])
            continue
        info, key = outcome[3], outcome[4]
        staging.add_image(
            (image.id, image.version, patient_key(dataset.salt, image.patient_ref), info.sha256,
             key, info.stored_content_type, info.width, info.height, info.fingerprint)
        )  # fmt: skip
        if info.device and "manufacturer" in dataset.attributes.attributes:
            staging.add_device(image.id, info.device)
        stats.images_stored += 1


def _quarantine(
    staging: Staging,
    stats: CurationStats,
    kind: str,
    resource_id: str | None,
    position: str,
    error: QuarantineError,
) -> None:
    stats.quarantined += 1
    if resource_id is not None and not is_fhir_id(resource_id):
        resource_id = shorten(resource_id, 80)  # an invalid id is shown escaped and short
    staging.add_quarantine(kind, resource_id, position, error.reason, error.detail)


def check_masks(
    staging: Staging,
    dataset: DatasetView,
    store_mask: Callable[[dict[str, Any], int, int], tuple[str, str]],
    *,
    workers: int,
) -> None:
    """Stage 2 (imgSeg): fetch each mask and check it against its image's size and labels
    (a bounded number in flight; inline masks come back from their scratch files)."""
    rows = staging.query(
        """
        SELECT l.obs_id, l.mask_json, i.width, i.height FROM labels l
        JOIN images i ON i.doc_id = l.doc_id WHERE l.mask_json IS NOT NULL
        """
    )

    def work(row: tuple[Any, ...]) -> tuple[Any, ...]:
        obs_id, mask_json, width, height = row
        stored = orjson.loads(mask_json)
        attachment = _restored(stored["attachment"], stored.get("inlineFile"))
        try:
            sha, key = store_mask(attachment, width, height)
            return (sha, key, None, obs_id)
        except QuarantineError as q:
            return (None, None, f"{q.reason}: {q.detail}", obs_id)
        finally:
            if isinstance(attachment, inline.SpilledData):
                attachment.release()

    results: list[tuple[Any, ...]] = []
    inflight: set[Future[tuple[Any, ...]]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate-mask") as pool:
        for row in rows:
            inflight.add(pool.submit(work, row))
            if len(inflight) >= max(4 * workers, 8):
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                results += [future.result() for future in done]
        results += [future.result() for future in wait(inflight)[0]]
    results.sort(key=lambda r: r[3])  # by Observation id, whatever the thread timing
    staging.execute_many(
        "UPDATE labels SET mask_sha = ?, mask_key = ?, mask_reason = ? WHERE obs_id = ?", results
    )
    for sha, _key, reason, obs_id in results:
        if sha is None:
            code, _, detail = reason.partition(": ")
            staging.add_quarantine("Observation", obs_id, "mask", code, detail)


def resolve(staging: Staging) -> dict[str, list[str]]:
    """Stage 3: labels per image, identical images collapsed."""
    resolve_labels(staging)
    return collapse_identical_images(staging)


def iter_examples(staging: Staging) -> Iterator[tuple[Any, ...]]:
    """Examples that are not excluded, sorted by DocumentReference id (manifest order)."""
    return staging.query(
        """
        SELECT i.doc_id, i.version, i.patient_key, r.split, i.sha256, i.stored_key,
               i.content_type, i.width, i.height, r.label_status, r.class_index, r.mask_sha,
               r.mask_key, r.obs_id, r.obs_version, r.confirmed_by, r.cluster,
               r.copies_elsewhere, json_extract(d.payload, '$.attributes'), p.attributes,
               v.device
        FROM images i JOIN resolved r ON r.doc_id = i.doc_id
        LEFT JOIN documents d ON d.doc_id = i.doc_id
        LEFT JOIN patients p ON p.patient_ref = json_extract(d.payload, '$.patient')
        LEFT JOIN devices v ON v.doc_id = i.doc_id
        WHERE r.excluded_reason IS NULL
        ORDER BY i.doc_id
        """
    )


def staging_path(workdir: Path, dataset_id: str) -> Path:
    name = f"curation-{require_safe_id(dataset_id, 'dataset id')}.sqlite"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir / name
