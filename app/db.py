"""The engine and sessions: SQLite in WAL mode with BEGIN IMMEDIATE writes, or PostgreSQL through psycopg."""

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from incidents.base import Base
from incidents.uow import GroupCommit

J = TypeVar("J")
R = TypeVar("R")

__all__ = ["Base", "engine", "init_app", "make_engine", "session"]


def make_engine(url: str, *, busy_timeout: float = 2.0, synchronous: str = "FULL", **pool: Any) -> Engine:
    """An engine tuned for this project: SQLite pragmas and BEGIN modes, or a bounded PostgreSQL pool."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False})
        _tune_sqlite(engine, busy_timeout, synchronous)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(
        url,
        pool_size=pool.get("pool_size", 10),
        max_overflow=pool.get("max_overflow", 5),
        pool_timeout=pool.get("pool_timeout", 5.0),
    )
    _ping_when_idle(engine, PING_AFTER_IDLE)
    return engine


# A pooled PostgreSQL connection idle for longer than this is pinged before use. SQLAlchemy's pool_pre_ping pings
# on every checkout: a round trip a request (a filing makes about a dozen) paid even when the connection had been
# in use a millisecond before.
PING_AFTER_IDLE = 1.0
_IDLE_SINCE = "ucsc.idle_since"


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a connection on checkout when it sat in the pool for over `seconds` (a restart, a failover or an idle
    timeout may have cut it meanwhile); a dead one invalidates the pool, which then connects afresh."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= seconds:
            return  # a new connection, or one in use a moment ago
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(f"the connection was cut while idle: {exc}") from exc
            raise


def _tune_sqlite(engine: Engine, busy_timeout: float, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event emit BEGIN itself, so writes can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write takes the lock at BEGIN, so it waits instead of failing at its first write.
        if connection.get_execution_options().get("ucsc_write"):
            _begin_immediate(connection, busy_timeout)
        else:
            connection.exec_driver_sql("BEGIN DEFERRED")


# The pauses between tries for SQLite's write lock: from the first to the longest, doubling. A process that gives
# way (the worker) tries less often, so a request waiting at the same time gets the lock first.
_LOCK_PAUSES = (0.0005, 0.004)
_GIVING_WAY = (0.004, 0.03)
_giving_way: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def give_way(engine: Engine) -> None:
    """This process's writers on `engine` give way to the web's: the worker's transactions (follow-up batches,
    deadline checks, the projector) can wait a few milliseconds; a SIEM's request waiting for its 201 should
    not."""
    _giving_way.add(engine)


def _begin_immediate(connection: Any, busy_timeout: float) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in pauses of our own instead of SQLite's busy handler. That
    handler sleeps in the C library: under gevent the whole web process stops while one request waits, and its
    pauses grow to 100 ms, so a writer that keeps coming back (the worker's threads) wins the lock over it for
    seconds. Here a waiting request yields to the others and tries again within a few milliseconds."""
    raw = connection.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout=0")
    deadline = time.monotonic() + busy_timeout
    first, longest = _GIVING_WAY if connection.engine in _giving_way else _LOCK_PAUSES
    pause = first
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, longest)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")


def init_app(app: Flask) -> None:
    engine = make_engine(
        app.config["DATABASE_URL"],
        busy_timeout=float(app.config["SQLITE_BUSY_TIMEOUT"]),
        synchronous=str(app.config["SQLITE_SYNCHRONOUS"]),
        pool_size=int(app.config["DB_POOL_SIZE"]),
        pool_timeout=float(app.config["DB_POOL_TIMEOUT"]),
    )
    app.extensions["ucsc.engine"] = engine
    app.extensions["ucsc.sessionmaker"] = sessionmaker(engine, expire_on_commit=False, autobegin=True)
    app.teardown_appcontext(_close_session)


def engine() -> Engine:
    return current_app.extensions["ucsc.engine"]


def session() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["ucsc.sessionmaker"]()
    return g.db_session


def submit_together(name: str, run_batch: Callable[[Session, Sequence[J]], Sequence[R | Exception]],
                    run_alone: Callable[[Session, J], R], job: J) -> R:  # fmt: skip
    """`job` run by the group commit `name` with the others of its kind in flight; this request's session is opened
    only if the job leads or runs alone, and a read transaction it holds (a token's lookup) is not held while the
    job waits."""
    held: Session | None = g.get("db_session")
    if held is not None and held.in_transaction():
        held.commit()
    shared = current_app.extensions.get(name)  # one per process and kind of request, made at its first use
    if shared is None:
        shared = current_app.extensions.setdefault(name, GroupCommit(run_batch, run_alone))
    return shared.submit(session, job)


def _close_session(_exc: BaseException | None) -> None:
    s = g.pop("db_session", None)
    if s is not None:
        s.close()
