"""The engine: starts playbooks on incidents, carries out their steps, and delivers pages through the channels.

Every step runs inside a transaction that also writes its events and the jobs it causes; a step already
carried out (`RunStep` has its path) is never carried out again, so a repeated job pages nobody twice.
Network calls happen in jobs, outside any transaction; a delivery is recorded in a second transaction.
"""

import base64
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, load_only, selectinload

from incidents import jobs, service
from incidents.access import Actor, can_see
from incidents.base import utcnow
from incidents.enums import TERMINAL_STATUSES
from incidents.events import add_listener, drop_pending, pending_mark, record_event
from incidents.models import Incident, Organisation, System
from incidents.policy import Capability, require
from incidents.uow import in_transaction
from notifiers import registry
from notifiers.base import DeliveryFailed, Message
from playbooks import directory
from playbooks.models import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_QUEUED,
    PAGE_CANCELLED,
    PAGE_OPEN,
    RECIPIENT_DIGESTED,
    RECIPIENT_HELD,
    RECIPIENT_PAGED,
    RUN_DONE,
    RUN_RUNNING,
    RUN_STOPPED,
    RUN_WAITING,
    Contact,
    Delivery,
    DirectionRequest,
    Group,
    Page,
    PageRecipient,
    PlaybookRun,
    PlaybookVersion,
    RunStep,
    Task,
)
from playbooks.spec import parse_duration

log = logging.getLogger("ucsc.playbooks")

EVALUATE, CONTINUE, WAIT, DELIVER, DIGEST, FOCAL = (
    "playbooks.evaluate",
    "playbooks.continue",
    "playbooks.wait",
    "page.deliver",
    "page.digest",
    "directory.focal",
)
CONFIRM = "directory.confirm_request"
# A web process's sessions carry its paging settings here (`app/ack.py`): small filings then start their
# playbooks in their own transaction, one worker round trip sooner; bulk filings and other processes queue a job.
INLINE_SETTINGS = "ucsc.paging_inline"
INLINE_MAX = 5
# Incident fields whose change can make new playbooks match.
TRIGGER_FIELDS = frozenset({"category", "priority", "tlp", "exercise", "affected_system"})
TLP_ORDER = ("clear", "green", "amber", "amber+strict", "red")
DRILL_VI, DRILL_EN = "[DIỄN TẬP]", "[DRILL]"


@dataclass(frozen=True)
class Settings:
    """Paging settings from configuration (`UCSC_PAGING_*`), read once per process."""

    base_url: str = "http://127.0.0.1:5000"
    secret_key: str = ""
    channels: frozenset[str] = frozenset({"webhook"})
    max_tlp: dict[str, str] = field(default_factory=dict)
    rate_limit: int = 6
    rate_window: float = 600.0
    digest_delay: float = 60.0
    retry_seconds: float = 5.0
    retry_cap: float = 300.0
    channel_attempts: int = 5
    max_attempts: int = 20
    escalation_grace: float = 0.0
    focal_hours: float = 24.0
    ack_link_ttl: float = 168 * 3600.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Settings":
        key = id(config)
        cached = _SETTINGS.get(key)
        if cached is not None and cached[0] is config:
            return cached[1]
        enabled = set()
        for name, factory in registry.FACTORIES.items():
            notifier = factory(config)
            if notifier is not None:
                enabled.add(name)
                close = getattr(notifier, "close", None)
                if close:
                    close()
        settings = cls(
            base_url=str(config.get("BASE_URL") or "").rstrip("/"),
            secret_key=str(config.get("SECRET_KEY") or ""),
            channels=frozenset(enabled),
            max_tlp={name: registry.max_tlp(config, name) for name in registry.FACTORIES},
            rate_limit=int(config.get("PAGING_RATE_LIMIT", 6)),
            rate_window=float(config.get("PAGING_RATE_WINDOW_SECONDS", 600)),
            digest_delay=float(config.get("PAGING_DIGEST_DELAY_SECONDS", 60)),
            retry_seconds=float(config.get("PAGING_RETRY_SECONDS", 5)),
            retry_cap=float(config.get("PAGING_RETRY_CAP_SECONDS", 300)),
            channel_attempts=int(config.get("PAGING_CHANNEL_ATTEMPTS", 5)),
            max_attempts=int(config.get("PAGING_MAX_ATTEMPTS", 20)),
            escalation_grace=float(config.get("PAGING_ESCALATION_GRACE_SECONDS", 0)),
            focal_hours=float(config.get("FOCAL_POINT_CONFIRM_HOURS", 24)),
            ack_link_ttl=float(config.get("ACK_LINK_TTL_HOURS", 168)) * 3600,
        )
        _SETTINGS[key] = (config, settings)
        return settings


_SETTINGS: dict[int, tuple[dict[str, Any], Settings]] = {}


# --- links that acknowledge ---------------------------------------------------------------------------------


def _mac(secret: str, *parts: object) -> str:
    digest = hmac.new(secret.encode(), ":".join(map(str, parts)).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def ack_token(secret: str, page_id: int, contact_id: int, expires: int) -> str:
    """A token naming one recipient of one page until `expires` (Unix seconds), signed: the e-mail's link carries it."""
    return f"{page_id}-{contact_id}-{expires}-{_mac(secret, 'ack', page_id, contact_id, expires)}"


def read_ack_token(secret: str, token: str) -> tuple[int, int, datetime] | None:
    """(page id, contact id, expiry) of a genuine token, expired or not; None for a forged or malformed one."""
    parts = token.split("-", 3)
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts[:3]):
        return None
    page_id, contact_id, expires = int(parts[0]), int(parts[1]), int(parts[2])
    if not hmac.compare_digest(parts[3], _mac(secret, "ack", page_id, contact_id, expires)):
        return None
    return page_id, contact_id, datetime.fromtimestamp(min(expires, 32503680000), UTC)


def ack_link_until(settings: Settings) -> datetime:
    """When an ack link composed now stops working (`ACK_LINK_TTL_HOURS`), to the second, never later."""
    # Rounded down: the time the e-mail states (to the minute, also rounded down) is then never past the real end.
    return datetime.fromtimestamp(math.floor(time.time() + settings.ack_link_ttl), UTC)


def ack_url(settings: Settings, page_id: int, contact_id: int, until: datetime) -> str:
    token = ack_token(settings.secret_key, page_id, contact_id, int(until.timestamp()))
    return f"{settings.base_url}/ack/{token}"


def local_time(at: datetime) -> str:
    """A time as the e-mail and the ack page state it: Vietnam time, `HH:MM dd/mm/yyyy`."""
    return at.astimezone(service.LOCAL_TZ).strftime("%H:%M %d/%m/%Y")


# --- reacting to incident changes (called inside the incident's own transaction) -----------------------------


def on_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Queue playbook work for incident changes in the writing transaction: nothing is lost if we crash after it."""
    rows = []
    inline = session.info.get(INLINE_SETTINGS)
    created = sum(1 for ev in events if ev.get("kind") == "incident.created")
    for ev in events:
        kind, incident_id = ev.get("kind"), ev.get("incident_id")
        if incident_id is None or not str(kind).startswith("incident."):
            continue
        data = ev.get("data") or {}
        if kind == "incident.created":
            if session.info.get(service.QUIET_FILING):
                continue  # held by a maintenance window: stored and shown, but no playbook starts, so nobody is paged
            if inline is not None and created <= INLINE_MAX and _start_inline(session, incident_id, inline):
                continue
            key = f"{EVALUATE}:{incident_id}:created"
            rows.append(jobs.job_values(EVALUATE, {"incident_id": incident_id}, key=key, incident_id=incident_id))
        elif (kind == "incident.updated" and TRIGGER_FIELDS & set(data.get("changes") or {})) or (
            kind == "incident.classification_decided"
        ):
            rows.append(jobs.job_values(EVALUATE, {"incident_id": incident_id}, incident_id=incident_id))
        elif kind == "incident.occurrence":
            # A repeat of the same dedup_key updates the open pages instead of paging again.
            session.execute(
                update(Page)
                .where(Page.incident_id == incident_id, Page.state == PAGE_OPEN)
                .values(occurrences=Page.occurrences + 1)
            )
        elif kind == "incident.status_changed" and data.get("to") in {s.value for s in TERMINAL_STATUSES}:
            rows.append(jobs.job_values(EVALUATE, {"incident_id": incident_id}, incident_id=incident_id))
    jobs.enqueue_many(session, rows)


def _start_inline(session: Session, incident_id: int, settings: "Settings") -> bool:
    """Start a new incident's playbooks in its filing transaction, in a savepoint: if anything in a playbook
    fails, the filing still succeeds and the worker starts them instead (False)."""
    mark = pending_mark(session)
    try:
        with session.begin_nested():
            _evaluate(session, incident_id, settings)
    except Exception:  # a playbook must never cost a filing
        drop_pending(session, mark)  # the savepoint's events are gone with its rows
        log.exception("starting the playbooks of incident %s in its filing failed; the worker will", incident_id)
        return False
    return True


# --- conditions ----------------------------------------------------------------------------------------------


def matches(when: dict[str, Any] | None, incident: Incident) -> bool:
    """Whether `incident` meets every condition of a `when` mapping."""
    if not when:
        return True
    values = {
        "category": str(incident.category),
        "priority": str(incident.priority),
        "tlp": str(incident.tlp),
        "class": str(incident.incident_class),
    }
    for key, value in values.items():
        if key in when:
            allowed = when[key] if isinstance(when[key], list) else [when[key]]
            if value not in allowed:
                return False
    if "exercise" in when and bool(incident.exercise) is not bool(when["exercise"]):
        return False
    if "security_level" in when:
        system = incident.affected_system
        if system is None:
            return False
        level, cond = system.security_level, when["security_level"]
        if isinstance(cond, dict):
            if level < cond.get("min", 1) or level > cond.get("max", 5):
                return False
        elif level not in cond:
            return False
    return True


# --- step paths: "2", "2.e.0" (the first step of step 2's escalation) ---------------------------------------


def step_at(definition: dict[str, Any], path: str) -> dict[str, Any] | None:
    parts = path.split(".")
    steps = definition["steps"]
    step = None
    i = 0
    while i < len(parts):
        index = int(parts[i])
        if index >= len(steps):
            return None
        step = steps[index]
        if i + 1 < len(parts):
            steps = step["wait_for_ack"]["escalate"]
            i += 2
        else:
            i += 1
    return step


def next_path(definition: dict[str, Any], path: str) -> str | None:
    """The step after `path`; after the last step of an escalation, the step after its wait_for_ack."""
    parts = path.split(".")
    sibling = ".".join([*parts[:-1], str(int(parts[-1]) + 1)])
    if step_at(definition, sibling) is not None:
        return sibling
    if len(parts) == 1:
        return None
    return next_path(definition, ".".join(parts[:-2]))


def step_kind(step: dict[str, Any]) -> str:
    return next(k for k in ("page", "notify", "task", "request_direction", "wait_for_ack") if k in step)


# --- starting and stopping runs -------------------------------------------------------------------------------


def latest_versions(session: Session) -> list[PlaybookVersion]:
    """The newest version of each playbook name."""
    newest = select(PlaybookVersion.name, func.max(PlaybookVersion.version).label("v")).group_by(PlaybookVersion.name)
    sub = newest.subquery()
    stmt = select(PlaybookVersion).join(
        sub, (PlaybookVersion.name == sub.c.name) & (PlaybookVersion.version == sub.c.v)
    )
    return list(session.scalars(stmt.order_by(PlaybookVersion.name)))


# Versions are never edited, so a definition is the same wherever its digest is: a filing reads the newest
# versions' few columns and takes their parsed definitions from here, not the YAML and JSON of every playbook.
_DEFINITIONS: dict[str, dict[str, Any]] = {}


def _newest_for_starting(session: Session) -> list[tuple[PlaybookVersion, dict[str, Any]]]:
    """The newest version of each enabled playbook with its definition."""
    newest = select(PlaybookVersion.name, func.max(PlaybookVersion.version).label("v")).group_by(PlaybookVersion.name)
    sub = newest.subquery()
    stmt = (
        select(PlaybookVersion)
        .options(load_only(PlaybookVersion.name, PlaybookVersion.version, PlaybookVersion.title_vi,
                           PlaybookVersion.enabled, PlaybookVersion.digest))
        .join(sub, (PlaybookVersion.name == sub.c.name) & (PlaybookVersion.version == sub.c.v))
        .where(PlaybookVersion.enabled.is_(True))
    )  # fmt: skip
    versions = list(session.scalars(stmt.order_by(PlaybookVersion.name)))
    missing = [v.id for v in versions if v.digest not in _DEFINITIONS]
    if missing:
        stmt = select(PlaybookVersion.digest, PlaybookVersion.definition).where(PlaybookVersion.id.in_(missing))
        for digest, definition in session.execute(stmt):
            _DEFINITIONS[digest] = definition
    return [(v, _DEFINITIONS[v.digest]) for v in versions]


def _locked_incident(session: Session, incident_id: int) -> Incident | None:
    stmt = (
        select(Incident)
        .where(Incident.id == incident_id)
        .options(selectinload(Incident.affected_system))
        .with_for_update(of=Incident, key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalar(stmt)


def evaluate_incident(*, session: Session, incident_id: int, settings: Settings) -> list[PlaybookRun]:
    """Start the automatic playbooks that now match the incident (each once), or stop its runs if it ended."""
    return in_transaction(session, lambda: _evaluate(session, incident_id, settings))


def _evaluate(session: Session, incident_id: int, settings: Settings) -> list[PlaybookRun]:
    incident = _locked_incident(session, incident_id)
    if incident is None:
        return []
    if incident.status in TERMINAL_STATUSES:
        for run in session.scalars(
            select(PlaybookRun).where(
                PlaybookRun.incident_id == incident.id, PlaybookRun.state.in_((RUN_RUNNING, RUN_WAITING))
            )
        ):
            _stop(session, run, incident, None, f"incident {incident.status}")
        return []
    started = []
    for version, spec in _newest_for_starting(session):
        if spec.get("trigger", "auto") != "auto" or not matches(spec.get("when"), incident):
            continue
        key = f"{incident.id}:{version.name}:auto"
        if session.scalar(select(PlaybookRun.id).where(PlaybookRun.key == key)) is not None:
            continue  # running ones continue; a playbook starts once per incident on its own
        started.append(_start(session, incident, version, key, "auto", None, settings, spec))
    return started


def start_run(
    *, session: Session, incident_id: int, name: str, actor: Actor, settings: Settings, version: int | None = None
) -> PlaybookRun:
    """A person starts a playbook on an incident by hand (any trigger), pinned to its newest or a named version."""
    from incidents.errors import Conflict, FieldError, ValidationFailed

    def work() -> PlaybookRun:
        incident = service.get_incident(session, actor, incident_id, for_update=True)
        stmt = select(PlaybookVersion).where(PlaybookVersion.name == name)
        stmt = stmt.where(PlaybookVersion.version == version) if version else stmt
        chosen = session.scalar(stmt.order_by(PlaybookVersion.version.desc()).limit(1))
        if chosen is None:
            raise ValidationFailed("unknown playbook", errors=[FieldError("playbook", f"no playbook {name!r}")])
        if incident.status in TERMINAL_STATUSES:
            raise Conflict(f"the incident is {incident.status}")
        running = session.scalar(
            select(PlaybookRun.id).where(
                PlaybookRun.incident_id == incident.id,
                PlaybookRun.name == name,
                PlaybookRun.state.in_((RUN_RUNNING, RUN_WAITING)),
            )
        )
        if running is not None:
            raise Conflict(f"{name} is already running on {incident.ref}", run_id=running)
        count = session.scalar(select(func.count()).where(PlaybookRun.incident_id == incident.id)) or 0
        key = f"{incident.id}:{name}:manual:{count + 1}"
        return _start(session, incident, chosen, key, "manual", actor, settings)

    require(actor, Capability.RUN_PLAYBOOKS, "only admins and operators start playbooks")
    return in_transaction(session, work)


def stop_run(*, session: Session, run_id: int, actor: Actor) -> PlaybookRun:
    """A person stops a run: no further step is carried out; its open pages are cancelled."""
    from incidents.errors import NotFound

    require(actor, Capability.RUN_PLAYBOOKS, "only admins and operators stop playbooks")

    def work() -> PlaybookRun:
        run = session.get(PlaybookRun, run_id, with_for_update=True, populate_existing=True)
        if run is None or not can_see(session, actor, run.incident_id):
            raise NotFound(f"no run {run_id}")
        incident = service.get_incident(session, actor, run.incident_id)
        if run.state in (RUN_RUNNING, RUN_WAITING):
            _stop(session, run, incident, actor, "stopped by hand")
        return run

    return in_transaction(session, work)


def _stop(session: Session, run: PlaybookRun, incident: Incident, actor: Actor | None, why: str) -> None:
    run.state, run.finished_at = RUN_STOPPED, utcnow()
    run.stopped_by = actor.label if actor else "system"
    session.execute(update(Page).where(Page.run_id == run.id, Page.state == PAGE_OPEN).values(state=PAGE_CANCELLED))
    run_event(session, "playbook.stopped", incident, actor, note=why, run_id=run.id, playbook=run.name)


def run_event(
    session: Session, kind: str, incident: Incident, actor: Actor | None, note: str | None = None, **data: Any
) -> None:
    record_event(
        session,
        kind=kind,
        actor=actor,
        incident=incident,
        note=note,
        data={"ref": incident.ref, "status": str(incident.status), **data},
    )


def _start(
    session: Session,
    incident: Incident,
    version: PlaybookVersion,
    key: str,
    trigger: str,
    actor: Actor | None,
    settings: Settings,
    definition: dict[str, Any] | None = None,
) -> PlaybookRun:
    run = PlaybookRun(
        incident_id=incident.id,
        playbook_version_id=version.id,
        name=version.name,
        key=key,
        state=RUN_RUNNING,
        trigger=trigger,
        started_by=actor.label if actor else "system",
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    run_event(
        session,
        "playbook.started",
        incident,
        actor,
        run_id=run.id,
        playbook=version.name,
        version=version.version,
        title=version.title_vi,
    )
    advance(session, run, incident, definition or version.definition, "0", settings, fresh=True)
    return run


# --- carrying out steps ---------------------------------------------------------------------------------------


def advance(
    session: Session,
    run: PlaybookRun,
    incident: Incident,
    definition: dict[str, Any],
    path: str | None,
    settings: Settings,
    *,
    fresh: bool = False,
) -> None:
    """Carry out steps from `path` until a wait or the end, inside the caller's transaction (`fresh`: a run
    started in it, which has no steps yet)."""
    while path is not None:
        if run.state not in (RUN_RUNNING, RUN_WAITING):
            return
        if not fresh and session.scalar(select(RunStep.id).where(RunStep.run_id == run.id, RunStep.path == path)):
            return  # carried out already: a repeated job does nothing
        step = step_at(definition, path)
        if step is None:
            break
        kind = step_kind(step)
        record = RunStep(run_id=run.id, path=path, kind=kind, at=utcnow())
        session.add(record)
        if not matches(step.get("when"), incident):
            record.outcome = "skipped"
            path = next_path(definition, path)
            continue
        body = step[kind]
        if kind in ("page", "notify"):
            if body.get("repage"):
                _repage(session, run, incident, path, settings)
            else:
                create_page(
                    session,
                    incident=incident,
                    body=body,
                    run=run,
                    path=path,
                    settings=settings,
                    requires_ack=kind == "page",
                    escalation=".e." in path,
                )
        elif kind == "task":
            _task(session, run, incident, body, path)
        elif kind == "request_direction":
            _direction(session, run, incident, body, path)
        elif kind == "wait_for_ack":
            record.outcome = "waiting"
            run.state = RUN_WAITING
            timeout = parse_duration(body["timeout"]) or 0
            jobs.enqueue(
                session,
                WAIT,
                {"run_id": run.id, "path": path},
                run_at=utcnow() + timedelta(seconds=timeout),
                key=f"{WAIT}:{run.id}:{path}",
                incident_id=incident.id,
            )
            session.flush()
            return
        session.flush()
        path = next_path(definition, path)
    run.state, run.finished_at = RUN_DONE, utcnow()
    run_event(session, "playbook.finished", incident, None, run_id=run.id, playbook=run.name)


def _task(session: Session, run: PlaybookRun, incident: Incident, body: dict[str, Any], path: str) -> None:
    org_id = None
    if body.get("organisation"):
        org_id = session.scalar(select(Organisation.id).where(Organisation.code == body["organisation"]))
    elif body.get("system_operator"):
        org_id = directory.system_operator_id(incident)
    due = parse_duration(body["due"]) if "due" in body else None
    task = Task(
        incident_id=incident.id,
        run_id=run.id,
        step_path=path,
        organisation_id=org_id,
        title_vi=body["title_vi"],
        title_en=body.get("title_en"),
        due_at=utcnow() + timedelta(seconds=due) if due is not None else None,
        key=f"{run.id}:{path}",
    )
    session.add(task)
    session.flush()
    org = session.get(Organisation, org_id) if org_id else None
    run_event(
        session,
        "task.created",
        incident,
        None,
        task_id=task.id,
        title=task.title_vi,
        organisation=org.code if org else None,
        due_at=task.due_at.isoformat() if task.due_at else None,
    )


def _direction(session: Session, run: PlaybookRun | None, incident: Incident, body: dict[str, Any], path: str) -> None:
    request = DirectionRequest(
        incident_id=incident.id,
        run_id=run.id if run else None,
        step_path=path,
        question_vi=body["question_vi"],
        question_en=body.get("question_en"),
        requested_by=f"playbook:{run.name}" if run else "system",
        key=f"{run.id}:{path}" if run else None,
    )
    session.add(request)
    session.flush()
    run_event(session, "direction.requested", incident, None, request_id=request.id, question=request.question_vi)


def resolve_target(
    session: Session, incident: Incident, body: dict[str, Any]
) -> tuple[str, str, str, list[Contact], dict[str, int | None]]:
    """(kind, target, label, contacts reached now, the page's contact/group/organisation ids)."""
    now, pick = utcnow(), body.get("pick", "default")
    links: dict[str, int | None] = {"contact_id": None, "group_id": None, "organisation_id": None}
    if "contact" in body:
        contact = session.get(Contact, int(body["contact"]))
        usable = contact is not None and contact.active and contact.erased_at is None
        links["contact_id"] = contact.id if contact else None
        links["organisation_id"] = contact.organisation_id if contact else None
        return "contact", str(body["contact"]), contact.name if contact else "?", [contact] if usable else [], links
    if "group" in body:
        group = session.scalar(
            select(Group).where(Group.code == body["group"]).with_for_update().execution_options(populate_existing=True)
        )
        if group is None:
            return "group", body["group"], body["group"], [], links
        links["group_id"], links["organisation_id"] = group.id, group.organisation_id
        return "group", group.code, group.name_vi, directory.group_contacts(session, group, pick=pick, at=now), links
    if "role" in body:
        return "role", body["role"], body["role"], directory.role_contacts(session, body["role"]), links
    if body.get("system_operator"):
        org_id = directory.system_operator_id(incident)
        org = session.get(Organisation, org_id) if org_id else None
    else:
        org = session.scalar(select(Organisation).where(Organisation.code == body["organisation"]))
    kind = "system_operator" if body.get("system_operator") else "organisation"
    if org is None:
        return kind, str(body.get("organisation") or "operator"), "?", [], links
    links["organisation_id"] = org.id
    return kind, org.code, org.name_vi, directory.organisation_contacts(session, org.id, pick=pick, at=now), links


def create_page(
    session: Session,
    *,
    incident: Incident,
    body: dict[str, Any],
    run: PlaybookRun | None,
    path: str | None,
    settings: Settings,
    requires_ack: bool = True,
    escalation: bool = False,
    actor: Actor | None = None,
    key: str | None = None,
) -> Page:
    """Page a target: one page, a recipient per person reached, a delivery on each one's first usable channel."""
    kind, target, label, contacts, links = resolve_target(session, incident, body)
    now = utcnow()
    page = Page(
        incident_id=incident.id,
        run_id=run.id if run else None,
        step_path=path,
        target_kind=kind,
        target=target,
        target_label=label,
        reason_vi=body.get("reason_vi") or body.get("text_vi"),
        reason_en=body.get("reason_en") or body.get("text_en"),
        requires_ack=requires_ack,
        escalation=escalation,
        state=PAGE_OPEN,
        created_at=now,
        key=key or (f"{run.id}:{path}" if run else None),
        occurrences=service.occurrence_count(session, incident.id),
        **links,
    )
    session.add(page)
    session.flush()
    held, unreachable = [], []
    for contact in contacts:
        recipient = PageRecipient(page_id=page.id, contact_id=contact.id, paged_at=now, state=RECIPIENT_PAGED)
        if _over_limit(session, contact.id, now, settings):
            recipient.state = RECIPIENT_HELD
            recipient.digest_key = _schedule_digest(session, contact.id, page.id, now, settings)
            held.append(contact.name)
        session.add(recipient)
        if (
            recipient.state == RECIPIENT_PAGED
            and queue_delivery(session, page, contact, 0, settings, new=True) is None
        ):
            unreachable.append(contact)
    session.flush()
    run_event(
        session,
        "page.sent" if requires_ack else "notify.sent",
        incident,
        actor,
        page_id=page.id,
        target_kind=kind,
        target=target,
        target_label=label,
        escalation=escalation,
        recipients=[c.name for c in contacts],
        held=held,
        run_id=page.run_id,
    )
    for contact in unreachable:
        run_event(
            session,
            "page.failed",
            incident,
            None,
            note="no channel this deployment has reaches this person",
            page_id=page.id,
            contact=contact.name,
            contact_id=contact.id,
            channel=None,
            final=True,
        )
    if not contacts:
        run_event(
            session,
            "page.failed",
            incident,
            None,
            note="nobody to page: no active contact",
            page_id=page.id,
            target=target,
            final=True,
        )
    return page


def _over_limit(session: Session, contact_id: int, now: datetime, settings: Settings) -> bool:
    """Storm control: this person already got `rate_limit` pages in the window; the rest go into a digest."""
    since = now - timedelta(seconds=settings.rate_window)
    sent = session.scalar(
        select(func.count()).where(
            PageRecipient.contact_id == contact_id,
            PageRecipient.state == RECIPIENT_PAGED,
            PageRecipient.paged_at > since,
        )
    )
    return (sent or 0) >= settings.rate_limit


def _schedule_digest(session: Session, contact_id: int, page_id: int, now: datetime, settings: Settings) -> str:
    """The key of this person's pending digest, or a new digest due `digest_delay` from now."""
    pending = session.scalar(
        select(PageRecipient.digest_key)
        .where(PageRecipient.contact_id == contact_id, PageRecipient.state == RECIPIENT_HELD)
        .limit(1)
    )
    if pending:
        return pending
    key = f"{DIGEST}:{contact_id}:{page_id}"
    jobs.enqueue(
        session,
        DIGEST,
        {"contact_id": contact_id, "digest_key": key},
        run_at=now + timedelta(seconds=settings.digest_delay),
        key=key,
    )
    return key


def usable_channels(contact: Contact, settings: Settings) -> list[str]:
    """The contact's channels, in their order, that this deployment has and the contact has an address for."""
    order = list(contact.channels or directory.DEFAULT_CHANNELS)
    return [
        c
        for c in order
        if c in settings.channels
        and c in registry.ADDRESS_FIELDS
        and getattr(contact, registry.ADDRESS_FIELDS[c], None)
    ]


def queue_delivery(
    session: Session,
    page: Page,
    contact: Contact,
    wave: int,
    settings: Settings,
    after: str | None = None,
    *,
    new: bool = False,
) -> Delivery | None:
    """Queue the delivery of `page` to `contact` on their first usable channel (after `after`) that this wave
    has not used yet (`new`: a page created in this transaction, which has none)."""
    channels = usable_channels(contact, settings)
    if after is not None:
        channels = channels[channels.index(after) + 1 :] if after in channels else []
    for channel in channels:
        exists = None if new else session.scalar(
            select(Delivery.id).where(
                Delivery.page_id == page.id,
                Delivery.contact_id == contact.id,
                Delivery.channel == channel,
                Delivery.wave == wave,
            )
        )  # fmt: skip
        if exists is not None:
            continue
        delivery = Delivery(
            page_id=page.id,
            contact_id=contact.id,
            channel=channel,
            wave=wave,
            state=DELIVERY_QUEUED,
            address=str(getattr(contact, registry.ADDRESS_FIELDS[channel])),
            created_at=utcnow(),
        )
        session.add(delivery)
        session.flush()
        jobs.enqueue(
            session,
            DELIVER,
            {"delivery_id": delivery.id},
            key=f"{DELIVER}:{delivery.id}:0",
            incident_id=page.incident_id,
        )
        return delivery
    return None


def _repage(session: Session, run: PlaybookRun, incident: Incident, path: str, settings: Settings) -> None:
    """Send the run's unacknowledged pages again, as a new wave on each recipient's first channel."""
    pages = session.scalars(
        select(Page).where(Page.run_id == run.id, Page.state == PAGE_OPEN, Page.requires_ack.is_(True))
    ).all()
    for page in pages:
        wave = page.waves
        page.waves += 1
        for recipient in page.recipients:
            if recipient.state == RECIPIENT_PAGED:
                queue_delivery(session, page, recipient.contact, wave, settings)
        run_event(
            session,
            "page.sent",
            incident,
            None,
            page_id=page.id,
            target=page.target,
            target_label=page.target_label,
            escalation=True,
            wave=wave,
            repage=True,
            run_id=run.id,
        )


# --- waiting for acknowledgements ---------------------------------------------------------------------------


def _watched(session: Session, run_id: int, *, lock: bool) -> list[Page]:
    stmt = select(Page).where(Page.run_id == run_id, Page.requires_ack.is_(True)).order_by(Page.id)
    if lock:
        # The page rows are locked by both the ack and the escalation, so an ack beats the escalation it races.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return list(session.scalars(stmt))


def wait_elapsed(*, session: Session, run_id: int, path: str, settings: Settings) -> str:
    """A wait_for_ack's timer fired: continue if everyone acknowledged, else escalate; the outcome."""

    def work() -> str:
        run = session.get(PlaybookRun, run_id, with_for_update=True, populate_existing=True)
        if run is None or run.state != RUN_WAITING:
            return "not waiting"
        record = session.scalar(select(RunStep).where(RunStep.run_id == run.id, RunStep.path == path))
        if record is None or record.outcome != "waiting":
            return record.outcome if record else "unknown step"
        incident = _locked_incident(session, run.incident_id)
        definition = run.version.definition
        pages = [p for p in _watched(session, run.id, lock=True) if p.state == PAGE_OPEN]
        if not pages:
            record.outcome, run.state = "acknowledged", RUN_RUNNING
            advance(session, run, incident, definition, next_path(definition, path), settings)
            return "acknowledged"
        # The wait counts from when the page reached someone, not from when it was queued.
        timeout = timedelta(seconds=parse_duration(step_at(definition, path)["wait_for_ack"]["timeout"]) or 0)
        due = max((p.first_delivered_at or p.created_at) for p in pages) + timeout
        now = utcnow()
        if due > now + timedelta(milliseconds=5):
            n = session.scalar(select(func.count()).where(RunStep.run_id == run.id)) or 0
            jobs.enqueue(
                session,
                WAIT,
                {"run_id": run.id, "path": path},
                run_at=due,
                key=f"{WAIT}:{run.id}:{path}:{n}:{int(due.timestamp() * 1000)}",
                incident_id=incident.id,
            )
            return "postponed"
        record.outcome, run.state = "escalated", RUN_RUNNING
        for page in pages:
            page.escalated_at = now
            run_event(
                session,
                "page.escalated",
                incident,
                None,
                page_id=page.id,
                target=page.target,
                target_label=page.target_label,
                run_id=run.id,
                step=path,
            )
        escalate = step_at(definition, path)["wait_for_ack"].get("escalate")
        advance(
            session, run, incident, definition, f"{path}.e.0" if escalate else next_path(definition, path), settings
        )
        return "escalated"

    return in_transaction(session, work)


def continue_run(*, session: Session, run_id: int, path: str, settings: Settings) -> None:
    """Carry on after a wait whose pages were all acknowledged."""

    def work() -> None:
        run = session.get(PlaybookRun, run_id, with_for_update=True, populate_existing=True)
        if run is None or run.state not in (RUN_RUNNING, RUN_WAITING):
            return
        record = session.scalar(select(RunStep).where(RunStep.run_id == run.id, RunStep.path == path))
        if record is None or record.outcome != "waiting":
            return
        if any(p.state == PAGE_OPEN for p in _watched(session, run.id, lock=True)):
            return
        record.outcome, run.state = "acknowledged", RUN_RUNNING
        incident = _locked_incident(session, run.incident_id)
        definition = run.version.definition
        advance(session, run, incident, definition, next_path(definition, path), settings)

    in_transaction(session, work)


def after_ack(session: Session, page: Page) -> None:
    """In the ack's transaction: if that was the last open page its run waits on, queue the run's next step."""
    if page.run_id is None:
        return
    record = session.scalar(
        select(RunStep).where(RunStep.run_id == page.run_id, RunStep.outcome == "waiting").order_by(RunStep.id.desc())
    )
    if record is None:
        return
    if any(p.state == PAGE_OPEN for p in _watched(session, page.run_id, lock=False)):
        return
    jobs.enqueue(
        session,
        CONTINUE,
        {"run_id": page.run_id, "path": record.path},
        key=f"{CONTINUE}:{page.run_id}:{record.path}",
        incident_id=page.incident_id,
    )


# --- messages -----------------------------------------------------------------------------------------------


def _above(tlp: str, maximum: str) -> bool:
    return TLP_ORDER.index(str(tlp)) > TLP_ORDER.index(maximum) if str(tlp) in TLP_ORDER else True


def compose(page: Page, incident: Incident, contact: Contact, channel: str, wave: int, settings: Settings) -> Message:
    """The page in the contact's language; above the channel's TLP only the reference and the link."""
    until = ack_link_until(settings)
    link = ack_url(settings, page.id, contact.id, until)
    en = contact.language == "en"
    drill = (DRILL_EN if en else f"{DRILL_VI} {DRILL_EN}") if incident.exercise else ""
    restricted = _above(incident.tlp, settings.max_tlp.get(channel, "green"))
    system: System | None = incident.affected_system
    title = "" if restricted else incident.title
    reason = (page.reason_en or page.reason_vi) if en else page.reason_vi
    again = (" (nhắc lại / repeat)" if not en else " (repeat)") if wave else ""
    if en:
        subject = f"{drill} [{incident.ref}] Page: {title or 'TLP:' + str(incident.tlp).upper()}{again}".strip()
        lines = [
            f"{drill} You are paged for incident {incident.ref}.".strip(),
            *(
                [
                    f"Title: {incident.title}",
                    f"Category: {incident.category} · priority {incident.priority} · class {incident.incident_class}",
                    f"System: {system.name if system else '-'}",
                ]
                if not restricted
                else [f"TLP:{str(incident.tlp).upper()}: open the link to read the incident."]
            ),
            *([f"Asked of you: {reason}"] if reason and not restricted else []),
            f"Occurrences so far: {page.occurrences}" if page.occurrences > 1 else "",
            f"Acknowledge (confirm on the page that opens): {link}",
            f"The link works until {local_time(until)} (Vietnam time).",
        ]
    else:
        subject = f"{drill} [{incident.ref}] Gọi trực: {title or 'TLP:' + str(incident.tlp).upper()}{again}".strip()
        lines = [
            f"{drill} Đồng chí được gọi trực xử lý sự cố {incident.ref}.".strip(),
            *(
                [
                    f"Tiêu đề: {incident.title}",
                    f"Loại: {incident.category} · ưu tiên {incident.priority} · phân loại {incident.incident_class}",
                    f"Hệ thống: {system.name if system else '-'}",
                ]
                if not restricted
                else [f"TLP:{str(incident.tlp).upper()}: mở đường dẫn để xem sự cố."]
            ),
            *([f"Đề nghị: {reason}"] if reason and not restricted else []),
            f"Số lần ghi nhận: {page.occurrences}" if page.occurrences > 1 else "",
            f"Nhận xử lý (xác nhận trên trang mở ra): {link}",
            f"Đường dẫn có hiệu lực đến {local_time(until)} (giờ Việt Nam).",
            "",
            f"{DRILL_EN + ' ' if incident.exercise else ''}Page for incident {incident.ref}. Acknowledge: {link}",
            f"The link works until {local_time(until)} (Vietnam time).",
        ]
    text = "\n".join(line for line in lines if line is not None)
    if channel == "sms":
        text = f"{drill} {incident.ref} P{str(incident.priority)[-1]} {title[:80]} {link}".strip()
    data = {
        "type": "page",
        "page_id": page.id,
        "wave": wave,
        "incident": {
            "id": incident.id,
            "ref": incident.ref,
            "status": str(incident.status),
            "tlp": str(incident.tlp),
            "exercise": incident.exercise,
            **(
                {}
                if restricted
                else {"title": incident.title, "category": str(incident.category), "priority": str(incident.priority)}
            ),
        },
        "reason": None if restricted else reason,
        "ack_url": link,
        "incident_url": f"{settings.base_url}/api/v1/incidents/{incident.id}",
        "drill": incident.exercise,
    }
    return Message(
        to="",
        subject=subject,
        text=text,
        key=f"page.{page.id}.{contact.id}.{wave}",
        data=data,
        secret=contact.webhook_secret,
    )


# --- deliveries -----------------------------------------------------------------------------------------------


def _delivery_parts(session: Session, delivery_id: int) -> tuple[Delivery, Page, Incident, Contact] | None:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return None
    page = session.get(Page, delivery.page_id)
    incident = session.scalar(
        select(Incident).where(Incident.id == page.incident_id).options(selectinload(Incident.affected_system))
    )
    return delivery, page, incident, session.get(Contact, delivery.contact_id)


def deliver(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Send one delivery (no transaction open during the call), then record what happened."""
    settings = Settings.from_config(ctx.config)
    delivery_id = job.payload["delivery_id"]
    with ctx.sessions() as session:
        parts = _delivery_parts(session, delivery_id)
        if parts is None:
            return
        delivery, page, incident, contact = parts
        if delivery.state != DELIVERY_QUEUED:
            return  # delivered or given up already: a repeated job sends nothing
        if page.state == PAGE_CANCELLED:
            _give_up(ctx, delivery_id, "the page was cancelled", notify=False)
            return
        message = compose(page, incident, contact, delivery.channel, delivery.wave, settings)
        message = Message(
            to=delivery.address,
            subject=message.subject,
            text=message.text,
            key=message.key,
            data=message.data,
            secret=message.secret,
        )
        channel = delivery.channel
    notifier = ctx.notifiers.get(channel)
    if notifier is None:
        _failed(ctx, delivery_id, f"the {channel} channel is not configured", permanent=True, settings=settings)
        return
    try:
        receipt = notifier.send(message)
    except DeliveryFailed as exc:
        _failed(ctx, delivery_id, str(exc), permanent=exc.permanent, settings=settings)
        return
    _delivered(ctx, delivery_id, receipt, job)


def _locked_delivery(session: Session, delivery_id: int) -> Delivery:
    return session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)


def _delivered(ctx: jobs.JobContext, delivery_id: int, receipt: str, job: jobs.ClaimedJob | None = None) -> None:
    """Record a delivery's success and, given its job, end the job in the same transaction."""
    with ctx.sessions() as session:

        def work() -> None:
            if job is not None:
                jobs.finish(session, job)
            delivery = _locked_delivery(session, delivery_id)
            if delivery.state == DELIVERY_DELIVERED:
                return  # a repeat after a crash: the first success was recorded, its event written once
            now = utcnow()
            delivery.state, delivery.delivered_at = DELIVERY_DELIVERED, now
            delivery.attempts += 1
            delivery.message_id, delivery.last_error = receipt[:300], None
            page = session.get(Page, delivery.page_id, with_for_update=True, populate_existing=True)
            if page.first_delivered_at is None:
                page.first_delivered_at = now
            incident = session.get(Incident, page.incident_id)
            contact = session.get(Contact, delivery.contact_id)
            run_event(
                session,
                "page.delivered",
                incident,
                None,
                page_id=page.id,
                delivery_id=delivery.id,
                channel=delivery.channel,
                contact=contact.name,
                contact_id=contact.id,
                wave=delivery.wave,
                attempts=delivery.attempts,
                message_id=delivery.message_id,
            )

        in_transaction(session, work)


def _failed(ctx: jobs.JobContext, delivery_id: int, error: str, *, permanent: bool, settings: Settings) -> None:
    with ctx.sessions() as session:

        def work() -> None:
            delivery = _locked_delivery(session, delivery_id)
            if delivery.state != DELIVERY_QUEUED:
                return
            delivery.attempts += 1
            delivery.last_error = error[:2000]
            page = session.get(Page, delivery.page_id)
            contact = session.get(Contact, delivery.contact_id)
            following = usable_channels(contact, settings)
            has_next = delivery.channel in following and following.index(delivery.channel) < len(following) - 1
            limit = settings.channel_attempts if has_next else settings.max_attempts
            if not permanent and delivery.attempts < limit and page.state == PAGE_OPEN:
                wait = min(settings.retry_cap, settings.retry_seconds * 2 ** (delivery.attempts - 1))
                jobs.enqueue(
                    session,
                    DELIVER,
                    {"delivery_id": delivery.id},
                    run_at=utcnow() + timedelta(seconds=wait),
                    key=f"{DELIVER}:{delivery.id}:{delivery.attempts}",
                    incident_id=page.incident_id,
                )
                return
            delivery.state = DELIVERY_FAILED
            incident = session.get(Incident, page.incident_id)
            fallback = queue_delivery(session, page, contact, delivery.wave, settings, after=delivery.channel)
            run_event(
                session,
                "page.failed",
                incident,
                None,
                note=error[:500],
                page_id=page.id,
                delivery_id=delivery.id,
                channel=delivery.channel,
                contact=contact.name,
                contact_id=contact.id,
                attempts=delivery.attempts,
                next_channel=fallback.channel if fallback else None,
                final=fallback is None,
            )

        in_transaction(session, work)


def _give_up(ctx: jobs.JobContext, delivery_id: int, why: str, *, notify: bool) -> None:
    with ctx.sessions() as session:

        def work() -> None:
            delivery = _locked_delivery(session, delivery_id)
            if delivery.state == DELIVERY_QUEUED:
                delivery.state, delivery.last_error = DELIVERY_FAILED, why

        in_transaction(session, work)


def send_digest(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The pages held back from one person by the storm limit, in one message; then marked as digested."""
    settings = Settings.from_config(ctx.config)
    key, contact_id = job.payload["digest_key"], job.payload["contact_id"]
    with ctx.sessions() as session:
        contact = session.get(Contact, contact_id)
        held = session.scalars(
            select(PageRecipient)
            .where(
                PageRecipient.contact_id == contact_id,
                PageRecipient.digest_key == key,
                PageRecipient.state == RECIPIENT_HELD,
            )
            .order_by(PageRecipient.id)
        ).all()
        if not held or contact is None:
            return
        items, incidents, until = [], {}, ack_link_until(settings)
        for r in held:
            page = session.get(Page, r.page_id)
            incident = session.get(Incident, page.incident_id)
            incidents[incident.id] = incident.ref
            shown = incident.title if not _above(incident.tlp, settings.max_tlp.get("email", "amber")) else "TLP"
            drill = f"{DRILL_VI} " if incident.exercise else ""
            link = ack_url(settings, page.id, contact_id, until)
            items.append(f"- {drill}{incident.ref} ({incident.priority}) {shown}: {link}")
        channels = usable_channels(contact, settings)
        held_ids = [r.id for r in held]
    if not channels:
        raise jobs.PermanentError(f"contact {contact_id} has no usable channel for the digest")
    channel = channels[0]
    text = (
        f"Tổng hợp {len(items)} lần gọi trực bị gộp (vượt {settings.rate_limit} lần trong "
        f"{int(settings.rate_window // 60)} phút) / Digest of {len(items)} held pages:\n"
        + "\n".join([*items, f"Đường dẫn có hiệu lực đến / Links work until {local_time(until)} (giờ Việt Nam)."])
    )
    subject = f"[{len(items)}] Tổng hợp gọi trực / Page digest: {', '.join(sorted(set(incidents.values())))[:150]}"
    message = Message(
        to=str(getattr(contact, registry.ADDRESS_FIELDS[channel])),
        subject=subject,
        text=text,
        key=key,
        data={"type": "digest", "pages": held_ids, "text": text},
        secret=contact.webhook_secret,
    )
    notifier = ctx.notifiers[channel]
    try:
        notifier.send(message)
    except DeliveryFailed as exc:
        if exc.permanent:
            raise jobs.PermanentError(str(exc)) from exc
        raise
    with ctx.sessions() as session:

        def work() -> None:
            rows = session.scalars(
                select(PageRecipient)
                .where(PageRecipient.id.in_(held_ids), PageRecipient.state == RECIPIENT_HELD)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
            for r in rows:
                r.state = RECIPIENT_DIGESTED
            # Pages held while this digest was being sent go into the next one.
            late = session.scalars(
                select(PageRecipient).where(PageRecipient.digest_key == key, PageRecipient.state == RECIPIENT_HELD)
            ).all()
            if late:
                again = f"{key}:{late[0].id}"
                for r in late:
                    r.digest_key = again
                jobs.enqueue(
                    session,
                    DIGEST,
                    {"contact_id": contact_id, "digest_key": again},
                    run_at=utcnow() + timedelta(seconds=settings.digest_delay),
                    key=again,
                )
            for incident_id in incidents:
                incident = session.get(Incident, incident_id)
                run_event(
                    session,
                    "digest.sent",
                    incident,
                    None,
                    contact=contact.name,
                    contact_id=contact_id,
                    channel=channel,
                    pages=len(held_ids),
                    digest_key=key,
                )

        in_transaction(session, work)


def focal_check(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Hourly: ask unconfirmed focal points "still your number?", alert the standing body after 24 h."""
    settings = Settings.from_config(ctx.config)
    with ctx.sessions() as session:

        def work() -> list[int]:
            now = utcnow()
            late = directory.unconfirmed(session, older_than=timedelta(hours=settings.focal_hours), now=now)
            alerted = []
            for contact in late:
                if contact.unconfirmed_alerted_at is None:
                    contact.unconfirmed_alerted_at = now
                    alerted.append(contact.id)
            if alerted:
                record_event(
                    session,
                    kind="directory.unconfirmed",
                    actor=None,
                    note=f"{len(alerted)} đầu mối chưa xác nhận thông tin liên lạc quá {settings.focal_hours:g} giờ",
                    data={"ref": None, "status": None, "contacts": alerted},
                )
            # "Still your number?": ask whoever has not confirmed since the last change (again each day).
            asked_before = now - timedelta(hours=24)
            for contact in directory.unconfirmed(session, older_than=timedelta(0), now=now):
                if contact.confirm_requested_at is None or contact.confirm_requested_at < asked_before:
                    contact.confirm_requested_at = now
                    jobs.enqueue(session, CONFIRM, {"contact_id": contact.id},
                                 key=f"{CONFIRM}:{contact.id}:{now:%Y-%m-%dT%H}")  # fmt: skip
            schedule_focal_check(session, after=job.run_at)
            return alerted

        in_transaction(session, work)


def confirm_token(secret: str, contact_id: int) -> str:
    """The signed link a person follows to confirm their details."""
    return f"{contact_id}-{_mac(secret, 'confirm', contact_id)}"


def read_confirm_token(secret: str, token: str) -> int | None:
    head, _, mac = token.partition("-")
    if not head.isdigit() or not hmac.compare_digest(mac, _mac(secret, "confirm", int(head))):
        return None
    return int(head)


def send_confirm_request(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Ask one person whether the directory still reaches them, with a link whose POST confirms."""
    settings = Settings.from_config(ctx.config)
    with ctx.sessions() as session:
        contact = session.get(Contact, job.payload["contact_id"])
        if contact is None or not contact.active or contact.erased_at is not None:
            return
        channels = usable_channels(contact, settings)
        if not channels:
            # Nothing reaches them: the 24-hour report to the standing body is what follows.
            log.warning("contact %s has no channel to ask for confirmation on", contact.id)
            return
        channel = channels[0]
        address = str(getattr(contact, registry.ADDRESS_FIELDS[channel]))
        link = f"{settings.base_url}/directory/confirm/{confirm_token(settings.secret_key, contact.id)}"
        text = (
            f"Ban Chỉ đạo ứng cứu sự cố: đề nghị đồng chí {contact.name} xác nhận thông tin liên lạc "
            f"(điện thoại {contact.phone or '-'}, e-mail {contact.email or '-'}) vẫn đúng: {link}\n"
            f"The steering board asks you to confirm your contact details are still right: {link}"
        )
    message = Message(to=address, subject="Xác nhận thông tin đầu mối / Are these still your details?", text=text,
                      key=job.idempotency_key or f"{CONFIRM}:{contact.id}", data={"type": "confirm", "url": link},
                      secret=contact.webhook_secret)  # fmt: skip
    try:
        ctx.notifiers[channel].send(message)
    except DeliveryFailed as exc:
        if exc.permanent:
            raise jobs.PermanentError(str(exc)) from exc
        raise


def schedule_focal_check(session: Session, *, after: datetime | None = None) -> None:
    slot = (after or utcnow()) + timedelta(hours=1)
    slot = slot.replace(minute=5, second=0, microsecond=0)
    jobs.enqueue(session, FOCAL, run_at=slot, key=f"{FOCAL}:{slot:%Y-%m-%dT%H}")


# --- job kinds ------------------------------------------------------------------------------------------------


@jobs.job_kind(EVALUATE, max_attempts=10, lease_seconds=30)
def _evaluate_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    with ctx.sessions() as session:
        evaluate_incident(
            session=session, incident_id=job.payload["incident_id"], settings=Settings.from_config(ctx.config)
        )


@jobs.job_kind(WAIT, max_attempts=10, lease_seconds=30)
def _wait_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    settings = Settings.from_config(ctx.config)
    if settings.escalation_grace > 0:
        # Acks sent in the last instant (a button pressed, a form posted) get this long to land first.
        time.sleep(settings.escalation_grace)
    with ctx.sessions() as session:
        outcome = wait_elapsed(
            session=session, run_id=job.payload["run_id"], path=job.payload["path"], settings=settings
        )
    log.info("wait %s of run %s: %s", job.payload["path"], job.payload["run_id"], outcome)


@jobs.job_kind(CONTINUE, max_attempts=10, lease_seconds=30)
def _continue_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    with ctx.sessions() as session:
        continue_run(
            session=session,
            run_id=job.payload["run_id"],
            path=job.payload["path"],
            settings=Settings.from_config(ctx.config),
        )


# Retries are the delivery's own (a new job per attempt, PAGING_RETRY_*), so the job itself rarely fails.
jobs.job_kind(DELIVER, max_attempts=3, lease_seconds=30)(deliver)
jobs.job_kind(DIGEST, max_attempts=10, lease_seconds=30)(send_digest)
jobs.job_kind(FOCAL, max_attempts=3, lease_seconds=60)(focal_check)
jobs.job_kind(CONFIRM, max_attempts=8, lease_seconds=30)(send_confirm_request)


def configure(config: dict[str, Any]) -> None:
    """Apply `PAGING_LEASE_SECONDS` to paging's jobs: a killed worker's sends are taken up again this soon."""
    from dataclasses import replace

    lease = config.get("PAGING_LEASE_SECONDS")
    if lease:
        for name in (DELIVER, DIGEST, WAIT, CONTINUE, EVALUATE):
            jobs.KINDS[name] = replace(jobs.KINDS[name], lease=timedelta(seconds=float(lease)))


add_listener(on_events)
