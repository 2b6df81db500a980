"""The timeline and change feed: events recorded in a transaction are written at its commit, in id order.

Packages that react to changes (playbooks, deadlines) subscribe with `add_listener`, so that incidents never
imports them; rows other modules keep for the commit (audit entries) are written by an `at_commit` writer. Both
are registered by app/wiring.py, as are this module's own Session listeners (`install`).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from incidents.access import Actor, stricter
from incidents.base import utcnow
from incidents.models import Event, Incident

# Set in session.info by every write to `events`, rows inserted in bulk included, so a listener at commit
# (the change feed's wake-up) need not look for Event objects among the flushed ones.
EVENTS_WRITTEN = "wrote_events"
EVENTS_CHANNEL = "ucsc_events"  # PostgreSQL NOTIFY channel: wakes the other processes' tailers at our commit
# Any 64-bit constant will do; every writer of `events` takes it so commits follow id order.
FEED_LOCK_KEY = 0x55435343  # "UCSC"
# Events recorded in a transaction wait here until its commit (`write_pending`).
PENDING_EVENTS = "ucsc.pending_events"
# The channels to NOTIFY when the transaction commits (PostgreSQL), sent in one statement (`notify_at_commit`).
NOTIFY_PENDING = "ucsc.notify_pending"
# The transaction that took the feed lock (PostgreSQL), so it is taken once.
_FEED_LOCK_TX = "feed_lock_tx"

Listener = Callable[[Session, Sequence[dict[str, Any]]], None]
Writer = Callable[[Session, list[Any]], None]

# Writers of rows kept for the commit, by session.info key, in the order they write (after the events).
_AT_COMMIT: dict[str, Writer] = {}
# Each listener gets the rows of `events` being recorded and runs inside the recording transaction: the jobs it
# enqueues commit, or are lost, together with the change.
_LISTENERS: list[Listener] = []


def install() -> None:
    """Have every Session write its pending rows at commit and forget them when the transaction ends."""
    for name, listener in (("before_commit", write_pending), ("after_transaction_end", forget_pending)):
        if not sa_event.contains(Session, name, listener):
            sa_event.listen(Session, name, listener)


def add_listener(listener: Listener) -> None:
    """Call `listener` with the rows of every event recorded from now on, inside the recording transaction."""
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def at_commit(key: str, writer: Writer) -> None:
    """Register a writer of rows that wait in `session.info[key]` for the commit, after the events (audit rows)."""
    _AT_COMMIT[key] = writer


def record_event(
    session: Session,
    *,
    kind: str,
    actor: Actor | None,
    incident: Incident | None = None,
    note: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
    tlp: str | None = None,
) -> Event:
    """Append to the timeline and change feed; the row is written when the transaction commits (`write_pending`).

    The event carries the stricter of the incident's TLP and `tlp` (what it records was, or is, under that level).
    """
    values = event_values(
        kind=kind,
        actor=actor,
        incident_id=incident.id if incident is not None else None,
        tlp=stricter(incident.tlp, tlp) if incident is not None else tlp,
        note=note,
        data=data,
        at=at,
    )
    _defer(session, [values])
    for listener in _LISTENERS:
        listener(session, [values])
    return Event(**values)  # transient: its row, and its id, are written at commit


def record_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append many events (rows from `event_values`); they are written with one INSERT at commit."""
    _defer(session, events)
    for listener in _LISTENERS:
        listener(session, events)


def event_values(
    *,
    kind: str,
    actor: Actor | None,
    incident_id: int | None,
    tlp: str | None,
    note: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One row of `events`, for `record_events`."""
    return {
        "incident_id": incident_id,
        "kind": kind,
        "actor_id": actor.user_id if actor else None,
        "actor": actor.label if actor else "system",
        "at": at or utcnow(),
        "note": note,
        "data": data or {},
        "tlp": tlp,
    }


def _defer(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.info.setdefault(PENDING_EVENTS, []).extend(rows)


def write_pending(session: Session) -> None:
    """Write the transaction's events (and audit rows) last, so the feed lock (PostgreSQL) is held only from
    their INSERT to the commit, not for the whole transaction: writers then overlap, and ids still become visible
    in id order. Row changes are flushed first, so no row lock is taken after the feed lock."""
    if session.in_nested_transaction():
        return  # a savepoint being released: the rows wait for the real commit
    locked = False
    for key, writer in ((PENDING_EVENTS, _insert_events), *_AT_COMMIT.items()):
        rows = session.info.pop(key, None)
        if not rows:
            continue
        if not locked:
            session.flush()
            locked = True
            if key == PENDING_EVENTS and _insert_events_locking(session, rows):
                continue
            if key == PENDING_EVENTS:
                notify_at_commit(session, EVENTS_CHANNEL)  # sent with the lock, one round trip for both
            take_feed_lock(session)
        writer(session, rows)
    _send_notifies(session)


def notify_at_commit(session: Session, channel: str) -> None:
    """NOTIFY `channel` when this transaction commits (PostgreSQL): the channels a transaction names are sent in
    one statement at its end, with the feed lock when it takes it (a filing's jobs and events: one round trip)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.info.setdefault(NOTIFY_PENDING, set()).add(channel)


def _send_notifies(session: Session, *, lock: bool = False) -> None:
    """One SELECT: the feed lock if `lock`, then a pg_notify for each channel still to name."""
    channels = sorted(session.info.pop(NOTIFY_PENDING, set()))
    if not lock and not channels:
        return
    params: dict[str, Any] = {f"c{i}": channel for i, channel in enumerate(channels)}
    if lock:
        params["k"] = FEED_LOCK_KEY
    session.connection().execute(_lock_and_notify(lock, len(channels)), params)


@cache
def _lock_and_notify(lock: bool, channels: int) -> Any:
    # Built once per shape, run on the transaction's connection: every write transaction on PostgreSQL sends it (the
    # statement, built anew and sent through the session's execute, was 8 % of a repeat's samples, py-spy).
    calls = (["pg_advisory_xact_lock(:k)"] if lock else []) + [f"pg_notify(:c{i}, '')" for i in range(channels)]
    return text("SELECT " + ", ".join(calls))


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A savepoint whose rollback also drops the events and at-commit rows recorded inside it (they wait in
    `session.info` for the commit, beyond the savepoint's reach)."""
    kept = {key: len(session.info.get(key) or ()) for key in (PENDING_EVENTS, *_AT_COMMIT)}
    try:
        with session.begin_nested():
            yield
    except BaseException:
        for key, length in kept.items():
            if key in session.info:
                del session.info[key][length:]
        raise


def forget_pending(session: Session, transaction: Any) -> None:
    """The transaction is over (its rows were written at commit, or rolled back): nothing waits any more. A
    savepoint's end is not the transaction's (nothing writes events in one)."""
    if transaction.parent is None:
        for key in (PENDING_EVENTS, NOTIFY_PENDING, *_AT_COMMIT):
            session.info.pop(key, None)


@cache
def _insert_statement() -> Any:
    return insert(Event.__table__)


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    session.connection().execute(_insert_statement(), rows)
    _wrote_events(session)


def _insert_events_locking(session: Session, rows: list[dict[str, Any]]) -> bool:
    """PostgreSQL, the feed lock not yet held: take it, NOTIFY, and insert the events in one statement (one round
    trip, not two: a repeat's transaction has a dozen). False where that does not apply (SQLite, or the lock taken
    earlier in the transaction), and nothing done."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    tx = _without_feed_lock(session)
    if tx is None:
        return False
    notify_at_commit(session, EVENTS_CHANNEL)
    channels = sorted(session.info.pop(NOTIFY_PENDING, set()))
    params = {"k": FEED_LOCK_KEY, **{f"c{i}": channel for i, channel in enumerate(channels)}}
    # Each row's statement takes the lock again (it stacks, to the commit) and names the same channels (PostgreSQL
    # sends a channel once a transaction): harmless, and psycopg pipelines a batch's rows in one round trip.
    session.connection().execute(_insert_events_with_lock(len(channels)), [{**row, **params} for row in rows])
    session.info[_FEED_LOCK_TX] = tx
    _wrote_events(session)
    return True


@cache
def _insert_events_with_lock(channels: int) -> Any:
    """INSERT INTO events ... SELECT the row's values FROM the feed lock and the NOTIFYs: the row, and so its id
    from the sequence, comes out of the SELECT only once the lock is held."""
    table = Event.__table__
    lock = select(
        func.pg_advisory_xact_lock(bindparam("k")), *(func.pg_notify(bindparam(f"c{i}"), "") for i in range(channels))
    ).cte("feed_lock")
    columns = ("incident_id", "kind", "actor_id", "actor", "at", "note", "data", "tlp")
    values = select(*(bindparam(name, type_=table.c[name].type) for name in columns)).select_from(lock)
    return insert(table).from_select(columns, values)


def _wrote_events(session: Session) -> None:
    """Flag the session for this process's tailer and, on PostgreSQL, NOTIFY the others' (at commit: named with
    the feed lock, which every writer of events takes first)."""
    session.info[EVENTS_WRITTEN] = True


def take_feed_lock(session: Session) -> None:
    """Hold the feed lock until this transaction ends: whoever writes `events` or `stix_objects` takes it first, so
    those rows' ids become visible in commit order (PostgreSQL)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite writes run under BEGIN IMMEDIATE: one writer, commits in id order already.
    tx = _without_feed_lock(session)
    if tx is not None:
        notify_at_commit(session, EVENTS_CHANNEL)  # whoever takes the lock writes events or STIX objects
        _send_notifies(session, lock=True)
        session.info[_FEED_LOCK_TX] = tx


def _without_feed_lock(session: Session) -> Any:
    """The session's transaction (begun if need be: with none, it would be None and match no key) if it does not
    hold the feed lock yet; None if it does."""
    session.connection()
    tx = session.get_transaction()
    return None if session.info.get(_FEED_LOCK_TX) is tx else tx
