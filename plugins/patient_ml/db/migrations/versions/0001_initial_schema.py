"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pml_audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column(
            "before",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "after",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_audit_events")),
    )
    with op.batch_alter_table("pml_audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pml_audit_entity", ["entity_type", "entity_id", "occurred_at"], unique=False
        )

    op.create_table(
        "pml_datasets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("problem_type", sa.String(length=16), nullable=False),
        sa.Column(
            "problem_definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "curation",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "source",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("split_salt", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.CheckConstraint(
            "problem_type IN ('imgClf', 'imgSeg')", name=op.f("ck_pml_datasets_problem_type")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_pml_datasets_name")),
    )
    op.create_table(
        "pml_models",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("slug", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("champion_id", sa.String(length=36), nullable=True),
        sa.Column(
            "training_approach",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "deploy_approach",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["pml_datasets.id"],
            name=op.f("fk_pml_models_dataset_id_pml_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_models")),
        sa.UniqueConstraint("name", name=op.f("uq_pml_models_name")),
        sa.UniqueConstraint("slug", name=op.f("uq_pml_models_slug")),
    )
    with op.batch_alter_table("pml_models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_models_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "pml_snapshots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("manifest_uri", sa.Text(), nullable=False),
        sa.Column("example_count", sa.Integer(), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "report",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["pml_datasets.id"],
            name=op.f("fk_pml_snapshots_dataset_id_pml_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_snapshots")),
    )
    with op.batch_alter_table("pml_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pml_snapshots_dataset_id"), ["dataset_id"], unique=False
        )

    op.create_table(
        "pml_split_assignments",
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("key_kind", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("first_snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "key_kind IN ('patient', 'image')", name=op.f("ck_pml_split_assignments_key_kind")
        ),
        sa.CheckConstraint(
            "split IN ('train', 'validation', 'test')", name=op.f("ck_pml_split_assignments_split")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["pml_datasets.id"],
            name=op.f("fk_pml_split_assignments_dataset_id_pml_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "dataset_id", "key_kind", "key", name=op.f("pk_pml_split_assignments")
        ),
    )
    op.create_table(
        "pml_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("slug", sa.String(length=128), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "hyperparameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("champion_id", sa.String(length=36), nullable=True),
        sa.Column("snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("model_revision", sa.Integer(), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("deploy_status", sa.String(length=16), nullable=True),
        sa.Column("deploy_error", sa.Text(), nullable=True),
        sa.Column("model_artifact_uri", sa.Text(), nullable=True),
        sa.Column("model_artifact_sha256", sa.String(length=64), nullable=True),
        sa.Column("is_archived", sa.Boolean(), nullable=False),
        sa.Column("airflow_dag_id", sa.String(length=250), nullable=True),
        sa.Column("airflow_run_id", sa.String(length=250), nullable=True),
        sa.Column("triggered_by", sa.String(length=255), nullable=False),
        sa.CheckConstraint(
            "deploy_status IS NULL OR deploy_status IN ('deploying', 'succeeded', 'failed')",
            name=op.f("ck_pml_runs_deploy_status"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_pml_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_runs_model_id_pml_models"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["pml_snapshots.id"],
            name=op.f("fk_pml_runs_snapshot_id_pml_snapshots"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_runs")),
        sa.UniqueConstraint("airflow_dag_id", "airflow_run_id", name="uq_pml_runs_airflow_run"),
    )
    with op.batch_alter_table("pml_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_runs_model_id"), ["model_id"], unique=False)
        batch_op.create_index("ix_pml_runs_model_started", ["model_id", "started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_pml_runs_snapshot_id"), ["snapshot_id"], unique=False)

    # models.champion_id -> runs.id closes a cycle (runs.model_id -> models.id), so it is
    # added once both tables exist.
    with op.batch_alter_table("pml_models", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_pml_models_champion_id_pml_runs"),
            "pml_runs",
            ["champion_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "pml_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=8), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column(
            "criteria",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("actor IN ('user', 'system')", name=op.f("ck_pml_approvals_actor")),
        sa.CheckConstraint(
            "decision IN ('approved', 'rejected')", name=op.f("ck_pml_approvals_decision")
        ),
        sa.CheckConstraint(
            "actor = 'system' OR \"user\" IS NOT NULL", name=op.f("ck_pml_approvals_user_named")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_approvals_run_id_pml_runs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_approvals")),
    )
    with op.batch_alter_table("pml_approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_approvals_run_id"), ["run_id"], unique=False)

    op.create_table(
        "pml_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("previous_champion_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("deploy_type", sa.String(length=8), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('promote', 'rollback')", name=op.f("ck_pml_deployments_action")
        ),
        sa.CheckConstraint(
            "deploy_type IN ('cloud', 'edge')", name=op.f("ck_pml_deployments_deploy_type")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_deployments_model_id_pml_models"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_deployments_run_id_pml_runs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_deployments")),
    )
    with op.batch_alter_table("pml_deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_deployments_model_id"), ["model_id"], unique=False)

    op.create_table(
        "pml_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "stage IN ('training', 'evaluation')", name=op.f("ck_pml_metrics_stage")
        ),
        sa.CheckConstraint(
            "subject IN ('challenger', 'champion')", name=op.f("ck_pml_metrics_subject")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_metrics_run_id_pml_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_metrics")),
        sa.UniqueConstraint("run_id", "subject", "stage", "name", name="uq_pml_metrics_key"),
    )
    with op.batch_alter_table("pml_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_metrics_run_id"), ["run_id"], unique=False)

    op.create_table(
        "pml_trials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("artifact_uri", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'complete', 'pruned', 'failed')", name=op.f("ck_pml_trials_state")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_trials_run_id_pml_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_trials")),
        sa.UniqueConstraint("run_id", "number", name="uq_pml_trials_run_number"),
    )
    with op.batch_alter_table("pml_trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pml_trials_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pml_models", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_pml_models_champion_id_pml_runs"), type_="foreignkey")
    with op.batch_alter_table("pml_trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_trials_run_id"))

    op.drop_table("pml_trials")
    with op.batch_alter_table("pml_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_metrics_run_id"))

    op.drop_table("pml_metrics")
    with op.batch_alter_table("pml_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_deployments_model_id"))

    op.drop_table("pml_deployments")
    with op.batch_alter_table("pml_approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_approvals_run_id"))

    op.drop_table("pml_approvals")
    with op.batch_alter_table("pml_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_runs_snapshot_id"))
        batch_op.drop_index("ix_pml_runs_model_started")
        batch_op.drop_index(batch_op.f("ix_pml_runs_model_id"))

    op.drop_table("pml_runs")
    op.drop_table("pml_split_assignments")
    with op.batch_alter_table("pml_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_snapshots_dataset_id"))

    op.drop_table("pml_snapshots")
    with op.batch_alter_table("pml_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pml_models_dataset_id"))

    op.drop_table("pml_models")
    op.drop_table("pml_datasets")
    with op.batch_alter_table("pml_audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_pml_audit_entity")

    op.drop_table("pml_audit_events")
