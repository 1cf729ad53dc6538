"""A curated snapshot's contents, built from a staged curation: the dataset's view, its
records staged and resolved, patient-level splits with near-duplicate groups, the manifest (its
sha256 is the snapshot id), the report and the quarantine lines. Nothing here reads or writes
the product DB: `patient_ml.services.curation.curate` runs these steps and records the snapshot.

Artifact layout (local folder or S3 prefix):
    datasets/<dataset id>/images/<sha[:2]>/<sha>.<ext>     content-addressed, shared by snapshots
    datasets/<dataset id>/masks/<sha[:2]>/<sha>.png
    datasets/<dataset id>/snapshots/<snapshot id>/manifest.jsonl   (its sha256 is the id)
    datasets/<dataset id>/snapshots/<snapshot id>/report.json
    datasets/<dataset id>/snapshots/<snapshot id>/quarantine.jsonl
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from patient_ml.config.models import CurationSettings
from patient_ml.curation import pipeline
from patient_ml.curation.attributes import AttributePlan, example_attributes
from patient_ml.curation.fetch import ImageFetching
from patient_ml.curation.images import ImageLimits, inspect_image, inspect_mask
from patient_ml.curation.near_duplicates import KIND as SIGNATURE_KIND
from patient_ml.curation.near_duplicates import SIGNATURE_BYTES, Transforms, link
from patient_ml.curation.pipeline import CurationStats, DatasetView
from patient_ml.curation.quarantine import REASONS
from patient_ml.curation.records import ImageRecord
from patient_ml.curation.sources import RecordSource
from patient_ml.curation.splits import SplitInput, assign_splits
from patient_ml.curation.staging import Staging
from patient_ml.curation.upstream import UpstreamPlan, upstream_report
from patient_ml.db.models import Dataset
from patient_ml.fhir.mapping import default_label_system

if TYPE_CHECKING:
    from patient_ml.storage.base import ArtifactStore

log = logging.getLogger("patient_ml.curation")

MANIFEST_FORMAT = "patient-ml-snapshot/2"  # 2: each example's cluster and copiesInSplits
TEMP_PREFIX = "patient-ml-curation-"
REPORT_ITEMS = 200  # quarantined records listed in report.json; all are in quarantine.jsonl


def dataset_view_of(ds: Dataset, upstream: UpstreamPlan | None = None) -> DatasetView:
    """What curation needs of a dataset row (read it inside the session that loaded it), and
    the resolved `source.fromModel` of a chained dataset."""
    problem = ds.problem_definition
    settings = CurationSettings.model_validate(ds.curation or {})
    return DatasetView(
        id=ds.id,
        name=ds.name,
        problem_type=ds.problem_type,
        labels=tuple(
            (label["index"], label["name"]) for label in problem["labelDefinition"]["labels"]
        ),
        label_system=problem.get("labelSystem") or default_label_system(ds.name),
        filter_codes=tuple(problem["trainingDataFilter"]["codes"]),
        split_ratios=settings.split_ratios.model_dump(),
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        min_image_side=settings.min_image_side,
        salt=ds.split_salt,
        fingerprint=SIGNATURE_KIND if settings.near_duplicates.enabled else None,
        near_duplicate_min_correlation=settings.near_duplicates.min_correlation,
        near_duplicate_transforms=tuple(settings.near_duplicates.transforms),
        deprecated_settings=tuple(settings.near_duplicates.deprecated_settings()),
        attributes=AttributePlan.of(settings.subgroups),
        upstream=upstream,
    )


@dataclass(frozen=True)
class Staged:
    """A curation's records staged and resolved (stages 1-3 of `patient_ml.curation.pipeline`),
    ready for its splits and manifest; `work` holds the staging file and the manifest."""

    dataset: DatasetView
    staging: Staging
    stats: CurationStats
    identical_groups: dict[str, list[str]]
    work: Path


@contextlib.contextmanager
def staged_curation(
    dataset: DatasetView,
    source: RecordSource,
    store: ArtifactStore,
    fetcher: ImageFetching,
    *,
    workdir: Path | None = None,
    workers: int = 8,
) -> Iterator[Staged]:
    """Read `source`, store each checked image (and mask) in `store`, resolve labels and collapse
    identical images; yields while the staging file is open. Without `workdir`, a private
    temporary folder is used and removed on exit, even when curation fails."""
    limits = ImageLimits(max_pixels=dataset.max_image_pixels, min_side=dataset.min_image_side)
    mask_values = {index for index, _ in dataset.labels}

    def store_image(image: ImageRecord) -> tuple[Any, str]:
        data = fetcher.fetch(image.attachment)
        info = inspect_image(data, image.content_type, limits, fingerprint=dataset.fingerprint)
        del data
        key = f"images/{info.sha256[:2]}/{info.sha256}.{info.stored_ext}"
        store.put_if_absent_bytes(f"{dataset.prefix}/{key}", info.stored_bytes)
        return replace(info, stored_bytes=b""), key  # the bytes are stored: free them now

    def store_mask(attachment: dict[str, Any], width: int, height: int) -> tuple[str, str]:
        data = fetcher.fetch(attachment)
        info = inspect_mask(data, width=width, height=height, allowed_values=mask_values)
        key = f"masks/{info.sha256[:2]}/{info.sha256}.png"
        store.put_if_absent_bytes(f"{dataset.prefix}/{key}", data)
        return info.sha256, key

    log.info("curation of dataset %r from %s", dataset.name, source.description)
    stats = CurationStats()
    with contextlib.ExitStack() as cleanup:
        if workdir is None:  # a private temporary folder, removed even when curation fails
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=TEMP_PREFIX)))
        else:
            work = Path(workdir)
        staging = Staging(pipeline.staging_path(work, dataset.id))
        cleanup.callback(staging.close)
        pipeline.stage_records(source, dataset, staging, store_image, workers=workers, stats=stats)
        if dataset.problem_type == "imgSeg":
            pipeline.check_masks(staging, dataset, store_mask, workers=workers)
        identical_groups = pipeline.resolve(staging)
        yield Staged(dataset, staging, stats, identical_groups, work)


@dataclass
class NearDuplicates:
    """Verified near-duplicate groups of one curation (members are sha256s; some may be
    images of earlier curations that are no longer in the source)."""

    groups: list[list[str]]
    similarity: list[float]  # per group: its weakest verified link
    earlier: set[str]  # members known only from stored signatures
    current_signatures: dict[str, bytes]
    candidates: int = 0
    links: int = 0
    seconds: float = 0.0
    copies_elsewhere: dict[str, list[str]] | None = None  # example id -> other splits


def earlier_images_to_verify(
    staging: Staging, prior: dict[tuple[str, str], str], kept: set[str]
) -> set[str]:
    """sha256s of images that earlier curations assigned a split, whose signature the dataset
    keeps (`kept`), and that this curation did not see: new copies are verified against them."""
    current = {row[0] for row in staging.query("SELECT DISTINCT sha256 FROM images")}
    assigned = {key for kind, key in prior if kind == "image" and not key.startswith("near:")}
    return (assigned & kept) - current


def assign(
    staging: Staging,
    dataset: DatasetView,
    prior: dict[tuple[str, str], str],
    earlier: dict[str, bytes],
) -> tuple[dict[tuple[str, str], str], NearDuplicates]:
    """Patient-level splits of the staged examples, keeping every `prior` assignment and linking
    near-duplicate groups (with `earlier` curations' images); conflicts are quarantined. Returns
    the new assignments to record and the near-duplicate groups."""
    rows = list(
        staging.query(
            """
            SELECT i.doc_id, i.patient_key, i.sha256, i.fingerprint,
                   CASE WHEN r.label_status = 'confirmed' AND r.excluded_reason IS NULL
                        THEN r.class_index END
            FROM images i JOIN resolved r ON r.doc_id = i.doc_id
            WHERE r.excluded_reason IS NULL OR r.excluded_reason = 'duplicate_image'
            ORDER BY i.doc_id
            """
        )
    )
    near = _near_duplicate_groups(rows, dataset, earlier)
    # Every member of a group is linked to every other member's image node (earlier
    # curations' images too), so a member — or a later copy — lands in the split the group's
    # earlier members hold, and a new copy whose patient sits in another split sees both
    # splits and is quarantined itself (whatever the order of example ids), never an earlier
    # one. Examples assigned before a link between them was found keep their splits and are
    # listed (`copies_elsewhere`).
    link: dict[str, tuple[str, ...]] = {}
    for members in near.groups:
        link.update(dict.fromkeys(members, tuple(members)))
    # Stratify by the confirmed class (imgClf); imgSeg examples and examples without a
    # confirmed label (or collapsed as identical copies) count only towards the split ratios.
    stratify = dataset.problem_type == "imgClf"
    inputs = [
        SplitInput(
            doc_id,
            pkey,
            (sha,),
            track_example=True,
            label=str(label) if stratify and label is not None else None,
            copy_keys=tuple(k for k in link.get(sha, ()) if k != sha),
        )
        for doc_id, pkey, sha, _, label in rows
    ]
    result = assign_splits(inputs, prior, salt=dataset.salt, ratios=dataset.split_ratios)
    staging.execute_many(
        "UPDATE resolved SET split = ?, cluster = ?, copies_elsewhere = ? WHERE doc_id = ?",
        [
            (
                split,
                result.clusters.get(doc_id),
                ",".join(result.copies_elsewhere.get(doc_id, ())) or None,
                doc_id,
            )
            for doc_id, split in result.splits.items()
        ],
    )
    near.copies_elsewhere = result.copies_elsewhere
    if result.copies_elsewhere:
        log.warning(
            "near-duplicates: %d examples keep the split an earlier curation gave them while a "
            "copy found now sits in another split (report.json: nearDuplicates.crossSplit); "
            "evaluation leaves out the test examples among them that have a copy in train",
            len(result.copies_elsewhere),
        )
    if result.conflicts:
        near_link = {doc_id for doc_id, _, sha, *_ in rows if sha in link}
        reason = {True: "near_duplicate_conflict", False: "duplicate_image_conflict"}
        staging.execute_many(
            "UPDATE resolved SET excluded_reason = ?, excluded_detail = ? WHERE doc_id = ?",
            [
                (
                    "split_conflict"
                    if result.conflict_reasons.get(doc_id) == "split_conflict"
                    else reason[doc_id in near_link],
                    detail,
                    doc_id,
                )
                for doc_id, detail in result.conflicts.items()
            ],
        )
    return result.new_assignments, near


def _near_duplicate_groups(
    rows: list[tuple[Any, ...]], dataset: DatasetView, earlier: dict[str, bytes]
) -> NearDuplicates:
    """Groups of distinct sha256s (with earlier curations' images) linked as verified copies."""
    current = {sha: fp for _, _, sha, fp, *_ in rows if fp is not None}
    if dataset.fingerprint is None:
        return NearDuplicates([], [], set(), {})
    for name in dataset.deprecated_settings:
        log.warning(
            "near-duplicates: %s is a setting of the v1 hash grouping and is ignored; "
            "copies are verified by thumbnail correlation (curation.nearDuplicates."
            "minCorrelation). Remove it from the dataset's curation settings.",
            name,
        )
    signatures = {s: fp for s, fp in current.items() if len(fp) == SIGNATURE_BYTES}
    gone = {s: fp for s, fp in earlier.items() if s not in signatures}
    shas = sorted(signatures.keys() | gone.keys())
    everything = {**gone, **signatures}
    transforms = Transforms.of(dataset.near_duplicate_transforms)
    found = link([everything[s] for s in shas], dataset.near_duplicate_min_correlation, transforms)
    groups = [[shas[i] for i in members] for members in found.groups]
    similarity = [found.similarity_within(members) for members in found.groups]
    largest = max((len(g) for g in groups), default=0)
    if shas and largest > max(20, 0.05 * len(shas)):
        log.warning(
            "near-duplicates: one group holds %d of %d images; it lands in a single split and "
            "skews the split ratios. Check its images (report.json lists it), or raise "
            "curation.nearDuplicates.minCorrelation.",
            largest,
            len(shas),
        )
    log.info(
        "near-duplicates (correlation >= %.3f under %s): %d candidate pairs, %d verified "
        "links, %d groups covering %d images (%d from earlier curations), in %.1f s",
        dataset.near_duplicate_min_correlation,
        ", ".join(transforms.names) or "no transforms",
        found.candidates,
        len(found.links),
        len(groups),
        sum(len(g) for g in groups),
        len(gone),
        found.seconds,
    )
    return NearDuplicates(
        groups,
        similarity,
        set(gone),
        signatures,
        candidates=found.candidates,
        links=len(found.links),
        seconds=round(found.seconds, 3),
    )


def near_duplicate_report(
    staging: Staging, dataset: DatasetView, near: NearDuplicates, limit: int = 50
) -> dict[str, Any]:
    """Groups spanning several patients (possible mis-filed patient ids) and groups whose
    members carry different labels (label quality), by example id with the group's weakest
    verified similarity — never patient data."""
    groups = near.groups
    info: dict[str, Any] = {
        "enabled": dataset.fingerprint is not None,
        "signature": dataset.fingerprint,
        "minCorrelation": dataset.near_duplicate_min_correlation,
        "transforms": list(dataset.near_duplicate_transforms),
        "candidatePairs": near.candidates,
        "verifiedLinks": near.links,
        "groups": len(groups),
        "imagesInGroups": sum(len(g) for g in groups),
        "largestGroup": max((len(g) for g in groups), default=0),
        "imagesFromEarlierCurations": sum(1 for g in groups for m in g if m in near.earlier),
        "seconds": near.seconds,
    }
    if dataset.deprecated_settings:
        info["ignoredSettings"] = list(dataset.deprecated_settings)
    spanning, mixed = [], []
    for members, similarity in zip(groups, near.similarity, strict=True):
        marks = ",".join("?" * len(members))
        rows = list(
            staging.query(
                f"SELECT i.doc_id, i.patient_key, r.label_status, r.class_index, r.mask_sha "
                f"FROM images i JOIN resolved r ON r.doc_id = i.doc_id "
                f"WHERE i.sha256 IN ({marks}) ORDER BY i.doc_id",
                tuple(members),
            )
        )
        examples = [r[0] for r in rows]
        if len({r[1] for r in rows}) > 1:
            spanning.append(
                {
                    "examples": examples,
                    "patients": len({r[1] for r in rows}),
                    "similarity": similarity,
                }
            )
        labels = {r[3] for r in rows if r[2] == "confirmed" and r[3] is not None}
        if dataset.problem_type == "imgClf" and len(labels) > 1:
            mixed.append({"examples": examples, "labels": sorted(labels), "similarity": similarity})
    info["groupsSpanningPatients"] = {"count": len(spanning), "items": spanning[:limit]}
    info["groupsWithDifferentLabels"] = {"count": len(mixed), "items": mixed[:limit]}
    elsewhere = near.copies_elsewhere or {}
    split_of = dict(staging.query("SELECT doc_id, split FROM resolved WHERE split IS NOT NULL"))
    crossing: list[dict[str, Any]] = [
        {"example": doc_id, "split": split_of.get(doc_id), "copiesIn": others}
        for doc_id, others in sorted(elsewhere.items())
    ]
    in_test = [doc_id for doc_id, others in elsewhere.items() if "train" in others]
    info["crossSplit"] = {
        "count": len(crossing),
        "testWithCopyInTrain": sum(1 for doc_id in in_test if split_of.get(doc_id) == "test"),
        "items": crossing[:limit],
        "itemsOmitted": max(0, len(crossing) - limit),
    }
    return info


def write_manifest(staging: Staging, dataset: DatasetView, path: Path) -> tuple[str, int]:
    """Canonical JSON lines (sorted keys, examples sorted by id); returns (sha256, examples)."""
    digest = hashlib.sha256()
    names = dict(dataset.labels)
    header = {
        "format": MANIFEST_FORMAT,
        "datasetId": dataset.id,
        "problemType": dataset.problem_type,
        "labelSystem": dataset.label_system,
        "labels": [{"index": i, "name": n} for i, n in sorted(dataset.labels)],
        "filterCodes": sorted(dataset.filter_codes),
    }
    count = 0
    with open(path, "wb") as out:
        for obj in _manifest_objects(header, staging, names, dataset.attributes):
            line = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n"
            digest.update(line)
            out.write(line)
            count += 1
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), count - 1


def _manifest_objects(
    header: dict[str, Any], staging: Staging, names: dict[int, str], plan: AttributePlan
) -> Iterator[dict[str, Any]]:
    yield header
    for row in pipeline.iter_examples(staging):
        (
            doc_id,
            version,
            pkey,
            split,
            sha,
            key,
            ctype,
            width,
            height,
            status,
            class_index,
            mask_sha,
            mask_key,
            obs_id,
            obs_version,
            confirmed_by,
            cluster,
            copies_elsewhere,
            document_kept,
            patient_kept,
            device,
        ) = row
        label: dict[str, Any] = {"status": status}
        if status != "none":
            label["observationId"] = obs_id
            label["observationVersion"] = obs_version
            if class_index is not None:
                label["classes"] = [class_index]
                label["name"] = names.get(class_index)
            if mask_sha is not None:
                label["mask"] = {"sha256": mask_sha, "key": mask_key}
            if confirmed_by:
                label["confirmedBy"] = confirmed_by
        entry: dict[str, Any] = {
            "id": doc_id,
            "version": version,
            "patientKey": pkey,
            "cluster": cluster,
            "split": split,
            "image": {
                "sha256": sha,
                "key": key,
                "contentType": ctype,
                "width": width,
                "height": height,
            },
            "label": label,
        }
        if copies_elsewhere:
            entry["copiesInSplits"] = copies_elsewhere.split(",")
        if plan.attributes:
            found = example_attributes(
                plan,
                orjson.loads(document_kept or "{}"),
                orjson.loads(patient_kept or "{}"),
                device,
            )
            if found:  # absent: no subgroups for this example (and old manifests unchanged)
                entry["attributes"] = found
        yield entry


def build_report(
    staging: Staging,
    dataset: DatasetView,
    stats: CurationStats,
    snapshot_id: str,
    identical_groups: dict[str, list[str]],
) -> dict[str, Any]:
    names = dict(dataset.labels)
    by_split: Counter[str] = Counter()
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    by_status: dict[str, Counter[str]] = defaultdict(Counter)
    patients: dict[str, set[str]] = defaultdict(set)
    clusters: dict[str, set[str]] = defaultdict(set)
    plan = dataset.attributes
    attributes: dict[str, Counter[str]] = {name: Counter() for name in plan.attributes}
    for row in pipeline.iter_examples(staging):
        split, status, class_index, pkey = row[3], row[9], row[10], row[2]
        if plan.attributes:
            found = example_attributes(
                plan, orjson.loads(row[18] or "{}"), orjson.loads(row[19] or "{}"), row[20]
            )
            for name in plan.attributes:
                attributes[name][found.get(name, "(missing)")] += 1
        clusters[split].add(row[16])
        by_split[split] += 1
        by_status[split][status] += 1
        if status == "confirmed":
            label = names.get(class_index, "mask") if class_index is not None else "mask"
            by_label[split][label] += 1
        patients[split].add(pkey)
    quarantined = list(
        staging.query("SELECT kind, resource_id, source, reason, detail FROM quarantine")
    )
    excluded = list(
        staging.query(
            "SELECT doc_id, excluded_reason, excluded_detail FROM resolved "
            "WHERE excluded_reason IS NOT NULL ORDER BY doc_id"
        )
    )
    reasons: Counter[str] = Counter(q[3] for q in quarantined)
    reasons.update(e[1] for e in excluded)
    items = [
        {"kind": q[0], "resourceId": q[1], "source": q[2], "reason": q[3], "detail": q[4]}
        for q in quarantined
    ] + [
        {
            "kind": "DocumentReference",
            "resourceId": e[0],
            "source": "resolution",
            "reason": e[1],
            "detail": e[2],
        }
        for e in excluded
    ]
    splits = ("train", "validation", "test")
    multi_patient = 0
    for doc_ids in identical_groups.values():
        marks = ",".join("?" * len(doc_ids))
        patients_in_group = staging.count(
            f"SELECT count(DISTINCT patient_key) FROM images WHERE doc_id IN ({marks})",
            tuple(doc_ids),
        )
        multi_patient += patients_in_group > 1
    return {
        "snapshotId": snapshot_id,
        "datasetId": dataset.id,
        "datasetName": dataset.name,
        "records": {
            "read": stats.records,
            "byResourceType": dict(sorted(stats.by_type.items())),
            "documentReferencesSelected": stats.selected_images,
            "documentReferencesNotSelected": stats.not_selected,
            "documentReferencesExcludedByStatus": stats.excluded_by_status,
            "labelRecords": stats.label_records,
            "labelRecordsOfOtherDatasets": stats.other_labels,
            "documentReferenceVersionsSuperseded": stats.superseded_versions,
            "orphanLabels": stats.orphan_labels,
        },
        "examples": {
            "total": sum(by_split.values()),
            "bySplit": {s: by_split.get(s, 0) for s in splits},
            "byLabel": {s: dict(sorted(by_label[s].items())) for s in splits},
            "byLabelStatus": {
                s: {k: by_status[s].get(k, 0) for k in ("confirmed", "draft", "none")}
                for s in splits
            },
        },
        "patients": {s: len(patients[s]) for s in splits},
        # linked components (patients joined by identical images and verified copies): the
        # independent units that intervals resample
        "clusters": {s: len(clusters[s]) for s in splits},
        # examples per subgroup attribute value (all splits), "(missing)" without a value
        "subgroups": {k: dict(sorted(v.items())) for k, v in attributes.items()},
        "identicalImages": {
            "groups": len(identical_groups),
            "groupsSpanningPatients": multi_patient,
        },
        "quarantined": {
            "total": len(items),
            "byReason": {
                r: {"count": n, "meaning": REASONS.get(r, "")} for r, n in sorted(reasons.items())
            },
            "items": items[:REPORT_ITEMS],
            "itemsOmitted": max(0, len(items) - REPORT_ITEMS),
        },
        **(
            {"upstream": upstream_report(staging, dataset.upstream, stats)}
            if dataset.upstream is not None
            else {}
        ),
        "seconds": round(time.monotonic() - stats.started, 3),
    }


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    summary = dict(report)
    summary["quarantined"] = {k: v for k, v in report["quarantined"].items() if k != "items"}
    return summary


def quarantine_lines(staging: Staging) -> bytes:
    lines = [
        orjson.dumps({"kind": k, "resourceId": r, "source": s, "reason": reason, "detail": d})
        for k, r, s, reason, d in staging.query(
            "SELECT kind, resource_id, source, reason, detail FROM quarantine ORDER BY rowid"
        )
    ]
    lines += [
        orjson.dumps(
            {
                "kind": "DocumentReference",
                "resourceId": doc,
                "source": "resolution",
                "reason": reason,
                "detail": detail,
            }
        )
        for doc, reason, detail in staging.query(
            "SELECT doc_id, excluded_reason, excluded_detail FROM resolved "
            "WHERE excluded_reason IS NOT NULL ORDER BY doc_id"
        )
    ]
    return b"\n".join(lines) + (b"\n" if lines else b"")
