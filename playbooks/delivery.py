"""Deliveries: a page queued on a person's first usable channel, sent by a job, recorded, retried or handed on.

The send happens with no transaction open; its outcome is recorded in a second transaction. A failed channel
is retried with backoff, then the person's next channel gets the page.
"""

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from incidents import jobs
from incidents.base import utcnow
from incidents.models import Incident
from incidents.uow import in_transaction
from notifiers import outbox, registry
from notifiers.base import DeliveryFailed, Queued
from playbooks import timeline
from playbooks.messages import compose
from playbooks.models import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_QUEUED,
    PAGE_CANCELLED,
    PAGE_OPEN,
    Contact,
    Delivery,
    Page,
)
from playbooks.settings import Settings

# Job kind; a delivery's jobs are keyed `page.deliver:<delivery id>:<attempts so far>`.
DELIVER = "page.deliver"


def usable_channels(contact: Contact, settings: Settings) -> list[str]:
    """The contact's channels, in their order, that this deployment has and the contact has an address for."""
    # The local outbox, when on, is everyone's last resort: a page then never fails for want of a channel.
    order = list(dict.fromkeys([*(contact.channels or registry.DEFAULT_CHANNELS), outbox.NAME]))
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
            _give_up(ctx, delivery_id, "the page was cancelled")
            return
        message = replace(compose(page, incident, contact, delivery.channel, delivery.wave, settings),
                          to=delivery.address)  # fmt: skip
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
    if isinstance(receipt, Queued):
        return  # delivered means the channel accepted it: the channel records that when it happens
    _delivered(ctx, delivery_id, receipt, job)


def _locked_delivery(session: Session, delivery_id: int) -> Delivery:
    return session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)


def _delivered(ctx: jobs.JobContext, delivery_id: int, receipt: str, job: jobs.ClaimedJob) -> None:
    """Record a delivery's success and end its job in the same transaction."""
    with ctx.sessions() as session:

        def work() -> None:
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
            timeline.record(
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
            timeline.record(
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


def _give_up(ctx: jobs.JobContext, delivery_id: int, why: str) -> None:
    with ctx.sessions() as session:

        def work() -> None:
            delivery = _locked_delivery(session, delivery_id)
            if delivery.state == DELIVERY_QUEUED:
                delivery.state, delivery.last_error = DELIVERY_FAILED, why

        in_transaction(session, work)
