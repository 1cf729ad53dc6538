"""scoring chunk images: what a chunk's tasks need of each image (DocumentReference id,
version, patient, attachment), written when the batch is planned, so a chunk reads only its own
images instead of the dataset's whole example index; NULL for an image whose attachment holds
inline data (read from the source then) and for chunks planned before this

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_scoring_chunks") as batch:
        batch.add_column(sa.Column("images", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_scoring_chunks") as batch:
        batch.drop_column("images")
