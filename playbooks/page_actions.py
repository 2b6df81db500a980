"""The desk's hand on a page from the web: page again now, and what paging has done and will do for an incident.

Acknowledging and asking for support are `playbooks.service.acknowledge_page` and `request_support`, the use
cases the Telegram buttons and e-mail links call; this module adds sending an open page again and the read model
the incident page shows (deliveries per channel, and the escalation steps still to come with their times).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from incidents.access import Actor, can_see
from incidents.base import MAX_ID
from incidents.errors import Conflict, NotFound
from incidents.models import Incident, Job
from incidents.policy import Capability, require
from incidents.uow import in_transaction
from playbooks.models import (
    PAGE_OPEN,
    RUN_WAITING,
    Delivery,
    Page,
    PlaybookRun,
    RunStep,
)
from playbooks.paging import send_again
from playbooks.settings import Settings
from playbooks.spec import TARGET_KEYS
from playbooks.steps import WAIT, parse_duration, step_at, step_kind


def repage(*, session: Session, page_id: int, actor: Actor, settings: Settings, note: str | None = None) -> Page:
    """Send an open page again, as a new wave to each recipient not held back (what a playbook's `repage` does)."""
    require(actor, Capability.PAGE_BY_HAND, "only admins and operators page by hand")

    def work() -> Page:
        if page_id > MAX_ID:  # beyond BIGINT: PostgreSQL would refuse the parameter, and it names nothing
            raise NotFound(f"no page {page_id}")
        page = session.get(Page, page_id, with_for_update=True, populate_existing=True)
        if page is None or not can_see(session, actor, page.incident_id):
            raise NotFound(f"no page {page_id}")
        if page.state != PAGE_OPEN:
            raise Conflict(f"the page is {page.state}")
        incident = session.get(Incident, page.incident_id)
        send_again(session, page, incident, actor, settings, note=(note or "").strip() or None,
                   escalation=page.escalation, via="web")  # fmt: skip
        return page

    return in_transaction(session, work)


def deliveries_by_page(session: Session, actor: Actor, incident_id: int) -> dict[int, list[Delivery]]:
    """Every delivery of the incident's pages (who, which channel, which wave, delivered or not), per page."""
    require(actor, Capability.READ_RESPONSE)
    if not can_see(session, actor, incident_id):
        raise NotFound(f"no incident {incident_id}")
    rows = session.scalars(
        select(Delivery)
        .join(Page, Page.id == Delivery.page_id)
        .where(Page.incident_id == incident_id)
        .options(selectinload(Delivery.contact))
        .order_by(Delivery.id)
        .limit(2000)
    )
    out: dict[int, list[Delivery]] = {}
    for delivery in rows:
        out.setdefault(delivery.page_id, []).append(delivery)
    return out


@dataclass(frozen=True)
class PlannedStep:
    """A step a waiting playbook will take at `at` unless its pages are acknowledged first."""

    at: datetime
    kind: str  # page, notify, task, request_direction
    target_kind: str | None  # contact, group, organisation, role, system_operator; None for the other kinds
    target: str | None  # the target's code, a task's title or a question; None for a re-page
    repage: bool = False
    reason_vi: str | None = None
    reason_en: str | None = None
    playbook: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _describe(step: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = step_kind(step)
    return kind, step[kind] or {}


def _planned(steps: list[dict[str, Any]], at: datetime, playbook: str) -> list[PlannedStep]:
    """The escalation list's steps with when each would happen; a nested wait pushes the ones after it later."""
    out: list[PlannedStep] = []
    for step in steps:
        kind, body = _describe(step)
        if kind == "wait_for_ack":
            at = at + timedelta(seconds=parse_duration(body["timeout"]) or 0)
            out += _planned(body.get("escalate") or [], at, playbook)
            continue
        target_kind = next((k for k in TARGET_KEYS if k in body), None)
        target = str(body[target_kind]) if target_kind else None
        if kind == "task":
            target = body.get("title_vi")
        elif kind == "request_direction":
            target = body.get("question_vi")
        out.append(PlannedStep(at=at, kind=kind, target_kind=target_kind, target=target,
                               repage=bool(body.get("repage")), reason_vi=body.get("reason_vi"),
                               reason_en=body.get("reason_en"), playbook=playbook))  # fmt: skip
    return out


def escalation_plan(session: Session, actor: Actor, incident_id: int) -> list[PlannedStep]:
    """What the incident's waiting playbooks will do, and when, if their open pages stay unacknowledged."""
    require(actor, Capability.READ_RESPONSE)
    if not can_see(session, actor, incident_id):
        raise NotFound(f"no incident {incident_id}")
    runs = session.scalars(
        select(PlaybookRun)
        .where(PlaybookRun.incident_id == incident_id, PlaybookRun.state == RUN_WAITING)
        .options(selectinload(PlaybookRun.version))
        .order_by(PlaybookRun.id)
    ).all()
    plan: list[PlannedStep] = []
    for run in runs:
        waiting = session.scalar(
            select(RunStep).where(RunStep.run_id == run.id, RunStep.outcome == "waiting").order_by(RunStep.id.desc())
        )
        if waiting is None:
            continue
        open_pages = session.scalars(
            select(Page).where(Page.run_id == run.id, Page.requires_ack.is_(True), Page.state == PAGE_OPEN)
        ).all()
        if not open_pages:
            continue
        definition = run.version.definition
        body = step_at(definition, waiting.path)["wait_for_ack"]
        # The timer job holds when the wait ends; it counts from when the pages reached someone.
        timers = session.execute(
            select(Job.run_at, Job.payload).where(
                Job.kind == WAIT, Job.incident_id == incident_id, Job.state == "queued"
            )
        ).all()
        due = max((at for at, payload in timers if payload.get("run_id") == run.id), default=None)
        if due is None:
            timeout = timedelta(seconds=parse_duration(body["timeout"]) or 0)
            due = max((p.first_delivered_at or p.created_at) for p in open_pages) + timeout
        plan += _planned(body.get("escalate") or [], due, run.version.title_vi)
    return sorted(plan, key=lambda s: s.at)
