"""the trust boundary: STIX provenance, TLP history of events and edits, sign-in throttling, audit checkpoints

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    _upgrade_stix()
    _upgrade_tlp_history()
    _upgrade_signin()
    _upgrade_audit()


def downgrade() -> None:
    _downgrade_audit()
    _downgrade_signin()
    _downgrade_tlp_history()
    _downgrade_stix()


# One section per concern of the trust boundary, each undone in the reverse order.


# An imported version of an object the projector wrote (same STIX id) could become its current version;
# such versions are removed and the projection's newest version is current again.
_IMPORTED_OVER_PROJECTED = (
    "SELECT o.id FROM stix_objects o WHERE o.imported_by_id IS NOT NULL AND EXISTS "
    "(SELECT 1 FROM stix_objects p WHERE p.stix_id = o.stix_id AND p.imported_by_id IS NULL)"
)
_SCO_TYPES = "('ipv4-addr', 'ipv6-addr', 'domain-name', 'url', 'email-addr', 'file')"


def _upgrade_stix() -> None:
    op.execute(f"DELETE FROM stix_links WHERE object_id IN ({_IMPORTED_OVER_PROJECTED})")
    op.execute(f"DELETE FROM stix_objects WHERE id IN ({_IMPORTED_OVER_PROJECTED})")
    op.execute(
        "UPDATE stix_objects SET current = TRUE WHERE NOT current AND imported_by_id IS NULL "
        f"AND type NOT IN {_SCO_TYPES} "
        "AND id = (SELECT max(p.id) FROM stix_objects p WHERE p.stix_id = stix_objects.stix_id)"
    )


def _downgrade_stix() -> None:
    pass  # the removed versions were never the projection's: nothing to restore


def _upgrade_tlp_history() -> None:
    """A change recorded before this release under the TLP it lowered to takes the TLP it lowered from.

    From now on the service decides an event's TLP at insert; only these earlier rows are raised, once, with the
    append-only trigger lifted for this one statement (an event's TLP only ever goes up here).
    """
    bind = op.get_bind()
    rank = "CASE {} WHEN 'clear' THEN 0 WHEN 'green' THEN 1 WHEN 'amber' THEN 2 WHEN 'amber+strict' THEN 3 ELSE 4 END"
    if bind.dialect.name == "sqlite":
        old = "json_extract(data, '$.changes.tlp[0]')"
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
    else:
        old = "(data -> 'changes' -> 'tlp' ->> 0)"
        op.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
    op.execute(
        f"UPDATE events SET tlp = {old} WHERE kind = 'incident.updated' "
        f"AND {old} IN ('clear', 'green', 'amber', 'amber+strict', 'red') AND {rank.format(old)} > {rank.format('tlp')}"
    )
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    else:
        op.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")


def _downgrade_tlp_history() -> None:
    pass  # the raised TLPs stay: lowering them again would reopen what they hid


def _upgrade_signin() -> None:
    # Wrong passwords no longer lock an account; the counters now count wrong TOTP codes only, from zero.
    # RENAME COLUMN in place (SQLite >= 3.25): a batch copy of `users` would fight the tables that refer to it.
    op.alter_column("users", "failed_logins", new_column_name="totp_failures")
    op.alter_column("users", "locked_until", new_column_name="totp_locked_until")
    op.execute("UPDATE users SET totp_failures = 0, totp_locked_until = NULL")
    op.create_table(
        "signin_throttles",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("account", sa.String(150), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", TIME, nullable=False),
        sa.Column("last_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_throttles")),
        sa.UniqueConstraint("source", "account", name=op.f("uq_signin_throttles_source_account")),
    )
    op.create_index(op.f("ix_signin_throttles_last_at"), "signin_throttles", ["last_at"])


def _downgrade_signin() -> None:
    op.drop_index(op.f("ix_signin_throttles_last_at"), table_name="signin_throttles")
    op.drop_table("signin_throttles")
    op.alter_column("users", "totp_locked_until", new_column_name="locked_until")
    op.alter_column("users", "totp_failures", new_column_name="failed_logins")


def _upgrade_audit() -> None:
    # Plain ADD COLUMN: a batch copy of audit_log on SQLite would drop its append-only triggers.
    op.add_column("audit_log", sa.Column("key_id", sa.String(16), nullable=True))
    op.add_column("audit_log", sa.Column("mac", sa.String(64), nullable=True))


def _downgrade_audit() -> None:
    op.drop_column("audit_log", "mac")
    op.drop_column("audit_log", "key_id")
