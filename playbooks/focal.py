"""Focal points keep their details current: asked "still your number?", reported to the standing body when late.

A contact whose ways of reaching them changed must confirm them; an hourly check asks whoever has not (again
each day) and alerts the standing body once about those unconfirmed past `FOCAL_POINT_CONFIRM_HOURS`.
"""

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.events import record_event
from incidents.uow import in_transaction
from notifiers import registry
from notifiers.base import DeliveryFailed, Message
from playbooks import directory, messages
from playbooks.delivery import usable_channels
from playbooks.models import Contact
from playbooks.settings import Settings

log = logging.getLogger("ucsc.playbooks")

# Job kinds: the hourly check, and one request to one person.
FOCAL = "directory.focal"
CONFIRM = "directory.confirm_request"


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
        subject, text, link = messages.confirm_request(contact, settings)
    message = Message(to=address, subject=subject, text=text, key=job.idempotency_key or f"{CONFIRM}:{contact.id}",
                      data={"type": "confirm", "url": link}, secret=contact.webhook_secret)  # fmt: skip
    notifier = ctx.notifiers.get(channel)
    if notifier is None:
        # This process sends nothing on that channel (a worker without it): the 24-hour report still follows.
        log.warning("no %s channel in this process: contact %s is not asked", channel, job.payload["contact_id"])
        return
    try:
        notifier.send(message)
    except DeliveryFailed as exc:
        if exc.permanent:
            raise jobs.PermanentError(str(exc)) from exc
        raise


def schedule_focal_check(session: Session, *, after: datetime | None = None) -> None:
    """Queue the next hourly check, at five past the hour after `after` (now)."""
    slot = (after or utcnow()) + timedelta(hours=1)
    slot = slot.replace(minute=5, second=0, microsecond=0)
    jobs.enqueue(session, FOCAL, run_at=slot, key=f"{FOCAL}:{slot:%Y-%m-%dT%H}")
