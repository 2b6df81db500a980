"""The silence watch: a source quiet past its expected interval is recorded as silent and pages the standing body."""

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incidents import accounts
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import Conflict
from incidents.events import record_event
from incidents.filing import QUIET_FILING, FilingResult, FilingSettings, file_incidents
from incidents.models import Incident, User
from incidents.schemas.incidents import IncidentCreate
from incidents.sources.models import Source
from incidents.uow import in_transaction

SILENT_EVENT = "source.silent"
# Called inside the silence's transaction with the incident it filed: pages the standing body (app/source_watch.py).
Pager = Callable[[Session, Incident, Source], None]


class _AlreadySilent(Exception):
    """Another worker recorded this silence first: this transaction must leave nothing behind."""


def overdue(session: Session, now: datetime) -> list[int]:
    """Watched sources not yet marked silent whose last alert (or registration) is older than their interval."""
    rows = session.execute(
        select(Source.id, Source.last_seen_at, Source.created_at, Source.expected_interval_seconds).where(
            Source.active.is_(True), Source.silent_since.is_(None), Source.expected_interval_seconds.is_not(None)
        )
    )
    return [i for i, seen, created, every in rows if (seen or created) + timedelta(seconds=every) < now]


def watch_actor(session: Session, *, username: str, organisation: str) -> Actor:
    """The service account that files silences: intake of the standing body, created on first use."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:

        def create() -> User:
            return accounts.create_user(session=session, username=username, role=Role.INTAKE,
                                        organisation=organisation, password_hash=None,
                                        display_name="Alert source watch", is_service=True)  # fmt: skip

        try:
            user = in_transaction(session, create)
        except (IntegrityError, Conflict):
            session.rollback()
            user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AssertionError(f"the source watch user {username!r} vanished")
    return Actor(user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id)


def check(
    *, session: Session, actor: Actor, settings: FilingSettings, page: Pager, now: datetime | None = None
) -> list[int]:
    """Record each overdue source's silence once (whatever the number of workers); the ids recorded by this call."""
    now = now or utcnow()
    return [i for i in overdue(session, now) if _silence(session, i, actor, settings, page, now)]


def _silence(
    session: Session, source_id: int, actor: Actor, settings: FilingSettings, page: Pager, now: datetime
) -> bool:
    source = session.get_one(Source, source_id)
    quiet_for = now - (source.last_seen_at or source.created_at)
    minutes = int(quiet_for.total_seconds() // 60)
    filing = IncidentCreate(
        title=f"Nguồn cảnh báo {source.name} im lặng / Alert source {source.name} silent",
        description=(
            f"Nguồn {source.name} ({source.kind}) không gửi cảnh báo nào trong {minutes} phút, quá chu kỳ "
            f"{source.expected_interval_seconds} giây. / {source.name} ({source.kind}) sent nothing for {minutes} "
            f"minutes, past its expected interval of {source.expected_interval_seconds} s."
        ),
        category="other",
        priority="P3",
        tlp="amber",
        detected_at=min(now, utcnow()),  # a clock passed in (tests) may run ahead
        dedup_key=f"ucsc:source-silent:{source.id}",
    )

    def then(result: FilingResult) -> None:
        # The row lock decides between workers: the loser finds silent_since set once the winner commits.
        locked = session.scalar(
            select(Source).where(Source.id == source_id).with_for_update().execution_options(populate_existing=True)
        )
        if locked is None or locked.silent_since is not None or not _still_overdue(locked, now):
            raise _AlreadySilent
        locked.silent_since = now
        incident = session.get_one(Incident, result.incident_ids[0])
        record_event(
            session, kind=SILENT_EVENT, actor=None, incident=incident, at=now,
            note=f"{locked.name}: {minutes} min",
            data={"ref": incident.ref, "status": str(incident.status), "source_id": locked.id, "source": locked.name,
                  "kind": str(locked.kind), "last_seen_at": locked.last_seen_at and locked.last_seen_at.isoformat(),
                  "expected_interval_seconds": locked.expected_interval_seconds, "alert": True},
        )  # fmt: skip
        page(session, incident, locked)

    # Playbooks stay out of it: the page below is the one this silence makes.
    session.info[QUIET_FILING] = True
    try:
        file_incidents(session=session, items=[filing], actor=actor, settings=settings, then=then)
    except _AlreadySilent:
        return False
    finally:
        session.info.pop(QUIET_FILING, None)
    return True


def _still_overdue(source: Source, now: datetime) -> bool:
    every = source.expected_interval_seconds
    seen = source.last_seen_at or source.created_at
    return source.active and every is not None and seen + timedelta(seconds=every) < now
