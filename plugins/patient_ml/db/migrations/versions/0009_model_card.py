"""model card: a model's declared intended use, intended users, out-of-scope uses and
limitations (`modelCard` of its config; NULL: none declared)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_models") as batch:
        batch.add_column(sa.Column("model_card", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_models") as batch:
        batch.drop_column("model_card")
