"""operating points: a model's `operatingPoint` rule (NULL = the default) and the operating point
a run's evaluation chose on the validation split (NULL: none chosen)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_models") as batch:
        batch.add_column(sa.Column("operating_point", JSON, nullable=True))
    with op.batch_alter_table("pml_runs") as batch:
        batch.add_column(sa.Column("operating_point", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_runs") as batch:
        batch.drop_column("operating_point")
    with op.batch_alter_table("pml_models") as batch:
        batch.drop_column("operating_point")
