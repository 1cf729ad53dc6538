"""evaluation, approval policy and serving endpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_models") as batch:
        batch.add_column(sa.Column("approval_policy", JSON, server_default="{}", nullable=False))
    with op.batch_alter_table("pml_runs") as batch:
        batch.add_column(sa.Column("evaluation", JSON, nullable=True))
        batch.add_column(
            sa.Column("approval_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("approval_deadline", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "pml_endpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("handle", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('local', 'docker')", name=op.f("ck_pml_endpoints_kind")),
        sa.CheckConstraint(
            "status IN ('starting', 'healthy', 'failed', 'stopped')",
            name=op.f("ck_pml_endpoints_endpoint_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_endpoints_model_id_pml_models"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pml_runs.id"],
            name=op.f("fk_pml_endpoints_run_id_pml_runs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_endpoints")),
    )
    op.create_index(op.f("ix_pml_endpoints_model_id"), "pml_endpoints", ["model_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pml_endpoints_model_id"), table_name="pml_endpoints")
    op.drop_table("pml_endpoints")
    with op.batch_alter_table("pml_runs") as batch:
        batch.drop_column("approval_deadline")
        batch.drop_column("approval_requested_at")
        batch.drop_column("evaluation")
    with op.batch_alter_table("pml_models") as batch:
        batch.drop_column("approval_policy")
