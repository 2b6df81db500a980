"""evidence attachments and chain of custody, generated reports (Forms 03, 04, 05), deadline clocks, holidays

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:06:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(127), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("stored_as", sa.String(16), nullable=False),
        sa.Column("stored_name", sa.String(200), nullable=False),
        sa.Column("stored_sha256", sa.String(64), nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("uploaded_by_id", BIG_ID, nullable=False),
        sa.Column("uploaded_at", TIME, nullable=False),
        sa.CheckConstraint(
            "kind IN ('log', 'screenshot', 'malware', 'document', 'other')", name=op.f("ck_evidence_kind")
        ),
        sa.CheckConstraint("tlp IN ('clear', 'green', 'amber', 'amber+strict', 'red')", name=op.f("ck_evidence_tlp")),
        sa.CheckConstraint("stored_as IN ('plain', 'zip-aes')", name=op.f("ck_evidence_stored_as")),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_evidence_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["uploaded_by_id"], ["users.id"], name=op.f("fk_evidence_uploaded_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence")),
    )
    op.create_index(op.f("ix_evidence_incident_id"), "evidence", ["incident_id"])
    op.create_index(op.f("ix_evidence_sha256"), "evidence", ["sha256"])
    op.create_table(
        "custody_records",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("evidence_id", BIG_ID, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_id", BIG_ID, nullable=True),
        sa.Column("actor", sa.String(150), nullable=False),
        sa.Column("holder", sa.String(300), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("sha256_checked", sa.String(64), nullable=True),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_custody_records_actor_id_users")),
        sa.ForeignKeyConstraint(
            ["evidence_id"], ["evidence.id"], name=op.f("fk_custody_records_evidence_id_evidence"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_records")),
    )
    op.create_index(op.f("ix_custody_records_evidence_id"), "custody_records", ["evidence_id"])
    op.create_table(
        "reports",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("reported_at", TIME, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_by_id", BIG_ID, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint("kind IN ('initial', 'end')", name=op.f("ck_reports_kind")),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_reports_created_by_id_users")),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_reports_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("incident_id", "kind", "version", name=op.f("uq_reports_incident_id_kind_version")),
    )
    op.create_index(op.f("ix_reports_incident_id"), "reports", ["incident_id"])
    op.create_table(
        "deadline_clocks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("warn_at", TIME, nullable=False),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("warned_at", TIME, nullable=True),
        sa.Column("met_at", TIME, nullable=True),
        sa.Column("breached_at", TIME, nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'warned', 'met', 'breached', 'stopped')", name=op.f("ck_deadline_clocks_state")
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_deadline_clocks_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deadline_clocks")),
        sa.UniqueConstraint("incident_id", "rule", name=op.f("uq_deadline_clocks_incident_id_rule")),
    )
    op.create_index(op.f("ix_deadline_clocks_incident_id"), "deadline_clocks", ["incident_id"])
    op.create_index("ix_deadline_clocks_state_due_at", "deadline_clocks", ["state", "due_at"])


def downgrade() -> None:
    op.drop_table("deadline_clocks")
    op.drop_table("reports")
    op.drop_table("custody_records")
    op.drop_table("evidence")
