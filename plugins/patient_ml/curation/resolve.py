"""Decide each staged image's label (confirmed / draft / none) and collapse identical images.

* Only confirmed labels train or evaluate; several confirmed labels must agree (same class, or
  the same mask), otherwise the image is excluded as `conflicting_labels`.
* An image with only draft labels keeps its latest draft, for labellers to confirm.
* Identical images (same sha256) become one example: the lowest DocumentReference id with the
  best label; the others are excluded as `duplicate_image` (or all of them as
  `conflicting_labels` when their confirmed labels disagree). Their patients stay linked for the
  split assignment, so the image cannot appear on both sides.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from patient_ml.curation.staging import Staging

_RANK = {"confirmed": 2, "draft": 1, "none": 0}


def resolve_labels(staging: Staging) -> None:
    rows = staging.query(
        """
        SELECT i.doc_id, l.obs_id, l.version, l.status, l.class_index, l.mask_sha, l.mask_key,
               l.mask_reason, l.performer, l.updated
        FROM images i LEFT JOIN labels l ON l.doc_id = i.doc_id
        ORDER BY i.doc_id, l.updated, l.obs_id
        """
    )
    out: list[tuple[Any, ...]] = []
    for doc_id, group in groupby(rows, key=lambda r: r[0]):
        labels = [r for r in group if r[1] is not None and r[7] is None]
        out.append(_resolve_one(doc_id, labels))
        if len(out) >= 2000:
            _write(staging, out)
    _write(staging, out)


def _resolve_one(doc_id: str, labels: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    confirmed = [r for r in labels if r[3] == "confirmed"]
    drafts = [r for r in labels if r[3] == "draft"]
    if confirmed:
        values = {(r[4], r[5]) for r in confirmed}
        if len(values) > 1:
            ids = ", ".join(sorted(r[1] for r in confirmed))
            return (doc_id, "none", None, None, None, None, None, None, None,
                    "conflicting_labels", f"Observations {ids}")  # fmt: skip
        chosen, status = confirmed[-1], "confirmed"
    elif drafts:
        chosen, status = drafts[-1], "draft"
    else:
        return (doc_id, "none", None, None, None, None, None, None, None, None, None)
    return (doc_id, status, chosen[4], chosen[5], chosen[6], chosen[1], chosen[2],
            chosen[8] if status == "confirmed" else None, None, None, None)  # fmt: skip


def _write(staging: Staging, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        staging.execute_many(
            f"INSERT INTO resolved VALUES ({','.join('?' * 11)}, NULL, NULL)", rows
        )
        rows.clear()


def collapse_identical_images(staging: Staging) -> dict[str, list[str]]:
    """Mark duplicates; returns {sha256: [doc ids]} of every identical-image group."""
    groups: dict[str, list[str]] = {}
    rows = staging.query(
        """
        SELECT i.sha256, i.doc_id, r.label_status, r.class_index, r.mask_sha, r.excluded_reason
        FROM images i JOIN resolved r ON r.doc_id = i.doc_id
        WHERE i.sha256 IN (SELECT sha256 FROM images GROUP BY sha256 HAVING count(*) > 1)
        ORDER BY i.sha256, i.doc_id
        """
    )
    updates: list[tuple[str, str, str]] = []
    for sha, group in groupby(rows, key=lambda r: r[0]):
        members = list(group)
        groups[sha] = [m[1] for m in members]
        confirmed = {(m[3], m[4]) for m in members if m[2] == "confirmed" and m[5] is None}
        if len(confirmed) > 1:
            for m in members:
                if m[5] is None:
                    others = ", ".join(x[1] for x in members if x[1] != m[1])
                    updates.append(("conflicting_labels", f"identical to {others}", m[1]))
            continue
        usable = [m for m in members if m[5] is None]
        if not usable:
            continue
        keep = min(usable, key=lambda m: (-_RANK[m[2]], m[1]))
        for m in usable:
            if m[1] != keep[1]:
                updates.append(("duplicate_image", f"identical to {keep[1]}", m[1]))
    if updates:
        staging.execute_many(
            "UPDATE resolved SET excluded_reason = ?, excluded_detail = ? WHERE doc_id = ?",
            updates,
        )
    return groups
