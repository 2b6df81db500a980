"""A page's delivery rows as the Telegram leader sends them: handed over, accepted by the Bot API, or failed."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.models import Incident, Job
from notifiers import telegram as tg
from playbooks import delivery as paging_delivery
from playbooks import timeline
from playbooks.models import DELIVERY_DELIVERED, DELIVERY_FAILED, DELIVERY_QUEUED, PAGE_OPEN, Contact, Delivery, Page
from playbooks.settings import Settings


def handed_over(session: Session, delivery_ids: list[int]) -> None:
    """Deliveries queued for the leader with a sibling's send: their own delivery jobs still queued are done.

    Else each of a burst's other delivery jobs is claimed, renders its page and writes its own transactions in
    the worker, beside the leader's sends: their CPU (the GIL) and, on SQLite, their write locks slow the
    leader's event loop, and each window of 30 sends waits that much longer for its completions. The deliveries
    stay queued until the Bot API accepts their sends (`accepted`) or refuses them (`delivery_failed`).
    """
    attempts = session.execute(select(Delivery.id, Delivery.attempts).where(
        Delivery.id.in_(delivery_ids), Delivery.state == DELIVERY_QUEUED)).all()  # fmt: skip
    if not attempts:
        return
    # The delivery's pending job, as playbooks.delivery keys it (`page.deliver:<delivery>:<attempts so far>`); one
    # that a worker claimed already finds its send queued (the channel's receipt says so) and records nothing.
    pending = [f"{paging_delivery.DELIVER}:{delivery_id}:{n}" for delivery_id, n in attempts]
    session.execute(update(Job).where(Job.idempotency_key.in_(pending), Job.state == jobs.QUEUED)
                    .values(state=jobs.DONE, finished_at=utcnow()))  # fmt: skip


def accepted(session: Session, sends: list[tuple[int, int, int]]) -> None:
    """The Bot API accepted these sends (delivery, chat, message): each delivery is delivered now, as
    `playbooks.delivery` records a channel's success (one `page.delivered` each), and names its Telegram message."""
    if not sends:
        return
    deliveries = {d.id: d for d in session.scalars(
        select(Delivery).where(Delivery.id.in_([d for d, _, _ in sends]), Delivery.state == DELIVERY_QUEUED)
        .order_by(Delivery.id).with_for_update().execution_options(populate_existing=True))}  # fmt: skip
    if not deliveries:
        return
    pages = {p.id: p for p in session.scalars(
        select(Page).where(Page.id.in_({d.page_id for d in deliveries.values()})).order_by(Page.id)
        .with_for_update().execution_options(populate_existing=True))}  # fmt: skip
    incidents = {i.id: i for i in session.scalars(
        select(Incident).where(Incident.id.in_({p.incident_id for p in pages.values()})))}  # fmt: skip
    names = dict(session.execute(select(Contact.id, Contact.name).where(
        Contact.id.in_({d.contact_id for d in deliveries.values()}))).tuples().all())  # fmt: skip
    now = utcnow()
    for delivery_id, chat_id, message_id in sends:
        delivery = deliveries.pop(delivery_id, None)
        if delivery is None:
            continue  # delivered or failed already
        delivery.state, delivery.delivered_at = DELIVERY_DELIVERED, now
        delivery.attempts += 1
        delivery.message_id, delivery.last_error = f"telegram:{chat_id}:{message_id}", None
        page = pages[delivery.page_id]
        if page.first_delivered_at is None:
            page.first_delivered_at = now
        timeline.record(session, "page.delivered", incidents[page.incident_id], None, page_id=page.id,
                        delivery_id=delivery.id, channel=delivery.channel, contact=names.get(delivery.contact_id),
                        contact_id=delivery.contact_id, wave=delivery.wave, attempts=delivery.attempts,
                        message_id=delivery.message_id)  # fmt: skip


def delivery_failed(session: Session, delivery_id: int, error: str, config: Mapping[str, Any]) -> None:
    """Telegram refused for good (blocked, chat gone): the delivery failed; the contact's next channel gets it."""
    delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    if delivery is None or delivery.state == DELIVERY_FAILED:
        return
    delivery.state, delivery.last_error = DELIVERY_FAILED, error[:2000]
    page = session.get(Page, delivery.page_id)
    contact = session.get(Contact, delivery.contact_id)
    incident = session.get(Incident, page.incident_id)
    fallback = None
    if page.state == PAGE_OPEN:
        settings = Settings.from_config(config)
        fallback = paging_delivery.queue_delivery(session, page, contact, delivery.wave, settings, after=tg.CHANNEL)
    timeline.record(session, "page.failed", incident, None, note=error[:500], page_id=page.id,
                    delivery_id=delivery.id, channel=tg.CHANNEL, contact=contact.name, contact_id=contact.id,
                    next_channel=fallback.channel if fallback else None, final=fallback is None)  # fmt: skip
