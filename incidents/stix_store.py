"""The STIX object store: the projector that turns committed events into versions, visibility, exports and queries."""

import base64
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, selectinload

from incidents import jobs, service, stix, strict_json
from incidents.access import Actor, may_edit, tlp_clause, visible_incidents
from incidents.base import utcnow
from incidents.enums import TLP, Role
from incidents.errors import FieldError, Forbidden, ValidationFailed
from incidents.events import record_event, take_feed_lock
from incidents.models import Event, Incident, StixCursor, StixExport, StixLink, StixObject, System
from incidents.policy import Capability, require
from incidents.uow import in_transaction

log = logging.getLogger("ucsc.stix")

PROJECTOR = "projector"
PUSH = "push"
PROJECTOR_LOCK_KEY = 0x53544958  # "STIX": the one projector leader on PostgreSQL
BOARD_KEY = "identity:board"
_SHARED_READERS = (Role.ADMIN, Role.OPERATOR, Role.COMMITTEE, Role.RESPONDER)
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class StixSettings:
    """What the mapping takes from configuration."""

    base_url: str = "http://127.0.0.1:5000"
    board_name: str = "Ban Chỉ đạo ứng cứu sự cố an toàn thông tin mạng tỉnh Thanh Hóa"
    push: bool = False  # an outbound TAXII feed is configured: new objects queue a push job


def levels_up_to(level: str) -> list[str]:
    return [str(t) for t in stix.TLP_ORDER[: stix.TLP_ORDER.index(TLP(level)) + 1]]


# ---------------------------------------------------------------------------------------------- visibility


def visible_objects(actor: Actor) -> ColumnElement[bool]:
    """Rows `actor` may read: through an incident they may see (judged now), or standalone by TLP and role."""
    through_incident = (
        exists()
        .where(StixLink.object_id == StixObject.id, Incident.id == StixLink.incident_id)
        .where(visible_incidents(actor), tlp_clause(actor, StixObject.tlp, StixLink.incident_id))
    )
    readable = [StixObject.tlp == TLP.CLEAR.value, StixObject.imported_by_id == actor.user_id]
    if actor.role in _SHARED_READERS:
        readable.append(StixObject.tlp.in_([TLP.GREEN.value, TLP.AMBER.value]))
    standalone = and_(not_(exists().where(StixLink.object_id == StixObject.id)), or_(*readable))
    return or_(through_incident, standalone)


# ---------------------------------------------------------------------------------------------- projection


def _next_dates(session: Session, count: int) -> list[datetime]:
    """`count` date_added values after every stored one, in order (the caller holds the write lock).

    PostgreSQL: under the feed lock, held from here to the commit, so date_added follows commit order."""
    take_feed_lock(session)
    last = session.scalar(select(func.max(StixObject.date_added)))
    start = utcnow()
    if last is not None and start <= last:
        start = last + TICK
    return [start + TICK * i for i in range(count)]


def _cursor(session: Session, name: str) -> StixCursor:
    row = session.get(StixCursor, name)
    if row is None:
        row = StixCursor(name=name, position=0, updated_at=utcnow())
        session.add(row)
        session.flush()
    return row


def _view(incident: Incident, settings: StixSettings, techniques: tuple[str, ...] = ()) -> stix.IncidentView:
    system = incident.affected_system
    owner = system.owner if system else None
    return stix.IncidentView(
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
        observables=tuple(stix.ObservableView(o.type, o.value, o.hashes) for o in incident.observables),
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


def _stored(session: Session, incident_id: int, shared_keys: Sequence[str]) -> tuple[dict, dict]:
    """Latest stored version per key of the incident's own objects, and stored shared objects by (key, tlp)."""
    own: dict[str, _Stored] = {}
    rows = session.execute(
        select(
            StixObject.id,
            StixObject.key,
            StixObject.stix_id,
            StixObject.created,
            StixObject.modified,
            StixObject.body,
            StixObject.tlp,
        )
        .where(StixObject.incident_id == incident_id)
        .order_by(StixObject.id)
    )
    for row in rows:
        own[row.key] = _Stored(row.id, row.stix_id, row.created, row.modified, row.body, row.tlp)
    shared: dict[tuple[str, str], list[_Stored]] = {}
    keys = list(shared_keys)
    for i in range(0, len(keys), 500):
        rows = session.execute(
            select(
                StixObject.id,
                StixObject.key,
                StixObject.stix_id,
                StixObject.created,
                StixObject.modified,
                StixObject.body,
                StixObject.tlp,
            )
            .where(StixObject.key.in_(keys[i : i + 500]), StixObject.incident_id.is_(None))
            .order_by(StixObject.id)
        )
        for row in rows:
            shared.setdefault((row.key, row.tlp), []).append(
                _Stored(row.id, row.stix_id, row.created, row.modified, row.body, row.tlp)
            )
    return own, shared


def ensure_markings(session: Session) -> int:
    """Store the five TLP 2.0 marking definitions if any is missing (migration 0003 seeds them); rows added."""
    keys = [f"marking:{level}" for level in stix.TLP_ORDER]
    # On the (incident_id, key) index: this runs in every projecting transaction, under the write lock.
    have = set(
        session.scalars(select(StixObject.key).where(StixObject.incident_id.is_(None), StixObject.key.in_(keys)))
    )
    missing = [level for level in stix.TLP_ORDER if f"marking:{level}" not in have]
    _insert(session, [(stix.tlp_marking(level), f"marking:{level}", None, TLP.CLEAR.value) for level in missing], {})
    return len(missing)


def _board(session: Session, settings: StixSettings) -> str:
    ensure_markings(session)
    stix_id = _board_id_read(session)
    if stix_id is not None:
        return stix_id
    now = utcnow()
    obj = stix.board_identity(f"identity--{stix.object_uuid()}", now, settings.board_name)
    _insert(session, [(obj, BOARD_KEY, None, TLP.CLEAR.value)], links={})
    return obj.id


def _insert(
    session: Session,
    items: list[tuple[Any, str | None, int | None, str]],
    links: dict[int, int],
    bodies: Sequence[str | None] = (),
) -> list[int]:
    """Store objects (stix2 object, key, owning incident, tlp) with fresh date_added values; their row ids.

    `bodies` may give an object's serialisation already made outside the write lock (None: serialise it here).
    """
    if not items:
        return []
    dates = _next_dates(session, len(items))
    bodies = list(bodies) or [None] * len(items)
    values = []
    for (obj, key, incident_id, tlp), added, body in zip(items, dates, bodies, strict=True):
        created = obj.get("created")
        modified = obj.get("modified") or created
        values.append(
            {
                "stix_id": obj["id"],
                "type": obj["type"],
                "spec_version": obj.get("spec_version", "2.1"),
                "created": created,
                "modified": modified or added,
                "date_added": added,
                "tlp": tlp,
                "key": key,
                "incident_id": incident_id,
                "imported_by_id": None,
                "body": body if body is not None else stix.serialise(obj),
                "current": True,
            }
        )
    return _insert_values(session, values, links)


def _insert_values(session: Session, values: list[dict[str, Any]], links: dict[int, int]) -> list[int]:
    """Insert rows, mark earlier versions of the same ids as no longer current, and link rows to incidents."""
    table = StixObject.__table__
    ids: list[int] = []
    for i in range(0, len(values), 1000):
        chunk = values[i : i + 1000]
        result = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), chunk)
        ids.extend(r[0] for r in result)
    by_id: dict[str, int] = {}
    for v, row_id in zip(values, ids, strict=True):
        if v["key"] is None or not v["key"].startswith("sco:"):
            by_id[v["stix_id"]] = max(row_id, by_id.get(v["stix_id"], 0))
    stix_ids = list(by_id)
    for i in range(0, len(stix_ids), 500):
        part = stix_ids[i : i + 500]
        session.execute(
            update(StixObject)
            .where(
                StixObject.stix_id.in_(part),
                StixObject.id.not_in([by_id[s] for s in part]),
                StixObject.current.is_(True),
                ~StixObject.type.in_(_SCO_TYPES),
            )
            .values(current=False)
        )
    link_rows = []
    for idx, incident_id in links.items():
        link_rows.append({"object_id": ids[idx], "incident_id": incident_id})
    for i in range(0, len(link_rows), 1000):
        session.execute(insert(StixLink.__table__), link_rows[i : i + 1000])
    return ids


_SCO_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr", "file")


def _load_view(session: Session, incident_id: int, settings: StixSettings) -> stix.IncidentView | None:
    incident = session.scalar(
        select(Incident)
        .where(Incident.id == incident_id)
        .options(selectinload(Incident.observables), selectinload(Incident.affected_system).selectinload(System.owner))
    )
    return None if incident is None else _view(incident, settings, attack_techniques(session, incident_id))


# ---------------------------------------------------------------------------------------------- ATT&CK techniques

TECHNIQUES_ADDED = "incident.attack_techniques_added"
MAX_TECHNIQUES = 100


def attack_techniques(session: Session, incident_id: int) -> tuple[str, ...]:
    """The MITRE ATT&CK technique ids given to an incident, first added first: its timeline is their record."""
    rows = session.scalars(
        select(Event.data).where(Event.incident_id == incident_id, Event.kind == TECHNIQUES_ADDED).order_by(Event.id)
    )
    return tuple(dict.fromkeys(t for data in rows for t in (data or {}).get("techniques", [])))


def add_attack_techniques(
    session: Session, actor: Actor, incident_ref: int | str, techniques: Sequence[str]
) -> tuple[Incident, tuple[str, ...]]:
    """Give an incident ATT&CK technique ids (an event on its timeline; the projector maps them to
    attack-pattern objects and `incident uses attack-pattern`). Ids it has already are ignored."""
    if not may_edit(actor):
        raise Forbidden(f"the role {actor.role} may not change incidents")
    bad = [f"techniques[{i}]" for i, t in enumerate(techniques) if not stix.ATTACK_TECHNIQUE.fullmatch(t)]
    if bad:
        raise ValidationFailed(
            "not ATT&CK technique ids", errors=[FieldError(f, "like T1566 or T1566.001") for f in bad]
        )

    def work() -> tuple[Incident, tuple[str, ...]]:
        incident = service.get_incident(session, actor, incident_ref, for_update=True)
        return incident, record_attack_techniques(session, actor, incident, techniques)

    return in_transaction(session, work)


def record_attack_techniques(
    session: Session, actor: Actor | None, incident: Incident, techniques: Sequence[str]
) -> tuple[str, ...]:
    """Add valid technique ids to `incident` inside the caller's transaction (its caller decided who may)."""
    have = attack_techniques(session, incident.id)
    added = [t for t in dict.fromkeys(techniques) if t not in have]
    if len(have) + len(added) > MAX_TECHNIQUES:
        raise ValidationFailed(
            "too many techniques", errors=[FieldError("techniques", f"at most {MAX_TECHNIQUES} per incident")]
        )
    if added:
        incident.updated_at = utcnow()
        record_event(
            session, kind=TECHNIQUES_ADDED, actor=actor, incident=incident,
            data={"ref": incident.ref, "status": str(incident.status), "techniques": added},
        )  # fmt: skip
    return (*have, *added)


def _plan(session: Session, view: stix.IncidentView, board_id: str) -> tuple[list, dict, dict]:
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
    planned = stix.plan(view, stix.Ids(known), board_id, utcnow())
    for p in planned:
        p.body = stix.serialise(p.obj)
    return planned, own, shared


PLACEHOLDER_BOARD = "identity--00000000-0000-4000-8000-000000000000"
MAPPING_VERSION = "1"  # bump when incidents/stix.py maps differently: every incident is then projected again


def _digest(view: stix.IncidentView, board_id: str | None) -> str:
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


def _prepare(session: Session, incident_id: int, settings: StixSettings) -> _Prepared | None:
    """The stix2 work for one incident, in a read transaction (no write lock); None when there is nothing to do."""
    _end(session)
    if _board_id_read(session) is None:
        # Once per database: a plan made before the board identity exists would be made again under the lock.
        in_transaction(session, lambda: _board(session, settings))
    _end(session)
    with session.begin():
        last_event = session.scalar(select(func.max(Event.id)).where(Event.incident_id == incident_id)) or 0
        board_id = _board_id_read(session)
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


def _apply(session: Session, prep: _Prepared, settings: StixSettings, board: str) -> int:
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
    lower = levels_up_to(tlp)[:-1]
    if not lower:
        return
    rows = session.execute(
        select(StixObject.id, StixObject.body)
        .join(StixLink, StixLink.object_id == StixObject.id)
        .where(StixLink.incident_id == incident_id, StixObject.imported_by_id > 0, StixObject.tlp.in_(lower))
    ).all()
    for row in rows:
        body = json.dumps(stix.marked(json.loads(row.body), tlp), ensure_ascii=False)
        session.execute(update(StixObject).where(StixObject.id == row.id).values(tlp=tlp, body=body))


def project_incident(session: Session, incident_id: int, settings: StixSettings) -> int:
    """Bring an incident's stored graph up to date; a new version only where the STIX body changed. Rows written.

    The stix2 work happens before the write lock is taken; under it, only comparisons and inserts.
    """
    prep = _prepare(session, incident_id, settings)
    if prep is None:
        return 0

    def work() -> int:
        written = _apply(session, prep, settings, _board(session, settings))
        if written and settings.push:
            enqueue_push(session)
        return written

    return in_transaction(session, work)


def _mark(session: Session, incident_id: int, digest: str, last_event: int) -> None:
    cursor = _cursor(session, f"incident:{incident_id}")
    cursor.digest = digest
    cursor.position = max(cursor.position, last_event)
    cursor.updated_at = utcnow()


def _board_id_read(session: Session) -> str | None:
    return session.scalar(
        select(StixObject.stix_id).where(StixObject.incident_id.is_(None), StixObject.key == BOARD_KEY).limit(1)
    )


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
    return stix.TLP_OF_MARKING[obj["object_marking_refs"][0]]


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
                obj, body = stix.new_version(p.obj, _after(now, stored.modified)), None
            else:
                obj, body = p.obj, p.body
            links[len(items)] = incident_id
            items.append((obj, p.key, None, tlp))
            bodies.append(body)
            continue
        stored = own.get(p.key)
        if stored is not None and stored.body == p.body:
            continue
        obj = p.obj if stored is None else stix.new_version(p.obj, _after(now, stored.modified))
        links[len(items)] = incident_id
        items.append((obj, p.key, incident_id, tlp))
        bodies.append(p.body if stored is None else None)
    _insert(session, items, links, bodies)
    if link_existing:
        session.execute(
            insert(StixLink.__table__), [{"object_id": r, "incident_id": incident_id} for r in set(link_existing)]
        )
    return len(items)


def _after(now: datetime, previous: datetime) -> datetime:
    """A `modified` after `previous` at STIX's millisecond precision."""
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    floor = previous.replace(microsecond=previous.microsecond // 1000 * 1000) + stix.MILLI
    return max(now, floor)


# Planned objects per write transaction of the projector (about three incidents of three observables): intake
# waits for the same SQLite write lock, and a gevent web worker waiting in SQLite's busy handler serves nobody.
# One transaction per incident paid BEGIN IMMEDIATE, the board lookup and a WAL fsync each time (lock held
# 47-54% of the projection's time); a whole batch in one transaction would hold it for seconds. With three
# incidents per transaction it was held 39-43% of the time, 50-59 ms at a time (p50), at load average 5-9.
WRITE_ROWS = 60


def project_pending(session: Session, settings: StixSettings, *, batch: int = 200) -> int:
    """Project the incidents of committed events after the cursor, in commit order; events consumed.

    Each incident is planned in a read transaction; the writes go out a few incidents per short write
    transaction, and the last one moves the cursor.
    """
    _end(session)
    with session.begin():
        position = session.scalar(select(StixCursor.position).where(StixCursor.name == PROJECTOR)) or 0
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
                cursor = _cursor(session, PROJECTOR)
                cursor.position = max(cursor.position, last)
                cursor.updated_at = utcnow()
            if written and settings.push:
                enqueue_push(session)

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


def ensure_projected(session: Session, incident_id: int, settings: StixSettings) -> bool:
    """Read your own writes: project this incident now if any event of it is past what was projected (True)."""
    _end(session)
    with session.begin():
        done = session.scalar(select(StixCursor.position).where(StixCursor.name == PROJECTOR)) or 0
        mine = session.scalar(select(StixCursor.position).where(StixCursor.name == f"incident:{incident_id}"))
        last = session.scalar(select(func.max(Event.id)).where(Event.incident_id == incident_id)) or 0
    if mine is None or last > max(done, mine):
        project_incident(session, incident_id, settings)
        return True
    return False


def enqueue_push(session: Session) -> None:
    last = session.scalar(select(func.max(StixObject.id))) or 0
    jobs.enqueue(session, "stix.push", {}, key=f"stix.push:{last}")


# ---------------------------------------------------------------------------------------------- export


def _bundle(bodies: list[str]) -> str:
    # The envelope around stored objects; each body is the stix2 serialisation written by the projector.
    objects = ", ".join(bodies)
    return '{"type": "bundle", "id": "' + stix.bundle_id_of(objects) + '", "objects": [' + objects + "]}"


def _markings(session: Session, tlps: set[str]) -> list[str]:
    ids = [stix.TLP_MARKING_IDS[TLP(t)] for t in stix.TLP_ORDER if t in tlps]
    rows = dict(
        session.execute(
            select(StixObject.stix_id, StixObject.body).where(StixObject.stix_id.in_(ids), StixObject.current)
        ).all()
    )
    return [rows[i] for i in ids if i in rows]


def _visible_incident(session: Session, actor: Actor, ref_or_id: int | str) -> Any:
    """The few columns an export needs, if `actor` may see the incident (its observables are not loaded)."""
    from incidents.base import MAX_ID
    from incidents.errors import NotFound

    stmt = select(Incident.id, Incident.ref, Incident.tlp, Incident.priority, Incident.category,
                  Incident.detected_at).where(visible_incidents(actor))  # fmt: skip
    text = str(ref_or_id)
    if isinstance(ref_or_id, int) or (text.isascii() and text.isdigit()):
        if int(text) > MAX_ID:
            raise NotFound(f"no incident {ref_or_id}")
        stmt = stmt.where(Incident.id == int(text))
    else:
        stmt = stmt.where(Incident.ref == text)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound(f"no incident {ref_or_id}")
    return row


def _projected_rows(session: Session, incident_id: int, tlp: str, *, imported: Actor | None = None) -> list[Any]:
    """Current rows of an incident's graph: projected ones at its TLP, or (`imported`) imported ones it may read."""
    columns = (StixObject.stix_id, StixObject.type, StixObject.body, StixObject.tlp)
    if imported is not None:
        # From the (few) imported rows to the incident's links, not through all of the incident's links.
        linked = exists().where(StixLink.object_id == StixObject.id, StixLink.incident_id == incident_id)
        # `> 0` (user ids start at 1) and no ORDER BY: SQLite then walks the imported_by_id index; with
        # `IS NOT NULL` or ORDER BY id it scanned every stored object (13 ms at 40,000 rows). Sorted here.
        stmt = select(StixObject.id, *columns).where(
            StixObject.imported_by_id > 0,
            StixObject.key.is_(None),
            StixObject.current,
            linked,
            tlp_clause(imported, StixObject.tlp, literal(incident_id)),
        )
        return sorted(session.connection().execute(stmt).all(), key=lambda r: r.id)
    # Core rows, not ORM ones: 50,000 bodies pass through here and ORM row handling was a third of the time.
    stmt = (
        select(*columns)
        .join(StixLink, StixLink.object_id == StixObject.id)
        .where(StixLink.incident_id == incident_id, StixObject.current, StixObject.key.is_not(None))
        .where(StixObject.tlp == tlp)
        .order_by(StixObject.id)
    )
    return list(session.connection().execute(stmt).all())


def _refresh_export(session: Session, incident_id: int, tlp: str) -> None:
    """Rewrite the incident's joined objects (in the projecting transaction), so an export reads one row."""
    rows = _projected_rows(session, incident_id, tlp)
    objects = ", ".join({r.stix_id: r.body for r in rows}.values())
    digest = hashlib.sha256(objects.encode()).hexdigest()
    row = session.get(StixExport, incident_id)
    if row is None:
        session.add(StixExport(incident_id=incident_id, tlp=tlp, objects=objects, digest=digest, tlps=[tlp],
                               updated_at=utcnow()))  # fmt: skip
    elif row.digest != digest or row.tlp != tlp:
        row.objects, row.digest, row.tlp, row.updated_at = objects, digest, tlp, utcnow()


def _utf8(session: Session, column: Any) -> Any:
    """A text column as its UTF-8 bytes: a stored 25 MB join is sent as stored, never decoded and encoded again."""
    if session.get_bind().dialect.name == "postgresql":
        return func.convert_to(column, literal_column("'UTF8'"), type_=LargeBinary)
    return cast(column, LargeBinary)  # SQLite: CAST(text AS BLOB) hands over the stored bytes


def _bundle_bytes(bundle_id: str, parts: list[bytes]) -> bytes:
    """The bundle envelope around serialised objects, joined once."""
    chunks = [b'{"type": "bundle", "id": "' + bundle_id.encode() + b'", "objects": [']
    for i, part in enumerate(parts):
        if i:
            chunks.append(b", ")
        chunks.append(part)
    chunks.append(b"]}")
    return b"".join(chunks)


def _board_body(session: Session) -> str | None:
    # (incident_id, key) is indexed: the board row is found without scanning every stored object.
    return session.scalar(
        select(StixObject.body)
        .where(StixObject.incident_id.is_(None), StixObject.key == BOARD_KEY, StixObject.current)
        .limit(1)
    )


def export_incident(
    session: Session, actor: Actor, incident_ref: int | str, settings: StixSettings, *, profile: str | None = None
) -> tuple[Any, bytes]:
    """The incident's current STIX graph as a bundle (UTF-8 bytes), for a reader who may see the incident."""
    incident = _visible_incident(session, actor, incident_ref)
    if ensure_projected(session, incident.id, settings):
        incident = _visible_incident(session, actor, incident.id)
    stored_row = None
    if profile != "opencti":
        stored_row = session.execute(
            select(_utf8(session, StixExport.objects).label("objects"), StixExport.digest).where(
                StixExport.incident_id == incident.id, StixExport.tlp == incident.tlp
            )
        ).first()
    imported = _projected_rows(session, incident.id, incident.tlp, imported=actor)
    tlps = {str(incident.tlp), *(r.tlp for r in imported)}
    board = _board_body(session)
    extra = list({r.stix_id: strict_json.servable(r.body, r.stix_id) for r in imported}.values())
    head = [*_markings(session, tlps | {TLP.CLEAR.value}), *([board] if board else [])]
    if stored_row is not None:
        # The stored join is sent as stored; its digest stands for its 25 MB in the bundle id, which still
        # changes whenever any object does.
        stored: bytes = stored_row.objects
        key = "\n".join([*head, stored_row.digest, *extra])
        parts = [*(h.encode() for h in head), *([stored] if stored else []), *(e.encode() for e in extra)]
        return incident, _bundle_bytes(stix.bundle_id_of(key), parts)
    seen: dict[str, str] = {}
    for row in _projected_rows(session, incident.id, incident.tlp):
        body = row.body
        if profile == "opencti" and row.type == "incident" and row.stix_id not in seen:
            body = stix.opencti_profile(
                json.loads(body), incident.priority, incident.category, stix._stamp(incident.detected_at)
            )
        seen[row.stix_id] = body
    return incident, _bundle([*head, *seen.values(), *extra]).encode()


def export_since(session: Session, actor: Actor, since: datetime | None, *, limit: int) -> tuple[str, list[str]]:
    """Every current object `actor` may see, added after `since`; the bundle and the TLP levels it holds."""
    if actor.role not in _SHARED_READERS:
        # The feed is TAXII's audience in one bundle: an intake client reads back its own incidents only.
        raise Forbidden(f"the role {actor.role} may not read the STIX feed")
    stmt = select(StixObject.stix_id, StixObject.body, StixObject.tlp).where(StixObject.current, visible_objects(actor))
    if since is not None:
        stmt = stmt.where(StixObject.date_added > since)
    rows = session.execute(stmt.order_by(StixObject.date_added).limit(limit)).all()
    return _bundle([strict_json.servable(r.body, r.stix_id) for r in rows]), sorted({r.tlp for r in rows})


# ---------------------------------------------------------------------------------------------- TAXII queries


@dataclass(frozen=True)
class Filters:
    """TAXII 2.1 filters: added_after (strictly after), match[id|type|version|spec_version]."""

    added_after: datetime | None = None
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("last",)
    spec_versions: tuple[str, ...] = ()

    def digest(self) -> str:
        raw = json.dumps([str(self.added_after), self.ids, self.types, self.versions, self.spec_versions])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class Page:
    rows: list[Any]
    more: bool
    next: str | None


def _encode_next(filters: Filters, last: datetime) -> str:
    raw = f"{filters.digest()}|{last.isoformat()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_next(filters: Filters, token: str) -> datetime:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        digest, stamp = raw.split("|", 1)
        at = datetime.fromisoformat(stamp)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("bad next", errors=[FieldError("next", "not a cursor this server issued")]) from None
    if digest != filters.digest():
        raise ValidationFailed(
            "next does not match these filters", errors=[FieldError("next", "issued for other filters")]
        )
    return at.astimezone(UTC)


def in_collection(max_tlp: str) -> ColumnElement[bool]:
    """Rows a collection up to `max_tlp` holds: at most that level, and an incident of theirs still is too."""
    levels = levels_up_to(max_tlp)
    if TLP(max_tlp) is TLP.RED:
        return StixObject.tlp.in_(levels)
    linked = exists().where(StixLink.object_id == StixObject.id)
    # A raised TLP takes the incident's earlier copies (shared observables, imported objects) with it.
    allowed = exists().where(
        StixLink.object_id == StixObject.id, Incident.id == StixLink.incident_id, Incident.tlp.in_(levels)
    )
    return and_(StixObject.tlp.in_(levels), or_(not_(linked), allowed))


def _filtered(actor: Actor, max_tlp: str, filters: Filters, columns: Sequence[Any]) -> Any:
    stmt = select(*columns).where(in_collection(max_tlp), visible_objects(actor))
    if filters.added_after is not None:
        stmt = stmt.where(StixObject.date_added > filters.added_after)
    if filters.ids:
        stmt = stmt.where(StixObject.stix_id.in_(filters.ids))
    if filters.types:
        stmt = stmt.where(StixObject.type.in_(filters.types))
    if filters.spec_versions:
        stmt = stmt.where(StixObject.spec_version.in_(filters.spec_versions))
    conditions = []
    stamps = []
    for v in filters.versions:
        if v == "all":
            conditions = []
            stamps = []
            break
        if v == "last":
            conditions.append(StixObject.current.is_(True))
        elif v == "first":
            conditions.append(StixObject.id == _first_id())
        else:
            stamps.append(datetime.fromisoformat(v))
    if stamps:
        conditions.append(StixObject.modified.in_(stamps))
    if conditions and "all" not in filters.versions:
        stmt = stmt.where(or_(*conditions))
    return stmt


def _first_id() -> Any:
    from sqlalchemy.orm import aliased

    earlier = aliased(StixObject)
    return (
        select(func.min(earlier.id))
        .where(earlier.stix_id == StixObject.stix_id)
        .correlate(StixObject)
        .scalar_subquery()
    )


def query_objects(
    session: Session,
    actor: Actor,
    max_tlp: str,
    filters: Filters,
    *,
    limit: int,
    next_token: str | None,
    columns: Sequence[Any] = (),
) -> Page:
    """One page, oldest date_added first; `next` resumes strictly after this page's last row."""
    cols = columns or (
        StixObject.id,
        StixObject.stix_id,
        StixObject.date_added,
        StixObject.modified,
        StixObject.body,
        StixObject.spec_version,
    )
    stmt = _filtered(actor, max_tlp, filters, cols)
    if next_token:
        stmt = stmt.where(StixObject.date_added > _decode_next(filters, next_token))
    rows = session.execute(stmt.order_by(StixObject.date_added).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, more, _encode_next(filters, rows[-1].date_added) if more else None)


def object_rows(session: Session, actor: Actor, max_tlp: str, object_id: str, filters: Filters) -> list[Any]:
    stmt = _filtered(
        actor,
        max_tlp,
        Filters(filters.added_after, (object_id,), filters.types, filters.versions, filters.spec_versions),
        (
            StixObject.id,
            StixObject.stix_id,
            StixObject.date_added,
            StixObject.modified,
            StixObject.body,
            StixObject.incident_id,
            StixObject.key,
            StixObject.spec_version,
        ),
    )
    return list(session.execute(stmt.order_by(StixObject.date_added)).all())


def delete_object(session: Session, actor: Actor, max_tlp: str, object_id: str, filters: Filters) -> int:
    """Delete imported versions of an object (projected ones belong to incidents and are refused)."""
    from incidents.errors import Forbidden, NotFound

    require(actor, Capability.DELETE_TAXII_OBJECTS, "only an admin deletes TAXII objects")

    def work() -> int:
        rows = object_rows(session, actor, max_tlp, object_id, filters)
        if not rows:
            raise NotFound(f"no object {object_id}")
        if any(r.incident_id is not None or (r.key or "") == BOARD_KEY for r in rows):
            raise Forbidden("this object is projected from an incident; change the incident instead")
        ids = [r.id for r in rows]
        session.execute(StixLink.__table__.delete().where(StixLink.object_id.in_(ids)))
        session.execute(StixObject.__table__.delete().where(StixObject.id.in_(ids)))
        # The newest remaining version becomes the current one again.
        newest = session.scalar(select(func.max(StixObject.id)).where(StixObject.stix_id == object_id))
        if newest is not None:
            session.execute(update(StixObject).where(StixObject.id == newest).values(current=True))
        return len(ids)

    return in_transaction(session, work)
