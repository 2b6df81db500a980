"""A page's delivery rows as the Telegram leader sends them: handed over, named after the sent message, failed."""

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


def handed_over(session: Session, page_id: int, delivery_ids: list[int]) -> None:
    """Deliveries queued for the leader with a sibling's send are delivered to the channel, as their own send records
    it (`playbooks.delivery`: one `page.delivered` each), and their own jobs still queued are done.

    Else each of a burst's other delivery jobs is claimed, renders its page and writes its own transactions in
    the worker, beside the leader's sends: their CPU (the GIL) and, on SQLite, their write locks slow the
    leader's event loop, and each window of 30 sends waits that much longer for its completions.
    """
    rows = list(session.scalars(select(Delivery).where(Delivery.id.in_(delivery_ids),
                                                       Delivery.state == DELIVERY_QUEUED)
                                .order_by(Delivery.id).with_for_update()))  # fmt: skip
    if not rows:
        return
    now = utcnow()
    page = session.get(Page, page_id, with_for_update=True, populate_existing=True)
    if page.first_delivered_at is None:
        page.first_delivered_at = now
    incident = session.get(Incident, page.incident_id)
    names = dict(session.execute(select(Contact.id, Contact.name).where(
        Contact.id.in_([d.contact_id for d in rows]))).tuples().all())  # fmt: skip
    # The delivery's pending job, as playbooks.delivery keys it (`page.deliver:<delivery>:<attempts so far>`); one
    # that a worker claimed already finds the delivery delivered, or its send queued, and records nothing twice.
    pending = [f"{paging_delivery.DELIVER}:{d.id}:{d.attempts}" for d in rows]
    session.execute(update(Job).where(Job.idempotency_key.in_(pending), Job.state == jobs.QUEUED)
                    .values(state=jobs.DONE, finished_at=now))  # fmt: skip
    for delivery in rows:
        delivery.state, delivery.delivered_at = DELIVERY_DELIVERED, now
        delivery.attempts += 1
        receipt = f"queued for Telegram as tg:page.{page_id}.{delivery.contact_id}.{delivery.wave}"
        delivery.message_id, delivery.last_error = receipt[:300], None
        timeline.record(session, "page.delivered", incident, None, page_id=page.id, delivery_id=delivery.id,
                        channel=delivery.channel, contact=names.get(delivery.contact_id),
                        contact_id=delivery.contact_id, wave=delivery.wave, attempts=delivery.attempts,
                        message_id=delivery.message_id)  # fmt: skip


def name_message(session: Session, delivery_id: int, chat_id: int, message_id: int) -> None:
    """The delivery was recorded when queued; it now names the Telegram message (for people and for edits)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is not None:
        delivery.message_id = f"telegram:{chat_id}:{message_id}"


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
