"""run provenance: what exactly trained and served a run (image digests, trainer environment,
package version and source commit, sampler seed; NULL: not recorded, e.g. runs before this)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pml_runs") as batch:
        batch.add_column(sa.Column("provenance", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pml_runs") as batch:
        batch.drop_column("provenance")
