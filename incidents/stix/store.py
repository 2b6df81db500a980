"""The STIX object store's shared rules: what a reader may see, what a collection holds, how rows are written."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, insert, literal, not_, or_, select, update
from sqlalchemy.orm import Session

from incidents.access import Actor, tlp_clause, visible_incidents
from incidents.base import utcnow
from incidents.enums import TLP, TLP_ORDER
from incidents.events import take_feed_lock
from incidents.models import Incident, StixCursor, StixLink, StixObject
from incidents.policy import Capability, allows
from incidents.stix import mapping

PROJECTOR = "projector"  # the cursor names of the projector and the outbound push
PUSH = "push"
BOARD_KEY = "identity:board"
TICK = timedelta(microseconds=1)
# Cyber-observables have no versions: a stored one is never superseded (each TLP level keeps its own row).
SCO_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr", "file")


@dataclass(frozen=True)
class StixSettings:
    """What the mapping takes from configuration."""

    base_url: str = "http://127.0.0.1:5000"
    board_name: str = "Ban Chỉ đạo ứng cứu sự cố an toàn thông tin mạng tỉnh Thanh Hóa"
    push: bool = False  # an outbound TAXII feed is configured: new objects queue a push job


def levels_up_to(level: str) -> list[str]:
    """The TLP levels from CLEAR up to `level`, inclusive."""
    return [str(t) for t in TLP_ORDER[: TLP_ORDER.index(TLP(level)) + 1]]


def visible_objects(actor: Actor) -> ColumnElement[bool]:
    """Rows `actor` may read: through an incident they may see (judged now), or standalone by TLP and role."""
    through_incident = (
        exists()
        .where(StixLink.object_id == StixObject.id, Incident.id == StixLink.incident_id)
        .where(visible_incidents(actor), tlp_clause(actor, StixObject.tlp, StixLink.incident_id))
    )
    readable = [StixObject.tlp == TLP.CLEAR.value, StixObject.imported_by_id == actor.user_id]
    if allows(actor, Capability.READ_STIX_FEED):
        readable.append(StixObject.tlp.in_([TLP.GREEN.value, TLP.AMBER.value]))
    standalone = and_(not_(exists().where(StixLink.object_id == StixObject.id)), or_(*readable))
    return or_(through_incident, standalone)


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


def next_dates(session: Session, count: int) -> list[datetime]:
    """`count` date_added values after every stored one, in order (the caller holds the write lock).

    PostgreSQL: under the feed lock, held from here to the commit, so date_added follows commit order."""
    take_feed_lock(session)
    last = session.scalar(select(func.max(StixObject.date_added)))
    start = utcnow()
    if last is not None and start <= last:
        start = last + TICK
    return [start + TICK * i for i in range(count)]


def cursor(session: Session, name: str) -> StixCursor:
    """The named position (the projector's, the push's, an incident's), created at 0 the first time."""
    row = session.get(StixCursor, name)
    if row is None:
        row = StixCursor(name=name, position=0, updated_at=utcnow())
        session.add(row)
        session.flush()
    return row


def store_objects(
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
    dates = next_dates(session, len(items))
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
                "body": body if body is not None else mapping.serialise(obj),
                "current": True,
            }
        )
    return insert_rows(session, values, links)


def insert_rows(session: Session, values: list[dict[str, Any]], links: dict[int, int]) -> list[int]:
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
                ~StixObject.type.in_(SCO_TYPES),
            )
            .values(current=False)
        )
    link_rows = []
    for idx, incident_id in links.items():
        link_rows.append({"object_id": ids[idx], "incident_id": incident_id})
    for i in range(0, len(link_rows), 1000):
        session.execute(insert(StixLink.__table__), link_rows[i : i + 1000])
    return ids


def ensure_markings(session: Session) -> int:
    """Store the five TLP 2.0 marking definitions if any is missing (migration 0003 seeds them); rows added."""
    keys = [f"marking:{level}" for level in TLP_ORDER]
    # On the (incident_id, key) index: this runs in every projecting transaction, under the write lock.
    have = set(
        session.scalars(select(StixObject.key).where(StixObject.incident_id.is_(None), StixObject.key.in_(keys)))
    )
    missing = [level for level in TLP_ORDER if f"marking:{level}" not in have]
    store_objects(
        session, [(mapping.tlp_marking(level), f"marking:{level}", None, TLP.CLEAR.value) for level in missing], {}
    )
    return len(missing)


def stored_board_id(session: Session) -> str | None:
    """The board identity's STIX id, if the projector has stored it."""
    return session.scalar(
        select(StixObject.stix_id).where(StixObject.incident_id.is_(None), StixObject.key == BOARD_KEY).limit(1)
    )


def board_body(session: Session) -> str | None:
    # (incident_id, key) is indexed: the board row is found without scanning every stored object.
    return session.scalar(
        select(StixObject.body)
        .where(StixObject.incident_id.is_(None), StixObject.key == BOARD_KEY, StixObject.current)
        .limit(1)
    )


def projected_rows(session: Session, incident_id: int, tlp: str, *, imported: Actor | None = None) -> list[Any]:
    """Current rows of an incident's graph: projected ones at its TLP, or (`imported`) imported ones it may read."""
    columns = (StixObject.stix_id, StixObject.type, StixObject.body, StixObject.tlp)
    if imported is not None:
        # From the (few) imported rows to the incident's links, not through all of the incident's links.
        linked = exists().where(StixLink.object_id == StixObject.id, StixLink.incident_id == incident_id)
        # `> 0` (user ids start at 1) and no ORDER BY: SQLite then walks the imported_by_id index; with
        # `IS NOT NULL` or ORDER BY id it scanned every stored object. Sorted here.
        stmt = select(StixObject.id, *columns).where(
            StixObject.imported_by_id > 0,
            StixObject.key.is_(None),
            StixObject.current,
            linked,
            tlp_clause(imported, StixObject.tlp, literal(incident_id)),
        )
        return sorted(session.connection().execute(stmt).all(), key=lambda r: r.id)
    # Core rows, not ORM ones: every body of a large graph passes through here, and ORM row handling is costly.
    stmt = (
        select(*columns)
        .join(StixLink, StixLink.object_id == StixObject.id)
        .where(StixLink.incident_id == incident_id, StixObject.current, StixObject.key.is_not(None))
        .where(StixObject.tlp == tlp)
        .order_by(StixObject.id)
    )
    return list(session.connection().execute(stmt).all())
