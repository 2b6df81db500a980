"""Maintenance windows and snoozes: which alerts are stored without paging anyone."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints
from sqlalchemy import ColumnElement, and_, bindparam, select
from sqlalchemy.orm import Session

from incidents import audit
from incidents.access import Actor
from incidents.base import utcnow
from incidents.errors import FieldError, NotFound, ValidationFailed
from incidents.policy import Capability, require
from incidents.schemas.base import Strict
from incidents.sources.models import MaintenanceWindow, Source
from incidents.uow import in_transaction

DEFAULT_MAX_HOURS = 168
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class WindowCreate(Strict):
    """A maintenance window or snooze: a source, a dedup_key glob, or both (then an alert must match both)."""

    source_id: int | None = None
    dedup_pattern: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    starts_at: AwareDatetime | None = Field(default=None, description="Default: now.")
    ends_at: AwareDatetime
    reason: Text
    approved_by: Name = Field(description="Who approved it (a name and title; recorded as given).")


def in_force_for_source(session: Session, source_id: int | None, now: datetime) -> list[MaintenanceWindow]:
    """The windows in force at `now` for every source or for `source_id`, oldest first."""
    stmt = select(MaintenanceWindow).where(in_force_for(MaintenanceWindow.source_id.is_(None) | (
        MaintenanceWindow.source_id == bindparam("source_id")))).order_by(MaintenanceWindow.id)  # fmt: skip
    return list(session.scalars(stmt, {"now": now, "source_id": source_id}))


def in_force_for(scope: ColumnElement[bool]) -> ColumnElement[bool]:
    """Windows in force at the statement's :now whose source matches `scope` (an alert's intake joins it to its
    source's row, so one query reads both)."""
    return and_(
        MaintenanceWindow.ends_at > bindparam("now"),
        MaintenanceWindow.starts_at <= bindparam("now"),
        MaintenanceWindow.cancelled_at.is_(None),
        scope,
    )


def holding(candidates: Iterable[MaintenanceWindow], dedup_key: str | None) -> MaintenanceWindow | None:
    """The first of the windows in force that holds an alert with `dedup_key`, if any."""
    for window in candidates:
        if window.dedup_pattern is None or (dedup_key is not None and fnmatchcase(dedup_key, window.dedup_pattern)):
            return window
    return None


def active(session: Session, now: datetime | None = None) -> list[MaintenanceWindow]:
    """Windows in force now or still to come, soonest end first (the board and the sources page)."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(MaintenanceWindow)
            .where(MaintenanceWindow.ends_at > now, MaintenanceWindow.cancelled_at.is_(None))
            .order_by(MaintenanceWindow.ends_at, MaintenanceWindow.id)
        )
    )


def in_force(session: Session, now: datetime | None = None) -> list[tuple[MaintenanceWindow, str | None]]:
    """Windows holding alerts right now, with their source's name (the board shows them)."""
    now = now or utcnow()
    rows = session.execute(
        select(MaintenanceWindow, Source.name)
        .outerjoin(Source, Source.id == MaintenanceWindow.source_id)
        .where(
            MaintenanceWindow.starts_at <= now,
            MaintenanceWindow.ends_at > now,
            MaintenanceWindow.cancelled_at.is_(None),
        )
        .order_by(MaintenanceWindow.ends_at, MaintenanceWindow.id)
    )
    return [(w, name) for w, name in rows]


def list_windows(session: Session, *, actor: Actor, include_past: bool = False) -> list[MaintenanceWindow]:
    """Windows for the sources page: those in force or to come, or every one, newest first."""
    require(actor, Capability.MANAGE_SOURCES, "only the standing body manages alert sources")
    if not include_past:
        return active(session)
    return list(session.scalars(select(MaintenanceWindow).order_by(MaintenanceWindow.id.desc()).limit(500)))


def create_window(
    *, session: Session, data: WindowCreate, actor: Actor, max_hours: float = DEFAULT_MAX_HOURS
) -> MaintenanceWindow:
    """Open a window, bounded and audited; an unbounded or overlong one is refused with the field to fix."""
    require(actor, Capability.MANAGE_SOURCES, "only the standing body manages alert sources")
    now = utcnow()
    starts = data.starts_at or now
    errors = []
    if data.source_id is None and data.dedup_pattern is None:
        errors.append(FieldError("source_id", "name a source, a dedup_pattern, or both"))
    if data.ends_at <= starts:
        errors.append(FieldError("ends_at", "must be after starts_at"))
    elif data.ends_at - starts > timedelta(hours=max_hours):
        errors.append(FieldError("ends_at", f"a window lasts at most {max_hours:g} hours"))
    if data.ends_at <= now:
        errors.append(FieldError("ends_at", "must be in the future"))
    if errors:
        raise ValidationFailed("invalid maintenance window", errors=errors)

    def work() -> MaintenanceWindow:
        if data.source_id is not None and session.get(Source, data.source_id) is None:
            raise ValidationFailed("unknown source", errors=[FieldError("source_id", f"no source {data.source_id}")])
        window = MaintenanceWindow(
            source_id=data.source_id, dedup_pattern=data.dedup_pattern, starts_at=starts, ends_at=data.ends_at,
            reason=data.reason, approved_by=data.approved_by, created_by_id=actor.user_id, created_at=now,
        )  # fmt: skip
        session.add(window)
        session.flush()
        audit.append(session, action=audit.Action.WINDOW_CREATED, actor=actor, target=f"window:{window.id}",
                     data=as_dict(window))  # fmt: skip
        return window

    return in_transaction(session, work)


def cancel_window(*, session: Session, window_id: int, actor: Actor) -> MaintenanceWindow:
    """End a window now (audited); cancelling one already cancelled or over changes nothing."""
    require(actor, Capability.MANAGE_SOURCES, "only the standing body manages alert sources")

    def work() -> MaintenanceWindow:
        window = session.get(MaintenanceWindow, window_id, with_for_update=True)
        if window is None:
            raise NotFound(f"no maintenance window {window_id}")
        now = utcnow()
        if window.cancelled_at is None and window.ends_at > now:
            window.cancelled_at = now
            audit.append(session, action=audit.Action.WINDOW_CANCELLED, actor=actor, target=f"window:{window.id}",
                         data=as_dict(window))  # fmt: skip
        return window

    return in_transaction(session, work)


def ts(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, as the API writes every timestamp."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def as_dict(window: MaintenanceWindow, now: datetime | None = None) -> dict:
    """The window as the API and the audit trail show it."""
    now = now or utcnow()
    return {
        "id": window.id,
        "source_id": window.source_id,
        "dedup_pattern": window.dedup_pattern,
        "starts_at": ts(window.starts_at),
        "ends_at": ts(window.ends_at),
        "reason": window.reason,
        "approved_by": window.approved_by,
        "created_by_id": window.created_by_id,
        "cancelled_at": ts(window.cancelled_at),
        "active": window.cancelled_at is None and window.starts_at <= now < window.ends_at,
    }
