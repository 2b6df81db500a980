"""Read models of the committee board and the console: open incidents, recent events, counts by week."""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from zoneinfo import ZoneInfo

from sqlalchemy import case, or_, select
from sqlalchemy.orm import Session, selectinload

from incidents.access import Actor, tlp_clause, visible_incidents
from incidents.enums import TERMINAL_STATUSES, IncidentClass, Priority
from incidents.models import Event, Incident, Participant

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class FeedItem:
    """One line of the board's live feed."""

    event: Event
    ref: str
    title: str


def open_incidents(session: Session, actor: Actor, *, limit: int = 200) -> list[Incident]:
    """Open incidents `actor` may see: serious first, then by priority, oldest detection first."""
    serious_first = case((Incident.incident_class == IncidentClass.SERIOUS.value, 0), else_=1)
    priority = case({p.value: i for i, p in enumerate(Priority)}, value=Incident.priority, else_=9)
    stmt = (
        select(Incident)
        .where(visible_incidents(actor), Incident.status.not_in([s.value for s in TERMINAL_STATUSES]))
        .options(
            selectinload(Incident.affected_system),
            selectinload(Incident.participants).selectinload(Participant.user),
            selectinload(Incident.participants).selectinload(Participant.organisation),
        )
        .order_by(serious_first, priority, Incident.detected_at, Incident.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def recent_events(session: Session, actor: Actor, *, limit: int = 25) -> list[FeedItem]:
    """The newest timeline events of incidents `actor` may see, each judged by its own TLP too."""
    stmt = (
        select(Event, Incident.ref, Incident.title)
        .join(Incident, Incident.id == Event.incident_id)
        .where(visible_incidents(actor), or_(Event.tlp.is_(None), tlp_clause(actor, Event.tlp, Event.incident_id)))
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return [FeedItem(ev, ref, title) for ev, ref, title in session.execute(stmt)]


def week_start(at: datetime) -> datetime:
    """Monday 00:00 local time of the week holding `at`."""
    local = at.astimezone(LOCAL)
    return (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


def counts_by_week(session: Session, actor: Actor, *, now: datetime, weeks: int = 8) -> dict[str, Counter[str]]:
    """Incidents detected per local week (ISO date of its Monday) and category, over the last `weeks` weeks."""
    first = week_start(now) - timedelta(weeks=weeks - 1)
    stmt = select(Incident.detected_at, Incident.category).where(
        visible_incidents(actor), Incident.detected_at >= first
    )
    result: dict[str, Counter[str]] = {(first + timedelta(weeks=i)).date().isoformat(): Counter() for i in range(weeks)}
    for detected_at, category in session.execute(stmt):
        key = week_start(detected_at).date().isoformat()
        if key in result:
            result[key][str(category)] += 1
    return result


def final_page_failures(session: Session, actor: Actor, *, since: datetime, limit: int = 20) -> list[FeedItem]:
    """Pages that failed on every channel (`page.failed` marked final) of open incidents `actor` may see."""
    stmt = (
        select(Event, Incident.ref, Incident.title)
        .join(Incident, Incident.id == Event.incident_id)
        .where(
            Event.kind == "page.failed",
            Event.at >= since,
            visible_incidents(actor),
            Incident.status.not_in([s.value for s in TERMINAL_STATUSES]),
        )
        .order_by(Event.id.desc())
        .limit(500)
    )
    found = [FeedItem(ev, ref, title) for ev, ref, title in session.execute(stmt) if (ev.data or {}).get("final")]
    return found[:limit]


def ack_minutes_by_week(session: Session, actor: Actor, *, now: datetime, weeks: int = 8) -> dict[str, float | None]:
    """Median minutes from a page's first sending to its acknowledgement, by local week of the acknowledgement."""
    first = week_start(now) - timedelta(weeks=weeks - 1)
    stmt = (
        select(Event.kind, Event.at, Event.data)
        .join(Incident, Incident.id == Event.incident_id)
        .where(Event.kind.in_(("page.sent", "page.acknowledged")), Event.at >= first - timedelta(days=7))
        .where(visible_incidents(actor))
        .order_by(Event.id)
    )
    sent: dict[int, datetime] = {}
    samples: dict[str, list[float]] = {(first + timedelta(weeks=i)).date().isoformat(): [] for i in range(weeks)}
    for kind, at, data in session.execute(stmt):
        page_id = (data or {}).get("page_id")
        if page_id is None:
            continue
        if kind == "page.sent":
            sent.setdefault(page_id, at)
        elif page_id in sent:
            key = week_start(at).date().isoformat()
            if key in samples:
                samples[key].append((at - sent.pop(page_id)).total_seconds() / 60)
    return {week: round(median(values), 1) if values else None for week, values in samples.items()}


def incidents_with_pages(session: Session, incident_ids: list[int]) -> set[int]:
    """Which of these incidents have had a page sent (one query, so the board asks for pages only where any exist)."""
    if not incident_ids:
        return set()
    stmt = (
        select(Event.incident_id)
        .where(Event.incident_id.in_(incident_ids), Event.kind.in_(("page.sent", "notify.sent", "page.failed")))
        .distinct()
    )
    return {i for i in session.scalars(stmt) if i is not None}
