"""Alembic migrations go up, down and up again on both backends, and end where the models say."""

import importlib
import pkgutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, insert, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from app.db import make_engine
from incidents.base import Base
from incidents.models import Event
from tests.conftest import PG_ADMIN_URL, _worker

ROOT = Path(__file__).resolve().parent.parent


def _import_every_model() -> None:
    """Models may live in any module of the domain packages (incidents/models.py, playbooks/models.py, …)."""
    for package in ("incidents", "playbooks"):
        if (ROOT / package / "__init__.py").exists():
            for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
                importlib.import_module(module.name)


_import_every_model()


def _config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return cfg


def _alembic(engine: Engine, *commands: tuple[str, str]) -> None:
    """Run Alembic commands on one connection, as `init-db` does (app/cli.py)."""
    cfg = _config()
    with engine.connect() as connection:
        cfg.attributes["connection"] = connection
        for name, revision in commands:
            getattr(command, name)(cfg, revision)
            connection.commit()


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrations.db'}"


def _postgresql() -> Iterator[str]:
    name = f"ucsc_migrations_{_worker()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine (tuned as the app tunes it) on a database with no tables at all."""
    if request.param == "sqlite":
        engine = make_engine(_sqlite(tmp_path))
        yield engine
        engine.dispose()
        return
    urls = _postgresql()
    engine = make_engine(next(urls))
    yield engine
    engine.dispose()
    next(urls, None)


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"))
        else:
            rows = conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        return set(rows.scalars())


def test_migrations_run_up_down_and_up_again_and_match_the_models(empty_engine):
    tables = {t.name for t in Base.metadata.sorted_tables}

    _alembic(empty_engine, ("upgrade", "head"))
    assert set(inspect(empty_engine).get_table_names()) == tables | {"alembic_version"}
    assert _triggers(empty_engine)

    _alembic(empty_engine, ("downgrade", "base"))
    assert inspect(empty_engine).get_table_names() == ["alembic_version"]
    assert _triggers(empty_engine) == set()
    if empty_engine.dialect.name == "postgresql":
        with empty_engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = 'events_append_only'")) == 0

    _alembic(empty_engine, ("upgrade", "head"))
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == ScriptDirectory.from_config(_config()).get_current_head()


def test_plain_alembic_command_line_migrates_the_url_in_the_environment(tmp_path, monkeypatch):
    """`alembic upgrade head` with UCSC_DATABASE_URL (migrations/env.py's own engine) reaches the same schema."""
    url = _sqlite(tmp_path)
    monkeypatch.setenv("UCSC_DATABASE_URL", url)
    cfg = _config()
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_events_table_refuses_update_and_delete(empty_engine):
    _alembic(empty_engine, ("upgrade", "head"))
    with empty_engine.begin() as conn:
        event_id = conn.execute(
            insert(Event)
            .values(kind="test.appended", actor="system", at=datetime.now(UTC), data={"n": 1})
            .returning(Event.id)
        ).scalar_one()

    with pytest.raises(DBAPIError, match="append-only"), empty_engine.begin() as conn:
        conn.execute(update(Event).where(Event.id == event_id).values(note="rewritten"))
    with pytest.raises(DBAPIError, match="append-only"), empty_engine.begin() as conn:
        conn.execute(Event.__table__.delete().where(Event.id == event_id))

    with empty_engine.connect() as conn:
        row = conn.execute(select(Event.note, Event.data).where(Event.id == event_id)).one()
        assert row == (None, {"n": 1})
        assert conn.scalar(select(func.count()).select_from(Event)) == 1
