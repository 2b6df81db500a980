"""The bot's commands (`/start`, `/mine`, `/status`, `/ack`, `/help`) and the board's directives in its group."""

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.telegram.presses import ACCEPTED, REFUSALS, Outcome
from app.telegram.settings import Settings
from app.telegram.views import Views
from incidents import audit
from incidents.base import utcnow
from incidents.errors import NotFound
from incidents.models import Incident, Organisation
from incidents.policy import Capability, allows
from incidents.queries import get_incident
from incidents.uow import in_transaction
from notifiers import telegram as tg
from playbooks import service as pb
from playbooks.models import PAGE_OPEN, Contact, Page, PageRecipient, Task
from playbooks.telegram_links import ButtonRefused, actor_of, contact_for_chat, link_account, press_button
from playbooks.telegram_models import TelegramMessage, TelegramPress

HELP = tg._(
    "Commands: /mine — my open pages; /status REF — an incident's status; /ack REF — acknowledge; /help — this "
    "help. Use the buttons under a page to acknowledge it, ask for support or report it done."
)
COMMANDS = [
    ("mine", tg._("My open pages and tasks")),
    ("status", tg._("Status of an incident: /status REF")),
    ("ack", tg._("Acknowledge a page: /ack REF")),
    ("help", tg._("How to use this bot")),
    ("start", tg._("Link your account")),
]


def contact_chat(contact: Contact) -> int:
    try:
        return int(contact.telegram_chat_id)
    except (TypeError, ValueError):
        return 0


def _on_call(session: Session, contact: Contact) -> bool:
    org = session.get(Organisation, contact.organisation_id)
    return org is not None and any(
        c.id == contact.id for c in pb.who_is_on_call(session=session, organisation=org.code)
    )


def _open_tasks(session: Session, contact: Contact) -> list[tuple[str, str]]:
    rows = session.execute(
        select(Incident.ref, Task.title_vi).join(Incident, Incident.id == Task.incident_id)
        .where(Task.state == "open", Task.organisation_id == contact.organisation_id).order_by(Task.id).limit(20)
    )  # fmt: skip
    return [(ref, title) for ref, title in rows]


class Commands:
    """Commands and directives, each one short transaction, from the worker's thread pool."""

    def __init__(self, sessions: Callable[[], Session], settings: Settings, config: Mapping[str, Any]) -> None:
        self.sessions = sessions
        self.settings = settings
        self.config = config
        self.views = Views(settings, config)

    def command(self, *, name: str, args: list[str], chat_id: int, user_id: int, chat_type: str,
                user_language: str | None) -> Outcome:  # fmt: skip
        with self.sessions() as session:
            contact = contact_for_chat(session, chat_id) if chat_type == "private" and chat_id == user_id else None
            language = getattr(contact, "language", None) or (user_language if user_language in tg.LANGUAGES
                                                               else tg.DEFAULT_LANGUAGE)  # fmt: skip
            r = self.views.renderer(language)
            if name == "start" and args:
                linked = link_account(session=session, code=args[0], chat_id=chat_id, user_id=user_id,
                                      chat_type=chat_type)  # fmt: skip
                if linked is None:
                    return Outcome(r.gettext("This link code is not valid, was used already or has expired."),
                                   language=language)  # fmt: skip
                return Outcome(r.gettext("Your Telegram account is now linked to %(name)s.") % {"name": linked.name},
                               accepted=True, language=getattr(linked, "language", language))  # fmt: skip
            if name == "start":
                return Outcome(r.gettext("Open the link from the UCSC directory to link your account, then pages "
                                         "reach you here."), language=language)  # fmt: skip
            if name == "help":
                return Outcome(r.gettext(HELP), language=language)
            if contact is None:
                return Outcome(r.gettext(REFUSALS["not_linked"]), language=language)
            if name == "mine":
                return Outcome(self._mine(session, r, contact), language=language)
            if name in ("status", "ack"):
                if not args:
                    return Outcome(r.gettext("Give an incident reference, e.g. %(example)s.") %
                                   {"example": f"/{name} TH-2026-00042"}, language=language)  # fmt: skip
                ref = args[0].strip().upper()
                return (
                    self._status(session, r, contact, ref) if name == "status" else self._ack(session, r, contact, ref)
                )
        return Outcome(r.gettext(HELP), language=language)

    def _mine(self, session: Session, r: tg.Renderer, contact: Contact) -> str:
        pages = session.execute(
            select(Page, Incident.ref).join(Incident, Incident.id == Page.incident_id)
            .outerjoin(PageRecipient, PageRecipient.page_id == Page.id)
            .where(Page.state == PAGE_OPEN, (PageRecipient.contact_id == contact.id) | (Page.contact_id == contact.id))
            .order_by(Page.id).limit(30)
        ).all()  # fmt: skip
        lines = []
        seen = set()
        for page, ref in pages:
            if page.id in seen:
                continue
            seen.add(page.id)
            ask = page.reason_en if r.language == "en" and page.reason_en else page.reason_vi
            lines.append(f"• <b>{tg.esc(ref)}</b> {tg.esc((ask or page.target_label or '')[:200])}")
        tasks = _open_tasks(session, contact)
        lines += [f"☐ <b>{tg.esc(ref)}</b> {tg.esc(title[:200])}" for ref, title in tasks]
        head = r.gettext("Your open pages") if lines else r.gettext("You have no open pages.")
        on_call = _on_call(session, contact)
        duty = r.gettext("On call now") if on_call else r.gettext("Not on call now")
        return "\n".join([f"<b>{tg.esc(head)}</b>", *lines, tg.esc(duty)])

    def _status(self, session: Session, r: tg.Renderer, contact: Contact, ref: str) -> Outcome:
        actor = actor_of(session, contact)
        try:
            if actor is None:
                raise NotFound(ref)
            incident = get_incident(session, actor, ref)
        except NotFound:
            return Outcome(r.gettext("No incident %(ref)s that you may see.") % {"ref": ref}, language=r.language)
        text = r.page(self.views.view(incident), max_tlp=self.views.max_tlp(contact_chat(contact)))
        text += f"\n{tg.esc(r.gettext('Status'))}: {tg.esc(str(incident.status))}"
        return Outcome(text, language=r.language)

    def _ack(self, session: Session, r: tg.Renderer, contact: Contact, ref: str) -> Outcome:
        page = session.scalar(
            select(Page).join(Incident, Incident.id == Page.incident_id)
            .outerjoin(PageRecipient, PageRecipient.page_id == Page.id)
            .where(Incident.ref == ref, Page.state == PAGE_OPEN,
                   (PageRecipient.contact_id == contact.id) | (Page.contact_id == contact.id))
            .order_by(Page.id).limit(1)
        )  # fmt: skip
        if page is None:
            return Outcome(r.gettext("No open page of yours for %(ref)s.") % {"ref": ref}, language=r.language)
        page_id = page.id
        session.rollback()
        try:
            press_button(session=session, action=tg.ACK, page_id=page_id, contact=contact, config=self.config)
        except ButtonRefused as exc:
            return Outcome(r.gettext(REFUSALS[exc.reason]), language=r.language)
        now = utcnow()
        chat_id = contact_chat(contact)
        sent = session.execute(
            select(TelegramMessage.id, TelegramMessage.chat_id, TelegramMessage.message_id, TelegramMessage.text)
            .where(TelegramMessage.page_id == page_id, TelegramMessage.contact_id == contact.id)
        ).all()  # fmt: skip
        edits = [(row_id, chat, message_id, r.outcome(text, tg.ACK, contact.name, now))
                 for row_id, chat, message_id, text in sent]  # fmt: skip
        session.rollback()

        def record() -> set[str]:
            for row_id, _chat, _message_id, text in edits:  # as a press does: the next edit adds to this text
                session.get(TelegramMessage, row_id).text = text
            return set(session.scalars(select(TelegramPress.action).where(
                TelegramPress.page_id == page_id, TelegramPress.chat_id == chat_id)))  # fmt: skip

        used = in_transaction(session, record)
        out = Outcome(r.gettext(ACCEPTED[tg.ACK]), accepted=True, language=r.language)
        out.page_messages = [(chat, message_id, text) for _row, chat, message_id, text in edits]
        out.edit_buttons = self.views.buttons(page_id, chat_id,
                                              tuple(a for a in (tg.SUPPORT, tg.DONE) if a not in used))  # fmt: skip
        return out

    def directive(self, *, chat_id: int, user_id: int, reply_to: int, text: str) -> Outcome | None:
        """A reply in the board's group to a request for direction: the board member's directive."""
        if self.settings.board_chat_id is None or chat_id != self.settings.board_chat_id:
            return None
        with self.sessions() as session:
            post = session.scalar(select(TelegramMessage).where(
                TelegramMessage.chat_id == chat_id, TelegramMessage.message_id == reply_to,
                TelegramMessage.direction_request_id.is_not(None)))  # fmt: skip
            if post is None:
                return None
            contact = contact_for_chat(session, user_id)  # the member's own private chat links them
            actor = actor_of(session, contact)
            r = self.views.renderer(getattr(contact, "language", None))
            if not allows(actor, Capability.GIVE_DIRECTIVES):
                in_transaction(session, lambda: audit.append(
                    session, action=audit.Action.ACK_REFUSED, actor=f"telegram:{user_id}",
                    target=f"direction_request:{post.direction_request_id}",
                    data={"reason": "not_board_member", "chat_id": str(chat_id)}))  # fmt: skip
                return Outcome(r.gettext("Only board members may give directives."), alert=True)
            request_id, incident = post.direction_request_id, session.get(Incident, post.incident_id)
            session.rollback()
            pb.answer_direction_request(session=session, request_id=request_id, text=text, actor=actor)
            return Outcome(r.gettext("Directive recorded for %(ref)s.") % {"ref": incident.ref}, accepted=True)
