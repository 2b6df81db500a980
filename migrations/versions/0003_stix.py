"""STIX objects (the projection), TAXII status resources and the projector's cursor

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:45:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stix_objects",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("stix_id", sa.String(120), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("spec_version", sa.String(8), nullable=False),
        sa.Column("created", TIME, nullable=True),
        sa.Column("modified", TIME, nullable=False),
        sa.Column("date_added", TIME, nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("key", sa.String(600), nullable=True),
        sa.Column("incident_id", BIG_ID, nullable=True),
        sa.Column("imported_by_id", BIG_ID, nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_stix_objects_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["imported_by_id"], ["users.id"], name=op.f("fk_stix_objects_imported_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stix_objects")),
        sa.UniqueConstraint("date_added", name=op.f("uq_stix_objects_date_added")),
        sa.UniqueConstraint("stix_id", "modified", name=op.f("uq_stix_objects_stix_id_modified")),
    )
    op.create_index("ix_stix_objects_stix_id", "stix_objects", ["stix_id"])
    op.create_index("ix_stix_objects_incident_id_key", "stix_objects", ["incident_id", "key"])
    op.create_index("ix_stix_objects_type", "stix_objects", ["type"])
    op.create_index("ix_stix_objects_imported_by_id", "stix_objects", ["imported_by_id"])
    op.create_table(
        "stix_links",
        sa.Column("object_id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["object_id"], ["stix_objects.id"], name=op.f("fk_stix_links_object_id_stix_objects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_stix_links_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("object_id", "incident_id", name=op.f("pk_stix_links")),
    )
    op.create_index("ix_stix_links_incident_id", "stix_links", ["incident_id"])
    op.create_table(
        "stix_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", BIG_ID, nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stix_cursors")),
    )
    op.create_table(
        "stix_exports",
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("objects", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("tlps", JSON, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_stix_exports_incident_id_incidents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_stix_exports")),
    )
    op.create_table(
        "taxii_statuses",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("collection_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_timestamp", TIME, nullable=False),
        sa.Column("total_count", sa.Integer(), nullable=False),
        sa.Column("successes", JSON, nullable=False),
        sa.Column("failures", JSON, nullable=False),
        sa.Column("pendings", JSON, nullable=False),
        sa.Column("created_by_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_taxii_statuses_created_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_taxii_statuses")),
    )
    _seed_tlp_markings()


def _seed_tlp_markings() -> None:
    """The five OASIS TLP 2.0 marking definitions, with their fixed ids, as the first stored objects."""
    from incidents.enums import TLP_ORDER
    from incidents.stix.mapping import serialise, tlp_marking

    table = sa.table(
        "stix_objects",
        *(
            sa.column(name)
            for name in (
                "stix_id",
                "type",
                "spec_version",
                "created",
                "modified",
                "date_added",
                "tlp",
                "key",
                "body",
                "current",
            )
        ),
    )
    created = datetime(2022, 10, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    sqlite = op.get_bind().dialect.name == "sqlite"
    rows = []
    for i, level in enumerate(TLP_ORDER):
        marking = tlp_marking(level)
        stamps = [created, created, now + timedelta(microseconds=i)]
        if sqlite:
            stamps = [s.replace(tzinfo=None) for s in stamps]
        rows.append(
            {
                "stix_id": marking.id,
                "type": "marking-definition",
                "spec_version": "2.1",
                "created": stamps[0],
                "modified": stamps[1],
                "date_added": stamps[2],
                "tlp": TLP_CLEAR,
                "key": f"marking:{level}",
                "body": serialise(marking),
                "current": True,
            }
        )
    op.bulk_insert(table, rows)


TLP_CLEAR = "clear"


def downgrade() -> None:
    op.drop_table("taxii_statuses")
    op.drop_table("stix_exports")
    op.drop_table("stix_cursors")
    op.drop_index("ix_stix_links_incident_id", table_name="stix_links")
    op.drop_table("stix_links")
    op.drop_index("ix_stix_objects_imported_by_id", table_name="stix_objects")
    op.drop_index("ix_stix_objects_type", table_name="stix_objects")
    op.drop_index("ix_stix_objects_incident_id_key", table_name="stix_objects")
    op.drop_index("ix_stix_objects_stix_id", table_name="stix_objects")
    op.drop_table("stix_objects")
