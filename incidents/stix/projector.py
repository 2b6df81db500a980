"""The STIX projector: committed events become new object versions, only where an incident's STIX body changed.

Each incident is planned with stix2 in a read transaction; under the write lock only comparisons and inserts run.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from incidents.base import utcnow
from incidents.enums import TLP
from incidents.models import Event, Incident, StixCursor, StixExport, StixLink, StixObject, System
from incidents.stix import mapping, push, store, techniques
from incidents.uow import in_transaction

PROJECTOR_LOCK_KEY = 0x53544958  # "STIX": the one projector leader on PostgreSQL


def _view(incident: Incident, settings: store.StixSettings, techniques: tuple[str, ...] = ()) -> mapping.IncidentView:
    system = incident.affected_system
    owner = system.owner if system else None
    return mapping.IncidentView(
        id=incident.id,
        ref=incident.ref,
        title=incident.title,
        description=incident.description,
        category=str(incident.category),
        priority=str(incident.priority),
        status=str(incident.status),
        tlp=str(incident.tlp),
        created_at=incident.created_at,
        detected_at=incident.detected_at,
        detection_method=incident.detection_method,
        reporter_organisation=incident.reporter_organisation,
        affected_organisation=(owner.name_en or owner.name_vi) if owner else None,
        observables=tuple(mapping.ObservableView(o.type, o.value, o.hashes) for o in incident.observables),
        url=f"{settings.base_url.rstrip('/')}/api/v1/incidents/{incident.ref}",
        techniques=techniques,
    )


@dataclass
class _Stored:
    row_id: int
    stix_id: str
    created: datetime | None
    modified: datetime
    body: str
    tlp: str


# What a stored version is read as (`_Stored`), for the incident's own objects and the shared ones alike.
_STORED_COLUMNS = (
    StixObject.id,
    StixObject.key,
    StixObject.stix_id,
    StixObject.created,
    StixObject.modified,
    StixObject.body,
    StixObject.tlp,
)


def _stored(session: Session, incident_id: int, shared_keys: Sequence[str]) -> tuple[dict, dict]:
    """Latest stored version per key of the incident's own objects, and stored shared objects by (key, tlp)."""
    own: dict[str, _Stored] = {}
    rows = session.execute(
        select(*_STORED_COLUMNS).where(StixObject.incident_id == incident_id).order_by(StixObject.id)
    )
    for row in rows:
        own[row.key] = _Stored(row.id, row.stix_id, row.created, row.modified, row.body, row.tlp)
    shared: dict[tuple[str, str], list[_Stored]] = {}
    keys = list(shared_keys)
    for i in range(0, len(keys), 500):
        rows = session.execute(
            select(*_STORED_COLUMNS)
            .where(StixObject.key.in_(keys[i : i + 500]), StixObject.incident_id.is_(None))
            .order_by(StixObject.id)
        )
        for row in rows:
            shared.setdefault((row.key, row.tlp), []).append(
                _Stored(row.id, row.stix_id, row.created, row.modified, row.body, row.tlp)
            )
    return own, shared


def _board(session: Session, settings: store.StixSettings) -> str:
    store.ensure_markings(session)
    stix_id = store.stored_board_id(session)
    if stix_id is not None:
        return stix_id
    now = utcnow()
    obj = mapping.board_identity(f"identity--{mapping.object_uuid()}", now, settings.board_name)
    store.store_objects(session, [(obj, store.BOARD_KEY, None, TLP.CLEAR.value)], links={})
    return obj.id


def _load_view(session: Session, incident_id: int, settings: store.StixSettings) -> mapping.IncidentView | None:
    incident = session.scalar(
        select(Incident)
        .where(Incident.id == incident_id)
        .options(selectinload(Incident.observables), selectinload(Incident.affected_system).selectinload(System.owner))
    )
    return None if incident is None else _view(incident, settings, techniques.attack_techniques(session, incident_id))


def _plan(session: Session, view: mapping.IncidentView, board_id: str) -> tuple[list, dict, dict]:
    """The planned objects, serialised, with the ids already stored for their keys."""
    shared_keys = [f"sco:{o.key}" for o in view.observables]
    for name in (view.reporter_organisation, view.affected_organisation):
        if name:
            shared_keys.append(f"identity:{view.tlp}:{name}")
    own, shared = _stored(session, view.id, shared_keys)
    known = {k: (s.stix_id, s.created) for k, s in own.items()}
    for (key, _tlp), rows in shared.items():
        if key.startswith("identity:"):
            known[key] = (rows[-1].stix_id, rows[-1].created)
    planned = mapping.plan(view, mapping.Ids(known), board_id, utcnow())
    for p in planned:
        p.body = mapping.serialise(p.obj)
    return planned, own, shared


PLACEHOLDER_BOARD = "identity--00000000-0000-4000-8000-000000000000"
MAPPING_VERSION = "1"  # bump when incidents/stix/mapping.py maps differently: every incident is then projected again


def _digest(view: mapping.IncidentView, board_id: str | None) -> str:
    return hashlib.sha256(f"{MAPPING_VERSION}|{board_id}|{view!r}".encode()).hexdigest()


def _end(session: Session) -> None:
    if session.in_transaction():
        session.commit()


@dataclass
class _Prepared:
    """An incident's projection worked out in a read transaction, to be written under the write lock."""

    incident_id: int
    last_event: int
    board_id: str | None
    digest: str
    tlp: str
    planned: list | None  # None: nothing STIX-visible changed, only the incident's own cursor is behind

    @property
    def rows(self) -> int:
        return len(self.planned or ()) + 1


def _prepare(session: Session, incident_id: int, settings: store.StixSettings) -> _Prepared | None:
    """The stix2 work for one incident, in a read transaction (no write lock); None when there is nothing to do."""
    _end(session)
    if store.stored_board_id(session) is None:
        # Once per database: a plan made before the board identity exists would be made again under the lock.
        in_transaction(session, lambda: _board(session, settings))
    _end(session)
    with session.begin():
        last_event = session.scalar(select(func.max(Event.id)).where(Event.incident_id == incident_id)) or 0
        board_id = store.stored_board_id(session)
        view = _load_view(session, incident_id, settings)
        if view is None:
            return None
        digest = _digest(view, board_id)
        cursor = session.get(StixCursor, f"incident:{incident_id}")
        if cursor is not None and cursor.digest == digest:
            if cursor.position >= last_event:
                return None
            return _Prepared(incident_id, last_event, board_id, digest, view.tlp, None)
        planned, _own, _shared = _plan(session, view, board_id or PLACEHOLDER_BOARD)
    return _Prepared(incident_id, last_event, board_id, digest, view.tlp, planned)


def _apply(session: Session, prep: _Prepared, settings: store.StixSettings, board: str) -> int:
    """Write a prepared projection (the caller holds the write lock and has the board's id from `_board`):
    comparisons and inserts only, no stix2 work unless ids moved. Rows written."""
    if prep.planned is None:
        _mark(session, prep.incident_id, prep.digest, prep.last_event)
        return 0
    planned, digest, tlp = prep.planned, prep.digest, prep.tlp
    own, shared = _stored(session, prep.incident_id, [p.key for p in planned if p.shared])
    if board != prep.board_id or _ids_moved(planned, own, shared):
        # Someone minted ids between our read and our lock (an export racing the projector): plan again.
        fresh = _load_view(session, prep.incident_id, settings)
        if fresh is None:
            return 0
        planned, own, shared = _plan(session, fresh, board)
        digest, tlp = _digest(fresh, board), fresh.tlp
    written = _write(session, prep.incident_id, tlp, planned, own, shared)
    _raise_imported(session, prep.incident_id, tlp)
    _refresh_export(session, prep.incident_id, tlp)
    _mark(session, prep.incident_id, digest, prep.last_event)
    return written


def _raise_imported(session: Session, incident_id: int, tlp: str) -> None:
    """Imported objects of an incident whose TLP was raised follow it: row and markings, never below it."""
    lower = store.levels_up_to(tlp)[:-1]
    if not lower:
        return
    rows = session.execute(
        select(StixObject.id, StixObject.body)
        .join(StixLink, StixLink.object_id == StixObject.id)
        .where(StixLink.incident_id == incident_id, StixObject.imported_by_id > 0, StixObject.tlp.in_(lower))
    ).all()
    for row in rows:
        body = json.dumps(mapping.marked(json.loads(row.body), tlp), ensure_ascii=False)
        session.execute(update(StixObject).where(StixObject.id == row.id).values(tlp=tlp, body=body))


def _refresh_export(session: Session, incident_id: int, tlp: str) -> None:
    """Rewrite the incident's joined objects (in the projecting transaction), so an export reads one row."""
    rows = store.projected_rows(session, incident_id, tlp)
    objects = ", ".join({r.stix_id: r.body for r in rows}.values())
    digest = hashlib.sha256(objects.encode()).hexdigest()
    row = session.get(StixExport, incident_id)
    if row is None:
        session.add(StixExport(incident_id=incident_id, tlp=tlp, objects=objects, digest=digest, tlps=[tlp],
                               updated_at=utcnow()))  # fmt: skip
    elif row.digest != digest or row.tlp != tlp:
        row.objects, row.digest, row.tlp, row.updated_at = objects, digest, tlp, utcnow()


def project_incident(session: Session, incident_id: int, settings: store.StixSettings) -> int:
    """Bring an incident's stored graph up to date; a new version only where the STIX body changed. Rows written.

    The stix2 work happens before the write lock is taken; under it, only comparisons and inserts.
    """
    prep = _prepare(session, incident_id, settings)
    if prep is None:
        return 0

    def work() -> int:
        written = _apply(session, prep, settings, _board(session, settings))
        if written and settings.push:
            push.enqueue_push(session)
        return written

    return in_transaction(session, work)


def _mark(session: Session, incident_id: int, digest: str, last_event: int) -> None:
    cursor = store.cursor(session, f"incident:{incident_id}")
    cursor.digest = digest
    cursor.position = max(cursor.position, last_event)
    cursor.updated_at = utcnow()


def _ids_moved(planned: list, own: dict, shared: dict) -> bool:
    """Whether ids were minted for our keys since we planned (then the plan is rebuilt under the lock)."""
    for p in planned:
        if p.shared:
            if p.key.startswith("identity:"):
                rows = shared.get((p.key, _tlp_of(p.obj)), [])
                if any(r.stix_id != p.obj["id"] for r in rows):
                    return True
            continue
        stored = own.get(p.key)
        if stored is not None and stored.stix_id != p.obj["id"]:
            return True
    return False


def _tlp_of(obj: Any) -> str:
    return mapping.TLP_OF_MARKING[obj["object_marking_refs"][0]]


def _write(session: Session, incident_id: int, tlp: str, planned: list, own: dict, shared: dict) -> int:
    now = utcnow()
    items: list[tuple[Any, str | None, int | None, str]] = []
    bodies: list[str | None] = []  # the planned serialisation of a first version (None: a new version)
    links: dict[int, int] = {}
    link_existing: list[int] = []
    linked = set(session.scalars(select(StixLink.object_id).where(StixLink.incident_id == incident_id)))
    for p in planned:
        if p.shared:
            rows = [r for r in shared.get((p.key, tlp), []) if r.stix_id == p.obj["id"]]
            if rows and not p.key.startswith("identity:"):
                if rows[-1].row_id not in linked:
                    link_existing.append(rows[-1].row_id)
                continue
            if rows and p.key.startswith("identity:"):
                stored = rows[-1]
                if stored.body == p.body:
                    if stored.row_id not in linked:
                        link_existing.append(stored.row_id)
                    continue
                obj, body = mapping.new_version(p.obj, _after(now, stored.modified)), None
            else:
                obj, body = p.obj, p.body
            links[len(items)] = incident_id
            items.append((obj, p.key, None, tlp))
            bodies.append(body)
            continue
        stored = own.get(p.key)
        if stored is not None and stored.body == p.body:
            continue
        obj = p.obj if stored is None else mapping.new_version(p.obj, _after(now, stored.modified))
        links[len(items)] = incident_id
        items.append((obj, p.key, incident_id, tlp))
        bodies.append(p.body if stored is None else None)
    store.store_objects(session, items, links, bodies)
    if link_existing:
        session.execute(
            insert(StixLink.__table__), [{"object_id": r, "incident_id": incident_id} for r in set(link_existing)]
        )
    return len(items)


def _after(now: datetime, previous: datetime) -> datetime:
    """A `modified` after `previous` at STIX's millisecond precision."""
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    floor = previous.replace(microsecond=previous.microsecond // 1000 * 1000) + mapping.MILLI
    return max(now, floor)


# Planned objects per write transaction of the projector (about three incidents of three observables): intake
# waits for the same SQLite write lock, and a gevent web worker waiting in SQLite's busy handler serves nobody.
# One transaction per incident pays BEGIN IMMEDIATE, the board lookup and a WAL fsync each time; a whole batch
# in one transaction would hold the lock for seconds. A few incidents per transaction sit between the two
# (docs/benchmarks.md has the measurements).
WRITE_ROWS = 60


def project_pending(session: Session, settings: store.StixSettings, *, batch: int = 200) -> int:
    """Project the incidents of committed events after the cursor, in commit order; events consumed.

    Each incident is planned in a read transaction; the writes go out a few incidents per short write
    transaction, and the last one moves the cursor.
    """
    _end(session)
    with session.begin():
        position = session.scalar(select(StixCursor.position).where(StixCursor.name == store.PROJECTOR)) or 0
        events = session.execute(
            select(Event.id, Event.incident_id).where(Event.id > position).order_by(Event.id).limit(batch)
        ).all()
    if not events:
        return 0
    incident_ids = list(dict.fromkeys(e.incident_id for e in events if e.incident_id is not None))
    last = events[-1].id

    def write(group: list[_Prepared], final: bool) -> None:
        def work() -> None:
            board = _board(session, settings)
            written = sum(_apply(session, prep, settings, board) for prep in group)
            if final:
                cursor = store.cursor(session, store.PROJECTOR)
                cursor.position = max(cursor.position, last)
                cursor.updated_at = utcnow()
            if written and settings.push:
                push.enqueue_push(session)

        in_transaction(session, work)

    group: list[_Prepared] = []
    for incident_id in incident_ids:
        prep = _prepare(session, incident_id, settings)
        if prep is not None:
            group.append(prep)
        if sum(p.rows for p in group) >= WRITE_ROWS:
            write(group, final=False)
            group = []
    write(group, final=True)
    return len(events)


def ensure_projected(session: Session, incident_id: int, settings: store.StixSettings) -> bool:
    """Read your own writes: project this incident now if any event of it is past what was projected (True)."""
    _end(session)
    with session.begin():
        done = session.scalar(select(StixCursor.position).where(StixCursor.name == store.PROJECTOR)) or 0
        mine = session.scalar(select(StixCursor.position).where(StixCursor.name == f"incident:{incident_id}"))
        last = session.scalar(select(func.max(Event.id)).where(Event.incident_id == incident_id)) or 0
    if mine is None or last > max(done, mine):
        project_incident(session, incident_id, settings)
        return True
    return False
