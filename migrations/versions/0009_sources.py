"""alert sources (Wazuh, Alertmanager, Kibana, Splunk, TheHive, mailbox), maintenance windows, occurrence origin

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
KINDS = "('wazuh', 'alertmanager', 'kibana', 'splunk', 'thehive', 'mailbox')"


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(150), nullable=False),
        sa.Column("token_id", BIG_ID, nullable=True),
        sa.Column("expected_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("last_seen_at", TIME, nullable=True),
        sa.Column("silent_since", TIME, nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by_id", BIG_ID, nullable=True),
        sa.CheckConstraint(f"kind IN {KINDS}", name=op.f("ck_sources_kind")),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], name=op.f("fk_sources_token_id_api_tokens")),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_sources_created_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_sources_name")),
        sa.UniqueConstraint("kind", "token_id", name=op.f("uq_sources_kind_token_id")),
    )
    op.create_table(
        "maintenance_windows",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source_id", BIG_ID, nullable=True),
        sa.Column("dedup_pattern", sa.String(200), nullable=True),
        sa.Column("starts_at", TIME, nullable=False),
        sa.Column("ends_at", TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approved_by", sa.String(300), nullable=False),
        sa.Column("created_by_id", BIG_ID, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("cancelled_at", TIME, nullable=True),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_maintenance_windows_bounded")),
        sa.CheckConstraint(
            "source_id IS NOT NULL OR dedup_pattern IS NOT NULL", name=op.f("ck_maintenance_windows_scoped")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_maintenance_windows_source_id_sources"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_maintenance_windows_created_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_windows")),
    )
    op.create_index(op.f("ix_maintenance_windows_source_id"), "maintenance_windows", ["source_id"])
    op.create_index(op.f("ix_maintenance_windows_ends_at"), "maintenance_windows", ["ends_at"])
    with op.batch_alter_table("occurrences") as batch_op:
        batch_op.add_column(sa.Column("source_id", BIG_ID, nullable=True))
        batch_op.add_column(sa.Column("suppressed", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_foreign_key(op.f("fk_occurrences_source_id_sources"), "sources", ["source_id"], ["id"])
        batch_op.create_index(op.f("ix_occurrences_source_id"), ["source_id"])
    _upgrade_mailbox()


def downgrade() -> None:
    _downgrade_mailbox()
    with op.batch_alter_table("occurrences") as batch_op:
        batch_op.drop_index(op.f("ix_occurrences_source_id"))
        batch_op.drop_constraint(op.f("fk_occurrences_source_id_sources"), type_="foreignkey")
        batch_op.drop_column("suppressed")
        batch_op.drop_column("source_id")
    op.drop_index(op.f("ix_maintenance_windows_ends_at"), table_name="maintenance_windows")
    op.drop_index(op.f("ix_maintenance_windows_source_id"), table_name="maintenance_windows")
    op.drop_table("maintenance_windows")
    op.drop_table("sources")


def _upgrade_mailbox() -> None:
    op.create_table(
        "mailbox_messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source_id", BIG_ID, nullable=False),
        sa.Column("message_key", sa.String(300), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=True),
        sa.Column("comment_id", BIG_ID, nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint(
            "outcome IN ('incident', 'comment', 'rejected')", name=op.f("ck_mailbox_messages_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_mailbox_messages_source_id_sources"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_mailbox_messages_incident_id_incidents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["comment_id"], ["comments.id"], name=op.f("fk_mailbox_messages_comment_id_comments"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_messages")),
        sa.UniqueConstraint("source_id", "message_key", name=op.f("uq_mailbox_messages_source_id_message_key")),
    )
    op.create_table(
        "mailbox_cursors",
        sa.Column("source_id", BIG_ID, nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_mailbox_cursors_source_id_sources"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_mailbox_cursors")),
    )


def _downgrade_mailbox() -> None:
    op.drop_table("mailbox_cursors")
    op.drop_table("mailbox_messages")
