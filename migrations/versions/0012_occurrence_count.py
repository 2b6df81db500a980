"""incidents count their occurrences as they are written: a repeat's answer reads a column instead of counting rows

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("occurrence_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE incidents SET occurrence_count = "
        "(SELECT count(*) FROM occurrences WHERE occurrences.incident_id = incidents.id)"
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): a batch copy would rewrite the table's foreign keys as table constraints,
    # which 0010's downgrade cannot then drop a column from.
    op.drop_column("incidents", "occurrence_count")
