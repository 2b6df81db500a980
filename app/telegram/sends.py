"""What became of each send (sent, put back, undeliverable, failed) and the leader's own row, one transaction each."""

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.telegram.delivery import accepted, delivery_failed
from app.telegram.outbox import LEADER_KINDS
from app.telegram.settings import Settings
from incidents import jobs
from incidents.base import utcnow
from incidents.events import record_event
from incidents.models import Event, Incident, Job
from incidents.uow import in_transaction
from playbooks.telegram_models import TelegramChat, TelegramLeader, TelegramMessage

Sent = tuple[jobs.ClaimedJob, int, datetime, float]  # the job, the message id, when, the chat's spacing


def _leased(job: jobs.ClaimedJob, worker: str) -> Any:
    return (Job.id == job.id) & (Job.state == jobs.RUNNING) & (Job.leased_by == worker) & (Job.attempts == job.attempts)


def _finish(session: Session, job: jobs.ClaimedJob, worker: str, state: str, error: str | None = None) -> None:
    session.execute(update(Job).where(_leased(job, worker)).values(
        state=state, lease_until=None, finished_at=utcnow(), last_error=error))  # fmt: skip


def _space(session: Session, chat_id: int, next_at: datetime, *, sent: bool = False) -> None:
    chat = session.get(TelegramChat, chat_id)
    if chat is None:
        chat = TelegramChat(chat_id=chat_id, kind="private" if chat_id > 0 else "group", sent=0)
        session.add(chat)
    chat.next_send_at = next_at
    chat.sent = (chat.sent or 0) + (1 if sent else 0)
    chat.updated_at = utcnow()


class Sends:
    """The leader's bookkeeping: its sends' outcomes on their jobs, chats and deliveries, and its leadership row."""

    def __init__(self, sessions: Callable[[], Session], settings: Settings, config: Mapping[str, Any]) -> None:
        self.sessions = sessions
        self.settings = settings
        self.config = config

    def sent(self, batch: list[Sent], worker: str) -> None:
        """Record sent messages, their chats' next slots and their jobs' completion, in one transaction."""
        with self.sessions() as session:

            def work() -> None:
                keys = [job.payload["key"] for job, *_ in batch]
                known = set(session.scalars(select(TelegramMessage.key).where(TelegramMessage.key.in_(keys))))
                # Their chats in one read, not one each (the gets below find them loaded).
                chats = {int(job.payload["chat_id"]) for job, *_ in batch}
                list(session.scalars(select(TelegramChat).where(TelegramChat.chat_id.in_(chats))))
                for job, message_id, at, spacing in batch:
                    p = job.payload
                    if p["key"] not in known:
                        known.add(p["key"])
                        session.add(TelegramMessage(
                            key=p["key"], purpose=p.get("purpose", "page"), chat_id=int(p["chat_id"]),
                            message_id=message_id, incident_id=p.get("incident_id"), page_id=p.get("page_id"),
                            contact_id=p.get("contact_id"), direction_request_id=p.get("direction_request_id"),
                            text=p["text"], sent_at=at,
                        ))  # fmt: skip
                    _space(session, int(p["chat_id"]), at + timedelta(seconds=spacing), sent=True)
                    _finish(session, job, worker, jobs.DONE)
                accepted(session, [(job.payload["delivery_id"], int(job.payload["chat_id"]), message_id)
                                   for job, message_id, *_ in batch if job.payload.get("delivery_id")])  # fmt: skip

            in_transaction(session, work)

    def already_sent(self, keys: list[str]) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(TelegramMessage.key).where(TelegramMessage.key.in_(keys))))

    def chat_slots(self, chat_ids: list[int]) -> dict[int, datetime]:
        with self.sessions() as session:
            rows = session.execute(
                select(TelegramChat.chat_id, TelegramChat.next_send_at).where(TelegramChat.chat_id.in_(chat_ids))
            )
            return dict(rows.tuples().all())

    def reschedule(self, job: jobs.ClaimedJob, worker: str, run_at: datetime, error: str, *, count: bool) -> None:
        """Put a leased job back, due at `run_at`; `count` keeps the attempt (a network error), else it is returned."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"ucsc_write": True})
            values: dict[str, Any] = {"state": jobs.QUEUED, "lease_until": None, "run_at": run_at,
                                      "last_error": error[:2000]}  # fmt: skip
            if not count:
                values["attempts"] = Job.attempts - 1
            session.execute(update(Job).where(_leased(job, worker)).values(**values))

    def complete(self, job: jobs.ClaimedJob, worker: str) -> None:
        with self.sessions() as session:
            jobs.complete(session, job, worker)

    def undeliverable(self, job: jobs.ClaimedJob, worker: str, reason: str) -> None:
        """The bot was blocked or the chat is gone: mark the chat, end the job, let the page try the next channel."""
        p = job.payload
        with self.sessions() as session:

            def work() -> None:
                chat_id = int(p["chat_id"])
                chat = session.get(TelegramChat, chat_id)
                if chat is None:
                    chat = TelegramChat(chat_id=chat_id, kind="private" if chat_id > 0 else "group", sent=0)
                    session.add(chat)
                chat.undeliverable_at, chat.undeliverable_reason, chat.updated_at = utcnow(), reason[:300], utcnow()
                _finish(session, job, worker, jobs.DEAD, error=reason)
                incident = session.get(Incident, p["incident_id"]) if p.get("incident_id") else None
                details = {"chat_id": str(chat_id), "contact_id": p.get("contact_id"), "page_id": p.get("page_id")}
                record_event(session, kind="telegram.undeliverable", actor=None, incident=incident,
                                     note=reason[:500], data=details)  # fmt: skip
                if p.get("delivery_id"):
                    delivery_failed(session, p["delivery_id"], reason, self.config)

            in_transaction(session, work)

    def failed(self, job: jobs.ClaimedJob, worker: str, error: str, *, permanent: bool) -> None:
        with self.sessions() as session:
            state = jobs.fail(session, job, worker, error, permanent=permanent)
        if state == jobs.DEAD and job.payload.get("delivery_id"):
            with self.sessions() as session:
                in_transaction(
                    session, lambda: delivery_failed(session, job.payload["delivery_id"], error, self.config)
                )

    def takeover(self, worker: str) -> int:
        """A new leader: the old one's leases on sends are void at once (only a leader sends; it is gone)."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"ucsc_write": True})
            result = session.execute(
                update(Job)
                .where(Job.kind.in_(LEADER_KINDS), Job.state == jobs.RUNNING, Job.leased_by != worker)
                .values(state=jobs.QUEUED, lease_until=None, run_at=utcnow())
            )
            return result.rowcount

    def lead(self, worker: str) -> None:
        with self.sessions() as session:

            def work() -> None:
                row = session.get(TelegramLeader, self.settings.bot)
                now = utcnow()
                if row is None:  # the board is told of what happens from the first leadership on, not of history
                    start = session.scalar(select(func.max(Event.id))) or 0
                    session.add(TelegramLeader(bot=self.settings.bot, worker=worker, since=now, beat_at=now,
                                               board_cursor=start))  # fmt: skip
                elif row.worker != worker:
                    row.worker, row.since, row.beat_at = worker, now, now
                else:
                    row.beat_at = now

            in_transaction(session, work)
