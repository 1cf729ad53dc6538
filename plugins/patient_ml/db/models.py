"""SQLAlchemy 2 ORM of the product database.

Every table is prefixed `pml_` so the product DB can share a PostgreSQL database with Optuna's
RDB storage (which owns `studies`, `trials`, ...) and with Airflow's metadata without clashes.
Approvals, deployments and audit events are append-only: the ORM refuses updates and deletes.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def new_salt() -> str:
    return secrets.token_hex(32)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Dataset(Base):
    __tablename__ = "pml_datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    problem_type: Mapped[str] = mapped_column(String(16), nullable=False)
    problem_definition: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    curation: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    source: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    # Secret key of the dataset's pseudonymous patient keys and split hashing; never on the wire.
    split_salt: Mapped[str] = mapped_column(String(64), default=new_salt, nullable=False)
    revision: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)

    __table_args__ = (CheckConstraint("problem_type IN ('imgClf', 'imgSeg')", name="problem_type"),)


class SplitAssignment(Base):
    """The split a pseudonymous patient key or an image hash was first given in a dataset.

    Assignments are never changed, so a patient (or an identical image) stays in one split for
    the life of the dataset and a later test set never holds what an earlier champion trained on.
    """

    __tablename__ = "pml_split_assignments"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("pml_datasets.id", ondelete="CASCADE"), primary_key=True
    )
    key_kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    split: Mapped[str] = mapped_column(String(16), nullable=False)
    first_snapshot_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("key_kind IN ('patient', 'image')", name="key_kind"),
        CheckConstraint("split IN ('train', 'validation', 'test')", name="split"),
    )


class Model(Base):
    __tablename__ = "pml_models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    slug: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("pml_datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    champion_id: Mapped[str | None] = mapped_column(
        ForeignKey("pml_runs.id", use_alter=True, ondelete="SET NULL"), nullable=True
    )
    training_approach: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    deploy_approach: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    approval_policy: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, server_default="{}", nullable=False
    )
    # The config's `monitoring` section (extension); {} = the defaults.
    monitoring: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, server_default="{}", nullable=False
    )
    # The config's `operatingPoint` (extension, imgClf); NULL = the default rule.
    operating_point: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # intended use, users, out-of-scope uses, limitations (ModelConfig.modelCard; NULL: none)
    model_card: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    revision: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)


class Snapshot(Base):
    """An immutable, content-addressed dataset snapshot; its id is the manifest's sha256."""

    __tablename__ = "pml_snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("pml_datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    manifest_uri: Mapped[str] = mapped_column(Text, nullable=False)
    example_count: Mapped[int] = mapped_column(Integer, nullable=False)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    created_at: Mapped[datetime] = _created()


class Run(Base):
    __tablename__ = "pml_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(128), nullable=False)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="running", nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = _created()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hyperparameters: Mapped[list[dict[str, str]]] = mapped_column(
        JSONType, default=list, nullable=False
    )
    champion_id: Mapped[str | None] = mapped_column(String(36))  # champion when the run began
    snapshot_id: Mapped[str | None] = mapped_column(
        ForeignKey("pml_snapshots.id", ondelete="RESTRICT"), index=True
    )
    model_revision: Mapped[int] = mapped_column(Integer, nullable=False)
    # problemDefinition, trainingApproach and deployApproach frozen when the run was created.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    deploy_status: Mapped[str | None] = mapped_column(String(16))
    deploy_error: Mapped[str | None] = mapped_column(Text)
    model_artifact_uri: Mapped[str | None] = mapped_column(Text)
    model_artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    airflow_dag_id: Mapped[str | None] = mapped_column(String(250))
    airflow_run_id: Mapped[str | None] = mapped_column(String(250))
    triggered_by: Mapped[str] = mapped_column(String(255), nullable=False)
    # The platform's test-split evaluation: summary, test-set hash, report location.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Set when the run starts waiting for a decision; no decision by the deadline = unapproved.
    approval_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approval_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # imgClf: the operating point the platform chose on the validation split at evaluation
    # (rule, positive label, threshold, what it gave on validation); the endpoint decides with
    # it and a later run scores this run (as champion) at it. NULL: none chosen (imgSeg, or a
    # run evaluated before operating points were: its most confident label decides).
    operating_point: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # What exactly trained and served the run (patient_ml.training.provenance.RunProvenance:
    # image digests, trainer environment, package version and commit, sampler seed); recorded
    # when tuning ends (training) and at evaluation (inference). NULL: not recorded.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        CheckConstraint(
            "deploy_status IS NULL OR deploy_status IN ('deploying', 'succeeded', 'failed')",
            name="deploy_status",
        ),
        UniqueConstraint("airflow_dag_id", "airflow_run_id", name="uq_pml_runs_airflow_run"),
        Index("ix_pml_runs_model_started", "model_id", "started_at"),
    )


class Trial(Base):
    __tablename__ = "pml_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("pml_runs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    value: Mapped[float | None] = mapped_column(Float)
    failure: Mapped[str | None] = mapped_column(Text)
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = _created()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("run_id", "number", name="uq_pml_trials_run_number"),
        CheckConstraint("state IN ('running', 'complete', 'pruned', 'failed')", name="state"),
    )


class Metric(Base):
    """One number about a run. `subject` says whose model (challenger = this run's, champion =
    the champion at run time); `stage` says where it came from (training log on train/validation
    data, or the platform's evaluation on the test split), as in the reference API."""

    __tablename__ = "pml_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("pml_runs.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(String(16), nullable=False)
    stage: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    direction: Mapped[str | None] = mapped_column(String(8))
    description: Mapped[str | None] = mapped_column(Text)
    # The 95 % interval of an evaluation metric (clusters resampled); NULL when none is known.
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("run_id", "subject", "stage", "name", name="uq_pml_metrics_key"),
        CheckConstraint("subject IN ('challenger', 'champion')", name="subject"),
        CheckConstraint("stage IN ('training', 'evaluation')", name="stage"),
    )


class Approval(Base):
    __tablename__ = "pml_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("pml_runs.id", ondelete="RESTRICT"), index=True)
    decision: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(8), nullable=False)
    user: Mapped[str | None] = mapped_column(String(255))
    criteria: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    decided_at: Mapped[datetime] = _created()
    # Through which interface the decision came (APPROVAL_CHANNELS); NULL for decisions recorded
    # before channels were (migration 0003).
    channel: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        CheckConstraint("decision IN ('approved', 'rejected')", name="decision"),
        CheckConstraint("actor IN ('user', 'system')", name="actor"),
        CheckConstraint("actor = 'system' OR \"user\" IS NOT NULL", name="user_named"),
        CheckConstraint(
            "channel IS NULL OR channel IN "
            "('api', 'ui', 'cli', 'airflow-required-actions', 'system')",
            name="channel",
        ),
    )


class Deployment(Base):
    """Append-only history of champion changes of a model (promotions and rollbacks)."""

    __tablename__ = "pml_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="RESTRICT"), index=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("pml_runs.id", ondelete="RESTRICT"))
    previous_champion_id: Mapped[str | None] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    deploy_type: Mapped[str] = mapped_column(String(8), nullable=False)
    endpoint: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("action IN ('promote', 'rollback')", name="action"),
        CheckConstraint("deploy_type IN ('cloud', 'edge')", name="deploy_type"),
    )


class Endpoint(Base):
    """A serving endpoint of a deployed (cloud) model: a local process or a container."""

    __tablename__ = "pml_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="RESTRICT"), index=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("pml_runs.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    handle: Mapped[str | None] = mapped_column(String(128))  # process id or container id
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("kind IN ('local', 'docker')", name="kind"),
        CheckConstraint(
            "status IN ('starting', 'healthy', 'failed', 'stopped')", name="endpoint_status"
        ),
    )


class AuditEvent(Base):
    """Who changed what, when, with the state before and after."""

    __tablename__ = "pml_audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = _created()
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[str] = mapped_column(String(64), nullable=False)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (Index("ix_pml_audit_entity", "entity_type", "entity_id", "occurred_at"),)


class ImageSignature(Base):
    """The near-duplicate signature (two 32x32 thumbnails) of an image curated into a dataset,
    kept so that a later curation verifies new images against earlier ones without reading
    the earlier images again (see `curation/near_duplicates.py`)."""

    __tablename__ = "pml_image_signatures"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("pml_datasets.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    signature: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = _created()


APPEND_ONLY = (Approval, Deployment, AuditEvent, SplitAssignment)


def _refuse_change(mapper: object, connection: object, target: object) -> None:
    # the row named by its primary key, whatever its columns (a split assignment has no `id`)
    identity = inspect(target).identity or ()
    raise RuntimeError(
        f"{type(target).__name__} rows are append-only; record a new row instead of changing "
        f"row {', '.join(map(str, identity))}"
    )


for _cls in APPEND_ONLY:
    event.listen(_cls, "before_update", _refuse_change)
    event.listen(_cls, "before_delete", _refuse_change)


# ----------------------------------------------------------------------------- monitoring


class PredictionRecord(Base):
    """One prediction served through the product: the image's fingerprint and cheap statistics,
    and the output. Never the image, never a patient or example identifier. Pruned by the
    model's `monitoring.retentionDays` / `monitoring.maxLogRows`."""

    __tablename__ = "pml_prediction_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[datetime] = _created()
    image_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # {"mean", "std", "p05", "p50", "p95"} of the grayscale intensities (0..255)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # imgClf: {"label", "confidence", "confidences": {index: c}}; imgSeg: {"fractions": {...}}
    output: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # the subgroup attributes it was served for, only those the model's monitoring.subgroups
    # names ({"site": "North", "manufacturer": "GE"}); None: none known
    attributes: Mapped[dict[str, str] | None] = mapped_column(JSONType)

    __table_args__ = (Index("ix_pml_prediction_log_model_time", "model_id", "created_at"),)


class ExamplePrediction(Base):
    """The newest prediction a model's champion made for one example of its dataset (a
    labelling hint), so the examples list can be filtered by "has prediction" on the server.
    One row per model and example, replaced by the next hint; `run_id` says which champion
    answered and `image_version` for which version of the example's image. The output is the
    prediction log's summary (no mask, no image)."""

    __tablename__ = "pml_example_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="CASCADE"), nullable=False
    )
    example_id: Mapped[str] = mapped_column(String(255), nullable=False)
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    image_version: Mapped[str | None] = mapped_column(String(64))
    # imgClf: {"label", "confidence", "confidences"}; imgSeg: {"fractions"} (as the log's)
    output: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        UniqueConstraint("model_id", "example_id", name="uq_pml_example_predictions_model"),
    )


class ReferenceProfile(Base):
    """What a champion's test split looked like when it was deployed: per-example image
    statistics and outputs (from its evaluation), and its test metrics."""

    __tablename__ = "pml_reference_profiles"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("pml_runs.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="CASCADE"), nullable=False, index=True
    )
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    examples: Mapped[int] = mapped_column(Integer, nullable=False)
    # {"statistics": {name: [values]}, "outputs": {"labels": {index: count}, "confidence": [...]},
    #  "metrics": {name: value}, "problemType": ...}
    profile: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created()


class MonitoringEvent(Base):
    """One monitor check of a deployed model: its verdict (`ok`, `breach`, `insufficient`,
    `no-reference`) and the evidence. Append-only."""

    __tablename__ = "pml_monitoring_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    breaches: Mapped[list[str]] = mapped_column(JSONType, default=list, nullable=False)
    window: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint(
            "status IN ('ok', 'breach', 'insufficient', 'no-reference')", name="status"
        ),
        Index("ix_pml_monitoring_events_model_time", "model_id", "created_at"),
    )


event.listen(MonitoringEvent, "before_update", _refuse_change)


class ScoringBatch(Base):
    """One batch scoring of a deployed model over its dataset's examples (the scoring DAG's
    run): which examples (`selection`), the champion that scored them, and progress. One row
    per model and Airflow DAG run, so a cleared or rerun DAG run resumes the same batch."""

    __tablename__ = "pml_scoring_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("pml_models.id", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)  # the champion that scores
    dag_run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    # {"split": "all"|..., "since": ISO instant or null, "writeBack": bool}
    selection: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    chunk_size: Mapped[int] = mapped_column(Integer, nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="running", nullable=False)
    # where predictions were written (a description of the sink; NULL: not written back)
    written_to: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("model_id", "dag_run_id", name="uq_pml_scoring_batches_model"),
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("ix_pml_scoring_batches_model_time", "model_id", "created_at"),
    )


class ScoringChunk(Base):
    """One chunk of a scoring batch (one mapped task): its examples and, once scored, what
    came of them. A chunk that is `done` is never scored again by a retry or a rerun."""

    __tablename__ = "pml_scoring_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("pml_scoring_batches.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    example_ids: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    # per example (same order): {"id", "version", "patient", "attachment"} as planned, so the
    # chunk reads only its images; null for an inline attachment (read from the source) and for
    # chunks planned before migration 0013 (column null)
    images: Mapped[list[dict[str, Any] | None] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    scored: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    written: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # examples that could not be scored: [{"exampleId", "reason"}] (e.g. an image now unreadable)
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list, nullable=False)
    seconds: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("batch_id", "position", name="uq_pml_scoring_chunks_batch"),
        CheckConstraint("status IN ('pending', 'done')", name="status"),
    )
