"""prediction attributes: the subgroup attributes a prediction was served for (site,
manufacturer: the model's `monitoring.subgroups`), so the monitor can check each site's and
each device's window on its own; NULL: none known (e.g. predictions before this)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_prediction_log") as batch:
        batch.add_column(sa.Column("attributes", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_prediction_log") as batch:
        batch.drop_column("attributes")
