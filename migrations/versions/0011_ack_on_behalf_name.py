"""an acknowledgement on someone's behalf stores the acknowledger's name alone; the page says "on behalf" itself

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The bilingual suffix earlier versions wrote into pages.acked_by, which showed on English and Vietnamese pages alike.
SUFFIX = " (thay mặt / on behalf)"


def upgrade() -> None:
    op.execute(
        sa.text("UPDATE pages SET acked_by = replace(acked_by, :suffix, '') WHERE ack_on_behalf").bindparams(
            suffix=SUFFIX
        )
    )


def downgrade() -> None:
    op.execute(sa.text("UPDATE pages SET acked_by = acked_by || :suffix WHERE ack_on_behalf").bindparams(suffix=SUFFIX))
