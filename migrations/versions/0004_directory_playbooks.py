"""The directory (contacts, groups, on-call schedules), playbooks, runs, pages, deliveries, tasks, directions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "playbook_versions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title_vi", sa.String(length=300), nullable=False),
        sa.Column("title_en", sa.String(length=300), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=150), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_versions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_playbook_versions_name_version")),
    )
    op.create_table(
        "contact_groups",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name_vi", sa.String(length=300), nullable=False),
        sa.Column("name_en", sa.String(length=300), nullable=True),
        sa.Column("organisation_id", BIG_ID, nullable=True),
        sa.Column("next_turn", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_contact_groups_organisation_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_groups")),
        sa.UniqueConstraint("code", name=op.f("uq_contact_groups_code")),
    )
    op.create_table(
        "contacts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organisation_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("telegram_chat_id", sa.String(length=64), nullable=True),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=128), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("roles", JSON, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("confirmed_at", TIME, nullable=True),
        sa.Column("details_changed_at", TIME, nullable=False),
        sa.Column("confirm_requested_at", TIME, nullable=True),
        sa.Column("unconfirmed_alerted_at", TIME, nullable=True),
        sa.Column("erased_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_contacts_organisation_id_organisations")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_contacts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("user_id", name=op.f("uq_contacts_user_id")),
    )
    op.create_index(op.f("ix_contacts_email"), "contacts", ["email"], unique=False)
    op.create_index(op.f("ix_contacts_organisation_id"), "contacts", ["organisation_id"], unique=False)
    op.create_index(op.f("ix_contacts_telegram_chat_id"), "contacts", ["telegram_chat_id"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("organisation_id", BIG_ID, nullable=True),
        sa.Column("group_id", BIG_ID, nullable=True),
        sa.Column("starts_at", TIME, nullable=False),
        sa.Column("shift_hours", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint("shift_hours > 0", name=op.f("ck_schedules_shift_hours")),
        sa.ForeignKeyConstraint(["group_id"], ["contact_groups.id"], name=op.f("fk_schedules_group_id_contact_groups")),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_schedules_organisation_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("code", name=op.f("uq_schedules_code")),
    )
    op.create_index(op.f("ix_schedules_group_id"), "schedules", ["group_id"], unique=False)
    op.create_index(op.f("ix_schedules_organisation_id"), "schedules", ["organisation_id"], unique=False)
    op.create_table(
        "contact_group_members",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("group_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_group_members_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["contact_groups.id"],
            name=op.f("fk_contact_group_members_group_id_contact_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_group_members")),
        sa.UniqueConstraint("group_id", "contact_id", name=op.f("uq_contact_group_members_group_id_contact_id")),
    )
    op.create_index(op.f("ix_contact_group_members_contact_id"), "contact_group_members", ["contact_id"], unique=False)
    op.create_table(
        "playbook_runs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("playbook_version_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("started_by", sa.String(length=150), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("stopped_by", sa.String(length=150), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_playbook_runs_incident_id_incidents")),
        sa.ForeignKeyConstraint(
            ["playbook_version_id"],
            ["playbook_versions.id"],
            name=op.f("fk_playbook_runs_playbook_version_id_playbook_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_runs")),
        sa.UniqueConstraint("key", name=op.f("uq_playbook_runs_key")),
    )
    op.create_index(op.f("ix_playbook_runs_incident_id"), "playbook_runs", ["incident_id"], unique=False)
    op.create_table(
        "schedule_members",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("schedule_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_schedule_members_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_members_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_members")),
    )
    op.create_index(op.f("ix_schedule_members_contact_id"), "schedule_members", ["contact_id"], unique=False)
    op.create_table(
        "schedule_overrides",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("schedule_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("starts_at", TIME, nullable=False),
        sa.Column("ends_at", TIME, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_schedule_overrides_span")),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_schedule_overrides_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_overrides_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_overrides")),
    )
    op.create_index(op.f("ix_schedule_overrides_schedule_id"), "schedule_overrides", ["schedule_id"], unique=False)
    op.create_table(
        "direction_requests",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=True),
        sa.Column("step_path", sa.String(length=100), nullable=True),
        sa.Column("question_vi", sa.Text(), nullable=False),
        sa.Column("question_en", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=150), nullable=False),
        sa.Column("requested_at", TIME, nullable=False),
        sa.Column("answered_at", TIME, nullable=True),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.CheckConstraint("state IN ('open', 'answered')", name=op.f("ck_direction_requests_state")),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_direction_requests_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["playbook_runs.id"], name=op.f("fk_direction_requests_run_id_playbook_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_direction_requests")),
        sa.UniqueConstraint("key", name=op.f("uq_direction_requests_key")),
    )
    op.create_index(op.f("ix_direction_requests_incident_id"), "direction_requests", ["incident_id"], unique=False)
    op.create_table(
        "pages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=True),
        sa.Column("step_path", sa.String(length=100), nullable=True),
        sa.Column("target_kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("target_label", sa.String(length=300), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column("group_id", BIG_ID, nullable=True),
        sa.Column("organisation_id", BIG_ID, nullable=True),
        sa.Column("reason_vi", sa.Text(), nullable=True),
        sa.Column("reason_en", sa.Text(), nullable=True),
        sa.Column("requires_ack", sa.Boolean(), nullable=False),
        sa.Column("escalation", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("acked_by_contact_id", BIG_ID, nullable=True),
        sa.Column("acked_by_user_id", BIG_ID, nullable=True),
        sa.Column("acked_by", sa.String(length=300), nullable=True),
        sa.Column("acked_at", TIME, nullable=True),
        sa.Column("ack_via", sa.String(length=32), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("ack_on_behalf", sa.Boolean(), nullable=False),
        sa.Column("first_delivered_at", TIME, nullable=True),
        sa.Column("escalated_at", TIME, nullable=True),
        sa.Column("waves", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.CheckConstraint("state IN ('open', 'acknowledged', 'cancelled')", name=op.f("ck_pages_state")),
        sa.ForeignKeyConstraint(
            ["acked_by_contact_id"], ["contacts.id"], name=op.f("fk_pages_acked_by_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(["acked_by_user_id"], ["users.id"], name=op.f("fk_pages_acked_by_user_id_users")),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_pages_contact_id_contacts")),
        sa.ForeignKeyConstraint(["group_id"], ["contact_groups.id"], name=op.f("fk_pages_group_id_contact_groups")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_pages_incident_id_incidents")),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_pages_organisation_id_organisations")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["playbook_runs.id"], name=op.f("fk_pages_run_id_playbook_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pages")),
        sa.UniqueConstraint("key", name=op.f("uq_pages_key")),
    )
    op.create_index(op.f("ix_pages_incident_id"), "pages", ["incident_id"], unique=False)
    op.create_index(op.f("ix_pages_run_id"), "pages", ["run_id"], unique=False)
    op.create_index("ix_pages_state_incident", "pages", ["state", "incident_id"], unique=False)
    op.create_table(
        "playbook_run_steps",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=False),
        sa.Column("path", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["playbook_runs.id"],
            name=op.f("fk_playbook_run_steps_run_id_playbook_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_run_steps")),
        sa.UniqueConstraint("run_id", "path", name=op.f("uq_playbook_run_steps_run_id_path")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=True),
        sa.Column("step_path", sa.String(length=100), nullable=True),
        sa.Column("organisation_id", BIG_ID, nullable=True),
        sa.Column("title_vi", sa.String(length=500), nullable=False),
        sa.Column("title_en", sa.String(length=500), nullable=True),
        sa.Column("due_at", TIME, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("done_by", sa.String(length=150), nullable=True),
        sa.Column("done_at", TIME, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.CheckConstraint("state IN ('open', 'done')", name=op.f("ck_tasks_state")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_tasks_incident_id_incidents")),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_tasks_organisation_id_organisations")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["playbook_runs.id"], name=op.f("fk_tasks_run_id_playbook_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("key", name=op.f("uq_tasks_key")),
    )
    op.create_index(op.f("ix_tasks_incident_id"), "tasks", ["incident_id"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("page_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=2000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=300), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("delivered_at", TIME, nullable=True),
        sa.CheckConstraint("state IN ('queued', 'delivered', 'failed')", name=op.f("ck_deliveries_state")),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_deliveries_contact_id_contacts")),
        sa.ForeignKeyConstraint(
            ["page_id"], ["pages.id"], name=op.f("fk_deliveries_page_id_pages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "page_id", "contact_id", "channel", "wave", name=op.f("uq_deliveries_page_id_contact_id_channel_wave")
        ),
    )
    op.create_index(op.f("ix_deliveries_page_id"), "deliveries", ["page_id"], unique=False)
    op.create_table(
        "directives",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("request_id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("given_by_id", BIG_ID, nullable=True),
        sa.Column("given_by", sa.String(length=150), nullable=False),
        sa.Column("given_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["given_by_id"], ["users.id"], name=op.f("fk_directives_given_by_id_users")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_directives_incident_id_incidents")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["direction_requests.id"], name=op.f("fk_directives_request_id_direction_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directives")),
    )
    op.create_index(op.f("ix_directives_incident_id"), "directives", ["incident_id"], unique=False)
    op.create_index(op.f("ix_directives_request_id"), "directives", ["request_id"], unique=False)
    op.create_table(
        "page_recipients",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("page_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("paged_at", TIME, nullable=False),
        sa.Column("digest_key", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_page_recipients_contact_id_contacts")),
        sa.ForeignKeyConstraint(
            ["page_id"], ["pages.id"], name=op.f("fk_page_recipients_page_id_pages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_recipients")),
        sa.UniqueConstraint("page_id", "contact_id", name=op.f("uq_page_recipients_page_id_contact_id")),
    )
    op.create_index("ix_page_recipients_contact_paged_at", "page_recipients", ["contact_id", "paged_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_page_recipients_contact_paged_at", table_name="page_recipients")
    op.drop_table("page_recipients")
    op.drop_index(op.f("ix_directives_request_id"), table_name="directives")
    op.drop_index(op.f("ix_directives_incident_id"), table_name="directives")
    op.drop_table("directives")
    op.drop_index(op.f("ix_deliveries_page_id"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_tasks_incident_id"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("playbook_run_steps")
    op.drop_index("ix_pages_state_incident", table_name="pages")
    op.drop_index(op.f("ix_pages_run_id"), table_name="pages")
    op.drop_index(op.f("ix_pages_incident_id"), table_name="pages")
    op.drop_table("pages")
    op.drop_index(op.f("ix_direction_requests_incident_id"), table_name="direction_requests")
    op.drop_table("direction_requests")
    op.drop_index(op.f("ix_schedule_overrides_schedule_id"), table_name="schedule_overrides")
    op.drop_table("schedule_overrides")
    op.drop_index(op.f("ix_schedule_members_contact_id"), table_name="schedule_members")
    op.drop_table("schedule_members")
    op.drop_index(op.f("ix_playbook_runs_incident_id"), table_name="playbook_runs")
    op.drop_table("playbook_runs")
    op.drop_index(op.f("ix_contact_group_members_contact_id"), table_name="contact_group_members")
    op.drop_table("contact_group_members")
    op.drop_index(op.f("ix_schedules_organisation_id"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_group_id"), table_name="schedules")
    op.drop_table("schedules")
    op.drop_index(op.f("ix_contacts_telegram_chat_id"), table_name="contacts")
    op.drop_index(op.f("ix_contacts_organisation_id"), table_name="contacts")
    op.drop_index(op.f("ix_contacts_email"), table_name="contacts")
    op.drop_table("contacts")
    op.drop_table("contact_groups")
    op.drop_table("playbook_versions")
