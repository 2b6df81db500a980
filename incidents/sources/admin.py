"""Alert sources as data: list, register, change, and what each did today."""

from dataclasses import dataclass
from datetime import datetime, time
from typing import Annotated, Any

from pydantic import Field, StringConstraints
from sqlalchemy import distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incidents import accounts, audit
from incidents.access import Actor
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.enums import Role
from incidents.errors import Conflict, FieldError, NotFound, ValidationFailed
from incidents.models import ApiToken, Incident, Occurrence
from incidents.policy import Capability, require
from incidents.schemas.base import Strict
from incidents.sources import formats
from incidents.sources.models import Source, SourceKind
from incidents.sources.windows import ts
from incidents.uow import in_transaction

Name = Annotated[str, StringConstraints(min_length=1, max_length=150, pattern=r"^[^\s].*$")]
# A heartbeat shorter than a minute would page on a sender's ordinary jitter; a week is the longest useful one.
Interval = Annotated[int, Field(ge=60, le=7 * 24 * 3600)]


class SourceCreate(Strict):
    """A source registered ahead of its first alert; an HTTP kind gets its own intake token, shown once."""

    kind: SourceKind
    name: Name
    expected_interval_seconds: Interval | None = None
    mapping: dict[str, Any] = Field(default_factory=dict)
    active: bool = True


class SourceUpdate(Strict):
    """The fields an admin or operator changes; an absent field stays, a null interval stops the silence watch."""

    name: Name | None = None
    expected_interval_seconds: Interval | None = None
    mapping: dict[str, Any] | None = None
    active: bool | None = None


@dataclass
class Today:
    """What a source did since local midnight."""

    occurrences: int = 0
    suppressed: int = 0
    incidents_opened: int = 0


def _manage(actor: Actor) -> None:
    require(actor, Capability.MANAGE_SOURCES, "only the standing body manages alert sources")


def _check_mapping(kind: str, mapping: dict[str, Any] | None) -> None:
    """Overrides name sections the kind's shipped mapping has, each of the same shape (object or list)."""
    if not mapping:
        return
    shipped = formats.shipped_mapping().get(kind, {})
    errors = []
    for key, value in mapping.items():
        if key not in shipped:
            errors.append(FieldError(f"mapping.{key}", f"{kind} has the sections {', '.join(sorted(shipped))}"))
        elif type(value) is not type(shipped[key]):
            errors.append(FieldError(f"mapping.{key}", f"must be a {type(shipped[key]).__name__}, as in mapping.yaml"))
    if errors:
        raise ValidationFailed("invalid mapping", errors=errors)


def local_midnight(now: datetime) -> datetime:
    """The start of today in Asia/Ho_Chi_Minh, the day the desk counts by."""
    return datetime.combine(now.astimezone(LOCAL_TZ).date(), time(0), LOCAL_TZ)


def today(session: Session, source_ids: list[int], now: datetime | None = None) -> dict[int, Today]:
    """Occurrences, suppressed occurrences and incidents opened since local midnight, per source."""
    since = local_midnight(now or utcnow())
    found = {i: Today() for i in source_ids}
    if not source_ids:
        return found
    rows = session.execute(
        select(Occurrence.source_id, Occurrence.suppressed, func.count())
        .where(Occurrence.source_id.in_(source_ids), Occurrence.received_at >= since)
        .group_by(Occurrence.source_id, Occurrence.suppressed)
    )
    for source_id, suppressed, count in rows:
        found[source_id].occurrences += count
        if suppressed:
            found[source_id].suppressed += count
    opened = session.execute(
        select(Occurrence.source_id, func.count(distinct(Occurrence.incident_id)))
        .join(Incident, Incident.id == Occurrence.incident_id)
        .where(Occurrence.source_id.in_(source_ids), Incident.created_at >= since, Occurrence.received_at >= since)
        .group_by(Occurrence.source_id)
    )
    for source_id, count in opened:
        found[source_id].incidents_opened = count
    return found


def list_sources(session: Session, *, actor: Actor) -> list[Source]:
    _manage(actor)
    return list(session.scalars(select(Source).order_by(Source.kind, Source.name)))


def get_source(session: Session, *, actor: Actor, source_id: int) -> Source:
    _manage(actor)
    source = session.get(Source, source_id)
    if source is None:
        raise NotFound(f"no source {source_id}")
    return source


def token_names(session: Session, sources: list[Source]) -> dict[int, str]:
    ids = [s.token_id for s in sources if s.token_id is not None]
    if not ids:
        return {}
    return dict(session.execute(select(ApiToken.id, ApiToken.name).where(ApiToken.id.in_(ids))).all())


def create_source(
    *, session: Session, data: SourceCreate, actor: Actor, token_digest: str | None, organisation: str
) -> Source:
    """Register a source; an HTTP kind gets an intake token (a service account named after the source)."""
    _manage(actor)
    _check_mapping(data.kind, data.mapping)
    wants_token = data.kind is not SourceKind.MAILBOX

    def work() -> Source:
        if session.scalar(select(Source.id).where(Source.name == data.name)) is not None:
            raise Conflict(f"a source named {data.name!r} exists", errors=[FieldError("name", "already taken")])
        token_id = None
        if wants_token:
            if token_digest is None:
                raise AssertionError("an HTTP source needs a token digest")
            token_name = f"source:{data.name}"
            token = accounts.create_token(session=session, name=token_name, role=Role.INTAKE, digest=token_digest,
                                          organisation=organisation)  # fmt: skip
            token_id = token.id
            audit.append(session, action=audit.Action.TOKEN_CREATED, actor=actor, target=token_name,
                         data={"token_id": token.id, "role": "intake", "user": token_name})  # fmt: skip
        source = Source(
            kind=data.kind, name=data.name, token_id=token_id, mapping=data.mapping, active=data.active,
            expected_interval_seconds=data.expected_interval_seconds, created_by_id=actor.user_id,
        )  # fmt: skip
        session.add(source)
        session.flush()
        audit.append(session, action=audit.Action.SOURCE_CREATED, actor=actor, target=f"source:{source.id}",
                     data={"kind": str(data.kind), "name": data.name, "token_id": token_id})  # fmt: skip
        return source

    try:
        return in_transaction(session, work)
    except IntegrityError:
        session.rollback()
        raise Conflict("that name is taken", errors=[FieldError("name", "already taken")]) from None


def update_source(*, session: Session, source_id: int, data: SourceUpdate, actor: Actor) -> Source:
    """Change a source's name, interval, mapping or switch; audited with what changed."""
    _manage(actor)
    given = data.model_dump(exclude_unset=True)
    for name in ("name", "active", "mapping"):
        if name in given and given[name] is None:
            raise ValidationFailed("invalid source", errors=[FieldError(name, "may not be null")])

    def work() -> Source:
        source = session.get(Source, source_id, with_for_update=True)
        if source is None:
            raise NotFound(f"no source {source_id}")
        _check_mapping(source.kind, data.mapping)
        changed = {k: v for k, v in given.items() if getattr(source, k) != v}
        for name, value in changed.items():
            setattr(source, name, value)
        if "expected_interval_seconds" in changed and source.expected_interval_seconds is None:
            source.silent_since = None  # no longer watched: no silence to return from
        if changed:
            audit.append(session, action=audit.Action.SOURCE_CHANGED, actor=actor, target=f"source:{source.id}",
                         data={"name": source.name, "changed": changed})  # fmt: skip
        return source

    try:
        return in_transaction(session, work)
    except IntegrityError:
        session.rollback()
        raise Conflict("that name is taken", errors=[FieldError("name", "already taken")]) from None


def as_dict(source: Source, token_name: str | None, counts: Today) -> dict[str, Any]:
    """A source as the API and the sources page show it: the token by name only, never its value."""
    return {
        "id": source.id,
        "kind": str(source.kind),
        "name": source.name,
        "token": {"id": source.token_id, "name": token_name} if source.token_id else None,
        "expected_interval_seconds": source.expected_interval_seconds,
        "last_seen_at": ts(source.last_seen_at),
        "silent_since": ts(source.silent_since),
        "active": source.active,
        "mapping": source.mapping or {},
        "created_at": ts(source.created_at),
        "today": {
            "occurrences": counts.occurrences,
            "suppressed": counts.suppressed,
            "incidents_opened": counts.incidents_opened,
        },
    }


def described(session: Session, sources: list[Source], now: datetime | None = None) -> list[dict[str, Any]]:
    """Sources with their token names and today's counts, in two queries."""
    names = token_names(session, sources)
    counts = today(session, [s.id for s in sources], now)
    return [as_dict(s, names.get(s.token_id or 0), counts[s.id]) for s in sources]
