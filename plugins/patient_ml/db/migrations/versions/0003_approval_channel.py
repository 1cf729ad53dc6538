"""approval decisions record their channel (api, ui, cli, airflow-required-actions, system)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNELS = "('api', 'ui', 'cli', 'airflow-required-actions', 'system')"


def upgrade() -> None:
    with op.batch_alter_table("pml_approvals") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=32), nullable=True))
        batch.create_check_constraint(
            op.f("ck_pml_approvals_channel"), f"channel IS NULL OR channel IN {CHANNELS}"
        )
    # Decisions of the automatic policy were all recorded by the approval task; human ones came
    # through an interface that was not recorded and stay NULL (unknown).
    op.execute("UPDATE pml_approvals SET channel = 'system' WHERE actor = 'system'")


def downgrade() -> None:
    with op.batch_alter_table("pml_approvals") as batch:
        batch.drop_constraint(op.f("ck_pml_approvals_channel"), type_="check")
        batch.drop_column("channel")
