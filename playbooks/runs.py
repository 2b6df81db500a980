"""Playbook runs: started (automatically or by a person), carried out step by step, stopped, woken by acks.

Every step runs inside a transaction that also writes its events and the jobs it causes; a step already
carried out (`RunStep` has its path) is never carried out again, so a repeated job pages nobody twice.
"""

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, load_only, selectinload

from incidents import jobs
from incidents.access import Actor, can_see
from incidents.base import utcnow
from incidents.enums import TERMINAL_STATUSES
from incidents.errors import Conflict, FieldError, NotFound, ValidationFailed
from incidents.models import Incident
from incidents.policy import Capability, require
from incidents.queries import get_incident
from incidents.uow import in_transaction, transaction_memo
from playbooks import timeline
from playbooks.conditions import matches
from playbooks.models import (
    PAGE_CANCELLED,
    PAGE_OPEN,
    RUN_DONE,
    RUN_RUNNING,
    RUN_STOPPED,
    RUN_WAITING,
    Page,
    PlaybookRun,
    PlaybookVersion,
    RunStep,
)
from playbooks.settings import Settings
from playbooks.steps import STEPS, WAIT, StepCall, next_path, parse_duration, step_at, step_kind

log = logging.getLogger("ucsc.playbooks")

# Job kind: carry on after a wait whose pages were all acknowledged.
CONTINUE = "playbooks.continue"
# Versions are never edited, so a definition is the same wherever its digest is: a filing reads the newest
# versions' few columns and takes their parsed definitions from here, not the YAML and JSON of every playbook.
_DEFINITIONS: dict[str, dict[str, Any]] = {}


def latest_versions(session: Session) -> list[PlaybookVersion]:
    """The newest version of each playbook name."""
    newest = select(PlaybookVersion.name, func.max(PlaybookVersion.version).label("v")).group_by(PlaybookVersion.name)
    sub = newest.subquery()
    stmt = select(PlaybookVersion).join(
        sub, (PlaybookVersion.name == sub.c.name) & (PlaybookVersion.version == sub.c.v)
    )
    return list(session.scalars(stmt.order_by(PlaybookVersion.name)))


def newest_for_starting(session: Session) -> list[tuple[PlaybookVersion, dict[str, Any]]]:
    """The newest version of each enabled playbook with its definition (read once in a transaction)."""
    memo = transaction_memo(session, "newest_for_starting")
    if "versions" not in memo:
        memo["versions"] = _newest_for_starting(session)
    return memo["versions"]


def _newest_for_starting(session: Session) -> list[tuple[PlaybookVersion, dict[str, Any]]]:
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


def locked_incident(session: Session, incident_id: int) -> Incident | None:
    """The incident, its row locked for this transaction (a key-share lock: filings beside it still go on)."""
    stmt = (
        select(Incident)
        .where(Incident.id == incident_id)
        .options(selectinload(Incident.affected_system))
        .with_for_update(of=Incident, key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalar(stmt)


def start_run(
    *, session: Session, incident_id: int, name: str, actor: Actor, settings: Settings, version: int | None = None
) -> PlaybookRun:
    """A person starts a playbook on an incident by hand (any trigger), pinned to its newest or a named version."""

    def work() -> PlaybookRun:
        incident = get_incident(session, actor, incident_id, for_update=True)
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
        return start(session, incident, chosen, key, "manual", actor, settings)

    require(actor, Capability.RUN_PLAYBOOKS, "only admins and operators start playbooks")
    return in_transaction(session, work)


def stop_run(*, session: Session, run_id: int, actor: Actor) -> PlaybookRun:
    """A person stops a run: no further step is carried out; its open pages are cancelled."""
    require(actor, Capability.RUN_PLAYBOOKS, "only admins and operators stop playbooks")

    def work() -> PlaybookRun:
        run = session.get(PlaybookRun, run_id, with_for_update=True, populate_existing=True)
        if run is None or not can_see(session, actor, run.incident_id):
            raise NotFound(f"no run {run_id}")
        incident = get_incident(session, actor, run.incident_id)
        if run.state in (RUN_RUNNING, RUN_WAITING):
            stop(session, run, incident, actor, "stopped by hand")
        return run

    return in_transaction(session, work)


def stop(session: Session, run: PlaybookRun, incident: Incident, actor: Actor | None, why: str) -> None:
    """Stop `run` in the caller's transaction: no further step, its open pages cancelled."""
    run.state, run.finished_at = RUN_STOPPED, utcnow()
    run.stopped_by = actor.label if actor else "system"
    session.execute(update(Page).where(Page.run_id == run.id, Page.state == PAGE_OPEN).values(state=PAGE_CANCELLED))
    timeline.record(session, "playbook.stopped", incident, actor, note=why, run_id=run.id, playbook=run.name)


def start(
    session: Session,
    incident: Incident,
    version: PlaybookVersion,
    key: str,
    trigger: str,
    actor: Actor | None,
    settings: Settings,
    definition: dict[str, Any] | None = None,
) -> PlaybookRun:
    """Start a run of `version` on `incident` in the caller's transaction and carry out its first steps."""
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
    timeline.record(
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
        waits = STEPS[kind](StepCall(session, run, incident, kind, step[kind], path, record, settings))
        session.flush()
        if waits:
            return
        path = next_path(definition, path)
    run.state, run.finished_at = RUN_DONE, utcnow()
    timeline.record(session, "playbook.finished", incident, None, run_id=run.id, playbook=run.name)


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
        incident = locked_incident(session, run.incident_id)
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
            timeline.record(
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
        incident = locked_incident(session, run.incident_id)
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


def wait_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The `playbooks.wait` job: a wait_for_ack's timer."""
    settings = Settings.from_config(ctx.config)
    if settings.escalation_grace > 0:
        # Acks sent in the last instant (a button pressed, a form posted) get this long to land first.
        time.sleep(settings.escalation_grace)
    with ctx.sessions() as session:
        outcome = wait_elapsed(
            session=session, run_id=job.payload["run_id"], path=job.payload["path"], settings=settings
        )
    log.info("wait %s of run %s: %s", job.payload["path"], job.payload["run_id"], outcome)


def continue_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The `playbooks.continue` job: the last watched page was acknowledged."""
    with ctx.sessions() as session:
        continue_run(
            session=session,
            run_id=job.payload["run_id"],
            path=job.payload["path"],
            settings=Settings.from_config(ctx.config),
        )
