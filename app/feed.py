"""The change feed: each web process tails `events` in id order (which is commit order) and emits to /live.

Woken at once by its own commits; other processes' events arrive by PostgreSQL LISTEN/NOTIFY (a hint, the
cursor is the truth) or by polling SQLite. Started from gunicorn's post_worker_init hook or the first
/live connect, never from create_app. Supervised: a failing tail is logged and restarted. The credentials of
connected clients are re-read from the database twice a second, so a revocation made by any process closes
their sockets, and a role or organisation change regroups their rooms, within a second.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Credential, Identity, valid_identities
from incidents.access import Actor, audience, rooms_of, visible_ids
from incidents.base import utcnow
from incidents.events import EVENTS_CHANNEL, EVENTS_WRITTEN
from incidents.models import Event

log = logging.getLogger("ucsc.feed")
NAMESPACE = "/live"
BATCH = 500
# Half the one-second bound on how long a revoked credential may keep its socket, leaving room for the query.
RECHECK_SECONDS = 0.5
# A client's catch_up budget: a reconnecting page needs one; a burst beyond this is a flood, answered without work.
CATCH_UP_BURST = 3
CATCH_UP_EVERY = 2.0  # seconds per catch_up regained


def event_name(kind: str) -> str:
    """`incident.created` as is; other incident changes as `incident.updated` (with `kind`); others by kind."""
    if kind.startswith("incident.") and kind != "incident.created":
        return "incident.updated"
    return kind


def payload(ev: Event, ref: str | None, status: str | None) -> dict[str, Any]:
    return {
        "event_id": ev.id,
        "kind": ev.kind,
        "id": ev.incident_id,
        "ref": ref,
        "status": status,
        "at": ev.at.isoformat(),
        "actor": ev.actor,
        "note": ev.note,
        "data": ev.data,
    }


@dataclass
class Member:
    """A connected /live client: who it acts as, the credential that must stay valid, and its catch_up budget."""

    identity: Identity
    credential: Credential
    joined: bool = False  # in its rooms (or served by the tail), not in the middle of a replay
    allowance: float = CATCH_UP_BURST
    refilled_at: float = field(default_factory=time.monotonic)

    def spend(self) -> float:
        """Take one catch_up from the token bucket: 0 when allowed, else the seconds until one is."""
        now = time.monotonic()
        self.allowance = min(CATCH_UP_BURST, self.allowance + (now - self.refilled_at) / CATCH_UP_EVERY)
        self.refilled_at = now
        if self.allowance >= 1:
            self.allowance -= 1
            return 0.0
        return (1 - self.allowance) * CATCH_UP_EVERY

    @property
    def actor(self) -> Actor:
        return self.identity.actor

    def rooms(self) -> list[str]:
        """Its rooms; none for a token acting with another role than its user's, which the tail serves one by one
        (the personal room is judged by the user's own role)."""
        return rooms_of(self.actor) if self.identity.as_self else []


class Feed:
    """One per web process: the tailer, its cursor, and replay for reconnecting clients."""

    def __init__(self, app: Flask, socketio: SocketIO) -> None:
        self.app = app
        self.socketio = socketio
        self.engine = app.extensions["ucsc.engine"]
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.poll = float(app.config["FEED_POLL_SECONDS"])
        self.replay_limit = int(app.config["FEED_REPLAY_LIMIT"])
        self.heartbeat_every = float(app.config["FEED_HEARTBEAT_SECONDS"])
        self.cursor = 0
        self.members: dict[str, Member] = {}  # this process's connected clients, by Socket.IO sid
        self.lag_seconds: float | None = None  # commit-to-emit of the last event emitted
        self.last_tick = 0.0  # monotonic time of the tailer's last pass: a stuck tailer shows here
        self._lock = threading.Lock()  # the tail and a replay never interleave (gevent makes it a greenlet lock)
        self._wake = threading.Event()
        self._started = False
        sa_event.listen(app.extensions["ucsc.sessionmaker"], "after_commit", self._after_commit)

    # --- starting and waking -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the tailer (and the listener on PostgreSQL) once per process."""
        with self._lock:
            if self._started:
                return
            with self.sessions() as session:
                self.cursor = session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0
            self._started = True
        self.socketio.start_background_task(self._supervise, self._tail, "tail")
        self.socketio.start_background_task(self._supervise, self._heartbeat, "heartbeat")
        self.socketio.start_background_task(self._supervise, self._recheck, "recheck")
        if self.engine.dialect.name == "postgresql":
            self.socketio.start_background_task(self._supervise, self._listen, "listen")
        log.info("feed started at event %d", self.cursor)

    @property
    def started(self) -> bool:
        return self._started

    def wake(self) -> None:
        self._wake.set()

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(EVENTS_WRITTEN, False):
            self._wake.set()

    def _supervise(self, loop: Any, name: str) -> None:
        while True:
            try:
                loop()
            except Exception:
                log.exception("feed %s failed; restarting in 1 s", name)
                self.socketio.sleep(1)

    # --- the tail ------------------------------------------------------------------------------------------

    def _tail(self) -> None:
        while True:
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._has_clients():
                self.drain()
            # else nobody here to send to (another instance's clients, or none yet): not even a query; a client
            # that joins moves the cursor first (`join`)

    def drain(self) -> int:
        """Emit every committed event past the cursor, in id order; return how many."""
        emitted = 0
        with self._lock:
            self.last_tick = time.monotonic()
            if not self._has_clients():
                self._catch_up()
                return 0
            while True:
                with self.sessions() as session:
                    rows = list(
                        session.scalars(select(Event).where(Event.id > self.cursor).order_by(Event.id).limit(BATCH))
                    )
                    if not rows:
                        break
                    targets = audience(session, rows)
                    apart = self._apart(session, rows)
                for ev in rows:
                    rooms, ref, status = targets[ev.id]
                    to = rooms + [sid for sid, (mine, allowed) in apart.items() if _may_have(ev, rooms, mine, allowed)]
                    if to:
                        self.socketio.emit(event_name(ev.kind), payload(ev, ref, status), to=to, namespace=NAMESPACE)
                    self.cursor = ev.id
                    emitted += 1
                self.lag_seconds = max(0.0, (utcnow() - rows[-1].at).total_seconds())
                if len(rows) < BATCH:
                    break
        return emitted

    def _apart(self, session: Session, rows: list[Event]) -> dict[str, tuple[set[str], set[int]]]:
        """The rooms and visible incidents of each client in no rooms (`Member.rooms`), to judge it alone."""
        ids = {ev.incident_id for ev in rows if ev.incident_id is not None}
        return {
            sid: (set(rooms_of(m.actor)), visible_ids(session, m.actor, ids))
            for sid, m in list(self.members.items())
            if m.joined and not m.identity.as_self
        }

    def _catch_up(self) -> None:
        """Move the cursor to the newest committed event, emitting nothing (the caller holds the lock)."""
        with self.sessions() as session:
            self.cursor = max(self.cursor, session.scalar(select(func.max(Event.id))) or 0)

    def _has_clients(self, besides: str | None = None) -> bool:
        """Whether a client (other than `besides`) is connected to /live on this process (python-socketio keeps
        the namespace's sids in room None)."""
        manager = getattr(self.socketio.server, "manager", None)
        if manager is None:
            return True
        return any(sid != besides for sid in manager.rooms.get(NAMESPACE, {}).get(None, {}))

    def _listen(self) -> None:
        """PostgreSQL: LISTEN for other processes' commits; each notification wakes the tail."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            while True:
                for _ in conn.notifies(timeout=5.0):
                    self._wake.set()

    def _heartbeat(self) -> None:
        while True:
            self.socketio.sleep(self.heartbeat_every)
            self.socketio.emit("heartbeat", {"at": utcnow().isoformat(), "event_id": self.cursor}, namespace=NAMESPACE)

    # --- connecting clients --------------------------------------------------------------------------------

    def admit(self, sid: str, identity: Identity, credential: Credential) -> None:
        self.members[sid] = Member(identity, credential)

    def forget(self, sid: str) -> None:
        self.members.pop(sid, None)

    def join(self, sid: str, last_event_id: int | None) -> None:
        """Put an admitted client in its rooms and send what it missed since `last_event_id`, then `ready`.

        The bulk of a replay runs outside the lock the tail needs, with the client out of its rooms; under the
        lock it gets only what the tail emitted meanwhile, then its rooms: nothing is missed, doubled or reordered.
        """
        self.start()
        with self._lock:
            if not self._has_clients(besides=sid):
                self._catch_up()  # the tail rests while nobody is connected: its cursor may be behind
            self._set_rooms(sid, [])
            if sid in self.members:
                self.members[sid].joined = False
            upto = self.cursor
        done = last_event_id
        if done is not None and done < upto:
            member = self.members.get(sid)
            done = upto if member is not None and self._replay(sid, member.actor, done, upto) else None
        with self._lock:
            member = self.members.get(sid)
            if member is None:
                return  # disconnected or revoked meanwhile
            if done is not None and done < self.cursor:
                self._replay(sid, member.actor, done, self.cursor)  # only what the tail emitted meanwhile
            self._set_rooms(sid, member.rooms())
            member.joined = True
            cursor = self.cursor
        self.socketio.emit("ready", {"event_id": cursor}, to=sid, namespace=NAMESPACE)

    def _set_rooms(self, sid: str, rooms: list[str]) -> None:
        """Make `rooms` exactly the feed rooms `sid` is in (the caller holds the lock)."""
        server = self.socketio.server
        current = {r for r in server.rooms(sid, namespace=NAMESPACE) if r is not None and r != sid}
        for room in current - set(rooms):
            server.leave_room(sid, room, namespace=NAMESPACE)
        for room in set(rooms) - current:
            server.enter_room(sid, room, namespace=NAMESPACE)

    def _replay(self, sid: str, actor: Actor, after: int, upto: int) -> bool:
        """Send `sid` the events in (after, upto] it may see; False when there are too many (it gets `resync`)."""
        with self.sessions() as session:
            stmt = select(Event).where(Event.id > after, Event.id <= upto).order_by(Event.id)
            rows = list(session.scalars(stmt.limit(self.replay_limit + 1)))
            if len(rows) > self.replay_limit:
                self.socketio.emit("resync", {"event_id": upto}, to=sid, namespace=NAMESPACE)
                return False
            targets = audience(session, rows)
            mine = set(rooms_of(actor))
            allowed = visible_ids(session, actor, {ev.incident_id for ev in rows if ev.incident_id is not None})
        for ev in rows:
            rooms, ref, status = targets[ev.id]
            if _may_have(ev, rooms, mine, allowed):
                self.socketio.emit(event_name(ev.kind), payload(ev, ref, status), to=sid, namespace=NAMESPACE)
        return True

    # --- credentials that change while connected -----------------------------------------------------------

    def _recheck(self) -> None:
        while True:
            self.socketio.sleep(RECHECK_SECONDS)
            if self.members:
                self.recheck()

    def recheck(self) -> None:
        """Close the sockets whose credential no longer holds; regroup those whose role or organisation changed."""
        members = dict(self.members)
        with self.app.app_context(), self.sessions() as session:
            now = valid_identities(session, {m.credential for m in members.values()})
        for sid, member in members.items():
            identity = now.get(member.credential)
            if identity is None:
                log.info("closing /live socket of %s: its %s %d no longer holds", member.actor.username,
                         member.credential.kind, member.credential.id)  # fmt: skip
                self.forget(sid)
                self.socketio.emit("signed_out", {}, to=sid, namespace=NAMESPACE)
                self.socketio.server.disconnect(sid, namespace=NAMESPACE)
            elif identity != member.identity:
                with self._lock:
                    member.identity = identity
                    if member.joined:  # else the join in progress puts it in the new rooms when it ends
                        self._set_rooms(sid, member.rooms())
                log.info("/live socket of %s regrouped for role %s in organisation %d", member.actor.username,
                         member.actor.role, member.actor.organisation_id)  # fmt: skip

    def health(self) -> dict[str, Any]:
        return {
            "feed_started": self._started,
            "feed_cursor": self.cursor,
            "feed_lag": round(self.lag_seconds, 3) if self.lag_seconds is not None else None,
            "feed_tick_age": round(time.monotonic() - self.last_tick, 3) if self.last_tick else None,
        }


def _may_have(ev: Event, rooms: list[str], mine: set[str], allowed: set[int]) -> bool:
    """Whether a client judged alone may have an event: its rooms are in the audience, and it may see the incident."""
    return bool(mine.intersection(rooms)) and (ev.incident_id is None or ev.incident_id in allowed)
