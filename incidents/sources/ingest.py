"""The intake use case of alert sources: parse a sender's payload, file it through the incident service, and apply
the notices (resolved) it carries to the incidents they concern."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from pydantic import PrivateAttr
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from incidents.access import Actor, visible_incidents
from incidents.base import utcnow
from incidents.errors import DomainError, FieldError, Forbidden, IdempotencyMismatch, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.filing import (
    FilingResult,
    FilingSettings,
    IdempotencyClaim,
    OpenIncident,
    dedup_scopes,
)
from incidents.filing_together import Filing, file_each
from incidents.models import ApiToken, Incident
from incidents.policy import Capability, require
from incidents.schemas.base import DEFAULT_LIMITS, Limits, parse
from incidents.schemas.incidents import IncidentCreate
from incidents.sources import formats, windows
from incidents.sources.formats import RESOLVED, Alert
from incidents.sources.models import MaintenanceWindow, Source, SourceKind
from incidents.stix import techniques
from incidents.uow import RunAlone, in_transaction

# The kinds that post over HTTP; the mailbox is polled by the worker.
HTTP_KINDS = frozenset(k.value for k in SourceKind if k is not SourceKind.MAILBOX)
# last_seen_at moves at most this often: a busy SIEM's every alert need not lock its source's row.
TOUCH_EVERY = timedelta(seconds=1)
RESOLVED_EVENT, RETURNED_EVENT, SUPPRESSED_EVENT = "source.resolved", "source.returned", "source.suppressed"


class SourcedIncident(IncidentCreate):
    """An incident filed for an alert source: its occurrence row records the source and any window holding it."""

    _occurrence: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def occurrence_fields(self) -> dict[str, Any]:
        return self._occurrence


@dataclass
class IngestResult:
    """What the intake answers: 201 new incident, 200 grouped, 202 a notice applied, with a body per alert."""

    status_code: int
    body: dict[str, Any]
    location: str | None = None
    replayed: bool = False
    incident_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class AlertPost:
    """One request to the intake of alert sources: its kind, payload and caller, apart from any transaction."""

    kind: str
    payload: Any
    actor: Actor
    settings: FilingSettings
    limits: Limits = DEFAULT_LIMITS


Outcome = IngestResult | Exception


def admit(post: AlertPost) -> None:
    """What is refused before any transaction: a kind there is no intake for (a role that may not file is refused
    by the route before the body is read, and by file_posts before anything of its post is written)."""
    if post.kind not in HTTP_KINDS:
        raise NotFound(f"no source kind {post.kind!r}; use one of {', '.join(sorted(HTTP_KINDS))}")


def ingest_alone(session: Session, post: AlertPost) -> IngestResult:
    """`post` (admitted) filed in a write transaction of its own: its source, windows and every alert it carries
    (Alertmanager sends several) read and written together, all or nothing; its error raised."""
    outcome = in_transaction(session, lambda: file_posts(session, [post]))[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def file_posts(session: Session, posts: Sequence[AlertPost]) -> list[Outcome]:
    """File the alerts of `posts` inside the caller's write transaction, each post's answer or error in order.

    Posts that arrived together share one transaction (app/api/sources.py): their source and windows are read
    once, their alerts filed together (one dedup read, the events in one INSERT) and committed at once. A post
    refused before anything of it is written (a malformed payload, a switched-off source, one alert id twice with
    two bodies) gets its error and the others go on; an error while writing (an alert id reused with another body
    found in the table) raises, for all of them, and each post then runs alone.
    """
    now = utcnow()
    outcomes: list[Outcome | None] = [None] * len(posts)
    sources: dict[tuple[str, int | None], tuple[SourceRead, list[WindowRead | MaintenanceWindow]]] = {}
    claimed: dict[tuple[int, str], int] = {}  # each idempotency key of this transaction, by the post claiming it
    planned: list[tuple[int, SourceRead, list[_Planned]]] = []
    for i, post in enumerate(posts):
        try:
            # Before its source is read, or registered by a first alert.
            require(post.actor, Capability.FILE_INCIDENT, "your role may not file incidents")
            if (post.kind, post.actor.token_id) not in sources:
                sources[(post.kind, post.actor.token_id)] = source_for(
                    session, kind=post.kind, actor=post.actor, now=now
                )
            source, in_force = sources[(post.kind, post.actor.token_id)]
            alerts = formats.parse(post.kind, post.payload, formats.mapping_for(post.kind, source.mapping))
            plans = [_plan(source, in_force, alert, post) for alert in alerts]
            _claim_once(i, plans, claimed)
        except (DomainError, RunAlone) as exc:  # nothing of this post is written yet
            outcomes[i] = exc
            continue
        planned.append((i, source, plans))
    _file_planned(session, [(posts[i], source, plans) for i, source, plans in planned], now)
    for i, _, plans in planned:
        outcomes[i] = _combined([plan.result for plan in plans if plan.result is not None])
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass
class _Planned:
    """One alert of a post, read and checked, to be filed (or, a notice, applied) with the others."""

    alert: Alert
    item: "SourcedIncident | None" = None  # None: a notice (resolved)
    window: "WindowRead | MaintenanceWindow | None" = None
    claim: IdempotencyClaim | None = None
    result: IngestResult | None = None  # once filed (or replayed, or applied)
    echo: "_Planned | None" = None  # an alert repeating an idempotency key an earlier alert of its post claimed


def _plan(
    source: "SourceRead", in_force: "list[WindowRead | MaintenanceWindow]", alert: Alert, post: AlertPost
) -> _Planned:
    if alert.status == RESOLVED:
        return _Planned(alert)
    item = _incident(alert, post.limits)
    window = windows.holding(in_force, alert.dedup_key)
    # The occurrence keeps what the sender said beyond the filing (labels, rule, agent, Grafana's fields).
    payload = {**item.model_dump(mode="json", exclude_defaults=True), "source": {"name": source.name,
               "kind": source.kind, "context": alert.context}}  # fmt: skip
    item.occurrence_fields.update(source_id=source.id, suppressed=window is not None, payload=payload)
    claim = None
    if alert.idempotency_key:
        key = alert.idempotency_key
        if len(key) > 255:
            key = f"{source.kind}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
        claim = IdempotencyClaim(token_id=post.actor.token_id or 0, key=key, request_hash=alert.digest())
    return _Planned(alert, item, window, claim)


def _claim_once(post: int, plans: list[_Planned], claimed: dict[tuple[int, str], int]) -> None:
    """Each idempotency key is filed once in a transaction: a later alert of the same post with the same key
    answers as the first did; a post repeating another post's key waits for that one to commit (RunAlone)."""
    first: dict[tuple[int, str], _Planned] = {}
    for plan in plans:
        if plan.claim is None:
            continue
        key = (plan.claim.token_id, plan.claim.key)
        if claimed.get(key, post) != post:
            raise RunAlone(plan.claim.key)
        if key in first:
            if first[key].claim.request_hash != plan.claim.request_hash:  # type: ignore[union-attr]
                raise IdempotencyMismatch(
                    "this Idempotency-Key was first used with another request",
                    errors=[FieldError("Idempotency-Key", "already used with a different body")],
                )
            plan.echo = first[key]
            continue
        first[key] = plan
    claimed.update(dict.fromkeys(first, post))


def _file_planned(session: Session, posts: "list[tuple[AlertPost, SourceRead, list[_Planned]]]", now: datetime) -> None:
    """Apply the notices and file the alerts of the posts, giving each plan its result."""
    filings: list[Filing] = []
    filed: list[tuple[SourceRead, _Planned]] = []
    for post, source, plans in posts:
        for plan in plans:
            if plan.item is None:
                plan.result = _resolve(session, source, plan.alert, post.actor, now)
            elif plan.echo is None:
                filings.append(Filing(plan.item, post.actor, post.settings, plan.claim, quiet=plan.window is not None))
                filed.append((source, plan))
    touched: set[int] = set()

    def then(i: int, result: FilingResult) -> None:
        source, plan = filed[i]
        if source.id not in touched:
            touch(session, source, now)
            touched.add(source.id)
        incident_id = result.body["id"]
        _record_alert(session, source, plan, filings[i].actor, result.grouped_into.get(incident_id) or incident_id, now)
        result.body["suppressed"] = plan.window is not None

    for (_, plan), outcome in zip(filed, file_each(session, filings, then), strict=True):
        if isinstance(outcome, Exception):
            # Refused after other alerts were written: the shared transaction fails, and each post runs alone, where
            # this error is its post's own.
            raise outcome
        plan.result = IngestResult(
            outcome.status_code, outcome.body, outcome.location, outcome.replayed, outcome.incident_ids
        )
    for _, _, plans in posts:
        for plan in plans:
            if plan.echo is not None and plan.echo.result is not None:
                echoed = plan.echo.result
                plan.result = IngestResult(echoed.status_code, echoed.body, echoed.location, True)


def _record_alert(
    session: Session, source: "SourceRead", plan: _Planned, actor: Actor, filed: "OpenIncident | int", now: datetime
) -> None:
    """What an alert adds beyond its filing: its ATT&CK techniques, and the event of a window holding it."""
    incident = filed if not isinstance(filed, int) else session.get_one(Incident, filed)
    alert, window = plan.alert, plan.window
    if alert.attack_techniques and not techniques.nothing_to_add(session, incident, alert.attack_techniques):
        loaded = session.get_one(Incident, incident.id)  # the grouped-into incident is read, not loaded
        techniques.record_attack_techniques(session, actor, loaded, alert.attack_techniques)
    if window is not None:
        record_event(
            session, kind=SUPPRESSED_EVENT, actor=actor, incident=incident, at=now,
            note=window.reason,
            data={"ref": incident.ref, "status": str(incident.status), "window_id": window.id,
                  "source": source.name, "dedup_key": alert.dedup_key},
        )  # fmt: skip


def _combined(results: list[IngestResult]) -> IngestResult:
    """One post's answer: its one alert's, or its alerts' listed (201 if any opened an incident, else 200 if any
    was grouped, else 202)."""
    if len(results) == 1:
        return results[0]
    codes = {r.status_code for r in results}
    status = 201 if 201 in codes else 200 if 200 in codes else 202
    ids = [i for r in results for i in r.incident_ids]
    return IngestResult(status, {"items": [r.body for r in results]}, incident_ids=ids)


class SourceRead(NamedTuple):
    """What an alert reads of its source: a row, not an ORM object (whose hydration, with the windows', cost more
    than the query; bench/sources.py)."""

    id: int
    kind: str
    name: str
    mapping: dict[str, Any]
    active: bool
    last_seen_at: datetime | None
    silent_since: datetime | None


class WindowRead(NamedTuple):
    """What an alert reads of a maintenance window in force (`windows.holding` and the suppressed event)."""

    id: int
    reason: str
    dedup_pattern: str | None


def source_for(
    session: Session, *, kind: str, actor: Actor, now: datetime
) -> tuple[SourceRead, list[WindowRead | MaintenanceWindow]]:
    """The source of `kind` that `actor`'s token posts for, with the windows in force for it at `now`, inside the
    caller's write transaction; the first alert registers it, named after the token (two first alerts that race:
    the unique index refuses one, whose transaction runs again and finds the other's)."""
    if actor.token_id is None:
        raise Forbidden("alert sources post with an API token")
    # A Core read on the transaction's connection: the ORM's execute layer cost more than the query (nothing is
    # pending this early in the transaction, so there is nothing to flush first).
    params = {"kind": kind, "token_id": actor.token_id, "now": now}
    rows = session.connection().execute(_source_with_windows(), params).all()
    in_force: list[WindowRead | MaintenanceWindow]
    if rows:
        found = SourceRead(*rows[0][: len(SourceRead._fields)])
        in_force = [WindowRead(*row[len(SourceRead._fields) :]) for row in rows if row[-3] is not None]
    else:
        registered = _register(session, kind, actor)
        found = SourceRead(*(getattr(registered, name) for name in SourceRead._fields))
        in_force = list(windows.in_force_for_source(session, registered.id, now))
    if not found.active:
        raise Forbidden(f"the source {found.name!r} is switched off; an admin or operator may switch it on")
    return found, in_force


@cache
def _source_with_windows() -> Any:
    # One query, built once: every alert reads its source and the windows that may hold it.
    held = MaintenanceWindow.source_id.is_(None) | (MaintenanceWindow.source_id == Source.id)
    columns = [getattr(Source, name) for name in SourceRead._fields]
    columns += [getattr(MaintenanceWindow, name) for name in WindowRead._fields]
    return (
        select(*columns)
        .outerjoin(MaintenanceWindow, windows.in_force_for(held))
        .where(Source.kind == bindparam("kind"), Source.token_id == bindparam("token_id"))
        .order_by(MaintenanceWindow.id)
    )


def _register(session: Session, kind: str, actor: Actor) -> Source:
    token_name = session.scalar(select(ApiToken.name).where(ApiToken.id == actor.token_id)) or "token"
    name = f"{kind}:{token_name}"
    if session.scalar(select(Source.id).where(Source.name == name)) is not None:
        name = f"{name}:{actor.token_id}"
    source = Source(kind=kind, name=name[:150], token_id=actor.token_id, created_by_id=actor.user_id, mapping={})
    session.add(source)
    session.flush()
    return source


def _incident(alert: Alert, limits: Limits) -> SourcedIncident:
    """The filing of an alert; a sender's long title or log is cut to the configured limits, not refused."""
    data = {k: v for k, v in alert.incident.items() if v is not None}
    data["title"] = (str(data.get("title") or "alert").strip() or "alert")[: limits.title]
    data["description"] = str(data.get("description") or "")[: limits.description]
    data["observables"] = data.get("observables", [])[: limits.observables]
    data["dedup_key"] = data["dedup_key"][:200] if data.get("dedup_key") else None
    try:
        return parse(SourcedIncident, data, limits)
    except ValidationFailed as exc:
        # The mapping (data an admin edits) named a priority or category that does not exist.
        raise ValidationFailed(
            "the source's mapping produced an invalid filing",
            errors=[FieldError(f"mapping.{e.field}", e.message) for e in exc.errors],
        ) from None


def _resolve(session: Session, source: SourceRead, alert: Alert, actor: Actor, now: datetime) -> IngestResult:
    """Record on the open incident that the sender saw its alert end; recovery stays a person's decision."""
    touch(session, source, now)
    incident = open_incident(session, actor, alert.dedup_key) if alert.dedup_key else None
    if incident is None:
        return IngestResult(202, {"id": None, "notice": RESOLVED, "applied": False})
    incident.updated_at = now
    ended = alert.context.get("endsAt")
    record_event(
        session, kind=RESOLVED_EVENT, actor=actor, incident=incident, at=now,
        note=f"{source.kind}: the alert ended" + (f" at {ended}" if ended else ""),
        data={"ref": incident.ref, "status": str(incident.status), "source": source.name,
              "dedup_key": alert.dedup_key, "ended_at": alert.context.get("endsAt")},
    )  # fmt: skip
    body = {"id": incident.id, "ref": incident.ref, "status": str(incident.status), "notice": RESOLVED,
            "applied": True}  # fmt: skip
    return IngestResult(202, body, f"/api/v1/incidents/{incident.id}", incident_ids=[incident.id])


def open_incident(session: Session, actor: Actor, dedup_key: str) -> Incident | None:
    """The open incident holding `dedup_key` for `actor` (their organisation's first), if they may see it."""
    scopes = dedup_scopes(actor.organisation_id, actor.user_id, dedup_key)
    found = {
        i.open_dedup_key: i
        for i in session.scalars(
            select(Incident).where(Incident.open_dedup_key.in_(scopes), visible_incidents(actor)).with_for_update()
        )
    }
    return next((found[s] for s in scopes if s in found), None)


def touch(session: Session, source: "Source | SourceRead", now: datetime) -> None:
    """Note that a source spoke; a source that was silent records its return. `source` as loaded or as read."""
    values: dict[str, Any] = {}
    if source.silent_since is not None:
        record_event(
            session, kind=RETURNED_EVENT, actor=None, at=now,
            data={"source_id": source.id, "source": source.name, "kind": source.kind,
                  "silent_since": source.silent_since.isoformat()},
        )  # fmt: skip
        values["silent_since"] = None
    if source.last_seen_at is None or now - source.last_seen_at >= TOUCH_EVERY:
        values["last_seen_at"] = now
    if not values:
        return
    # A Core UPDATE: the row need not be loaded; a loaded one is told, without becoming dirty.
    session.connection().execute(_touch_statement(tuple(values)), {"of_source": source.id, **values})
    held = session.identity_map.get(identity_key(Source, source.id))
    for name, value in values.items():
        if held is not None:
            set_committed_value(held, name, value)


@cache
def _touch_statement(names: tuple[str, ...]) -> Any:
    table = Source.__table__
    return update(table).where(table.c.id == bindparam("of_source")).values({n: bindparam(n) for n in names})
