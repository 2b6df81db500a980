"""Pages: who a step reaches, one page with a recipient per person, the storm limit and its digests.

A page is written in the transaction of the step (or the person) that asks for it, with a delivery queued on
each recipient's first usable channel; a person already paged `rate_limit` times in the window gets the rest
in one digest instead.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.access import Actor
from incidents.base import utcnow
from incidents.models import Incident, Organisation
from incidents.queries import occurrence_count
from incidents.uow import in_transaction, transaction_memo
from notifiers import registry
from notifiers.base import DeliveryFailed, Message
from playbooks import messages, oncall, timeline
from playbooks.delivery import queue_delivery, usable_channels
from playbooks.links import ack_link_until, ack_url, local_time
from playbooks.models import (
    PAGE_OPEN,
    RECIPIENT_DIGESTED,
    RECIPIENT_HELD,
    RECIPIENT_PAGED,
    Contact,
    Group,
    Page,
    PageRecipient,
    PlaybookRun,
)
from playbooks.settings import Settings

# Job kind; a digest's job key is the digest key its held recipients carry.
DIGEST = "page.digest"


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
        found = select(Group).where(Group.code == body["group"])
        group = session.scalar(found.execution_options(populate_existing=True))
        if group is None:
            return "group", body["group"], body["group"], [], links
        links["group_id"], links["organisation_id"] = group.id, group.organisation_id
        return "group", group.code, group.name_vi, oncall.group_contacts(session, group, pick=pick, at=now), links
    if "role" in body:
        return "role", body["role"], body["role"], oncall.role_contacts(session, body["role"]), links
    if body.get("system_operator"):
        org_id = oncall.system_operator_id(incident)
        org = session.get(Organisation, org_id) if org_id else None
    else:
        by_code = transaction_memo(session, "organisation_by_code")
        if body["organisation"] not in by_code:
            by_code[body["organisation"]] = session.scalar(
                select(Organisation).where(Organisation.code == body["organisation"])
            )
        org = by_code[body["organisation"]]
    kind = "system_operator" if body.get("system_operator") else "organisation"
    if org is None:
        return kind, str(body.get("organisation") or "operator"), "?", [], links
    links["organisation_id"] = org.id
    # Who is on call is read once per organisation in a transaction: a batch of filings pages from one reading.
    on_call = transaction_memo(session, "organisation_contacts")
    if (org.id, pick) not in on_call:
        on_call[org.id, pick] = oncall.organisation_contacts(session, org.id, pick=pick, at=now)
    return kind, org.code, org.name_vi, list(on_call[org.id, pick]), links


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
        occurrences=occurrence_count(session, incident.id),
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
        if recipient.state == RECIPIENT_PAGED and queue_delivery(session, page, contact, 0, settings, new=True) is None:
            unreachable.append(contact)
    session.flush()
    timeline.record(
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
        timeline.record(
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
        timeline.record(
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


def repage(session: Session, run: PlaybookRun, incident: Incident, settings: Settings) -> None:
    """Send the run's unacknowledged pages again, as a new wave on each recipient's first channel."""
    pages = session.scalars(
        select(Page).where(Page.run_id == run.id, Page.state == PAGE_OPEN, Page.requires_ack.is_(True))
    ).all()
    for page in pages:
        send_again(session, page, incident, None, settings, escalation=True, run_id=run.id)


def send_again(
    session: Session, page: Page, incident: Incident, actor: Actor | None, settings: Settings, **recorded: Any
) -> int:
    """Page everyone who has not acknowledged yet once more, as a new wave on each one's first channel; its number."""
    wave = page.waves
    page.waves += 1
    for recipient in page.recipients:
        if recipient.state == RECIPIENT_PAGED:
            queue_delivery(session, page, recipient.contact, wave, settings)
    timeline.record(
        session, "page.sent", incident, actor, page_id=page.id, target=page.target, target_label=page.target_label,
        wave=wave, repage=True, **recorded,
    )  # fmt: skip
    return wave


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
            items.append(messages.digest_item(incident, ack_url(settings, page.id, contact_id, until), settings))
        channels = usable_channels(contact, settings)
        held_ids = [r.id for r in held]
    if not channels:
        raise jobs.PermanentError(f"contact {contact_id} has no usable channel for the digest")
    channel = channels[0]
    subject, text = messages.digest(items, set(incidents.values()), local_time(until), settings)
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
                timeline.record(
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
