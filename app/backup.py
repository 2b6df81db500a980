"""`flask --app wsgi backup FILE` and `restore FILE`: SQLite's online backup API, or pg_dump/pg_restore."""

import getpass
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app import db
from incidents import audit
from incidents.uow import in_transaction

AUDIT_ATTEMPTS = 5
PAGES_PER_STEP = 256  # SQLite copies this many pages, then lets writers in, until the copy is whole


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise click.ClickException("the database is not a SQLite file")
    return Path(database)


def _pg_url(url: str) -> str:
    """A libpq URL for pg_dump and pg_restore (they do not know SQLAlchemy's driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _check(path: Path) -> tuple[int, int]:
    """Integrity-check a SQLite copy; its incident count and last event id."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise click.ClickException(f"{path} fails SQLite's integrity check: {result}")
        incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        last_event = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    conn.close()
    return incidents, last_event


def _audit(target: str, data: dict) -> None:
    session = db.session()

    def work() -> None:
        audit.append(session, action=audit.Action.EXPORT, actor=f"cli:{getpass.getuser()}", target=target, data=data)

    # A busy SQLite server may hold its write lock past the busy timeout a web request waits; a backup that is
    # written must still be recorded, so the command waits its turn a few times rather than fail.
    for attempt in range(AUDIT_ATTEMPTS):
        try:
            in_transaction(session, work)
            return
        except OperationalError:
            session.rollback()
            if attempt == AUDIT_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


@click.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def backup_command(destination: Path) -> None:
    """Copy the live database to DESTINATION while the server runs (SQLite backup API, or pg_dump -Fc)."""
    url = current_app.config["DATABASE_URL"]
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    started = time.monotonic()
    if url.startswith("sqlite"):
        source = sqlite3.connect(_sqlite_path(url), timeout=float(current_app.config["SQLITE_BUSY_TIMEOUT"]))
        target = sqlite3.connect(partial)
        try:
            # A consistent snapshot: if a writer commits mid-copy, SQLite restarts the copy from that point.
            source.backup(target, pages=PAGES_PER_STEP, sleep=0.005)
        finally:
            target.close()
            source.close()
        incidents, last_event = _check(partial)
        detail = f"{incidents} incidents, events up to id {last_event}"
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={partial}", _pg_url(url)])
        detail = "pg_dump custom format"
    os.replace(partial, destination)
    size = destination.stat().st_size
    _audit("backup", {"file": str(destination), "bytes": size})
    click.echo(f"backup written to {destination} ({size} bytes, {detail}, {time.monotonic() - started:.1f} s)")


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the current database without asking.")
@with_appcontext
def restore_command(source: Path, yes: bool) -> None:
    """Replace the configured database with the backup SOURCE. Stop the web and worker processes first."""
    url = current_app.config["DATABASE_URL"]
    if not yes:
        click.confirm(f"Replace every row of {make_url(url).render_as_string()} with {source}?", abort=True)
    if url.startswith("sqlite"):
        incidents, last_event = _check(source)
        path = _sqlite_path(url)
        db.engine().dispose()
        previous = path.with_name(path.name + ".before-restore")
        if path.exists():
            shutil.copy2(path, previous)
        backup_conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        target = sqlite3.connect(path)
        try:
            backup_conn.backup(target)  # page by page under the target's write lock: never a torn file
        finally:
            target.close()
            backup_conn.close()
        click.echo(f"restored {source} into {path}: {incidents} incidents, events up to id {last_event}; "
                   f"the previous database is kept as {previous}")  # fmt: skip
        return
    db.engine().dispose()
    _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={_pg_url(url)}",
          str(source)])  # fmt: skip
    click.echo(f"restored {source} into the PostgreSQL database")


def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise click.ClickException(f"{argv[0]} is not installed (Debian: postgresql-client)")
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv, no shell
    if result.returncode != 0:
        raise click.ClickException(f"{argv[0]} failed: {result.stderr.strip()}")
