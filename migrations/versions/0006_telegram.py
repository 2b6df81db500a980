"""Telegram: account links and one-time link codes, bot leadership, per-chat send spacing, stored webhook updates

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "telegram_link_codes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(150), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("used_at", TIME, nullable=True),
        sa.Column("used_by_telegram_id", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_telegram_link_codes_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_link_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_telegram_link_codes_code_hash")),
    )
    op.create_index(op.f("ix_telegram_link_codes_contact_id"), "telegram_link_codes", ["contact_id"])
    op.create_table(
        "telegram_chats",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("next_send_at", TIME, nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("undeliverable_at", TIME, nullable=True),
        sa.Column("undeliverable_reason", sa.String(300), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("kind IN ('private', 'group')", name=op.f("ck_telegram_chats_kind")),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_telegram_chats")),
    )
    op.create_table(
        "telegram_leaders",
        sa.Column("bot", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("since", TIME, nullable=False),
        sa.Column("beat_at", TIME, nullable=False),
        sa.Column("board_cursor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bot", name=op.f("pk_telegram_leaders")),
    )
    op.create_table(
        "telegram_updates",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("bot", sa.String(32), nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("processed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_updates")),
        sa.UniqueConstraint("bot", "update_id", name=op.f("uq_telegram_updates_bot_update_id")),
    )
    op.create_index("ix_telegram_updates_processed_at", "telegram_updates", ["processed_at"])
    op.create_table(
        "telegram_messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=True),
        sa.Column("page_id", BIG_ID, nullable=True),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column("direction_request_id", BIG_ID, nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sent_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_telegram_messages_contact_id_contacts")),
        sa.ForeignKeyConstraint(
            ["direction_request_id"], ["direction_requests.id"],
            name=op.f("fk_telegram_messages_direction_request_id_direction_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_telegram_messages_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["page_id"], ["pages.id"], name=op.f("fk_telegram_messages_page_id_pages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_messages")),
        sa.UniqueConstraint("key", name=op.f("uq_telegram_messages_key")),
    )
    op.create_index("ix_telegram_messages_chat_id_message_id", "telegram_messages", ["chat_id", "message_id"])
    op.create_index(op.f("ix_telegram_messages_incident_id"), "telegram_messages", ["incident_id"])
    op.create_index(op.f("ix_telegram_messages_page_id"), "telegram_messages", ["page_id"])
    op.create_table(
        "telegram_presses",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("mac", sa.String(32), nullable=False),
        sa.Column("page_id", BIG_ID, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_telegram_presses_contact_id_contacts")),
        sa.ForeignKeyConstraint(
            ["page_id"], ["pages.id"], name=op.f("fk_telegram_presses_page_id_pages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_presses")),
        sa.UniqueConstraint("mac", name=op.f("uq_telegram_presses_mac")),
    )
    op.create_index(op.f("ix_telegram_presses_page_id"), "telegram_presses", ["page_id"])


def downgrade() -> None:
    for table in (
        "telegram_presses", "telegram_messages", "telegram_updates", "telegram_leaders", "telegram_chats",
        "telegram_link_codes",
    ):
        op.drop_table(table)
