"""metrics keep their interval: the ends of the 95 % cluster-bootstrap interval of an evaluation
metric (NULL for training metrics and for runs evaluated before intervals were)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pml_metrics") as batch:
        batch.add_column(sa.Column("low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("high", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_metrics") as batch:
        batch.drop_column("high")
        batch.drop_column("low")
