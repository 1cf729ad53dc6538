"""A scratch SQLite file that holds per-record state while one curation runs.

Curation streams records (constant memory) and keeps what it learns about each image and label
here, so 1,000,000 records cost disk, not RAM. The file is private to one task attempt and
deleted afterwards.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE images (
    doc_id TEXT PRIMARY KEY, version TEXT, patient_key TEXT NOT NULL, sha256 TEXT NOT NULL,
    stored_key TEXT NOT NULL, content_type TEXT, width INTEGER, height INTEGER,
    fingerprint BLOB
);
CREATE INDEX images_sha ON images (sha256);
CREATE TABLE labels (
    obs_id TEXT PRIMARY KEY, version TEXT, doc_id TEXT NOT NULL, status TEXT NOT NULL,
    class_index INTEGER, mask_json TEXT, mask_sha TEXT, mask_key TEXT, mask_reason TEXT,
    performer TEXT, updated TEXT
);
CREATE INDEX labels_doc ON labels (doc_id);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY, vnum TEXT NOT NULL, vtime TEXT NOT NULL, vsha TEXT NOT NULL,
    outcome TEXT NOT NULL, payload TEXT, position TEXT
);
CREATE TABLE predictions (
    doc_id TEXT PRIMARY KEY, obs_id TEXT NOT NULL, version TEXT, updated TEXT,
    selected INTEGER NOT NULL, batch_id TEXT, run_id TEXT
);
CREATE TABLE patients (patient_ref TEXT PRIMARY KEY, attributes TEXT NOT NULL);
CREATE TABLE devices (doc_id TEXT PRIMARY KEY, device TEXT NOT NULL);
CREATE TABLE quarantine (
    kind TEXT NOT NULL, resource_id TEXT, source TEXT, reason TEXT NOT NULL, detail TEXT
);
CREATE TABLE resolved (
    doc_id TEXT PRIMARY KEY, label_status TEXT NOT NULL, class_index INTEGER, mask_sha TEXT,
    mask_key TEXT, obs_id TEXT, obs_version TEXT, confirmed_by TEXT, split TEXT,
    excluded_reason TEXT, excluded_detail TEXT, cluster TEXT, copies_elsewhere TEXT
);
"""

_BATCH = 2000
_LABEL_COLUMNS = (
    "version", "doc_id", "status", "class_index", "mask_json", "mask_sha", "mask_key",
    "mask_reason", "performer", "updated",
)  # fmt: skip
# Several versions of one DocumentReference (an export with history, appended NDJSON): the
# newest by version_key() wins, decided here while records are read, before any image is
# fetched, so the outcome never depends on which fetch finishes last.
_NEWEST_DOCUMENT_WINS = (
    "ON CONFLICT (doc_id) DO UPDATE SET vnum = excluded.vnum, vtime = excluded.vtime, "
    "vsha = excluded.vsha, outcome = excluded.outcome, payload = excluded.payload, "
    "position = excluded.position "
    "WHERE (excluded.vnum, excluded.vtime, excluded.vsha) > "
    "(documents.vnum, documents.vtime, documents.vsha)"
)
_NEWER_LABEL_WINS = (
    "ON CONFLICT (obs_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _LABEL_COLUMNS)
    + " WHERE newer(excluded.version, excluded.updated, labels.version, labels.updated)"
)

# The upstream model's newest prediction per image decides (source.fromModel), whatever the
# order in which the versions are read.
_NEWER_PREDICTION_WINS = (
    "ON CONFLICT (doc_id) DO UPDATE SET obs_id = excluded.obs_id, version = excluded.version, "
    "updated = excluded.updated, selected = excluded.selected, batch_id = excluded.batch_id, "
    "run_id = excluded.run_id "
    "WHERE newer(excluded.version, excluded.updated, predictions.version, predictions.updated)"
)


def newer_version(
    version: str | None, updated: str | None, old_version: str | None, old_updated: str | None
) -> bool:
    """Whether a resource version replaces the one staged, in the order of version_key()
    (numeric versionId, then lastUpdated); when neither tells, the one read later wins (labels
    are read one after the other, in the source's order)."""
    new, old = version_key(version, updated, ""), version_key(old_version, old_updated, "")
    return new >= old


def version_key(
    version: str | None, updated: str | None, canonical_sha: str
) -> tuple[str, str, str]:
    """A total order of the versions of one resource, as three strings compared in turn:

    1. `meta.versionId` as a number when it is an ASCII integer (any integer beats a versionId
       that is not one; two non-integer versionIds tie here);
    2. `meta.lastUpdated` as an instant (a readable instant beats a missing one);
    3. the sha256 of the resource's canonical JSON, so two different resources with the same
       version and time still have one winner, whatever order they were read in.
    """
    digits = (
        version.lstrip("0") or "0" if version and version.isascii() and version.isdigit() else ""
    )
    vnum = f"{len(digits):06d}{digits}" if digits else ""
    moment = instant(updated)
    if moment is not None:
        moment = moment.astimezone(UTC)
        vtime = f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%f")
    else:
        vtime = ""
    return vnum, vtime, canonical_sha


def instant(text: str | None) -> datetime | None:
    """A FHIR instant as an aware datetime (UTC when it names no zone); None if unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Staging:
    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.execute("PRAGMA cache_size=-20000")  # 20 MB, whatever the record count
        self.db.create_function("newer", 4, newer_version, deterministic=True)
        self.db.executescript(_SCHEMA)
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        # Inline images decoded while records are read (curation/inline.py), next to this file.
        self.scratch = path.with_name(f"{path.stem}-inline")
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._scratch_names = itertools.count()

    def scratch_file(self) -> Path:
        """A new file name in this curation's private scratch folder (made on first use)."""
        self.scratch.mkdir(mode=0o700, exist_ok=True)
        return self.scratch / f"{next(self._scratch_names):08d}.bin"

    # ---------------------------------------------------------------- writes (buffered)

    def add_image(self, row: tuple[Any, ...]) -> None:
        self._buffer("images", row)

    def add_label(self, row: tuple[Any, ...]) -> None:
        self._buffer("labels", row)

    def add_document(self, row: tuple[Any, ...]) -> None:
        """(doc_id, vnum, vtime, vsha, outcome, payload, position): one version of a
        DocumentReference; the newest version of each id is kept (see version_key)."""
        self._buffer("documents", row)

    def add_prediction(self, row: tuple[Any, ...]) -> None:
        """(doc_id, obs_id, version, updated, selected, batch_id, run_id): a prediction of the
        dataset's upstream model; the newest one per image is kept."""
        self._buffer("predictions", row)

    def add_patient(self, patient_ref: str, attributes: str) -> None:
        """(`Patient/<id>`, JSON of `curation.attributes.patient_attributes`): the last one read
        of an id wins."""
        self._buffer("patients", (patient_ref, attributes))

    def add_device(self, doc_id: str, device: str) -> None:
        """The DICOM Manufacturer of an image's DocumentReference."""
        self._buffer("devices", (doc_id, device))

    def add_quarantine(
        self, kind: str, resource_id: str | None, source: str | None, reason: str, detail: str
    ) -> None:
        self._buffer("quarantine", (kind, resource_id, source, reason, detail))

    def _buffer(self, table: str, row: tuple[Any, ...]) -> None:
        rows = self._pending.setdefault(table, [])
        rows.append(row)
        if len(rows) >= _BATCH:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self._pending):
            rows = self._pending.pop(name, [])
            if not rows:
                continue
            marks = ",".join("?" * len(rows[0]))
            # A record seen twice (e.g. two versions in an export): the later one wins; for
            # labels the newer version wins (versionId, else lastUpdated), whatever the order.
            sql = f"INSERT OR REPLACE INTO {name} VALUES ({marks})"
            if name == "labels":
                sql = f"INSERT INTO labels VALUES ({marks}) {_NEWER_LABEL_WINS}"
            elif name == "documents":
                sql = f"INSERT INTO documents VALUES ({marks}) {_NEWEST_DOCUMENT_WINS}"
            elif name == "predictions":
                sql = f"INSERT INTO predictions VALUES ({marks}) {_NEWER_PREDICTION_WINS}"
            self.db.execute("BEGIN")
            self.db.executemany(sql, rows)
            self.db.execute("COMMIT")

    # ---------------------------------------------------------------- reads

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        self.flush()
        cursor = self.db.execute(sql, params)
        while batch := cursor.fetchmany(_BATCH):
            yield from batch

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> object:
        self.flush()
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """The number a `SELECT count(...)` query answers (0 when it answers no row)."""
        value = self.scalar(sql, params)
        return value if isinstance(value, int) else 0

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(sql, rows)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
