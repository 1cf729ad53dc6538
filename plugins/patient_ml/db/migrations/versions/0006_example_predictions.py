"""the champion's newest prediction per example, for the examples list's "has prediction"
filter (labelling hints)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pml_example_predictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("example_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("image_version", sa.String(length=64), nullable=True),
        sa.Column("output", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["pml_models.id"],
            name=op.f("fk_pml_example_predictions_model_id_pml_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pml_example_predictions")),
        sa.UniqueConstraint(
            "model_id", "example_id", name=op.f("uq_pml_example_predictions_model")
        ),
    )


def downgrade() -> None:
    op.drop_table("pml_example_predictions")
