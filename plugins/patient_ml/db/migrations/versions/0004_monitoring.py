"""monitoring: prediction log, reference profiles, monitoring events, models.monitoring

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_models") as batch:
        batch.add_column(sa.Column("monitoring", JSON, server_default="{}", nullable=False))
    op.create_table(
        "pml_prediction_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("statistics", JSON, nullable=False),
        sa.Column("output", JSON, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_prediction_log_model_id_pml_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_prediction_log")),
    )
    op.create_index(
        "ix_pml_prediction_log_model_time",
        "pml_prediction_log",
        ["model_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "pml_reference_profiles",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("profile", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_reference_profiles_model_id_pml_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_reference_profiles_run_id_pml_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pml_reference_profiles")),
    )
    op.create_index(
        op.f("ix_pml_reference_profiles_model_id"),
        "pml_reference_profiles",
        ["model_id"],
        unique=False,
    )
    op.create_table(
        "pml_monitoring_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("breaches", JSON, nullable=False),
        sa.Column("window", JSON, nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('ok', 'breach', 'insufficient', 'no-reference')",
            name=op.f("ck_pml_monitoring_events_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_monitoring_events_model_id_pml_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_monitoring_events")),
    )
    op.create_index(
        "ix_pml_monitoring_events_model_time",
        "pml_monitoring_events",
        ["model_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_pml_monitoring_events_model_time", table_name="pml_monitoring_events")
    op.drop_table("pml_monitoring_events")
    op.drop_index(op.f("ix_pml_reference_profiles_model_id"), table_name="pml_reference_profiles")
    op.drop_table("pml_reference_profiles")
    op.drop_index("ix_pml_prediction_log_model_time", table_name="pml_prediction_log")
    op.drop_table("pml_prediction_log")
    with op.batch_alter_table("pml_models") as batch:
        batch.drop_column("monitoring")
