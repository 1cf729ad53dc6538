"""`curate()`: the whole curation of one dataset, from a record source to a registered snapshot.

The curation stage (`patient_ml.curation.snapshot`) stages the records and builds the splits,
manifest and report; this module reads the dataset and records the snapshot, its split
assignments and near-duplicate signatures in the product DB, under a lock on the dataset.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from patient_ml.curation.fetch import ImageFetching
from patient_ml.curation.pipeline import DatasetView
from patient_ml.curation.snapshot import (
    Staged,
    assign,
    build_report,
    dataset_view_of,
    earlier_images_to_verify,
    near_duplicate_report,
    quarantine_lines,
    report_summary,
    staged_curation,
    write_manifest,
)
from patient_ml.curation.sources import RecordSource
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Snapshot
from patient_ml.services import snapshots as snapshot_service
from patient_ml.services.datasets import get_dataset
from patient_ml.services.upstream import upstream_plan

if TYPE_CHECKING:
    from patient_ml.storage.base import ArtifactStore

log = logging.getLogger("patient_ml.curation")


@dataclass(frozen=True)
class CurationResult:
    snapshot_id: str
    created: bool
    manifest_uri: str
    example_count: int
    report: dict[str, Any]


def dataset_view(engine: Engine, dataset_ref: str) -> DatasetView:
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_ref)
        return dataset_view_of(dataset, upstream=upstream_plan(session, dataset))


def curate(
    *,
    engine: Engine,
    dataset_ref: str,
    source: RecordSource,
    store: ArtifactStore,
    fetcher: ImageFetching,
    workdir: Path | None = None,
    actor: str = "curation",
    run_id: str | None = None,
    workers: int = 8,
) -> CurationResult:
    """Curate `dataset_ref` from `source` into `store`; idempotent (same inputs → same id)."""
    dataset = dataset_view(engine, dataset_ref)
    with staged_curation(
        dataset, source, store, fetcher, workdir=workdir, workers=workers
    ) as staged:
        return _snapshot(engine, staged, store, actor, run_id)


def _snapshot(
    engine: Engine, staged: Staged, store: ArtifactStore, actor: str, run_id: str | None
) -> CurationResult:
    dataset, staging, stats, work = staged.dataset, staged.staging, staged.stats, staged.work
    with session_scope(engine) as session:
        snapshot_service.lock_dataset(session, dataset.id)
        prior = snapshot_service.load_split_assignments(session, dataset.id)
        kept, earlier = _earlier_signatures(session, staged, prior)
        new_assignments, near = assign(staging, dataset, prior, earlier)
        manifest_path = work / "manifest.jsonl"
        snapshot_id, count = write_manifest(staging, dataset, manifest_path)
        base = f"{dataset.prefix}/snapshots/{snapshot_id}"
        report = build_report(staging, dataset, stats, snapshot_id, staged.identical_groups)
        report["nearDuplicates"] = near_duplicate_report(staging, dataset, near)
        counts = {"bySplit": report["examples"]["bySplit"], "total": count}
        existing = session.get(Snapshot, snapshot_id)
        if existing is None:
            store.put_file(f"{base}/manifest.jsonl", manifest_path)
            store.put_bytes(f"{base}/report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
            store.put_bytes(f"{base}/quarantine.jsonl", quarantine_lines(staging))
        snapshot_service.record_split_assignments(session, dataset.id, new_assignments, snapshot_id)
        if dataset.fingerprint is not None:
            snapshot_service.record_signatures(
                session, dataset.id, dataset.fingerprint, near.current_signatures, kept
            )
        snapshot, created = snapshot_service.register_snapshot(
            session,
            snapshot_id=snapshot_id,
            dataset_id=dataset.id,
            manifest_uri=store.uri(f"{base}/manifest.jsonl"),
            example_count=count,
            counts=counts,
            report=report_summary(report),
            actor=actor,
        )
        if run_id:
            snapshot_service.link_run_to_snapshot(session, run_id, snapshot_id, actor=actor)
        manifest_uri = snapshot.manifest_uri
    manifest_path.unlink(missing_ok=True)
    verb = "created" if created else "reused (same inputs as before)"
    log.info(
        "snapshot %s %s: %d examples (%s), %d quarantined, in %.1f s",
        snapshot_id[:12],
        verb,
        count,
        ", ".join(f"{k} {v}" for k, v in report["examples"]["bySplit"].items()),
        report["quarantined"]["total"],
        time.monotonic() - stats.started,
    )
    return CurationResult(snapshot_id, created, manifest_uri, count, report)


def _earlier_signatures(
    session: Session, staged: Staged, prior: dict[tuple[str, str], str]
) -> tuple[set[str], dict[str, bytes]]:
    """(sha256s whose signature the dataset keeps, signatures of images that earlier curations
    assigned a split and that this one did not see: new copies are verified against them)."""
    dataset = staged.dataset
    if dataset.fingerprint is None:
        return set(), {}
    kept = snapshot_service.stored_signature_keys(session, dataset.id, dataset.fingerprint)
    wanted = earlier_images_to_verify(staged.staging, prior, kept)
    return kept, snapshot_service.load_signatures(session, dataset.id, dataset.fingerprint, wanted)
