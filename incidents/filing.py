"""Filing incidents: one or a batch, new incidents or occurrences of open ones with the same dedup_key."""

import hashlib
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from incidents import filing_statements as statements
from incidents import followup
from incidents.access import Actor
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.enums import IncidentClass, Status
from incidents.errors import FieldError, IdempotencyMismatch, ValidationFailed
from incidents.events import PENDING_EVENTS, event_values, record_events
from incidents.fields import FORM_FIELDS, PERSON_FIELDS, jsonable, search_text_of, unique_observables
from incidents.models import (
    IdempotencyKey,
    Incident,
    Observable,
    Occurrence,
    Participant,
    System,
)
from incidents.participants import resolve_participants
from incidents.policy import Capability, require
from incidents.schemas.incidents import IncidentCreate
from incidents.systems import match_systems, system_by_code
from incidents.text import fold
from incidents.uow import in_transaction

IDEMPOTENCY_TTL = timedelta(hours=24)
# How long a process trusts the standing body's id by code (an organisation re-coded by an admin: this long at most).
STANDING_BODY_SECONDS = 30.0
_STANDING_BODIES: "weakref.WeakKeyDictionary[Any, dict[str, tuple[int, float]]]" = weakref.WeakKeyDictionary()
# In session.info: the (token, key) pairs whose INSERT met an existing row, so the next attempt looks them up.
IDEMPOTENCY_COLLIDED = "ucsc.idempotency_collided"


# Set in session.info by a filing that must page nobody (an alert inside a maintenance window): the listeners
# that start paging leave the incidents it creates alone.
QUIET_FILING = "ucsc.quiet_filing"


@dataclass(frozen=True)
class FilingSettings:
    """What filing needs from configuration: the reference prefix, the standing body, receipts by e-mail."""

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
    # The open incidents the filing grouped into, as read (a `then` reads them without asking again).
    grouped_into: dict[int, "OpenIncident"] = field(default_factory=dict, repr=False)
    # Each item's answer, in order (a bulk filing's body lists them; alerts filed together answer one each).
    bodies: list[dict[str, Any]] = field(default_factory=list, repr=False)


def file_incidents(
    *,
    session: Session,
    items: Sequence[IncidentCreate],
    actor: Actor,
    settings: FilingSettings,
    idempotency: IdempotencyClaim | None = None,
    bulk: bool = False,
    then: Callable[[FilingResult], None] | None = None,
) -> FilingResult:
    """File one incident or a batch: new incidents, or occurrences of open ones with the same dedup_key.

    `then` runs in the same transaction once the filing is written (not on a replay): a caller's own rows commit
    with it or not at all.
    """
    require(actor, Capability.FILE_INCIDENT, "your role may not file incidents")
    return in_transaction(
        session, lambda: file_in_transaction(session, items, actor, settings, idempotency, bulk=bulk, then=then)
    )


def file_in_transaction(
    session: Session,
    items: Sequence[IncidentCreate],
    actor: Actor,
    settings: FilingSettings,
    idempotency: IdempotencyClaim | None,
    *,
    bulk: bool = False,
    then: Callable[[FilingResult], None] | None = None,
) -> FilingResult:
    """`file_incidents` inside the caller's write transaction (an alert source reads its source and windows in it)."""
    require(actor, Capability.FILE_INCIDENT, "your role may not file incidents")
    # A key is looked up only once its INSERT collided: most keys are new (a SIEM's alert id), and the unique index
    # finds the others. The collision rolls the transaction back, and `in_transaction` runs it again, looking first.
    if idempotency is not None:
        replay = idempotent_replay(session, idempotency)
        if replay is not None:
            return replay
    result = file_in_session(session, items, actor, settings, bulk)
    if then is not None:
        then(result)
    if idempotency is not None:
        record_claims(session, [(idempotency, result)])
    return result


def idempotent_replay(session: Session, claim: IdempotencyClaim) -> FilingResult | None:
    """The stored answer to `claim`'s key, if this transaction has met one (IdempotencyMismatch: another body)."""
    if (claim.token_id, claim.key) not in session.info.get(IDEMPOTENCY_COLLIDED, ()):
        return None
    return _stored_answer(session, claim)


def record_claims(session: Session, answered: Sequence[tuple[IdempotencyClaim, FilingResult]]) -> None:
    """Store each key with the answer its request got, in one INSERT. A key stored already (a retry racing its
    first post) fails the statement; the transaction's next attempt looks these keys up first."""
    now = utcnow()
    rows = [
        {"token_id": claim.token_id, "key": claim.key, "request_hash": claim.request_hash,
         "status_code": result.status_code, "body": result.body, "location": result.location, "created_at": now,
         "expires_at": now + IDEMPOTENCY_TTL}
        for claim, result in answered
    ]  # fmt: skip
    if not rows:
        return
    try:
        session.connection().execute(statements.insert_rows(IdempotencyKey.__table__), rows)
    except IntegrityError:
        session.info.setdefault(IDEMPOTENCY_COLLIDED, set()).update((c.token_id, c.key) for c, _ in answered)
        raise


def _stored_answer(session: Session, claim: IdempotencyClaim) -> FilingResult | None:
    row = session.scalar(statements.idempotency_row(), {"token_id": claim.token_id, "key": claim.key})
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
    session: Session,
    items: Sequence[IncidentCreate],
    actor: Actor,
    settings: FilingSettings,
    bulk: bool,
    *,
    followup_each: bool = False,
) -> FilingResult:
    now = utcnow()
    errors: list[FieldError] = []
    prefix = (lambda i: f"incidents[{i}].") if bulk else (lambda i: "")
    systems: list[System | None] = []
    participants: list[list[tuple[int | None, int | None, str]]] = []
    system_cache: dict[str, System] = {}
    held, matches = _open_dedup(session, actor, {item.dedup_key for item in items if item.dedup_key})
    # A repeat only adds an occurrence: the system matching and the participants it would need as a new incident
    # are not looked up (what it names is still validated).
    grouped = [bool(item.dedup_key and item.dedup_key in matches) for item in items]
    matched = match_systems(
        session, [[] if item.affected_system or grouped[i] else item.observables for i, item in enumerate(items)]
    )
    needs_standing_body = any(not g or item.participants for g, item in zip(grouped, items, strict=True))
    standing_body_id = _standing_body_id(session, settings) if needs_standing_body else None
    for i, item in enumerate(items):
        system = None
        try:
            if item.affected_system:
                system = system_cache.get(item.affected_system) or system_by_code(
                    session, item.affected_system, prefix(i) + "affected_system"
                )
                system_cache[item.affected_system] = system
            else:
                system = matched[i]
            participants.append(resolve_participants(session, item.participants, actor, standing_body_id, prefix(i)))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        systems.append(system)
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)

    outcomes: list[tuple[_Filed, bool]] = []
    adds: list[tuple[int, OpenIncident]] = []  # the items that add an occurrence, with the incident they add it to
    new_rows: list[tuple[int, IncidentCreate, System | None]] = []
    open_keys: dict[int, str | None] = {}
    pending_keys: dict[str, int] = {}
    for i, item in enumerate(items):
        key = item.dedup_key
        if key and key in pending_keys:
            outcomes.append((None, False))  # type: ignore[arg-type]  # filled once the first copy exists
            continue
        existing = matches.get(key) if key else None
        if existing is not None:
            adds.append((i, existing))
            outcomes.append((_Filed(existing.id, existing.ref, existing.status), False))
        else:
            if key:
                pending_keys[key] = i
                open_keys[i] = next((k for k in dedup_scopes(actor.organisation_id, actor.user_id, key)
                                     if k not in held), None)  # fmt: skip
            new_rows.append((i, item, systems[i]))
            outcomes.append((None, True))  # type: ignore[arg-type]

    # PostgreSQL: the reference counter's row lock is held from its upsert to the commit, and every filing waits
    # for it (12.6 of 16 backends did, sampled from pg_stat_activity), so the references are taken last
    # (`_take_refs_last`): the incidents go in under placeholders. SQLite's whole write transaction is serial
    # anyway, and takes them first.
    late = session.get_bind().dialect.name == "postgresql"
    if late:
        refs = [f"~{uuid.uuid4().hex[:31]}" for _ in new_rows]
    else:
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
        # Clocks, receipts and playbooks are the worker's, from this one job that commits with the filing.
        followup.enqueue(
            session,
            [filed.id for filed, _ in created.values()],
            token_id=actor.token_id,
            receipts_by_email=settings.receipts_by_email,
            quiet=bool(session.info.get(QUIET_FILING)),
            each=followup_each,
        )
    # Repeats of a key first seen earlier in this same batch become occurrences of that new incident.
    for i, (filed, _) in enumerate(outcomes):
        if filed is None:
            first, row = created[pending_keys[items[i].dedup_key]]
            adds.append((i, OpenIncident(first.id, first.ref, first.status, row["tlp"], row["open_dedup_key"])))
            outcomes[i] = (first, False)
    counts = _add_occurrences(session, [(incident, items[i]) for i, incident in adds], actor, now) if adds else []
    counts_by_item = dict(zip((i for i, _ in adds), counts, strict=True))
    session.flush()
    if late and created:
        _take_refs_last(session, settings, [filed for filed, _ in created.values()], outcomes)

    # Each occurrence answers its incident's count after it; a new incident answers its first.
    bodies = [_filing_body(inc, made, counts_by_item.get(i, 1)) for i, (inc, made) in enumerate(outcomes)]
    status = 201 if any(was_created for _, was_created in outcomes) else 200
    ids = [inc.id for inc, _ in outcomes]
    grouped_into = {incident.id: incident for incident in matches.values()}
    body, location = ({"items": bodies}, None) if bulk else (bodies[0], f"/api/v1/incidents/{outcomes[0][0].id}")
    return FilingResult(status, body, location, incident_ids=ids, grouped_into=grouped_into, bodies=bodies)


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
    # per-object bookkeeping, not the database, is what a large batch would spend its time on (bench/intake.py).
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
            "occurrence_count": 1,
            "created_by_id": actor.user_id, "created_at": now, "updated_at": now, "status_changed_at": now,
        }  # fmt: skip
        # The columns apply_fields(incident, item, {*FORM_FIELDS, "reporter", "contact"}) would set.
        for name in FORM_FIELDS:
            row[name] = getattr(item, name)
        row["description"] = item.description or ""
        for name, subfields in PERSON_FIELDS.items():
            person = getattr(item, name)
            for sub in subfields:
                row[f"{name}_{sub}"] = getattr(person, sub) if person is not None else None
        row["search_text"] = search_text_of(row, item.observables, system)
        values.append(row)
    ids = session.execute(statements.insert_incidents_returning_ids(), values).scalars().all()
    observables: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    occurrences: list[dict[str, Any]] = []
    for incident_id, (i, item, _) in zip(ids, new_rows, strict=True):
        observables += [
            {"incident_id": incident_id, "type": o.type, "value": o.value, "hashes": o.hashes, "created_at": now}
            for o in unique_observables(item.observables)
        ]
        people += [
            {"incident_id": incident_id, "user_id": u, "organisation_id": o, "role": r, "added_by_id": actor.user_id,
             "added_at": now}
            for u, o, r in participants[i]
        ]  # fmt: skip
        occurrences.append(_occurrence_values(incident_id, item, actor, now))
    for model, rows in ((Observable, observables), (Participant, people), (Occurrence, occurrences)):
        if rows:
            session.execute(statements.insert_rows(model.__table__), rows)
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


def _open_dedup(session: Session, actor: Actor, keys: set[str]) -> tuple[set[str], dict[str, "OpenIncident"]]:
    """Which scoped keys are held by open incidents, and for each dedup key the open incident `actor` may see."""
    if not keys:
        return set(), {}
    scopes = {key: dedup_scopes(actor.organisation_id, actor.user_id, key) for key in keys}
    # Columns, not objects: read on the transaction's connection, once what the session holds is written (what
    # autoflush would have done), without the ORM's execute layer.
    session.flush()
    connection = session.connection()
    dialect = connection.dialect.name
    values = statements.listed([s for pair in scopes.values() for s in pair], dialect)
    rows = connection.execute(statements.open_dedup_query(actor, dialect), {"scopes": values}).all()
    held = {row.open_dedup_key for row in rows}
    visible = {row.open_dedup_key: OpenIncident(*row[:-1]) for row in rows if row.seen}
    # The organisation's incident first: grouping stays as wide as the filer's sight allows.
    found = {key: next((visible[s] for s in pair if s in visible), None) for key, pair in scopes.items()}
    return held, {key: incident for key, incident in found.items() if incident is not None}


class OpenIncident(NamedTuple):
    """An open incident a repeat groups into, as grouping reads it: its answer and its event need no more (an ORM
    object's hydration cost more than the query), and `record_event` takes it as it takes an incident."""

    id: int
    ref: str
    status: str
    tlp: str
    open_dedup_key: str


def _take_refs_last(
    session: Session, settings: FilingSettings, placed: Sequence["_Filed"], outcomes: list[tuple["_Filed", bool]]
) -> None:
    """Give the incidents inserted under placeholders their references from the counter, in filing order, as the
    filing's last statement (one round trip: the counter's bump and the rows' new references and search text):
    what the filing already recorded (its answer, its events, an in-batch repeat's incident) is given them too."""
    year = datetime.now(LOCAL_TZ).year
    given = session.execute(
        statements.bump_counter_and_give_refs(),
        {"prefix": settings.ref_prefix, "year": year, "count": len(placed),
         "folded": fold(f"{settings.ref_prefix}-{year}-"), "ids": [filed.id for filed in placed],
         "placeholders": [fold(filed.ref) for filed in placed]},
    ).all()  # fmt: skip
    by_id = dict(given)
    refs = {filed.ref: by_id[filed.id] for filed in placed}
    for i, (filed, was_created) in enumerate(outcomes):
        if filed.ref in refs:
            outcomes[i] = (filed._replace(ref=refs[filed.ref]), was_created)
    for event in session.info.get(PENDING_EVENTS) or ():
        data = event.get("data") or {}
        if data.get("ref") in refs:
            data["ref"] = refs[data["ref"]]
    for filed in placed:
        held = session.identity_map.get(identity_key(Incident, filed.id))
        if held is not None:
            set_committed_value(held, "ref", refs[filed.ref])
            session.expire(held, ["search_text"])


class _Filed(NamedTuple):
    """What a filing's answer says of an incident it created or added an occurrence to."""

    id: int
    ref: str
    status: str


def _occurrence_values(incident_id: int, item: IncidentCreate, actor: Actor, now: datetime) -> dict[str, Any]:
    # An alert source's filing (incidents/sources/ingest.py) names its source, whether a window held it, and the
    # payload it keeps (the filing and what the sender said beyond it).
    fields = getattr(item, "occurrence_fields", {})
    return {
        "incident_id": incident_id,
        "received_at": now,
        "detected_at": item.detected_at,
        "created_by_id": actor.user_id,
        "payload": fields["payload"] if "payload" in fields else item.model_dump(mode="json", exclude_defaults=True),
        **fields,
    }


def _add_occurrences(
    session: Session, adds: Sequence[tuple["OpenIncident", IncidentCreate]], actor: Actor, now: datetime
) -> list[int]:
    """Add an occurrence of each item to its open incident; each one's count after it, in order."""
    # Core statements on the transaction's connection, set-based (alerts filed together add theirs at once), and a
    # loaded incident told without becoming dirty: a dirty incident would make every later statement of the
    # transaction autoflush it through the unit of work (a tenth of a repeat's CPU, profiled).
    connection = session.connection()
    rows = [_occurrence_values(incident.id, item, actor, now) for incident, item in adds]
    added = Counter(incident.id for incident, _ in adds)
    connection.execute(statements.insert_rows(Occurrence.__table__), rows)
    after = {}
    dialect = connection.dialect.name
    for n in set(added.values()):
        ids = statements.listed([incident_id for incident_id, k in added.items() if k == n], dialect)
        after.update(connection.execute(statements.count_occurrences(dialect), {"ids": ids, "n": n, "at": now}).all())
    for incident_id in added:
        held = session.identity_map.get(identity_key(Incident, incident_id))
        if held is not None:
            set_committed_value(held, "updated_at", now)
    # The incident's count before these, then one more for each of its occurrences here, in order.
    counts, seen = [], Counter[int]()
    for incident, _ in adds:
        seen[incident.id] += 1
        counts.append(after[incident.id] - added[incident.id] + seen[incident.id])
    events = []
    for incident, item in adds:
        data = {"ref": incident.ref, "status": str(incident.status), "detected_at": jsonable(item.detected_at)}
        events.append(event_values(kind="incident.occurrence", actor=actor, incident_id=incident.id,
                                   tlp=incident.tlp, at=now, data=data))  # fmt: skip
    record_events(session, events)
    return counts


def _filing_body(incident: _Filed, created: bool, occurrences: int) -> dict[str, Any]:
    return {
        "id": incident.id,
        "ref": incident.ref,
        "status": str(incident.status),
        "created": created,
        "occurrence_count": occurrences,
    }


def _standing_body_id(session: Session, settings: FilingSettings) -> int | None:
    """The standing body's organisation id, kept per database for `STANDING_BODY_SECONDS`: every new incident names
    it lead, and a query per filing for a row that changes only when an admin re-codes it was a round trip each."""
    if not settings.standing_body:
        return None
    known = _STANDING_BODIES.setdefault(session.get_bind(), {})
    hit = known.get(settings.standing_body)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    found = session.scalar(statements.organisation_id_by_code(), {"code": settings.standing_body})
    if found is not None:  # a standing body still to be created is looked for again next time
        known[settings.standing_body] = (found, time.monotonic() + STANDING_BODY_SECONDS)
    return found


def _allocate_refs(session: Session, settings: FilingSettings, count: int) -> list[str]:
    """Take `count` references from this local year's counter, in the creating transaction."""
    year = datetime.now(LOCAL_TZ).year
    stmt = statements.ref_counter_upsert(session.get_bind().dialect.name)
    last = session.execute(stmt, {"prefix": settings.ref_prefix, "year": year, "count": count}).scalar_one()
    return [f"{settings.ref_prefix}-{year}-{n:05d}" for n in range(last - count + 1, last + 1)]
