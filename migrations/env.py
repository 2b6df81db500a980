"""Alembic environment: migrates the connection init-db hands over, or UCSC_DATABASE_URL."""

import os

from alembic import context
from sqlalchemy import create_engine

import incidents.models  # noqa: F401  (registers every table on the metadata)
import playbooks.models  # noqa: F401
from incidents.base import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("UCSC_DATABASE_URL", "sqlite:///instance/ucsc.db")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
