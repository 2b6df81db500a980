"""working an incident on the web: its owner, tasks people add per phase, assign and comment

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
# (table, column, referred table) of the nullable references this revision adds to existing tables.
REFERENCES = (("incidents", "assignee_id", "users"), ("tasks", "assignee_id", "users"))


def _add_reference(table: str, column: str, referred: str) -> None:
    name = op.f(f"fk_{table}_{column}_{referred}")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a nullable column with its reference in place. Batch mode would copy the table and drop the
        # old one, and with foreign keys on that drop deletes its rows first, cascading into observables and more.
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER CONSTRAINT {name} REFERENCES {referred} (id)")
    else:
        op.add_column(table, sa.Column(column, BIG_ID, nullable=True))
        op.create_foreign_key(name, table, referred, [column], ["id"])


def _drop_reference(table: str, column: str, referred: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f(f"fk_{table}_{column}_{referred}"), table, type_="foreignkey")
    op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def upgrade() -> None:
    for table, column, referred in REFERENCES:
        _add_reference(table, column, referred)
    op.add_column("tasks", sa.Column("phase", sa.String(16), nullable=True))
    op.add_column("tasks", sa.Column("created_by", sa.String(150), nullable=True))
    op.create_table(
        "task_comments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("task_id", BIG_ID, nullable=False),
        sa.Column("incident_id", BIG_ID, nullable=False),
        sa.Column("author_id", BIG_ID, nullable=True),
        sa.Column("author", sa.String(150), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_comments_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_task_comments_incident_id_incidents")),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_task_comments_author_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_comments")),
    )
    op.create_index(op.f("ix_task_comments_task_id"), "task_comments", ["task_id"])
    op.create_index(op.f("ix_task_comments_incident_id"), "task_comments", ["incident_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_task_comments_incident_id"), table_name="task_comments")
    op.drop_index(op.f("ix_task_comments_task_id"), table_name="task_comments")
    op.drop_table("task_comments")
    op.execute("ALTER TABLE tasks DROP COLUMN created_by")
    op.execute("ALTER TABLE tasks DROP COLUMN phase")
    for table, column, referred in reversed(REFERENCES):
        _drop_reference(table, column, referred)
