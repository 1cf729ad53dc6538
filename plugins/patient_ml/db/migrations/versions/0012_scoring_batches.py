"""scoring batches: batch scoring of a deployed model over its dataset (the scoring DAG), one
row per model and DAG run, and its chunks (one per mapped task), so a retried or rerun chunk
that already finished is not scored again

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pml_scoring_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("dag_run_id", sa.String(length=250), nullable=False),
        sa.Column("selection", JSON, nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("written_to", sa.String(length=500), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')",
            name=op.f("ck_pml_scoring_batches_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_scoring_batches_model_id_pml_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_scoring_batches")),
        sa.UniqueConstraint("model_id", "dag_run_id", name=op.f("uq_pml_scoring_batches_model")),
    )
    op.create_index(
        "ix_pml_scoring_batches_model_time",
        "pml_scoring_batches",
        ["model_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "pml_scoring_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("example_ids", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("skipped", JSON, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done')", name=op.f("ck_pml_scoring_chunks_status")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["pml_scoring_batches.id"],
            name=op.f("fk_pml_scoring_chunks_batch_id_pml_scoring_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_scoring_chunks")),
        sa.UniqueConstraint("batch_id", "position", name=op.f("uq_pml_scoring_chunks_batch")),
    )


def downgrade() -> None:
    op.drop_table("pml_scoring_chunks")
    op.drop_index("ix_pml_scoring_batches_model_time", table_name="pml_scoring_batches")
    op.drop_table("pml_scoring_batches")
