"""near-duplicate image signatures, kept for later curations

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pml_image_signatures",
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["pml_datasets.id"],
            name=op.f("fk_pml_image_signatures_dataset_id_pml_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "dataset_id", "sha256", "kind", name=op.f("pk_pml_image_signatures")
        ),
    )


def downgrade() -> None:
    op.drop_table("pml_image_signatures")
