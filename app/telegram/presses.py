"""A press of a page's button: verified, checked against its addressee and replays, then one playbooks use case."""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.telegram.settings import Settings
from app.telegram.views import Views
from incidents import audit
from incidents.base import utcnow
from incidents.uow import in_transaction
from notifiers import telegram as tg
from playbooks.models import PAGE_OPEN, Contact, Page
from playbooks.service import may_acknowledge
from playbooks.telegram_links import ButtonRefused, contact_for_chat, press_button
from playbooks.telegram_models import TelegramMessage, TelegramPress

log = logging.getLogger("ucsc.telegram")


@dataclass
class Outcome:
    """What a press or a command leads to: the answer to show, and an edit of the pressed message."""

    answer: str
    alert: bool = False
    accepted: bool = False
    edit_text: str | None = None
    edit_buttons: dict[str, str] | None = None
    language: str = tg.DEFAULT_LANGUAGE
    page_messages: list[tuple[int, int, str]] = field(default_factory=list)


REFUSALS = {
    "forged": tg._("This button is not valid."),
    "expired": tg._("This button has expired."),
    "not_addressee": tg._("This page is not addressed to you."),
    "not_linked": tg._("Link your Telegram account first: open the link the directory gave you."),
    "replayed": tg._("This button was already used."),
    "closed": tg._("This page is no longer open."),
    "no_task": tg._("You have no open task on this incident."),
}
ACCEPTED = {tg.ACK: tg._("Acknowledged."), tg.SUPPORT: tg._("Support requested."), tg.DONE: tg._("Reported done.")}


class Presses:
    """Button presses, each checked in one read and applied in one transaction, from the worker's thread pool."""

    def __init__(self, sessions: Callable[[], Session], settings: Settings, config: Mapping[str, Any]) -> None:
        self.sessions = sessions
        self.settings = settings
        self.config = config
        self.views = Views(settings, config)

    def _check(self, session: Session, *, data: str, chat_id: int, user_id: int, chat_type: str) -> tuple:
        """(refusal reason or None, callback, contact, page, renderer): the checks every press passes, no writes."""
        contact = contact_for_chat(session, chat_id) if chat_type == "private" and chat_id == user_id else None
        r = self.views.renderer(getattr(contact, "language", None) or tg.DEFAULT_LANGUAGE)
        try:
            cb = tg.verify_callback(self.settings.callback_secret, data, chat_id, now=utcnow(),
                                    ttl=self.settings.callback_ttl)  # fmt: skip
        except tg.CallbackRefused as exc:
            return exc.reason, None, contact, None, r
        if contact is None:
            return "not_linked", cb, None, None, r
        page = session.get(Page, cb.page_id)
        if page is None or not may_acknowledge(session, page, contact):
            return "not_addressee", cb, contact, page, r
        if session.scalar(select(TelegramPress.id).where(TelegramPress.mac == cb.mac)) is not None:
            return "replayed", cb, contact, page, r
        if cb.action == tg.ACK and page.state != PAGE_OPEN:
            return "closed", cb, contact, page, r
        return None, cb, contact, page, r

    def judge(self, *, data: str, chat_id: int, user_id: int, chat_type: str) -> Outcome:
        """What a press will be answered (the webhook answers in its response body); changes nothing."""
        with self.sessions() as session:
            reason, cb, _contact, _page, r = self._check(session, data=data, chat_id=chat_id, user_id=user_id,
                                                          chat_type=chat_type)  # fmt: skip
            if reason is not None:
                return Outcome(answer=r.gettext(REFUSALS[reason]), alert=True, language=r.language)
            return Outcome(answer=r.gettext(ACCEPTED[cb.action]), accepted=True, language=r.language)

    def press(self, *, data: str, chat_id: int, message_id: int, user_id: int, name: str, chat_type: str) -> Outcome:
        """A button press: verify, check the addressee and replays, then one playbooks service call."""
        now = utcnow()
        with self.sessions() as session:
            reason, cb, contact, page, r = self._check(session, data=data, chat_id=chat_id, user_id=user_id,
                                                        chat_type=chat_type)  # fmt: skip
            who = {"chat_id": chat_id, "user_id": user_id, "name": name, "cb": cb, "contact": contact}
            if reason is not None:
                return self._refuse(session, r, reason, data=data, **who)
            page_id = page.id
            session.rollback()
            try:
                press_button(session=session, action=cb.action, page_id=page_id, contact=contact, config=self.config)
            except ButtonRefused as exc:
                return self._refuse(session, r, exc.reason, data=data, **who)

            sent = session.scalar(select(TelegramMessage).where(
                TelegramMessage.chat_id == chat_id, TelegramMessage.message_id == message_id))  # fmt: skip
            edit_text = r.outcome(sent.text, cb.action, contact.name, now) if sent is not None else None
            sent_id = sent.id if sent is not None else None
            session.rollback()

            def record() -> set[str]:
                session.add(TelegramPress(mac=cb.mac, page_id=page_id, action=cb.action, telegram_user_id=user_id,
                                          chat_id=chat_id, contact_id=contact.id, at=now))  # fmt: skip
                if sent_id is not None and edit_text is not None:  # the next press adds to what the message says
                    session.get(TelegramMessage, sent_id).text = edit_text
                return set(session.scalars(select(TelegramPress.action).where(
                    TelegramPress.page_id == page_id, TelegramPress.chat_id == chat_id)))  # fmt: skip

            try:
                used = in_transaction(session, record)
            except IntegrityError:
                used = {cb.action}
            page_open = session.scalar(select(Page.state).where(Page.id == page_id)) == PAGE_OPEN
            left = tuple(a for a in tg.ACTIONS if a not in used and (a != tg.ACK or page_open))
            return Outcome(
                answer=r.gettext(ACCEPTED[cb.action]), accepted=True, language=r.language, edit_text=edit_text,
                edit_buttons=self.views.buttons(page_id, chat_id, left),
            )  # fmt: skip

    def _refuse(self, session: Session, r: tg.Renderer, reason: str, *, chat_id: int, user_id: int, name: str,
                cb: tg.Callback | None = None, data: str | None = None,
                contact: Contact | None = None) -> Outcome:  # fmt: skip
        """Answer with an alert and write the refusal to the audit trail; nothing else changes."""
        session.rollback()
        details = {"reason": reason, "chat_id": str(chat_id), "telegram_user_id": str(user_id),
                   "telegram_name": name[:100], "contact_id": getattr(contact, "id", None),
                   "page_id": cb.page_id if cb else None, "action": cb.action if cb else None,
                   "data": (data or "")[:100] if cb is None else None}  # fmt: skip
        target = f"page:{cb.page_id}" if cb else None
        in_transaction(
            session,
            lambda: audit.append(
                session, action=audit.Action.ACK_REFUSED, actor=f"telegram:{user_id}", target=target, data=details
            ),
        )
        log.info("refused Telegram press (%s) from %s in chat %s", reason, user_id, chat_id)
        return Outcome(answer=r.gettext(REFUSALS[reason]), alert=True, language=r.language)
