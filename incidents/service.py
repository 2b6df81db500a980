"""Use cases of the incident domain: each is one function and one transaction, session passed in."""

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, case, delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from incidents import lifecycle, receipts
from incidents.access import (
    Actor,
    check_tlp_change,
    may_edit,
    stricter,
    tlp_clause,
    visible_comments,
    visible_incidents,
    visible_revisions,
)
from incidents.base import MAX_ID, utcnow
from incidents.enums import (
    TERMINAL_STATUSES,
    IncidentClass,
    ObservableType,
    ParticipantRole,
    SeriousCondition,
    Status,
)
from incidents.errors import (
    Conflict,
    FieldError,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    TransitionNotAllowed,
    ValidationFailed,
)

# What modules not yet moved off this one still reach through it.
from incidents.events import _LISTENERS as EVENT_LISTENERS  # noqa: F401
from incidents.events import at_commit, drop_pending, event_values, pending_mark, record_event, record_events  # noqa: F401
from incidents.models import (
    Comment,
    CommentRevision,
    Event,
    IdempotencyKey,
    Incident,
    Observable,
    Occurrence,
    Organisation,
    Participant,
    RefCounter,
    System,
    SystemAddress,
    User,
)
from incidents.policy import Capability, allows, require
from incidents.records import Report
from incidents.schemas import (
    ClassificationIn,
    CommentCreate,
    CommentUpdate,
    IncidentCreate,
    IncidentQuery,
    IncidentUpdate,
    ObservableIn,
    ParticipantIn,
    SystemCreate,
    TransitionIn,
)
from incidents.text import fold
from incidents.uow import in_transaction

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
IDEMPOTENCY_TTL = timedelta(hours=24)
# Set in session.info by a filing that must page nobody (an alert inside a maintenance window): the listeners
# that start paging leave the incidents it creates alone.
QUIET_FILING = "ucsc.quiet_filing"


@dataclass(frozen=True)
class Settings:
    """Domain settings the app passes in from configuration."""

    ref_prefix: str = "TH"
    standing_body: str | None = "dic"
    receipts_by_email: bool = False  # an SMTP server is configured: reporters get their receipt by e-mail


@dataclass(frozen=True)
class IdempotencyClaim:
    """An Idempotency-Key and the digest of the request that carried it."""

    token_id: int
    key: str
    request_hash: str

    @staticmethod
    def digest(method: str, path: str, body: bytes) -> str:
        return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


@dataclass
class FilingResult:
    """What a filing answered: its HTTP status, body and Location, and whether it was a replay."""

    status_code: int
    body: dict[str, Any]
    location: str | None = None
    replayed: bool = False
    incident_ids: list[int] = field(default_factory=list)


def _allocate_refs(session: Session, settings: Settings, count: int) -> list[str]:
    """Take `count` references from this local year's counter, in the creating transaction."""
    year = datetime.now(LOCAL_TZ).year
    stmt = _ref_counter_upsert(session.get_bind().dialect.name)
    last = session.execute(stmt, {"prefix": settings.ref_prefix, "year": year, "count": count}).scalar_one()
    return [f"{settings.ref_prefix}-{year}-{n:05d}" for n in range(last - count + 1, last + 1)]


# The statements of the intake path are built once: building and cache-keying a statement costs more
# than SQLite takes to run it (bench/intake.py).
@cache
def _ref_counter_upsert(dialect: str) -> Any:
    """One statement: the first filing of a year creates the counter row, every later one bumps it (row-locked)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    table = RefCounter.__table__
    return (
        upsert(table)
        .values(prefix=bindparam("prefix"), year=bindparam("year"), value=bindparam("count"))
        .on_conflict_do_update(index_elements=["prefix", "year"], set_={"value": table.c.value + bindparam("count")})
        .returning(table.c.value)
    )


@cache
def _systems_by_address() -> Any:
    """Plain columns, not System objects: most filings match nothing, and a winner is loaded by id."""
    systems, addresses = System.__table__, SystemAddress.__table__
    return (
        select(addresses.c.system_id, addresses.c.kind, addresses.c.value, systems.c.security_level)
        .join_from(addresses, systems, addresses.c.system_id == systems.c.id)
        .where(
            systems.c.active.is_(True),
            ((addresses.c.kind == "domain") & addresses.c.value.in_(bindparam("domains", expanding=True)))
            | ((addresses.c.kind == "ip") & addresses.c.value.in_(bindparam("ips", expanding=True))),
        )
    )


@cache
def _organisation_id_by_code() -> Any:
    organisations = Organisation.__table__
    return select(organisations.c.id).where(organisations.c.code == bindparam("code"))


@cache
def _insert_rows(table: Table) -> Any:
    """A Core INSERT of `table`: its rows are keyed by column name (`class`, not `incident_class`)."""
    return insert(table)


@cache
def _insert_incidents_returning_ids() -> Any:
    table = Incident.__table__
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


def _organisation_by_code(session: Session, code: str, field_name: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        raise ValidationFailed("unknown organisation", errors=[FieldError(field_name, f"no organisation {code!r}")])
    return org


def _system_by_code(session: Session, code: str, field_name: str = "affected_system") -> System:
    system = session.scalar(select(System).where(System.code == code))
    if system is None:
        raise ValidationFailed("unknown system", errors=[FieldError(field_name, f"no system {code!r} in the registry")])
    return system


def _addresses_of(observables: Iterable[ObservableIn | Observable]) -> tuple[set[str], set[str]]:
    """Domains (with their parent domains) and IPs an incident's observables point at."""
    domains: set[str] = set()
    ips: set[str] = set()
    for obs in observables:
        host = None
        if obs.type == ObservableType.DOMAIN:
            host = obs.value
        elif obs.type == ObservableType.URL:
            host = urlsplit(obs.value).hostname
        elif obs.type in (ObservableType.IPV4, ObservableType.IPV6):
            ips.add(obs.value)
        if host:
            labels = host.lower().rstrip(".").split(".")
            domains.update(".".join(labels[i:]) for i in range(len(labels) - 1))
    return domains, ips


def match_system(session: Session, observables: Sequence[ObservableIn]) -> System | None:
    """The registry system the observables name: the most specific address wins, then the higher level."""
    return match_systems(session, [observables])[0]


def match_systems(session: Session, batch: Sequence[Sequence[ObservableIn]]) -> list[System | None]:
    """`match_system` for each list of observables in `batch`, with one registry query for all of them."""
    wanted = [_addresses_of(observables) for observables in batch]
    all_domains = set().union(*(domains for domains, _ in wanted))
    all_ips = set().union(*(ips for _, ips in wanted))
    if not all_domains and not all_ips:
        return [None] * len(batch)
    candidates = session.execute(_systems_by_address(), {"domains": list(all_domains), "ips": list(all_ips)}).all()
    matched: list[System | None] = []
    for domains, ips in wanted:
        mine = [row for row in candidates if row.value in (ips if row.kind == "ip" else domains)]
        best = min(mine, key=lambda row: (-len(row.value), -row.security_level, row.system_id), default=None)
        matched.append(session.get_one(System, best.system_id) if best else None)
    return matched


_SEARCH_FIELDS = ("ref", "title", "description", "dedup_key", "reporter_organisation", "reporter_name")


def _search_text(incident: Incident, observables: Iterable[Observable | ObservableIn], system: System | None) -> str:
    return _search_text_of({name: getattr(incident, name) for name in _SEARCH_FIELDS}, observables, system)


def _search_text_of(
    values: dict[str, Any], observables: Iterable[Observable | ObservableIn], system: System | None
) -> str:
    parts = [values[name] or "" for name in _SEARCH_FIELDS]
    parts += [o.value for o in observables]
    if system is not None:
        parts += [system.code, system.name]
    return fold(" ".join(parts))


_FORM_FIELDS = (
    "description", "detection_method", "detection_detail", "handled_at_report", "system_os",
    "system_services", "security_measures", "support_requested",
)  # fmt: skip
_PERSON_FIELDS = {
    "reporter": ("name", "organisation", "address", "phone", "email"),
    "contact": ("name", "position", "phone", "email"),
}


def _apply_fields(incident: Incident, data: IncidentCreate | IncidentUpdate, fields: set[str]) -> dict[str, Any]:
    """Copy the given schema fields onto the incident; return {field: [old, new]} for what changed."""
    changes: dict[str, Any] = {}

    def put(attr: str, value: Any) -> None:
        old = getattr(incident, attr)
        if old != value:
            changes[attr] = [_jsonable(old), _jsonable(value)]
            setattr(incident, attr, value)

    for name in fields:
        value = getattr(data, name)
        if name in _PERSON_FIELDS:
            person = value.model_dump() if value is not None else {}
            for sub in _PERSON_FIELDS[name]:
                put(f"{name}_{sub}", person.get(sub))
        elif name == "notified_parties":
            put(name, [p.value for p in value or []])
        elif name in ("title", "category", "priority", "tlp", "detected_at", "exercise", "beyond_capacity"):
            put(name, value if name != "beyond_capacity" else bool(value))
        elif name in _FORM_FIELDS:
            put(name, value if name != "description" else (value or ""))
    return changes


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


# ---------------------------------------------------------------------------------------------- filing


def file_incidents(
    *,
    session: Session,
    items: Sequence[IncidentCreate],
    actor: Actor,
    settings: Settings,
    idempotency: IdempotencyClaim | None = None,
    bulk: bool = False,
    then: Callable[[FilingResult], None] | None = None,
) -> FilingResult:
    """File one incident or a batch: new incidents, or occurrences of open ones with the same dedup_key.

    `then` runs in the same transaction once the filing is written (not on a replay): a caller's own rows commit
    with it or not at all.
    """
    require(actor, Capability.FILE_INCIDENT, "your role may not file incidents")

    def work() -> FilingResult:
        if idempotency is not None:
            replay = _idempotent_replay(session, idempotency)
            if replay is not None:
                return replay
        result = file_in_session(session, items, actor, settings, bulk)
        if then is not None:
            then(result)
        if idempotency is not None:
            now = utcnow()
            session.add(
                IdempotencyKey(
                    token_id=idempotency.token_id,
                    key=idempotency.key,
                    request_hash=idempotency.request_hash,
                    status_code=result.status_code,
                    body=result.body,
                    location=result.location,
                    created_at=now,
                    expires_at=now + IDEMPOTENCY_TTL,
                )
            )
        return result

    return in_transaction(session, work)


def _idempotent_replay(session: Session, claim: IdempotencyClaim) -> FilingResult | None:
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.token_id == claim.token_id, IdempotencyKey.key == claim.key)
    )
    if row is None:
        return None
    if row.expires_at < utcnow():
        session.delete(row)
        session.flush()
        return None
    if row.request_hash != claim.request_hash:
        raise IdempotencyMismatch(
            "this Idempotency-Key was first used with another request",
            errors=[FieldError("Idempotency-Key", "already used with a different body")],
        )
    return FilingResult(row.status_code, row.body, row.location, replayed=True)


def file_in_session(
    session: Session, items: Sequence[IncidentCreate], actor: Actor, settings: Settings, bulk: bool
) -> FilingResult:
    now = utcnow()
    errors: list[FieldError] = []
    prefix = (lambda i: f"incidents[{i}].") if bulk else (lambda i: "")
    systems: list[System | None] = []
    participants: list[list[tuple[int | None, int | None, str]]] = []
    system_cache: dict[str, System] = {}
    matched = match_systems(session, [[] if item.affected_system else item.observables for item in items])
    standing_body_id = _standing_body_id(session, settings)
    for i, item in enumerate(items):
        system = None
        try:
            if item.affected_system:
                system = system_cache.get(item.affected_system) or _system_by_code(
                    session, item.affected_system, prefix(i) + "affected_system"
                )
                system_cache[item.affected_system] = system
            else:
                system = matched[i]
            participants.append(_resolve_participants(session, item.participants, actor, standing_body_id, prefix(i)))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        systems.append(system)
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)

    outcomes: list[tuple[_Filed, bool]] = []
    new_rows: list[tuple[int, IncidentCreate, System | None]] = []
    open_keys: dict[int, str | None] = {}
    pending_keys: dict[str, int] = {}
    held, matches = _open_dedup(session, actor, {item.dedup_key for item in items if item.dedup_key})
    for i, item in enumerate(items):
        key = item.dedup_key
        if key and key in pending_keys:
            outcomes.append((None, False))  # type: ignore[arg-type]  # filled once the first copy exists
            continue
        existing = matches.get(key) if key else None
        if existing is not None:
            _add_occurrence(session, existing, item, actor, now)
            outcomes.append((_Filed(existing.id, existing.ref, existing.status), False))
        else:
            if key:
                pending_keys[key] = i
                open_keys[i] = next((k for k in dedup_scopes(actor.organisation_id, actor.user_id, key)
                                     if k not in held), None)  # fmt: skip
            new_rows.append((i, item, systems[i]))
            outcomes.append((None, True))  # type: ignore[arg-type]

    refs = _allocate_refs(session, settings, len(new_rows)) if new_rows else []
    created = _insert_incidents(session, new_rows, refs, participants, open_keys, actor, now) if new_rows else {}
    events = []
    for i, (filed, row) in created.items():
        outcomes[i] = (filed, True)
        events.append(
            event_values(
                kind="incident.created",
                actor=actor,
                incident_id=filed.id,
                tlp=row["tlp"],
                at=now,
                data={
                    "ref": filed.ref,
                    "status": str(row["status"]),
                    "title": row["title"],
                    "category": str(row["category"]),
                    "priority": str(row["priority"]),
                    "class": str(row["class"]),
                    "tlp": str(row["tlp"]),
                    "exercise": row["exercise"],
                    "affected_system": systems[i].code if systems[i] else None,
                    "affected_system_matched": bool(systems[i] and not items[i].affected_system),
                },
            )
        )
    if events:
        record_events(session, events)
        receipts.enqueue_receipts(
            session,
            [(filed.id, row["reporter_email"]) for filed, row in created.values()],
            token_id=actor.token_id,
            by_email=settings.receipts_by_email,
        )
    # Repeats of a key first seen earlier in this same batch become occurrences of that new incident.
    for i, (filed, _) in enumerate(outcomes):
        if filed is None:
            first, _row = created[pending_keys[items[i].dedup_key]]
            _add_occurrence(session, session.get_one(Incident, first.id), items[i], actor, now)
            outcomes[i] = (first, False)
    session.flush()

    # A new incident's occurrences are all in this filing; only older incidents need counting.
    new_ids = {filed.id for filed, _ in created.values()}
    counts = Counter(inc.id for inc, _ in outcomes if inc.id in new_ids)
    older = [inc.id for inc, _ in outcomes if inc.id not in new_ids]
    if older:
        counts.update(_occurrence_counts(session, older))
    bodies = [_filing_body(inc, was_created, counts[inc.id]) for inc, was_created in outcomes]
    any_created = any(was_created for _, was_created in outcomes)
    ids = [inc.id for inc, _ in outcomes]
    if bulk:
        return FilingResult(201 if any_created else 200, {"items": bodies}, None, incident_ids=ids)
    location = f"/api/v1/incidents/{outcomes[0][0].id}"
    return FilingResult(201 if any_created else 200, bodies[0], location, incident_ids=ids)


def _insert_incidents(
    session: Session,
    new_rows: Sequence[tuple[int, IncidentCreate, System | None]],
    refs: Sequence[str],
    participants: Sequence[list[tuple[int | None, int | None, str]]],
    open_keys: dict[int, str | None],
    actor: Actor,
    now: datetime,
) -> dict[int, tuple["_Filed", dict[str, Any]]]:
    """Insert new incidents with their observables, participants and first occurrences; rows by item index."""
    # Core executemany INSERTs, one per table, instead of ORM objects and a unit-of-work flush: the ORM's
    # per-object bookkeeping was most of a filing's cost, four-fifths of it for 500 incidents (bench/intake.py).
    session.flush()  # what is pending (occurrences of older incidents) is written first, as it always was
    values = []
    for (i, item, system), ref in zip(new_rows, refs, strict=True):
        row: dict[str, Any] = {
            "ref": ref, "title": item.title, "category": item.category, "priority": item.priority,
            "status": Status.NEW, "class": IncidentClass.ORDINARY, "tlp": item.tlp, "exercise": item.exercise,
            "detected_at": item.detected_at or now, "affected_system_id": system.id if system else None,
            "beyond_capacity": bool(item.beyond_capacity),
            "notified_parties": [p.value for p in item.notified_parties or []],
            "dedup_key": item.dedup_key,
            "open_dedup_key": open_keys.get(i),
            "created_by_id": actor.user_id, "created_at": now, "updated_at": now, "status_changed_at": now,
        }  # fmt: skip
        # The columns _apply_fields(incident, item, {*_FORM_FIELDS, "reporter", "contact"}) would set.
        for name in _FORM_FIELDS:
            row[name] = getattr(item, name)
        row["description"] = item.description or ""
        for name, subfields in _PERSON_FIELDS.items():
            person = getattr(item, name)
            for sub in subfields:
                row[f"{name}_{sub}"] = getattr(person, sub) if person is not None else None
        row["search_text"] = _search_text_of(row, item.observables, system)
        values.append(row)
    ids = session.execute(_insert_incidents_returning_ids(), values).scalars().all()
    observables: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    occurrences: list[dict[str, Any]] = []
    for incident_id, (i, item, _) in zip(ids, new_rows, strict=True):
        observables += [
            {"incident_id": incident_id, "type": o.type, "value": o.value, "hashes": o.hashes, "created_at": now}
            for o in _unique(item.observables)
        ]
        people += [
            {"incident_id": incident_id, "user_id": u, "organisation_id": o, "role": r, "added_by_id": actor.user_id,
             "added_at": now}
            for u, o, r in participants[i]
        ]  # fmt: skip
        occurrences.append(_occurrence_values(incident_id, item, actor, now))
    for model, rows in ((Observable, observables), (Participant, people), (Occurrence, occurrences)):
        if rows:
            session.execute(_insert_rows(model.__table__), rows)
    return {
        i: (_Filed(incident_id, row["ref"], row["status"]), row)
        for incident_id, row, (i, _, _) in zip(ids, values, new_rows, strict=True)
    }


def dedup_scopes(organisation_id: int, user_id: int, key: str) -> tuple[str, str]:
    """Where an open incident's `dedup_key` is held: the filer's organisation, else the filer alone.

    A filer whose organisation's holder is hidden from them files anew under their own scope, so the unique index
    still settles races while grouping never reaches an incident its filer may not see.
    """
    return f"{organisation_id}:{key}", f"u{user_id}:{key}"


def _open_dedup(session: Session, actor: Actor, keys: set[str]) -> tuple[set[str], dict[str, Incident]]:
    """Which scoped keys are held by open incidents, and for each dedup key the open incident `actor` may see."""
    if not keys:
        return set(), {}
    scopes = {key: dedup_scopes(actor.organisation_id, actor.user_id, key) for key in keys}
    rows = session.execute(
        select(Incident.id, Incident.open_dedup_key, case((visible_incidents(actor), True), else_=False)).where(
            Incident.open_dedup_key.in_([scope for pair in scopes.values() for scope in pair])
        )
    ).all()
    held = {row.open_dedup_key for row in rows}
    visible = {row.open_dedup_key: row.id for row in rows if row[2]}
    ids = set(visible.values())
    loaded = {i.id: i for i in session.scalars(select(Incident).where(Incident.id.in_(ids)))} if ids else {}
    # The organisation's incident first: grouping stays as wide as the filer's sight allows.
    found = {key: next((visible[s] for s in pair if s in visible), None) for key, pair in scopes.items()}
    return held, {key: loaded[incident_id] for key, incident_id in found.items() if incident_id is not None}


class _Filed(NamedTuple):
    """What a filing's answer says of an incident it created or added an occurrence to."""

    id: int
    ref: str
    status: str


def _unique(observables: Sequence[ObservableIn]) -> list[ObservableIn]:
    seen: dict[tuple[str, str], ObservableIn] = {}
    for obs in observables:
        seen.setdefault((obs.type, obs.value), obs)
    return list(seen.values())


def _occurrence(incident: Incident, item: IncidentCreate, actor: Actor, now: datetime) -> Occurrence:
    return Occurrence(**_occurrence_values(incident.id, item, actor, now))


def _occurrence_values(incident_id: int, item: IncidentCreate, actor: Actor, now: datetime) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "received_at": now,
        "detected_at": item.detected_at,
        "created_by_id": actor.user_id,
        "payload": item.model_dump(mode="json", exclude_defaults=True),
        # An alert source's filing (incidents/sources/ingest.py) names its source and whether a window held it.
        **getattr(item, "occurrence_fields", {}),
    }


def _add_occurrence(session: Session, incident: Incident, item: IncidentCreate, actor: Actor, now: datetime) -> None:
    session.add(_occurrence(incident, item, actor, now))
    incident.updated_at = now
    record_event(
        session,
        kind="incident.occurrence",
        actor=actor,
        incident=incident,
        at=now,
        data={"ref": incident.ref, "status": str(incident.status), "detected_at": _jsonable(item.detected_at)},
    )


def _occurrence_counts(session: Session, ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(Occurrence.incident_id, func.count())
        .where(Occurrence.incident_id.in_(set(ids)))
        .group_by(Occurrence.incident_id)
    )
    return {incident_id: count for incident_id, count in rows}  # noqa: C416 - Rows are not pairs to dict()


def _filing_body(incident: _Filed, created: bool, occurrences: int) -> dict[str, Any]:
    return {
        "id": incident.id,
        "ref": incident.ref,
        "status": str(incident.status),
        "created": created,
        "occurrence_count": occurrences,
    }


def _standing_body_id(session: Session, settings: Settings) -> int | None:
    if not settings.standing_body:
        return None
    return session.scalar(_organisation_id_by_code(), {"code": settings.standing_body})


def _resolve_participants(
    session: Session, wanted: Sequence[ParticipantIn], actor: Actor, standing_body_id: int | None, prefix: str
) -> list[tuple[int | None, int | None, str]]:
    """The creator, their organisation and the standing body take part in every incident they file."""
    rows: dict[tuple[str, int], str] = {("user", actor.user_id): ParticipantRole.REPORTER.value}
    rows[("org", actor.organisation_id)] = ParticipantRole.REPORTER.value
    if standing_body_id is not None:
        rows[("org", standing_body_id)] = ParticipantRole.LEAD.value
    errors = []
    for n, p in enumerate(wanted):
        try:
            key = _participant_key(session, p, f"{prefix}participants[{n}]")
        except ValidationFailed as exc:
            errors.extend(exc.errors)
            continue
        rows[key] = p.role.value
    if errors:
        raise ValidationFailed("unknown participants", errors=errors)
    return [(i if k == "user" else None, i if k == "org" else None, r) for (k, i), r in rows.items()]


def _participant_key(session: Session, p: ParticipantIn, field_name: str) -> tuple[str, int]:
    prefix = f"{field_name}." if field_name else ""  # "" for a participant posted on its own
    if p.user is not None:
        user_id = session.scalar(select(User.id).where(User.username == p.user, User.active.is_(True)))
        if user_id is None:
            raise ValidationFailed("unknown user", errors=[FieldError(f"{prefix}user", f"no user {p.user!r}")])
        return ("user", user_id)
    return ("org", _organisation_by_code(session, p.organisation or "", f"{prefix}organisation").id)


# ---------------------------------------------------------------------------------------------- reading

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


def occurrence_count(session: Session, incident_id: int) -> int:
    return session.scalar(select(func.count()).where(Occurrence.incident_id == incident_id)) or 0


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


def _readable_comments(actor: Actor, incident_id: int) -> Any:
    """Comments `actor` may read, each with only the earlier bodies `actor` may read (under their own TLP)."""
    return (
        select(Comment)
        .where(Comment.incident_id == incident_id, visible_comments(actor))
        .options(
            selectinload(Comment.revisions.and_(visible_revisions(actor, incident_id))), selectinload(Comment.author)
        )
        .execution_options(populate_existing=True)
    )


def list_comments(session: Session, actor: Actor, incident_id: int | str, *, after: int, limit: int) -> list[Comment]:
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    stmt = _readable_comments(actor, incident.id).where(Comment.id > after).order_by(Comment.id).limit(limit)
    return list(session.scalars(stmt))


def get_comment(session: Session, actor: Actor, incident_id: int | str, comment_id: int) -> Comment:
    """One comment as `actor` may read it; NotFound when it is not theirs to see."""
    incident = get_incident(session, actor, incident_id)
    comment = session.scalar(_readable_comments(actor, incident.id).where(Comment.id == comment_id))
    if comment is None:
        raise NotFound(f"no comment {comment_id}")
    return comment


# ---------------------------------------------------------------------------------------------- changing


def _require_editor(actor: Actor) -> None:
    if not may_edit(actor):
        raise Forbidden(f"the role {actor.role} may not change incidents")


def _locked_incident(session: Session, actor: Actor, incident_id: int | str) -> Incident:
    return get_incident(session, actor, incident_id, for_update=True)


def update_incident(*, session: Session, incident_id: int | str, data: IncidentUpdate, actor: Actor) -> Incident:
    """Change an incident's fields; one `incident.updated` event lists what changed."""
    _require_editor(actor)

    def work() -> Incident:
        incident = _locked_incident(session, actor, incident_id)
        fields = set(data.model_fields_set)
        before = str(incident.tlp)
        if "tlp" in fields:
            check_tlp_change(actor, before, data.tlp)
        system_change = None
        if "affected_system" in fields:
            fields.discard("affected_system")
            system = _system_by_code(session, data.affected_system) if data.affected_system else None
            if incident.affected_system_id != (system.id if system else None):
                system_change = [
                    incident.affected_system.code if incident.affected_system else None,
                    system.code if system else None,
                ]
                incident.affected_system = system
        changes = _apply_fields(incident, data, fields)
        if system_change:
            changes["affected_system"] = system_change
        if not changes:
            return incident
        now = utcnow()
        incident.updated_at = now
        incident.search_text = _search_text(incident, incident.observables, incident.affected_system)
        record_event(
            session,
            kind="incident.updated",
            actor=actor,
            incident=incident,
            at=now,
            data={"ref": incident.ref, "status": str(incident.status), "changes": changes},
            tlp=before,  # the old values were written under the old level
        )
        return incident

    return in_transaction(session, work)


def add_observables(
    *, session: Session, incident_id: int | str, observables: Sequence[ObservableIn], actor: Actor
) -> Incident:
    """Add observables an incident did not have yet."""
    _require_editor(actor)

    def work() -> Incident:
        incident = _locked_incident(session, actor, incident_id)
        have = {(o.type, o.value) for o in incident.observables}
        now = utcnow()
        added = []
        for obs in _unique(observables):
            if (obs.type, obs.value) not in have:
                incident.observables.append(
                    Observable(type=obs.type, value=obs.value, hashes=obs.hashes, created_at=now)
                )
                added.append({"type": str(obs.type), "value": obs.value})
        if added:
            incident.updated_at = now
            incident.search_text = _search_text(incident, incident.observables, incident.affected_system)
            record_event(
                session, kind="incident.observables_added", actor=actor, incident=incident, at=now,
                data={"ref": incident.ref, "status": str(incident.status), "observables": added},
            )  # fmt: skip
        return incident

    return in_transaction(session, work)


def transition(*, session: Session, incident_id: int | str, data: TransitionIn, actor: Actor) -> Incident:
    """Move an incident along the procedure; 409 lists the allowed targets."""
    require(actor, Capability.MOVE_INCIDENT, f"the role {actor.role} may not move incidents")

    def work() -> Incident:
        incident = _locked_incident(session, actor, incident_id)
        current = Status(incident.status)
        if not lifecycle.is_allowed(current, data.to):
            allowed = [s.value for s in lifecycle.allowed_targets(current)]
            raise TransitionNotAllowed(
                f"{current} → {data.to} is not allowed; allowed: {', '.join(allowed) or 'none'}",
                errors=[FieldError("to", f"not allowed from {current}")],
                allowed=allowed,
                current=current.value,
            )
        now = utcnow()
        extra: dict[str, Any] = {}
        if data.to is Status.CLOSED:
            summary = data.resolution or incident.resolution
            if not summary:
                raise ValidationFailed(
                    "closing requires a resolution summary",
                    errors=[FieldError("resolution", "required to close an incident")],
                )
            # TT 20 Art. 9.2.b: an incident counts as resolved only once its end report (Form 04) exists.
            if session.scalar(select(Report.id).where(Report.incident_id == incident.id, Report.kind == "end")) is None:
                raise ValidationFailed(
                    "closing requires the end report (Form 04)",
                    errors=[FieldError("end_report", "create the end report (Form 04) before closing")],
                )
            incident.resolution = summary
            incident.closed_at = now
        elif data.resolution:
            incident.resolution = data.resolution
        if data.to is Status.MERGED:
            target = _merge_target(session, actor, incident, data.merged_into)
            incident.merged_into_id = target.id
            extra["merged_into"] = target.ref
        elif data.merged_into:
            raise ValidationFailed(
                "merged_into only goes with to=merged", errors=[FieldError("merged_into", "only allowed when merging")]
            )
        if data.to is Status.ERADICATION and incident.contained_at is None:
            incident.contained_at = now
        if data.to is Status.REVIEW and incident.resolved_at is None:
            incident.resolved_at = now
        if data.to in TERMINAL_STATUSES:
            incident.open_dedup_key = None
        elif current is Status.CLOSED and incident.dedup_key:
            scopes = dedup_scopes(incident.created_by.organisation_id, incident.created_by_id, incident.dedup_key)
            taken = set(session.scalars(select(Incident.open_dedup_key).where(Incident.open_dedup_key.in_(scopes))))
            incident.open_dedup_key = next((k for k in scopes if k not in taken), None)
        if current is Status.CLOSED:
            incident.closed_at = None  # reopened: open again, whether or not it carries a dedup_key
        incident.status = data.to
        incident.status_changed_at = now
        incident.updated_at = now
        record_event(
            session,
            kind="incident.status_changed",
            actor=actor,
            incident=incident,
            note=data.note,
            at=now,
            data={"ref": incident.ref, "status": data.to.value, "from": current.value, "to": data.to.value, **extra},
        )
        return incident

    return in_transaction(session, work)


def _merge_target(session: Session, actor: Actor, incident: Incident, ref: str | None) -> Incident:
    if not ref:
        raise ValidationFailed(
            "merging needs the incident it duplicates", errors=[FieldError("merged_into", "required to merge")]
        )
    try:
        target = get_incident(session, actor, ref)
    except NotFound:
        raise ValidationFailed("unknown incident", errors=[FieldError("merged_into", f"no incident {ref}")]) from None
    if target.id == incident.id or target.status == Status.MERGED:
        raise ValidationFailed(
            "bad merge target", errors=[FieldError("merged_into", "cannot merge into itself or a merged incident")]
        )
    return target


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


def classify(*, session: Session, incident_id: int | str, data: ClassificationIn, actor: Actor) -> Incident:
    """Operators propose the serious class; only the committee or an admin decides it."""

    def work() -> Incident:
        incident = _locked_incident(session, actor, incident_id)
        now = utcnow()
        if data.conditions is not None:
            incident.serious_conditions = [c.value for c in data.conditions]
        if data.beyond_capacity is not None:
            incident.beyond_capacity = data.beyond_capacity
        if data.action == "propose":
            require(actor, Capability.PROPOSE_CLASS, f"the role {actor.role} may not propose a class")
            if data.incident_class is not IncidentClass.SERIOUS:
                raise ValidationFailed(
                    "only the serious class is proposed", errors=[FieldError("class", "propose serious")]
                )
            if incident.incident_class == IncidentClass.SERIOUS:
                raise Conflict("the incident is already serious")
            incident.class_proposed_by_id = actor.user_id
            incident.class_proposed_at = now
            incident.class_proposal_note = data.note
            kind = "incident.classification_proposed"
        else:
            require(actor, Capability.DECIDE_CLASS, "only the committee or an admin decides the class")
            incident.incident_class = data.incident_class
            incident.class_decided_by_id = actor.user_id
            incident.class_decided_at = now
            incident.class_decision_note = data.note
            kind = "incident.classification_decided"
        incident.updated_at = now
        record_event(
            session,
            kind=kind,
            actor=actor,
            incident=incident,
            note=data.note,
            at=now,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "class": data.incident_class.value,
                "assessment": art9_assessment(incident),
            },
        )
        return incident

    return in_transaction(session, work)


def add_comment(
    *,
    session: Session,
    incident_id: int | str,
    data: CommentCreate,
    actor: Actor,
    then: Callable[[Comment], None] | None = None,
) -> Comment:
    """Add a comment; its TLP defaults to the incident's (`then` writes the caller's rows in the same transaction)."""
    require(actor, Capability.COMMENT)

    def work() -> Comment:
        incident = get_incident(session, actor, incident_id)
        check_tlp_change(actor, incident.tlp, data.tlp)
        now = utcnow()
        comment = Comment(
            incident_id=incident.id, author_id=actor.user_id, body=data.body, tlp=data.tlp or incident.tlp,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(comment)
        incident.updated_at = now
        session.flush()
        record_event(
            session, kind="comment.created", actor=actor, incident=incident, at=now, tlp=comment.tlp,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "comment_id": comment.id,
                "tlp": str(comment.tlp),
            },
        )  # fmt: skip
        if then is not None:
            then(comment)
        return comment

    return in_transaction(session, work)


def edit_comment(
    *, session: Session, incident_id: int | str, comment_id: int, data: CommentUpdate, actor: Actor
) -> Comment:
    """Edit a comment (its author or an admin); the earlier text is kept as a revision."""

    def work() -> Comment:
        incident = get_incident(session, actor, incident_id)
        comment = session.scalar(
            select(Comment).where(Comment.id == comment_id, Comment.incident_id == incident.id, visible_comments(actor))
        )
        if comment is None:
            raise NotFound(f"no comment {comment_id}")
        if comment.author_id != actor.user_id and not allows(actor, Capability.EDIT_ANY_COMMENT):
            raise Forbidden("only the author or an admin edits a comment")
        before = str(comment.tlp)
        check_tlp_change(actor, before, data.tlp)
        now = utcnow()
        session.add(
            CommentRevision(
                comment_id=comment.id, body=comment.body, tlp=comment.tlp, edited_at=now, edited_by_id=actor.user_id
            )
        )
        if data.body is not None:
            comment.body = data.body
        if data.tlp is not None:
            comment.tlp = data.tlp
        comment.updated_at = now
        record_event(
            session, kind="comment.edited", actor=actor, incident=incident, at=now, tlp=stricter(before, comment.tlp),
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "comment_id": comment.id,
                "tlp": str(comment.tlp),
            },
        )  # fmt: skip
        return comment

    return in_transaction(session, work)


def add_participant(*, session: Session, incident_id: int | str, data: ParticipantIn, actor: Actor) -> Participant:
    """Name a user or an organisation as taking part; this widens who may see amber+strict and red."""
    require(actor, Capability.MANAGE_PARTICIPANTS, "only operators and admins change participants")

    def work() -> Participant:
        incident = _locked_incident(session, actor, incident_id)
        kind, ident = _participant_key(session, data, "")
        existing = next(
            (p for p in incident.participants if (p.user_id if kind == "user" else p.organisation_id) == ident), None
        )
        if existing is not None:
            raise Conflict(
                "already a participant",
                errors=[FieldError(kind if kind == "user" else "organisation", "already taking part")],
            )
        now = utcnow()
        participant = Participant(
            user_id=ident if kind == "user" else None,
            organisation_id=ident if kind == "org" else None,
            role=data.role.value,
            added_by_id=actor.user_id,
            added_at=now,
        )
        incident.participants.append(participant)
        incident.updated_at = now
        session.flush()
        record_event(
            session, kind="incident.participant_added", actor=actor, incident=incident, at=now,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "user": data.user,
                "organisation": data.organisation,
                "role": data.role.value,
            },
        )  # fmt: skip
        return participant

    return in_transaction(session, work)


def remove_participant(*, session: Session, incident_id: int | str, participant_id: int, actor: Actor) -> None:
    require(actor, Capability.MANAGE_PARTICIPANTS, "only operators and admins change participants")

    def work() -> None:
        incident = _locked_incident(session, actor, incident_id)
        participant = next((p for p in incident.participants if p.id == participant_id), None)
        if participant is None:
            raise NotFound(f"no participant {participant_id}")
        label = {"user": participant.user.username if participant.user else None,
                 "organisation": participant.organisation.code if participant.organisation else None}  # fmt: skip
        incident.participants.remove(participant)
        incident.updated_at = utcnow()
        record_event(
            session, kind="incident.participant_removed", actor=actor, incident=incident,
            data={"ref": incident.ref, "status": str(incident.status), **label},
        )  # fmt: skip

    in_transaction(session, work)


# ---------------------------------------------------------------------------------------------- registry


def save_system(*, session: Session, data: SystemCreate, actor: Actor) -> System:
    """Create or replace a system in the asset registry (keyed by code)."""
    require(actor, Capability.MANAGE_REGISTRY, "only operators and admins edit the registry")

    def work() -> System:
        system = session.scalar(select(System).where(System.code == data.code)) or System(code=data.code)
        system.name = data.name
        system.owner = _organisation_by_code(session, data.owner, "owner") if data.owner else None
        system.operator = _organisation_by_code(session, data.operator, "operator") if data.operator else None
        system.security_level = data.security_level
        system.national_important = data.national_important
        system.domains = data.domains
        system.public_ips = data.public_ips
        for name in ("security_provider", "connectivity_provider", "os", "services"):
            setattr(system, name, getattr(data, name))
        session.add(system)
        if system.id is not None:
            session.execute(delete(SystemAddress).where(SystemAddress.system_id == system.id))
            session.expire(system, ["addresses"])
        session.flush()
        addresses = [{"system_id": system.id, "kind": "domain", "value": d} for d in dict.fromkeys(data.domains)]
        addresses += [{"system_id": system.id, "kind": "ip", "value": ip} for ip in dict.fromkeys(data.public_ips)]
        if addresses:
            session.execute(insert(SystemAddress), addresses)
        record_event(
            session,
            kind="system.saved",
            actor=actor,
            data={"code": system.code, "security_level": system.security_level},
        )
        return system

    return in_transaction(session, work)


def list_systems(session: Session) -> list[System]:
    return list(session.scalars(select(System).order_by(System.code)))


def get_system(session: Session, code: str) -> System:
    system = session.scalar(select(System).where(System.code == code))
    if system is None:
        raise NotFound(f"no system {code}")
    return system


def list_organisations(session: Session, *, on: date | None = None) -> list[Organisation]:
    orgs = session.scalars(select(Organisation).order_by(Organisation.code))
    return [o for o in orgs if on is None or o.is_valid_on(on)]


def _encode_cursor(query_key: str, sort_value: Any, last_id: int) -> str:
    raw = json.dumps({"f": query_key, "v": _jsonable(sort_value), "i": last_id}, separators=(",", ":"))
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


def list_incidents(session: Session, actor: Actor, query: IncidentQuery) -> tuple[list[Incident], str | None]:
    """One page of the incidents `actor` may see, in a stable keyset order."""
    stmt = select(Incident).where(visible_incidents(actor))
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


def occurrence_counts(session: Session, ids: list[int]) -> dict[int, int]:
    return _occurrence_counts(session, ids) if ids else {}
