"""platform: jobs, worker heartbeats, the audit trail, webhooks of API tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("run_at", TIME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("leased_by", sa.String(100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("incident_id", BIG_ID, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'dead')", name=op.f("ck_jobs_state")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_jobs_incident_id_incidents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    op.create_index("ix_jobs_state_run_at", "jobs", ["state", "run_at"])
    op.create_index(op.f("ix_jobs_incident_id"), "jobs", ["incident_id"])
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("beat_at", TIME, nullable=False),
        sa.Column("stopped_at", TIME, nullable=True),
        sa.Column("jobs_run", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_heartbeats")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor_id", BIG_ID, nullable=True),
        sa.Column("actor", sa.String(150), nullable=False),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_audit_log_actor_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(2000), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(128), nullable=True))
    _append_only("audit_log")


def downgrade() -> None:
    _drop_append_only("audit_log")
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("webhook_url")
    op.drop_table("audit_log")
    op.drop_table("worker_heartbeats")
    op.drop_index(op.f("ix_jobs_incident_id"), table_name="jobs")
    op.drop_index("ix_jobs_state_run_at", table_name="jobs")
    op.drop_table("jobs")


def _append_only(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        return
    op.execute(
        f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
    )


def _drop_append_only(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
