"""Pages and board posts become `telegram.send` jobs, which only the Telegram leader claims and sends."""

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.telegram.delivery import handed_over
from app.telegram.settings import Settings
from app.telegram.views import Views
from incidents import jobs
from incidents.access import stricter
from incidents.models import Event, Incident, Job
from incidents.uow import in_transaction
from notifiers import telegram as tg
from notifiers.base import DeliveryFailed, Message, Queued
from playbooks.models import DELIVERY_QUEUED, Contact, Delivery, Page
from playbooks.telegram_models import TelegramChat, TelegramLeader

SEND = "telegram.send"
LEADER_KINDS = frozenset({SEND})  # claimed by the Telegram leader only (app/worker.py leaves them alone)
# Pages whose target is the board (a role `board.*`), sent by an escalation or a request for support.
BOARD_ESCALATION_KINDS = frozenset({"page.sent", "page.support_requested"})
DIRECTION_REQUEST_KINDS = frozenset({"direction.requested"})


def leader_only(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Only the Telegram leader sends `telegram.send` (its own claim loop); a plain worker never runs this kind."""
    raise jobs.PermanentError("telegram.send is run by the Telegram leader")


def page_key(message: Message) -> tuple[int | None, int | None, int]:
    """The page, contact and wave of a page message: its data, else its stable key (`page.P.C.W`)."""
    data = message.data or {}
    parts = message.key.split(".")
    from_key = [int(p) for p in parts[1:4]] if len(parts) == 4 and parts[0] == "page" and all(
        p.isdigit() for p in parts[1:4]) else [None, None, 0]  # fmt: skip
    page_id = data.get("page_id") or from_key[0]
    contact_id = data.get("contact_id") or from_key[1]
    return page_id, contact_id, int(data.get("wave") or from_key[2] or 0)


def _payload(chat_id: int, text: str, buttons: dict[str, str], key: str, purpose: str, page_id: int | None,
             contact_id: int | None, incident_id: int | None, delivery_id: int | None,
             language: str) -> dict[str, Any]:  # fmt: skip
    return {
        "chat_id": chat_id, "text": text, "buttons": buttons, "key": key, "purpose": purpose, "page_id": page_id,
        "contact_id": contact_id, "incident_id": incident_id, "delivery_id": delivery_id, "language": language,
        "queued_at": time.time(),
    }  # fmt: skip


class Outbox:
    """The channel's `send` (a page for one contact) and the board's posts, each queued in one transaction."""

    def __init__(self, sessions: Callable[[], Session], settings: Settings, config: Mapping[str, Any]) -> None:
        self.sessions = sessions
        self.settings = settings
        self.views = Views(settings, config)
        self.queued: Callable[[], None] = lambda: None  # the runtime's wake-up, called after a send is queued

    def enqueue_page(self, message: Message) -> Queued:
        """The channel's `send`: render the page for its contact and queue it for the leader (one transaction).

        The page's other Telegram deliveries still queued are rendered and queued in the same transaction (their
        own `send` then finds its job there): a page to 120 people reaches the leader at once, not one by one.
        """
        page_id, contact_id, wave = page_key(message)
        try:
            chat_id = int(str(message.to).strip())
        except ValueError:
            raise DeliveryFailed(f"not a Telegram chat id: {message.to!r}", permanent=True) from None
        with self.sessions() as session:
            chat = session.get(TelegramChat, chat_id)
            if chat is not None and chat.undeliverable_at is not None:
                raise DeliveryFailed(f"Telegram chat {chat_id}: {chat.undeliverable_reason}", permanent=True)
            page = session.get(Page, page_id) if page_id is not None else None
            if page is None:
                text = tg.esc(message.text)[: tg.MAX_TEXT]
                payloads = [_payload(chat_id, text, {}, f"tg:{message.key}", "reply", None, contact_id,
                                     message.data.get("incident_id"), None, tg.DEFAULT_LANGUAGE)]  # fmt: skip
            else:
                own = f"tg:page.{page.id}.{contact_id}.{wave}"
                if session.scalar(select(Job.id).where(Job.idempotency_key == own)) is not None:
                    session.rollback()  # a sibling's send queued this one with its own (below)
                    return Queued(f"queued for Telegram as tg:{message.key}")
                payloads = self._page_payloads(session, page, chat_id, contact_id, wave)

            siblings_queued = [p["delivery_id"] for p in payloads if p["delivery_id"] and p["contact_id"] != contact_id]

            def work() -> None:
                jobs.enqueue_many(session, [jobs.job_values(SEND, p, key=p["key"], incident_id=p["incident_id"])
                                            for p in payloads])  # fmt: skip
                if siblings_queued:
                    handed_over(session, siblings_queued)

            in_transaction(session, work)
        self.queued()
        return Queued(f"queued for Telegram as tg:{message.key}")

    def _page_payloads(self, session: Session, page: Page, chat_id: int, contact_id: int | None,
                       wave: int) -> list[dict[str, Any]]:  # fmt: skip
        """The sends of this contact's page and of its Telegram siblings that no send has queued yet."""
        siblings = session.execute(
            select(Delivery.id, Delivery.contact_id, Delivery.address).where(
                Delivery.page_id == page.id, Delivery.channel == tg.CHANNEL, Delivery.wave == wave,
                (Delivery.state == DELIVERY_QUEUED) | (Delivery.contact_id == contact_id))
        ).all()  # fmt: skip
        targets = {c: (d, addr) for d, c, addr in siblings}
        targets.setdefault(contact_id, (None, str(chat_id)))
        # Only what no sibling's send queued yet: else each of a page's n sends would render and insert all n
        # again (n² work in the worker, beside the leader's sends, in a large burst).
        keys = {c: f"tg:page.{page.id}.{c}.{wave}" for c in targets}
        queued = set(session.scalars(select(Job.idempotency_key).where(
            Job.idempotency_key.in_(list(keys.values())))))  # fmt: skip
        targets = {c: t for c, t in targets.items() if keys[c] not in queued}
        contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(list(targets))))}
        addresses = [int(a) for _, a in targets.values() if str(a).lstrip("-").isdigit()]
        blocked = set(session.scalars(select(TelegramChat.chat_id).where(
            TelegramChat.chat_id.in_(addresses), TelegramChat.undeliverable_at.is_not(None))))  # fmt: skip
        views: dict[str, tg.PageView] = {}
        payloads = []
        for cid, (delivery_id, address) in targets.items():
            try:
                to = chat_id if cid == contact_id else int(address)
            except ValueError:
                continue
            if to in blocked and cid != contact_id:
                continue
            language = getattr(contacts.get(cid), "language", None) or tg.DEFAULT_LANGUAGE
            if language not in views:
                views[language] = self.views.page_view(session, page, language)
            text = self.views.renderer(language).page(views[language], max_tlp=self.views.max_tlp(to))
            buttons = self.views.buttons(page.id, to) if page.requires_ack else {}
            payloads.append(_payload(to, text, buttons, f"tg:page.{page.id}.{cid}.{wave}", "page", page.id, cid,
                                     page.incident_id, delivery_id, language))  # fmt: skip
        return payloads

    def queue_board_posts(self) -> int:
        """Post serious incidents, escalations to the board and requests for direction to the board's group."""
        board = self.settings.board_chat_id
        if board is None:
            return 0
        with self.sessions() as session:
            leader = session.get(TelegramLeader, self.settings.bot)
            if leader is None:
                return 0
            events = list(session.scalars(
                select(Event).where(Event.id > leader.board_cursor).order_by(Event.id).limit(200)
            ))  # fmt: skip
            session.rollback()
            if not events:
                return 0
            posts = [p for p in (self._board_post(session, e) for e in events) if p is not None]

            def work() -> None:
                for payload in posts:
                    jobs.enqueue(session, SEND, payload, key=payload["key"], incident_id=payload["incident_id"])
                session.get(TelegramLeader, self.settings.bot).board_cursor = events[-1].id

            in_transaction(session, work)
            return len(posts)

    def _board_post(self, session: Session, event: Event) -> dict[str, Any] | None:
        kind, data = event.kind, event.data or {}
        if kind == "incident.classification_decided" and data.get("class") == "serious":
            headline, request_id = "serious", None
        elif kind in BOARD_ESCALATION_KINDS and str(data.get("target") or data.get("tier") or "").startswith("board"):
            headline, request_id = "escalation", None
        elif kind in DIRECTION_REQUEST_KINDS:
            headline, request_id = "direction", data.get("request_id")
        else:
            return None
        incident = session.get(Incident, event.incident_id) if event.incident_id else None
        if incident is None:
            return None
        view = self.views.view(incident, ask=data.get("question_vi") or data.get("question") or event.note)
        # A question asked under a stricter level than the incident holds now keeps that level (as on /live).
        view = replace(view, tlp=stricter(event.tlp, view.tlp))
        board = int(self.settings.board_chat_id)
        text = self.views.renderer("vi").board(view, headline=tg.BOARD_HEADLINES[headline],
                                               max_tlp=self.views.max_tlp(board))  # fmt: skip
        return {
            "chat_id": board, "text": text, "buttons": {}, "key": f"tg:board:{event.id}", "purpose": "board",
            "incident_id": incident.id, "direction_request_id": request_id, "language": "vi",
            "queued_at": time.time(),
        }  # fmt: skip
