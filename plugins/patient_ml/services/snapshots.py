"""Dataset snapshots and split assignments in the product database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from patient_ml.curation.splits import Node
from patient_ml.db.models import Dataset, ImageSignature, Run, Snapshot, SplitAssignment, utcnow
from patient_ml.exceptions import NotFoundError
from patient_ml.services import audit
from patient_ml.services.common import to_millis


def lock_dataset(session: Session, dataset_id: str) -> Dataset:
    """The dataset row, locked until the transaction ends (curations of one dataset queue)."""
    dataset = session.scalars(
        select(Dataset)
        .where(Dataset.id == dataset_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if dataset is None:
        raise NotFoundError(f"No dataset has the id {dataset_id!r}.", fix="check the dataset id")
    return dataset


def load_split_assignments(session: Session, dataset_id: str) -> dict[Node, str]:
    rows = session.execute(
        select(SplitAssignment.key_kind, SplitAssignment.key, SplitAssignment.split).where(
            SplitAssignment.dataset_id == dataset_id
        )
    )
    return {(kind, key): split for kind, key, split in rows}


def record_split_assignments(
    session: Session, dataset_id: str, assignments: dict[Node, str], snapshot_id: str
) -> int:
    """Store new assignments (existing ones are never changed); returns how many were new."""
    existing = load_split_assignments(session, dataset_id)
    now = utcnow()
    new = [
        {"dataset_id": dataset_id, "key_kind": kind, "key": key, "split": split,
         "first_snapshot_id": snapshot_id, "created_at": now}
        for (kind, key), split in assignments.items()
        if (kind, key) not in existing
    ]  # fmt: skip
    # Plain rows in chunks, not ORM objects: one row per patient, image and example.
    for start in range(0, len(new), 5000):
        session.execute(insert(SplitAssignment), new[start : start + 5000])
    session.flush()
    return len(new)


def stored_signature_keys(session: Session, dataset_id: str, kind: str) -> set[str]:
    """sha256s of the images whose near-duplicate signature (`kind`) the dataset keeps."""
    return set(
        session.scalars(
            select(ImageSignature.sha256).where(
                ImageSignature.dataset_id == dataset_id, ImageSignature.kind == kind
            )
        )
    )


def load_signatures(
    session: Session, dataset_id: str, kind: str, sha256s: set[str], batch: int = 5_000
) -> dict[str, bytes]:
    """The stored signatures of `sha256s` (those kept), read in batches."""
    wanted = sorted(sha256s)
    out: dict[str, bytes] = {}
    for start in range(0, len(wanted), batch):
        rows = session.execute(
            select(ImageSignature.sha256, ImageSignature.signature).where(
                ImageSignature.dataset_id == dataset_id,
                ImageSignature.kind == kind,
                ImageSignature.sha256.in_(wanted[start : start + batch]),
            )
        )
        out.update({sha: bytes(signature) for sha, signature in rows})
    return out


def record_signatures(
    session: Session, dataset_id: str, kind: str, signatures: dict[str, bytes], known: set[str]
) -> int:
    """Keep the signatures of images not kept yet (`known`: those already stored)."""
    now = utcnow()
    new = [
        {"dataset_id": dataset_id, "sha256": sha, "kind": kind, "signature": signature,
         "created_at": now}
        for sha, signature in sorted(signatures.items())
        if sha not in known
    ]  # fmt: skip
    # Plain rows in chunks, not ORM objects (3,000 of those took 0.2-0.5 s on Br35H).
    for start in range(0, len(new), 5000):
        session.execute(insert(ImageSignature), new[start : start + 5000])
    session.flush()
    return len(new)


def get_snapshot(session: Session, snapshot_id: str) -> Snapshot:
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None:
        raise NotFoundError(
            f"No snapshot has the id {snapshot_id!r}.", fix="list snapshots of the dataset"
        )
    return snapshot


def register_snapshot(
    session: Session,
    *,
    snapshot_id: str,
    dataset_id: str,
    manifest_uri: str,
    example_count: int,
    counts: dict[str, Any],
    report: dict[str, Any],
    actor: str,
) -> tuple[Snapshot, bool]:
    """Register a snapshot; returns (snapshot, created). An existing id is reused as is."""
    existing = session.get(Snapshot, snapshot_id)
    if existing is not None:
        return existing, False
    snapshot = Snapshot(
        id=snapshot_id,
        dataset_id=dataset_id,
        manifest_uri=manifest_uri,
        example_count=example_count,
        counts=counts,
        report=report,
    )
    session.add(snapshot)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="snapshot.create",
        entity_type="snapshot",
        entity_id=snapshot_id,
        after={"datasetId": dataset_id, "exampleCount": example_count, "counts": counts},
    )
    return snapshot, True


def link_run_to_snapshot(session: Session, run_id: str, snapshot_id: str, *, actor: str) -> None:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"No run has the id {run_id!r}.", fix="check the run id")
    if run.snapshot_id == snapshot_id:
        return
    before = {"snapshotId": run.snapshot_id}
    run.snapshot_id = snapshot_id
    audit.record(
        session,
        actor=actor,
        action="run.snapshot",
        entity_type="run",
        entity_id=run_id,
        before=before,
        after={"snapshotId": snapshot_id},
    )


def list_snapshots(session: Session, dataset_id: str) -> list[Snapshot]:
    return list(
        session.scalars(
            select(Snapshot).where(Snapshot.dataset_id == dataset_id).order_by(Snapshot.created_at)
        )
    )


def snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "datasetId": snapshot.dataset_id,
        "manifestUri": snapshot.manifest_uri,
        "exampleCount": snapshot.example_count,
        "counts": snapshot.counts,
        "createdAt": to_millis(snapshot.created_at),
    }
