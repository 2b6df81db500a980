"""Reading incidents as an actor may see them: one incident, a page of the list, its timeline."""

import base64
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from incidents.access import Actor, tlp_clause, visible_incidents
from incidents.base import MAX_ID
from incidents.enums import SeriousCondition
from incidents.errors import FieldError, NotFound, ValidationFailed
from incidents.fields import jsonable
from incidents.models import Event, Incident, Participant, System
from incidents.schemas.queries import IncidentQuery
from incidents.text import fold

# What serialising an incident touches, loaded in a few queries instead of one per row.
_READ_OPTIONS = (
    selectinload(Incident.observables),
    selectinload(Incident.affected_system).selectinload(System.owner),
    selectinload(Incident.affected_system).selectinload(System.operator),
    selectinload(Incident.created_by),
    selectinload(Incident.participants).selectinload(Participant.user),
    selectinload(Incident.participants).selectinload(Participant.organisation),
)


def get_incident(session: Session, actor: Actor, ref_or_id: int | str, *, for_update: bool = False) -> Incident:
    """The incident if it exists and `actor` may see it; NotFound otherwise (existence is not revealed)."""
    stmt = select(Incident).where(visible_incidents(actor)).options(*_READ_OPTIONS)
    # ASCII digits only: "²".isdigit() holds but int() refuses it; an id beyond BIGINT names nothing.
    if isinstance(ref_or_id, int) or (str(ref_or_id).isascii() and str(ref_or_id).isdigit()):
        if int(ref_or_id) > MAX_ID:
            raise NotFound(f"no incident {ref_or_id}")
        stmt = stmt.where(Incident.id == int(ref_or_id))
    else:
        stmt = stmt.where(Incident.ref == ref_or_id)
    if for_update:
        # PostgreSQL: serialise writers of one incident; the fresh row replaces what the session held.
        stmt = stmt.with_for_update(of=Incident, key_share=True).execution_options(populate_existing=True)
    incident = session.scalar(stmt)
    if incident is None:
        raise NotFound(f"no incident {ref_or_id}")
    return incident


def locked_incident(session: Session, actor: Actor, incident_id: int | str) -> Incident:
    return get_incident(session, actor, incident_id, for_update=True)


def occurrence_count(session: Session, incident_id: int) -> int:
    return session.scalar(select(Incident.occurrence_count).where(Incident.id == incident_id)) or 0


def occurrence_counts(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(select(Incident.id, Incident.occurrence_count).where(Incident.id.in_(set(ids))))
    return {incident_id: count for incident_id, count in rows}  # noqa: C416 - Rows are not pairs to dict()


def list_events(session: Session, actor: Actor, incident_id: int | str, *, after: int, limit: int) -> list[Event]:
    """The timeline as `actor` may read it: each event under its own TLP (the strictest it recorded)."""
    incident = get_incident(session, actor, incident_id)
    # An event without a TLP of its own (none are written so now) reads as the incident's.
    level = func.coalesce(Event.tlp, str(incident.tlp))
    stmt = (
        select(Event)
        .where(Event.incident_id == incident.id, Event.id > after, tlp_clause(actor, level, Event.incident_id))
        .order_by(Event.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def _encode_cursor(query_key: str, sort_value: Any, last_id: int) -> str:
    raw = json.dumps({"f": query_key, "v": jsonable(sort_value), "i": last_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, query_key: str) -> tuple[datetime, int]:
    bad = ValidationFailed("invalid cursor", errors=[FieldError("cursor", "not a cursor of this list and filters")])
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, last_id = datetime.fromisoformat(data["v"]), int(data["i"])
        key = data["f"]
        if value.tzinfo is not None:
            value.astimezone(UTC)  # OverflowError for a time UTC cannot hold
    except (ValueError, KeyError, TypeError, OverflowError):
        raise bad from None
    if key != query_key or value.tzinfo is None or not 0 <= last_id <= MAX_ID:
        raise bad
    return value, last_id


def _filtered(stmt: Any, actor: Actor, query: IncidentQuery) -> Any:
    """`stmt` narrowed to the incidents `actor` may see that match the query's filters."""
    stmt = stmt.where(visible_incidents(actor))
    if query.status:
        stmt = stmt.where(Incident.status.in_([s.value for s in query.status]))
    if query.category:
        stmt = stmt.where(Incident.category.in_([c.value for c in query.category]))
    if query.priority:
        stmt = stmt.where(Incident.priority.in_([p.value for p in query.priority]))
    if query.tlp:
        stmt = stmt.where(Incident.tlp.in_([t.value for t in query.tlp]))
    if query.incident_class:
        stmt = stmt.where(Incident.incident_class == query.incident_class.value)
    if query.exercise is not None:
        stmt = stmt.where(Incident.exercise.is_(query.exercise))
    if query.updated_since:
        stmt = stmt.where(Incident.updated_at >= query.updated_since)
    if query.q:
        for term in fold(query.q).split():
            escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(Incident.search_text.like(f"%{escaped}%", escape="\\"))
    return stmt


def count_incidents(session: Session, actor: Actor, query: IncidentQuery) -> int:
    """How many incidents `actor` may see match the query's filters (its cursor and limit aside)."""
    stmt = _filtered(select(func.count()).select_from(Incident), actor, query)
    return int(session.scalar(stmt) or 0)


def list_incidents(session: Session, actor: Actor, query: IncidentQuery) -> tuple[list[Incident], str | None]:
    """One page of the incidents `actor` may see, in a stable keyset order."""
    stmt = _filtered(select(Incident), actor, query)
    column = Incident.created_at if query.sort.endswith("created") else Incident.updated_at
    descending = query.sort.startswith("-")
    key = query.filter_key()
    if query.cursor:
        value, last_id = _decode_cursor(query.cursor, key)
        if descending:
            stmt = stmt.where((column < value) | ((column == value) & (Incident.id < last_id)))
        else:
            stmt = stmt.where((column > value) | ((column == value) & (Incident.id > last_id)))
    order = (column.desc(), Incident.id.desc()) if descending else (column.asc(), Incident.id.asc())
    stmt = stmt.order_by(*order).limit(query.limit + 1).options(*_READ_OPTIONS)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        last = rows[-1]
        next_cursor = _encode_cursor(key, getattr(last, column.key), last.id)
    return rows, next_cursor


def art9_assessment(incident: Incident) -> dict[str, Any]:
    """Which of Decision 05 Art. 9's conditions hold, from the affected system's level and the record."""
    system = incident.affected_system
    level = bool(system and (system.security_level >= 4 or system.national_important))
    conditions = [SeriousCondition(c) for c in incident.serious_conditions or []]
    impact = bool(conditions)
    return {
        "level_condition": level,
        "conditions": [c.value for c in conditions],
        "impact_condition": impact,
        "beyond_capacity": incident.beyond_capacity,
        "all_conditions_hold": level and impact and incident.beyond_capacity,
    }
