"""The worker's Telegram runtime: one leader per bot token polls (or reads stored webhook updates) and sends.

python-telegram-bot's `Application` is driven inside the worker's own asyncio loop (`initialize`, `start`,
`updater.start_polling`; never `run_polling`, never a `Bot` per call). Pages reach it as `telegram.send` jobs
that only the leader claims, so Telegram's limits, which are per token, are kept in one place: at most 30
messages in any second overall, one second between two messages to one private chat, twenty a minute to a
group (the per-chat spacing, `next_send_at`, lives in the database so a new leader honours it). A 429
reschedules its job at `retry_after` and pauses every send; network errors retry with backoff; a bot that was
blocked or a chat that is gone marks the chat undeliverable and the page falls through to the next channel.
Domain services stay synchronous and run in a small thread pool, one session per call.
"""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, MessageHandler
from telegram.ext import filters as tg_filters
from telegram.request import BaseRequest, HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from incidents import audit, jobs, service
from incidents.access import Actor, stricter
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import NotFound
from incidents.events import record_event
from incidents.models import Event, Incident, Job, User
from incidents.policy import Capability, allows
from incidents.uow import in_transaction
from notifiers import telegram as tg
from notifiers.base import DeliveryFailed, Message
from playbooks.telegram_models import (
    TelegramChat,
    TelegramLeader,
    TelegramLinkCode,
    TelegramMessage,
    TelegramPress,
    TelegramUpdate,
)

log = logging.getLogger("ucsc.telegram")


SEND = "telegram.send"
LEADER_KINDS = frozenset({SEND})  # claimed by the Telegram leader only (app/worker.py leaves them alone)
OVERALL_PER_SECOND = 30
POOLS, POOL_SIZE = 4, 16  # connections for sends, edits and answers (PooledRequest)
PRIVATE_SPACING = 1.0
GROUP_SPACING = 3.0  # 20 in any minute: one every three seconds never breaks it
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
MODES = ("polling", "webhook", "off")


@jobs.job_kind(SEND, max_attempts=25, lease_seconds=30)
def _not_here(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Only the Telegram leader sends (its own claim loop); a plain worker never runs this kind."""
    raise jobs.PermanentError("telegram.send is run by the Telegram leader")


# --- settings -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    token: str
    api_url: str
    mode: str
    base_url: str
    secret_key: str
    board_chat_id: int | None = None
    poll_timeout: int = 20
    callback_ttl: timedelta = timedelta(days=7)
    link_ttl: timedelta = timedelta(days=7)
    retry_base: float = 0.5
    bot_username: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> "Settings | None":
        """None when Telegram is off (no token, or `TELEGRAM_MODE=off`)."""
        token = config.get("TELEGRAM_TOKEN")
        mode = str(config.get("TELEGRAM_MODE") or "polling").lower()
        if mode not in MODES:
            raise ValueError(f"UCSC_TELEGRAM_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        if not token or mode == "off":
            return None
        board = config.get("TELEGRAM_BOARD_CHAT_ID")
        return cls(
            token=str(token), api_url=str(config.get("TELEGRAM_API_URL") or "https://api.telegram.org/bot"),
            mode=mode, base_url=str(config.get("BASE_URL") or "").rstrip("/"), secret_key=str(config["SECRET_KEY"]),
            board_chat_id=int(board) if board not in (None, "") else None,
            poll_timeout=int(config.get("TELEGRAM_POLL_TIMEOUT", 20)),
            callback_ttl=timedelta(hours=float(config.get("TELEGRAM_CALLBACK_TTL_HOURS", 168))),
            link_ttl=timedelta(hours=float(config.get("TELEGRAM_LINK_TTL_HOURS", 168))),
            retry_base=float(config.get("TELEGRAM_RETRY_SECONDS", 0.5)),
            bot_username=config.get("TELEGRAM_BOT_USERNAME") or None,
        )  # fmt: skip

    @property
    def bot(self) -> str:
        """The token's name in the database: never the token itself."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]

    @property
    def lock_key(self) -> int:
        return int.from_bytes(hashlib.sha256(b"ucsc.telegram.leader\x00" + self.token.encode()).digest()[:8], "big",
                              signed=True)  # fmt: skip

    @property
    def callback_secret(self) -> bytes:
        return tg.callback_key(self.secret_key + "\x00" + self.token)

    @property
    def webhook_secret(self) -> str:
        """The `secret_token` given to setWebhook: derived, so web and worker agree without another setting."""
        return hmac.new(self.secret_key.encode(), b"ucsc.telegram.webhook\x00" + self.token.encode(),
                        hashlib.sha256).hexdigest()  # fmt: skip


# --- what the directory and the playbooks give us -------------------------------------------------------------


def _playbooks() -> Any:
    from playbooks import service as playbooks_service

    return playbooks_service


def _contact_model() -> Any:
    from playbooks.models import Contact

    return Contact


def contact_for_chat(session: Session, chat_id: int) -> Any:
    """The active contact linked to a private chat (deep link or an admin-entered chat id), or None."""
    contact = _contact_model()
    return session.scalar(
        select(contact).where(contact.telegram_chat_id == str(chat_id), contact.active.is_(True)).limit(1)
    )


def actor_of(session: Session, contact: Any) -> Actor | None:
    """The user a contact signs in as, if any: what `/status` may show them."""
    if contact is None or contact.user_id is None:
        return None
    user = session.get(User, contact.user_id)
    if user is None or not user.active:
        return None
    return Actor(user.id, user.username, Role(user.role), user.organisation_id)


# --- link codes ----------------------------------------------------------------------------------------------


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _require_desk(actor: Actor | str) -> None:
    """Only admins and operators hand out or revoke links (a string actor is the system or the CLI)."""
    from incidents.errors import Forbidden as NotAllowed

    if isinstance(actor, Actor) and not allows(actor, Capability.MANAGE_DIRECTORY):
        raise NotAllowed("only admins and operators link or unlink Telegram accounts")


def _directory_contact(session: Session, contact_id: int) -> Any:
    contact = session.get(_contact_model(), contact_id)
    if contact is None or contact.erased_at is not None:
        raise NotFound(f"no contact {contact_id}")
    return contact


def create_link_code(*, session: Session, contact_id: int, actor: Actor | str, ttl: timedelta,
                     source_ip: str | None = None) -> str:  # fmt: skip
    """A one-time code for `/start <code>`; earlier unused codes of the contact stop working. Audited."""
    _require_desk(actor)
    code = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]: what a deep link's start parameter takes

    def work() -> str:
        _directory_contact(session, contact_id)
        now = utcnow()
        session.execute(
            update(TelegramLinkCode)
            .where(TelegramLinkCode.contact_id == contact_id, TelegramLinkCode.used_at.is_(None),
                   TelegramLinkCode.revoked_at.is_(None))
            .values(revoked_at=now)
        )  # fmt: skip
        label = actor.label if isinstance(actor, Actor) else actor
        session.add(TelegramLinkCode(contact_id=contact_id, code_hash=_code_hash(code), created_by=label,
                                     created_at=now, expires_at=now + ttl))  # fmt: skip
        record_event(session, kind="contact.telegram_link_created", actor=_actor(actor),
                             data={"contact_id": contact_id, "expires_at": (now + ttl).isoformat()})  # fmt: skip
        audit.append(session, action=audit.Action.TELEGRAM_LINK_CREATED, actor=actor, target=f"contact:{contact_id}",
                     source_ip=source_ip, data={"expires_at": (now + ttl).isoformat()})  # fmt: skip
        return code

    return in_transaction(session, work)


def deep_link(username: str | None, code: str) -> str:
    return f"https://t.me/{username}?start={code}" if username else f"/start {code}"


def new_link(*, session: Session, config: Any, contact_id: int, actor: Actor, source_ip: str | None = None
             ) -> dict[str, Any]:  # fmt: skip
    """What the API and the directory page hand out: the code, `/start <code>`, the t.me deep link, its expiry.

    Conflict when Telegram is off here. The deep link needs `UCSC_TELEGRAM_BOT_USERNAME`; without it `url` is null
    and the person sends `/start <code>` to the bot themselves.
    """
    from incidents.errors import Conflict

    _require_desk(actor)  # a refusal first: whether Telegram is on here is the desk's business
    settings = Settings.from_config(config)
    if settings is None:
        raise Conflict("Telegram is off: set UCSC_TELEGRAM_TOKEN (and UCSC_TELEGRAM_MODE other than off)")
    code = create_link_code(session=session, contact_id=contact_id, actor=actor, ttl=settings.link_ttl,
                            source_ip=source_ip)  # fmt: skip
    expires = link_expiry(session, code)
    session.rollback()
    username = (settings.bot_username or "").lstrip("@") or None
    return {"contact_id": contact_id, "code": code, "start": f"/start {code}",
            "url": deep_link(username, code) if username else None,
            "expires_at": expires.isoformat() if expires else None}  # fmt: skip


def link_expiry(session: Session, code: str) -> datetime | None:
    return session.scalar(select(TelegramLinkCode.expires_at).where(TelegramLinkCode.code_hash == _code_hash(code)))


def revoke_link(*, session: Session, contact_id: int, actor: Actor | str, source_ip: str | None = None) -> None:
    """Unlink a contact's Telegram account and void its unused codes; presses from that chat are refused after."""
    _require_desk(actor)

    def work() -> None:
        contact = _directory_contact(session, contact_id)
        now = utcnow()
        old = contact.telegram_chat_id
        contact.telegram_chat_id = None
        contact.updated_at = now
        session.execute(
            update(TelegramLinkCode)
            .where(TelegramLinkCode.contact_id == contact_id, TelegramLinkCode.used_at.is_(None),
                   TelegramLinkCode.revoked_at.is_(None))
            .values(revoked_at=now)
        )  # fmt: skip
        record_event(session, kind="contact.telegram_unlinked", actor=_actor(actor),
                             data={"contact_id": contact_id, "chat_id": old})  # fmt: skip
        audit.append(session, action=audit.Action.TELEGRAM_UNLINKED, actor=actor, target=f"contact:{contact_id}",
                     source_ip=source_ip, data={"chat_id": old})  # fmt: skip

    in_transaction(session, work)


def link_account(*, session: Session, code: str, chat_id: int, user_id: int, chat_type: str) -> Any:
    """`/start <code>` in a private chat: link the code's contact to this chat; None when the code is no good."""
    if chat_type != "private" or chat_id != user_id:
        return None

    def work() -> Any:
        now = utcnow()
        row = session.scalar(
            select(TelegramLinkCode).where(TelegramLinkCode.code_hash == _code_hash(code)).with_for_update()
        )
        if row is None or row.used_at or row.revoked_at or row.expires_at < now:
            return None
        contact = session.get(_contact_model(), row.contact_id)
        if contact is None or not contact.active:
            return None
        row.used_at, row.used_by_telegram_id = now, user_id
        contact_model = _contact_model()
        # A chat links one contact: an earlier contact on this chat is unlinked.
        for other in session.scalars(select(contact_model).where(contact_model.telegram_chat_id == str(chat_id))):
            if other.id != contact.id:
                other.telegram_chat_id = None
        contact.telegram_chat_id = str(chat_id)
        contact.updated_at = now
        chat = session.get(TelegramChat, chat_id)
        if chat is not None:
            chat.undeliverable_at = chat.undeliverable_reason = None
        record_event(session, kind="contact.telegram_linked", actor=None,
                             data={"contact_id": contact.id, "chat_id": str(chat_id)})  # fmt: skip
        return contact

    return in_transaction(session, work)


def _actor(actor: Actor | str | None) -> Actor | None:
    return actor if isinstance(actor, Actor) else None


# --- webhook updates (stored by the web process, processed by the leader) ------------------------------------


def store_update(session: Session, settings: Settings, body: dict[str, Any]) -> bool:
    """Keep an update for the worker; False for a repeat of an update_id already stored (Telegram retries)."""
    update_id = body.get("update_id")
    if not isinstance(update_id, int):
        raise ValueError("update_id missing")

    def work() -> bool:
        exists = session.scalar(
            select(TelegramUpdate.id).where(TelegramUpdate.bot == settings.bot, TelegramUpdate.update_id == update_id)
        )
        if exists is not None:
            return False
        session.add(TelegramUpdate(bot=settings.bot, update_id=update_id, body=body))
        session.flush()
        return True

    try:
        return in_transaction(session, work)
    except IntegrityError:
        return False


# --- press outcomes -------------------------------------------------------------------------------------------


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


class Core:
    """The synchronous half: every use case here is one short transaction, called from the worker's thread pool."""

    def __init__(self, sessions: Callable[[], Session], settings: Settings, config: dict[str, Any]) -> None:
        self.sessions = sessions
        self.settings = settings
        self.config = config
        self.queued: Callable[[], None] = lambda: None  # the runtime's wake-up, called after a send is queued

    def renderer(self, language: str | None) -> tg.Renderer:
        return tg.Renderer(TRANSLATIONS, language)

    def max_tlp(self, chat_id: int) -> str:
        from notifiers.registry import max_tlp

        configured = max_tlp(self.config, tg.CHANNEL)
        if chat_id < 0 and tg.tlp_above(configured, tg.GROUP_MAX_TLP):
            return tg.GROUP_MAX_TLP
        return configured

    # pages -> jobs

    def page_view(self, session: Session, page: Any, language: str) -> tg.PageView:
        incident = session.get(Incident, page.incident_id)
        system = incident.affected_system if incident is not None else None
        organisation = None
        if page.organisation_id is not None:
            from incidents.models import Organisation

            org = session.get(Organisation, page.organisation_id)
            if org is not None:
                organisation = org.name_en if language == "en" and org.name_en else org.name_vi
        ask = (page.reason_en if language == "en" and page.reason_en else page.reason_vi) or None
        return self.view(incident, page_id=page.id, system=getattr(system, "name", None), organisation=organisation,
                         ask=ask)  # fmt: skip

    def view(self, incident: Incident, **extra: Any) -> tg.PageView:
        """What a message may say of an incident (the renderer cuts it down to the chat's TLP)."""
        return tg.PageView(**{
            "page_id": 0, "ref": incident.ref, "title": incident.title, "tlp": str(incident.tlp),
            "url": f"{self.settings.base_url}/incidents/{incident.id}",
            "category": str(incident.category) if incident.category else None,
            "priority": str(incident.priority) if incident.priority else None,
            "incident_class": str(incident.incident_class) if incident.incident_class else None,
            "exercise": bool(getattr(incident, "exercise", False)), **extra,
        })  # fmt: skip

    def buttons(self, page_id: int, chat_id: int, actions: tuple[str, ...] = tg.ACTIONS) -> dict[str, str]:
        secret, now = self.settings.callback_secret, utcnow()
        return {a: tg.sign_callback(secret, a, page_id, chat_id, now) for a in actions}

    def enqueue_page(self, message: Message) -> str:
        """The channel's `send`: render the page for its contact and queue it for the leader (one transaction).

        The page's other Telegram deliveries still queued are rendered and queued in the same transaction (their
        own `send` then finds its job there): a page to 120 people reaches the leader at once, not one by one.
        """
        page_id, contact_id, wave = _page_key(message)
        try:
            chat_id = int(str(message.to).strip())
        except ValueError:
            raise DeliveryFailed(f"not a Telegram chat id: {message.to!r}", permanent=True) from None
        with self.sessions() as session:
            from playbooks.models import DELIVERY_QUEUED, Contact, Delivery, Page

            chat = session.get(TelegramChat, chat_id)
            if chat is not None and chat.undeliverable_at is not None:
                raise DeliveryFailed(f"Telegram chat {chat_id}: {chat.undeliverable_reason}", permanent=True)
            page = session.get(Page, page_id) if page_id is not None else None
            if page is None:
                text = tg.esc(message.text)[: tg.MAX_TEXT]
                payloads = [self._payload(chat_id, text, {}, f"tg:{message.key}", "reply", None, contact_id,
                                          message.data.get("incident_id"), None, tg.DEFAULT_LANGUAGE)]  # fmt: skip
            else:
                own = f"tg:page.{page.id}.{contact_id}.{wave}"
                if session.scalar(select(Job.id).where(Job.idempotency_key == own)) is not None:
                    session.rollback()  # a sibling's send queued this one with its own (below)
                    return f"queued for Telegram as tg:{message.key}"
                siblings = session.execute(
                    select(Delivery.id, Delivery.contact_id, Delivery.address).where(
                        Delivery.page_id == page.id, Delivery.channel == tg.CHANNEL, Delivery.wave == wave,
                        (Delivery.state == DELIVERY_QUEUED) | (Delivery.contact_id == contact_id))
                ).all()  # fmt: skip
                targets = {c: (d, addr) for d, c, addr in siblings}
                targets.setdefault(contact_id, (None, str(chat_id)))
                # Only what no sibling's send queued yet: else each of a page's n sends would render and insert
                # all n again (n² work in the worker, beside the leader's sends, in a 120-contact burst).
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
                        views[language] = self.page_view(session, page, language)
                    text = self.renderer(language).page(views[language], max_tlp=self.max_tlp(to))
                    buttons = self.buttons(page.id, to) if page.requires_ack else {}
                    payloads.append(self._payload(to, text, buttons, f"tg:page.{page.id}.{cid}.{wave}", "page",
                                                  page.id, cid, page.incident_id, delivery_id, language))  # fmt: skip

            siblings_queued = [p["delivery_id"] for p in payloads if p["delivery_id"] and p["contact_id"] != contact_id]

            def work() -> None:
                jobs.enqueue_many(session, [jobs.job_values(SEND, p, key=p["key"], incident_id=p["incident_id"])
                                            for p in payloads])  # fmt: skip
                if siblings_queued:
                    _handed_over(session, page.id, siblings_queued)

            in_transaction(session, work)
        self.queued()
        return f"queued for Telegram as tg:{message.key}"

    @staticmethod
    def _payload(chat_id: int, text: str, buttons: dict[str, str], key: str, purpose: str, page_id: int | None,
                 contact_id: int | None, incident_id: int | None, delivery_id: int | None,
                 language: str) -> dict[str, Any]:  # fmt: skip
        return {
            "chat_id": chat_id, "text": text, "buttons": buttons, "key": key, "purpose": purpose, "page_id": page_id,
            "contact_id": contact_id, "incident_id": incident_id, "delivery_id": delivery_id, "language": language,
            "queued_at": time.time(),
        }  # fmt: skip

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

    def _board_post(self, session: Session, event: Any) -> dict[str, Any] | None:
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
        view = self.view(incident, ask=data.get("question_vi") or data.get("question") or event.note)
        # A question asked under a stricter level than the incident holds now keeps that level (as on /live).
        view = replace(view, tlp=stricter(event.tlp, view.tlp))
        board = int(self.settings.board_chat_id)
        text = self.renderer("vi").board(view, headline=tg.BOARD_HEADLINES[headline], max_tlp=self.max_tlp(board))
        return {
            "chat_id": board, "text": text, "buttons": {}, "key": f"tg:board:{event.id}", "purpose": "board",
            "incident_id": incident.id, "direction_request_id": request_id, "language": "vi",
            "queued_at": time.time(),
        }  # fmt: skip

    # sends: outcomes recorded on the job

    def sent(self, batch: list[tuple[jobs.ClaimedJob, int, datetime, float]], worker: str) -> None:
        """Record sent messages, their chats' next slots and their jobs' completion, in one transaction."""
        with self.sessions() as session:

            def work() -> None:
                keys = [job.payload["key"] for job, *_ in batch]
                known = set(session.scalars(select(TelegramMessage.key).where(TelegramMessage.key.in_(keys))))
                # Their chats and deliveries in two reads, not two each (the gets below find them loaded).
                chats = {int(job.payload["chat_id"]) for job, *_ in batch}
                list(session.scalars(select(TelegramChat).where(TelegramChat.chat_id.in_(chats))))
                deliveries = [job.payload["delivery_id"] for job, *_ in batch if job.payload.get("delivery_id")]
                if deliveries:
                    from playbooks.models import Delivery

                    list(session.scalars(select(Delivery).where(Delivery.id.in_(deliveries))))
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
                    self._space(session, int(p["chat_id"]), at + timedelta(seconds=spacing), sent=True)
                    _finish(session, job, worker, jobs.DONE)
                    if p.get("delivery_id"):
                        _delivery_done(session, p["delivery_id"], int(p["chat_id"]), message_id)

            in_transaction(session, work)

    def _space(self, session: Session, chat_id: int, next_at: datetime, *, sent: bool = False) -> None:
        chat = session.get(TelegramChat, chat_id)
        if chat is None:
            chat = TelegramChat(chat_id=chat_id, kind="private" if chat_id > 0 else "group", sent=0)
            session.add(chat)
        chat.next_send_at = next_at
        chat.sent = (chat.sent or 0) + (1 if sent else 0)
        chat.updated_at = utcnow()

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
            session.execute(update(Job).where(_mine(job, worker)).values(**values))

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
                    _delivery_failed(session, p["delivery_id"], reason, self.config)

            in_transaction(session, work)

    def failed(self, job: jobs.ClaimedJob, worker: str, error: str, *, permanent: bool) -> None:
        with self.sessions() as session:
            state = jobs.fail(session, job, worker, error, permanent=permanent)
        if state == jobs.DEAD and job.payload.get("delivery_id"):
            with self.sessions() as session:
                in_transaction(
                    session, lambda: _delivery_failed(session, job.payload["delivery_id"], error, self.config)
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

    # presses

    def _check(self, session: Session, *, data: str, chat_id: int, user_id: int, chat_type: str) -> tuple:
        """(refusal reason or None, callback, contact, page, renderer): the checks every press passes, no writes."""
        contact = contact_for_chat(session, chat_id) if chat_type == "private" and chat_id == user_id else None
        r = self.renderer(getattr(contact, "language", None) or tg.DEFAULT_LANGUAGE)
        try:
            cb = tg.verify_callback(self.settings.callback_secret, data, chat_id, now=utcnow(),
                                    ttl=self.settings.callback_ttl)  # fmt: skip
        except tg.CallbackRefused as exc:
            return exc.reason, None, contact, None, r
        if contact is None:
            return "not_linked", cb, None, None, r
        from playbooks.models import PAGE_OPEN, Page
        from playbooks.service import may_acknowledge

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
                _apply(session, cb.action, page_id, contact, self.config)
            except _Refused as exc:
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
            from playbooks.models import PAGE_OPEN, Page

            page_open = session.scalar(select(Page.state).where(Page.id == page_id)) == PAGE_OPEN
            left = tuple(a for a in tg.ACTIONS if a not in used and (a != tg.ACK or page_open))
            return Outcome(
                answer=r.gettext(ACCEPTED[cb.action]), accepted=True, language=r.language, edit_text=edit_text,
                edit_buttons=self.buttons(page_id, chat_id, left),
            )  # fmt: skip

    def _refuse(self, session: Session, r: tg.Renderer, reason: str, *, chat_id: int, user_id: int, name: str,
                cb: tg.Callback | None = None, data: str | None = None, contact: Any = None) -> Outcome:  # fmt: skip
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

    # commands

    def command(self, *, name: str, args: list[str], chat_id: int, user_id: int, chat_type: str,
                user_language: str | None) -> Outcome:  # fmt: skip
        with self.sessions() as session:
            contact = contact_for_chat(session, chat_id) if chat_type == "private" and chat_id == user_id else None
            language = getattr(contact, "language", None) or (user_language if user_language in tg.LANGUAGES
                                                               else tg.DEFAULT_LANGUAGE)  # fmt: skip
            r = self.renderer(language)
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

    def _mine(self, session: Session, r: tg.Renderer, contact: Any) -> str:
        from playbooks.models import PAGE_OPEN, Page, PageRecipient

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

    def _status(self, session: Session, r: tg.Renderer, contact: Any, ref: str) -> Outcome:
        actor = actor_of(session, contact)
        try:
            if actor is None:
                raise NotFound(ref)
            incident = service.get_incident(session, actor, ref)
        except NotFound:
            return Outcome(r.gettext("No incident %(ref)s that you may see.") % {"ref": ref}, language=r.language)
        text = r.page(self.view(incident), max_tlp=self.max_tlp(contact_chat(contact)))
        text += f"\n{tg.esc(r.gettext('Status'))}: {tg.esc(str(incident.status))}"
        return Outcome(text, language=r.language)

    def _ack(self, session: Session, r: tg.Renderer, contact: Any, ref: str) -> Outcome:
        from playbooks.models import PAGE_OPEN, Page, PageRecipient

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
            _apply(session, tg.ACK, page_id, contact, self.config)
        except _Refused as exc:
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
        out.edit_buttons = self.buttons(page_id, chat_id, tuple(a for a in (tg.SUPPORT, tg.DONE) if a not in used))
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
            r = self.renderer(getattr(contact, "language", None))
            if not allows(actor, Capability.GIVE_DIRECTIVES):
                in_transaction(session, lambda: audit.append(
                    session, action=audit.Action.ACK_REFUSED, actor=f"telegram:{user_id}",
                    target=f"direction_request:{post.direction_request_id}",
                    data={"reason": "not_board_member", "chat_id": str(chat_id)}))  # fmt: skip
                return Outcome(r.gettext("Only board members may give directives."), alert=True)
            request_id, incident = post.direction_request_id, session.get(Incident, post.incident_id)
            session.rollback()
            _answer_direction(session, request_id, text, actor)
            return Outcome(r.gettext("Directive recorded for %(ref)s.") % {"ref": incident.ref}, accepted=True)


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
# Pages whose target is the board (a role `board.*`), sent by an escalation or a request for support.
BOARD_ESCALATION_KINDS = frozenset({"page.sent", "page.support_requested"})
DIRECTION_REQUEST_KINDS = frozenset({"direction.requested"})


def contact_chat(contact: Any) -> int:
    try:
        return int(contact.telegram_chat_id)
    except (TypeError, ValueError):
        return 0


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mine(job: jobs.ClaimedJob, worker: str) -> Any:
    return (Job.id == job.id) & (Job.state == jobs.RUNNING) & (Job.leased_by == worker) & (Job.attempts == job.attempts)


def _finish(session: Session, job: jobs.ClaimedJob, worker: str, state: str, error: str | None = None) -> None:
    session.execute(update(Job).where(_mine(job, worker)).values(
        state=state, lease_until=None, finished_at=utcnow(), last_error=error))  # fmt: skip


# The playbooks services this runtime calls (issue 5): each is one use case and one transaction of its own.


def _page_key(message: Message) -> tuple[int | None, int | None, int]:
    """The page, contact and wave of a page message: its data, else its stable key (`page.P.C.W`)."""
    data = message.data or {}
    parts = message.key.split(".")
    from_key = [int(p) for p in parts[1:4]] if len(parts) == 4 and parts[0] == "page" and all(
        p.isdigit() for p in parts[1:4]) else [None, None, 0]  # fmt: skip
    page_id = data.get("page_id") or from_key[0]
    contact_id = data.get("contact_id") or from_key[1]
    return page_id, contact_id, int(data.get("wave") or from_key[2] or 0)


def _apply(session: Session, action: str, page_id: int, contact: Any, config: dict[str, Any]) -> None:
    """The press's use case (playbooks/service.py), one transaction of its own."""
    from incidents.errors import Conflict, Forbidden
    from playbooks import engine
    from playbooks import service as pb
    from playbooks.models import Page, Task

    try:
        if action == tg.ACK:
            pb.acknowledge_page(session=session, page_id=page_id, by_contact_id=contact.id, via=tg.CHANNEL)
        elif action == tg.SUPPORT:
            pb.request_support(session=session, page_id=page_id, by_contact_id=contact.id,
                               settings=engine.Settings.from_config(config))  # fmt: skip
        else:
            page = session.get(Page, page_id)
            task_id = session.scalar(
                select(Task.id).where(Task.incident_id == page.incident_id, Task.state == "open",
                                      Task.organisation_id == contact.organisation_id)
                .order_by(Task.due_at.is_(None), Task.due_at, Task.id).limit(1)
            )  # fmt: skip
            session.rollback()
            if task_id is None:
                raise _Refused("no_task")
            pb.complete_task(session=session, task_id=task_id, by_contact_id=contact.id)
    except Forbidden as exc:
        raise _Refused("not_addressee") from exc
    except (Conflict, NotFound) as exc:
        raise _Refused("closed") from exc


def _answer_direction(session: Session, request_id: int, text: str, actor: Actor) -> None:
    from playbooks import service as pb

    pb.answer_direction_request(session=session, request_id=request_id, text=text, actor=actor)


def _on_call(session: Session, contact: Any) -> bool:
    from incidents.models import Organisation
    from playbooks import service as pb

    org = session.get(Organisation, contact.organisation_id)
    return org is not None and any(
        c.id == contact.id for c in pb.who_is_on_call(session=session, organisation=org.code)
    )


def _open_tasks(session: Session, contact: Any) -> list[tuple[str, str]]:
    from playbooks.models import Task

    rows = session.execute(
        select(Incident.ref, Task.title_vi).join(Incident, Incident.id == Task.incident_id)
        .where(Task.state == "open", Task.organisation_id == contact.organisation_id).order_by(Task.id).limit(20)
    )  # fmt: skip
    return [(ref, title) for ref, title in rows]


def _handed_over(session: Session, page_id: int, delivery_ids: list[int]) -> None:
    """Deliveries queued for the leader with a sibling's send are delivered to the channel, as their own send records
    it (`playbooks.engine`: one `page.delivered` each), and their own jobs still queued are done.

    Else each of a burst's 119 other delivery jobs is claimed, renders its page and writes its own transactions in
    the worker, beside the leader's sends: their CPU (the GIL) and, on SQLite, their write locks slowed the
    leader's event loop, and each window of 30 sends waited that much longer for its completions.
    """
    from playbooks import engine
    from playbooks.models import DELIVERY_DELIVERED, DELIVERY_QUEUED, Contact, Delivery, Page

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
    # The delivery's pending job, as playbooks.engine keys it (`page.deliver:<delivery>:<attempts so far>`); one
    # that a worker claimed already finds the delivery delivered, or its send queued, and records nothing twice.
    session.execute(update(Job).where(
        Job.idempotency_key.in_([f"{engine.DELIVER}:{d.id}:{d.attempts}" for d in rows]), Job.state == jobs.QUEUED,
    ).values(state=jobs.DONE, finished_at=now))  # fmt: skip
    for delivery in rows:
        delivery.state, delivery.delivered_at = DELIVERY_DELIVERED, now
        delivery.attempts += 1
        receipt = f"queued for Telegram as tg:page.{page_id}.{delivery.contact_id}.{delivery.wave}"
        delivery.message_id, delivery.last_error = receipt[:300], None
        engine.run_event(session, "page.delivered", incident, None, page_id=page.id, delivery_id=delivery.id,
                      channel=delivery.channel, contact=names.get(delivery.contact_id), contact_id=delivery.contact_id,
                      wave=delivery.wave, attempts=delivery.attempts, message_id=delivery.message_id)  # fmt: skip


def _delivery_done(session: Session, delivery_id: int, chat_id: int, message_id: int) -> None:
    """The delivery was recorded when queued; it now names the Telegram message (for people and for edits)."""
    from playbooks.models import Delivery

    delivery = session.get(Delivery, delivery_id)
    if delivery is not None:
        delivery.message_id = f"telegram:{chat_id}:{message_id}"


def _delivery_failed(session: Session, delivery_id: int, error: str, config: dict[str, Any]) -> None:
    """Telegram refused for good (blocked, chat gone): the delivery failed; the contact's next channel gets it."""
    from playbooks import engine
    from playbooks.models import DELIVERY_FAILED, PAGE_OPEN, Contact, Delivery, Page

    delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    if delivery is None or delivery.state == DELIVERY_FAILED:
        return
    delivery.state, delivery.last_error = DELIVERY_FAILED, error[:2000]
    page = session.get(Page, delivery.page_id)
    contact = session.get(Contact, delivery.contact_id)
    incident = session.get(Incident, page.incident_id)
    fallback = None
    if page.state == PAGE_OPEN:
        settings = engine.Settings.from_config(config)
        fallback = engine.queue_delivery(session, page, contact, delivery.wave, settings, after=tg.CHANNEL)
    engine.run_event(session, "page.failed", incident, None, note=error[:500], page_id=page.id, delivery_id=delivery.id,
                  channel=tg.CHANNEL, contact=contact.name, contact_id=contact.id,
                  next_channel=fallback.channel if fallback else None, final=fallback is None)  # fmt: skip


# --- the asyncio half -----------------------------------------------------------------------------------------


class SlidingLimiter:
    """At most `rate` calls received in any `period`, in the order they asked (first come, first served).

    The receiver stamps a call somewhere between its start and its completion, so a call may start once the call
    `rate` places before it completed at least `period` ago: its receipt lay before its completion. That is the
    tightest bound known without the receiver's clock, and it costs one round trip per window, nothing more: a
    waiting call is woken by a timer at the exact moment its slot opens (or by a completion), never by polling.
    """

    def __init__(self, rate: int, period: float) -> None:
        self.rate, self.period = rate, period
        self.done: deque[float] = deque()  # completion times (loop clock) of the last `rate` calls at most
        self.inflight = 0
        self.waiters: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def _take(self, now: float) -> bool:
        while self.done and self.done[0] + self.period <= now:
            self.done.popleft()
        if len(self.done) + self.inflight < self.rate:
            self.inflight += 1
            return True
        return False

    def _dispatch(self) -> None:
        """Grant the slots open now, first waiter first; arm one timer for the next slot to open."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            head = self.waiters[0]
            if head.done():  # its caller was cancelled while it waited
                self.waiters.popleft()
                continue
            if not self._take(loop.time()):
                break
            self.waiters.popleft()
            head.set_result(None)
        if self.waiters and self.done and len(self.done) + self.inflight >= self.rate:
            self._timer = loop.call_at(self.done[0] + self.period, self._dispatch)

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.waiters and self._take(loop.time()):
            return
        waiter = loop.create_future()
        self.waiters.append(waiter)
        self._dispatch()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, but its caller is gone: the slot goes back
                self.inflight -= 1
                self._dispatch()
            raise

    def give_back(self) -> None:
        """A slot taken but not used (no call was made): free again at once, with nothing to count."""
        self.inflight -= 1
        self._dispatch()

    async def release(self) -> None:
        """The call completed (whatever its outcome): its slot counts from now."""
        self.inflight -= 1
        self.done.append(asyncio.get_running_loop().time())
        self._dispatch()


_DEFAULT = BaseRequest.DEFAULT_NONE


class PooledRequest(BaseRequest):
    """The Bot's requests (all but getUpdates) over a few small HTTPX pools, each call on the least busy one.

    httpcore's pool spends time quadratic in its connections on every request and every response
    (`_assign_requests_to_connections`, encode/httpcore#1035). With 30 sends in flight on one pool of 64 that was
    most of a send's CPU in the leader's loop: 2.4 ms a send on one pool, 1.5 ms on four of 16 (120 sends, this
    machine). The loop's CPU is what a burst waits for: a slot opens a second after a completion the loop sees.
    """

    def __init__(self, pools: int, size: int) -> None:
        self.pools = [HTTPXRequest(connection_pool_size=size, pool_timeout=10, connect_timeout=5, read_timeout=10,
                                   write_timeout=10) for _ in range(pools)]  # fmt: skip
        self.busy = [0] * pools

    @property
    def read_timeout(self) -> float | None:
        return self.pools[0].read_timeout

    async def initialize(self) -> None:
        for pool in self.pools:
            await pool.initialize()

    async def shutdown(self) -> None:
        for pool in self.pools:
            await pool.shutdown()

    async def do_request(self, url: str, method: str, request_data: Any = None, read_timeout: Any = _DEFAULT,
                         write_timeout: Any = _DEFAULT, connect_timeout: Any = _DEFAULT,
                         pool_timeout: Any = _DEFAULT) -> tuple[int, bytes]:  # fmt: skip
        index = self.busy.index(min(self.busy))
        self.busy[index] += 1
        try:
            return await self.pools[index].do_request(url, method, request_data, read_timeout, write_timeout,
                                                      connect_timeout, pool_timeout)  # fmt: skip
        finally:
            self.busy[index] -= 1


class Runtime:
    """Leadership, the Application, the send loop, stored webhook updates and board posts, in the worker's loop."""

    def __init__(self, worker: Any, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.name = worker.name
        self.engine = worker.engine
        self.core = Core(worker.sessions, settings, dict(worker.app.config))
        self.core.queued = self.wake
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="ucsc-telegram")
        self.limiter = SlidingLimiter(OVERALL_PER_SECOND, 1.0)
        self.paused_until = 0.0  # monotonic: a 429 holds every send until then
        self.chat_next: dict[int, float] = {}
        self.chat_locks: dict[int, asyncio.Lock] = {}
        self.sending: set[tuple[int, int]] = set()  # (job id, attempt): a re-claimed job is a new attempt
        self.leading = False
        self.application: Application | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock_conn: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._sent: list[tuple[jobs.ClaimedJob, int, datetime, float]] = []
        self._sent_changed = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake.set)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def run(self) -> None:
        """Try for leadership every second; lead until stopped or the lock is lost."""
        self.loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                if await self._db(self._try_lock):
                    await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Telegram runtime failed; retrying")
            finally:
                await self._db(self._unlock)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _try_lock(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite runs one worker
        from sqlalchemy import text

        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.settings.lock_key}).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._lock_conn = conn
        return True

    def _still_locked(self) -> bool:
        if self._lock_conn is None:
            return True
        from sqlalchemy import text

        try:
            self._lock_conn.execute(text("SELECT 1"))
            self._lock_conn.commit()
            return True
        except Exception:
            log.warning("lost the Telegram leader lock's connection")
            return False

    def _unlock(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()  # closing the session ends its advisory lock
            self._lock_conn = None

    def _build(self) -> Application:
        builder = (
            ApplicationBuilder().token(self.settings.token).base_url(self.settings.api_url)
            .concurrent_updates(8).request(PooledRequest(POOLS, POOL_SIZE))
            .get_updates_request(HTTPXRequest(connection_pool_size=1, read_timeout=self.settings.poll_timeout + 10))
        )  # fmt: skip
        if self.settings.mode == "webhook":
            builder = builder.updater(None)
        app = builder.build()
        app.add_handler(CallbackQueryHandler(self._on_press))
        for name in ("start", "help", "mine", "status", "ack"):
            app.add_handler(CommandHandler(name, self._on_command))
        app.add_handler(MessageHandler(tg_filters.REPLY & tg_filters.TEXT & ~tg_filters.COMMAND, self._on_reply))
        app.add_error_handler(self._on_error)
        return app

    async def _lead(self) -> None:
        app = self._build()
        while not self._stop.is_set():
            try:
                await app.initialize()
                break
            except InvalidToken:
                log.error("the Telegram token was refused; Telegram stays off in this worker")
                await self._stop.wait()
                return
            except NetworkError as exc:
                log.warning("Telegram unreachable at start (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)
        if self._stop.is_set():
            return
        self.application = app
        self.leading = True
        await self._db(self.core.lead, self.name)
        taken = await self._db(self.core.takeover, self.name)
        log.info("telegram leader %s (%s mode, bot @%s, %d send lease(s) taken over)", self.name,
                 self.settings.mode, app.bot.username, taken)  # fmt: skip
        try:
            await app.start()
            workers = [asyncio.create_task(t) for t in (self._sender(), self._beat(), self._recorder(),
                                                         self._receive(app))]  # fmt: skip
            await asyncio.wait([*workers, asyncio.create_task(self._stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            self.leading = False
            for task in list(self._tasks):
                task.cancel()
            for _ in range(3):  # what was sent must be recorded, or a new leader would send it again
                if self._sent:
                    with contextlib.suppress(Exception):
                        await self._flush()
            with contextlib.suppress(Exception):
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
            with contextlib.suppress(Exception):
                if app.running:
                    await app.stop()
            with contextlib.suppress(Exception):
                await app.shutdown()
            self.application = None
            log.info("telegram leader %s stepped down", self.name)

    async def _receive(self, app: Application) -> None:
        """Commands, then updates by long polling (or the webhook); retried while Telegram cannot be reached."""
        await self._register_commands(app)
        if self.settings.mode == "polling":
            while True:
                try:
                    await app.updater.start_polling(timeout=self.settings.poll_timeout, allowed_updates=[
                        "message", "callback_query"], error_callback=self._on_poll_error)  # fmt: skip
                    break
                except NetworkError as exc:
                    log.warning("starting to poll failed (%s); retrying", exc)
                    await asyncio.sleep(2)
            log.info("telegram ready: polling")
            await asyncio.Event().wait()  # the updater polls on its own; this task ends when leadership does
        await self._set_webhook(app)
        log.info("telegram ready: webhook")
        await self._stored_updates()

    async def _register_commands(self, app: Application) -> None:
        for language in tg.LANGUAGES:
            r = self.core.renderer(language)
            commands = [BotCommand(name, r.gettext(text)) for name, text in COMMANDS]
            try:
                await app.bot.set_my_commands(
                    commands,
                    scope=BotCommandScopeDefault(),
                    language_code=None if language == tg.DEFAULT_LANGUAGE else language,
                )
            except NetworkError as exc:  # commands are a convenience; paging must not wait for them
                log.warning("setMyCommands (%s) failed: %s", language, exc)

    async def _set_webhook(self, app: Application) -> None:
        url = self.settings.base_url + WEBHOOK_PATH
        while not self._stop.is_set():
            try:
                await app.bot.set_webhook(url, secret_token=self.settings.webhook_secret,
                                          allowed_updates=["message", "callback_query"])  # fmt: skip
                return
            except NetworkError as exc:
                log.warning("setWebhook failed (%s); retrying", exc)
                await asyncio.sleep(2)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not await self._db(self._still_locked):
                return  # leadership lost: _lead steps down
            with contextlib.suppress(Exception):
                await self._db(self.core.lead, self.name)
            try:
                if await self._db(self.core.queue_board_posts):
                    self._wake.set()
            except Exception:
                log.exception("board posts failed")

    # sending

    async def _sender(self) -> None:
        while True:
            self._wake.clear()
            wait = self.paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            claimed, keys, slots = await self._db(self._claim, frozenset(self.chat_next))
            if claimed:
                for chat_id, at in slots.items():
                    self.chat_next.setdefault(chat_id, time.monotonic() + (at - utcnow()).total_seconds())
                for job in claimed:
                    self.sending.add((job.id, job.attempts))
                    task = asyncio.create_task(self._deliver(job, job.payload["key"] in keys))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(claimed) >= 100:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.05)

    def _claim(self, known: frozenset[int]) -> tuple[list[jobs.ClaimedJob], set[str], dict[int, datetime]]:
        """Due sends leased to us, the keys of those sent before, and the next slots of chats not in `known`.

        One trip to the thread pool for all three: each trip is a wait on a loaded machine, before every page.
        """
        with self.worker.sessions() as session:
            due = session.scalar(
                select(func.min(Job.run_at)).where(Job.state == jobs.QUEUED, Job.kind.in_(LEADER_KINDS))
            )
            session.rollback()
            if due is None or due > utcnow():
                return [], set(), {}
            claimed = jobs.claim(session, self.name, 100, kinds=sorted(LEADER_KINDS))
        claimed = [j for j in claimed if (j.id, j.attempts) not in self.sending]
        if not claimed:
            return [], set(), {}
        keys = self.core.already_sent([j.payload["key"] for j in claimed])
        unknown = sorted({int(j.payload["chat_id"]) for j in claimed} - known)
        return claimed, keys, self.core.chat_slots(unknown) if unknown else {}

    async def _deliver(self, job: jobs.ClaimedJob, sent_before: bool) -> None:
        try:
            if sent_before:  # an earlier attempt got through but its job was not marked done
                await self._db(self._complete, job)
                return
            chat_id = int(job.payload["chat_id"])
            lock = self.chat_locks.setdefault(chat_id, asyncio.Lock())
            async with lock:
                await self._send_one(job, chat_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("telegram send %s failed", job.id)
            await self._db(self.core.failed, job, self.name, f"{type(exc).__name__}: {exc}", permanent=False)
        finally:
            self.sending.discard((job.id, job.attempts))

    def _record(self, job: jobs.ClaimedJob, message_id: int, at: datetime, spacing: float) -> None:
        """Sent: written with the others sent in the same few milliseconds (one transaction, not one each)."""
        self._sent.append((job, message_id, at, spacing))
        self._sent_changed.set()

    async def _recorder(self) -> None:
        while True:
            await self._sent_changed.wait()
            await asyncio.sleep(0.01)
            await self._flush()

    async def _recorded(self) -> None:
        """Before an update is handled: what was sent is in the database (a press may come right after a send)."""
        if self._sent:
            await self._flush()

    async def _flush(self) -> None:
        self._sent_changed.clear()
        batch, self._sent = self._sent, []
        if not batch:
            return
        try:
            await self._db(self.core.sent, batch, self.name)
        except Exception:
            log.exception("recording %d sent message(s) failed; retrying", len(batch))
            self._sent = batch + self._sent
            self._sent_changed.set()
            await asyncio.sleep(0.5)

    def _complete(self, job: jobs.ClaimedJob) -> None:
        with self.worker.sessions() as session:
            jobs.complete(session, job, self.name)

    async def _send_one(self, job: jobs.ClaimedJob, chat_id: int) -> None:
        p = job.payload
        wait = self.chat_next.get(chat_id, 0.0) - time.monotonic()
        if wait > 5.0:  # a long wait is the database's business, not a leased job's
            await self._db(self.core.reschedule, job, self.name, utcnow() + timedelta(seconds=wait), "chat spacing",
                           count=False)  # fmt: skip
            return
        if wait > 0:
            await asyncio.sleep(wait)
        await self.limiter.acquire()
        released = False
        try:
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                self.limiter.give_back()  # nothing was sent: the slot must not hold the window after the pause
                released = True
                await self._db(self.core.reschedule, job, self.name, utcnow() + timedelta(seconds=pause),
                               "paused by a 429", count=False)  # fmt: skip
                return
            renderer = self.core.renderer(p.get("language"))
            markup = renderer.keyboard(p.get("buttons") or {})
            message = await self.application.bot.send_message(
                chat_id, p["text"], parse_mode=ParseMode.HTML, reply_markup=markup, disable_web_page_preview=True
            )
            await self.limiter.release()
            released = True
            spacing = PRIVATE_SPACING if chat_id > 0 else GROUP_SPACING
            self.chat_next[chat_id] = time.monotonic() + spacing
            self._record(job, message.message_id, utcnow(), spacing)
            if p.get("queued_at"):
                log.debug("telegram page %s sent %.3fs after queueing", job.id, time.time() - p["queued_at"])
        except RetryAfter as exc:
            seconds = tg.retry_seconds(exc)
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)
            log.warning("Telegram asked to wait %.0fs; every send pauses", seconds)
            await self._db(self.core.reschedule, job, self.name, utcnow() + timedelta(seconds=seconds),
                           f"429 retry after {seconds}s", count=False)  # fmt: skip
        except Forbidden as exc:
            await self._db(self.core.undeliverable, job, self.name, str(exc))
        except ChatMigrated as exc:
            await self._db(self.core.undeliverable, job, self.name, f"group moved to {exc.new_chat_id}")
        except BadRequest as exc:
            if "chat not found" in str(exc).lower() or "user is deactivated" in str(exc).lower():
                await self._db(self.core.undeliverable, job, self.name, str(exc))
            else:
                await self._db(self.core.failed, job, self.name, f"BadRequest: {exc}", permanent=True)
        except NetworkError as exc:  # TimedOut included: retried with backoff, the attempt counts
            delay = _backoff(job.attempts, self.settings.retry_base)
            await self._db(self.core.reschedule, job, self.name, utcnow() + timedelta(seconds=delay),
                           f"{type(exc).__name__}: {exc}", count=True)  # fmt: skip
        finally:
            if not released:
                await self.limiter.release()

    # updates

    async def _stored_updates(self) -> None:
        """Webhook mode: process updates the web route stored, in update_id order."""
        while True:
            rows = await self._db(self._unprocessed)
            for row_id, body in rows:
                try:
                    update = Update.de_json(body, self.application.bot)
                    await self.application.process_update(update)
                finally:
                    await self._db(self._processed, row_id)
            if not rows:
                await asyncio.sleep(0.05)

    def _unprocessed(self) -> list[tuple[int, dict]]:
        with self.worker.sessions() as session:
            rows = session.execute(
                select(TelegramUpdate.id, TelegramUpdate.body)
                .where(TelegramUpdate.bot == self.settings.bot, TelegramUpdate.processed_at.is_(None))
                .order_by(TelegramUpdate.update_id).limit(50)
            ).all()  # fmt: skip
            return [(r[0], r[1]) for r in rows]

    def _processed(self, row_id: int) -> None:
        with self.worker.sessions() as session:
            in_transaction(
                session,
                lambda: session.execute(
                    update(TelegramUpdate).where(TelegramUpdate.id == row_id).values(processed_at=utcnow())
                ),
            )

    async def _on_press(self, update: Update, context: Any) -> None:
        q = update.callback_query
        if q is None or q.message is None:
            return
        await self._recorded()
        chat = q.message.chat
        outcome = await self._db(
            self.core.press, data=q.data or "", chat_id=chat.id, message_id=q.message.message_id,
            user_id=q.from_user.id, name=q.from_user.full_name, chat_type=chat.type,
        )  # fmt: skip
        webhook = self.settings.mode == "webhook"
        if not webhook:  # in webhook mode the web route answered already, in its response body
            await self._safely(q.answer(outcome.answer, show_alert=outcome.alert))
        if outcome.accepted and outcome.edit_text:
            markup = self.core.renderer(outcome.language).keyboard(outcome.edit_buttons or {})
            await self._edit(chat.id, q.message.message_id, outcome.edit_text, markup)

    async def _edit(self, chat_id: int, message_id: int, text: str, markup: Any) -> None:
        await self.limiter.acquire()
        try:
            await self._safely(self.application.bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML, reply_markup=markup,
                disable_web_page_preview=True))  # fmt: skip
        finally:
            await self.limiter.release()

    async def _on_command(self, update: Update, context: Any) -> None:
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        await self._recorded()
        name = (message.text or "").split()[0][1:].split("@")[0].lower()
        outcome = await self._db(
            self.core.command, name=name, args=list(context.args or []), chat_id=message.chat.id,
            user_id=message.from_user.id, chat_type=message.chat.type, user_language=message.from_user.language_code,
        )  # fmt: skip
        await self._reply(message.chat.id, outcome.answer, message.message_id)
        for chat_id, message_id, text in outcome.page_messages:
            markup = self.core.renderer(outcome.language).keyboard(outcome.edit_buttons or {})
            await self._edit(chat_id, message_id, text, markup)

    async def _on_reply(self, update: Update, context: Any) -> None:
        message = update.effective_message
        if message is None or message.reply_to_message is None or message.from_user is None:
            return
        await self._recorded()
        outcome = await self._db(self.core.directive, chat_id=message.chat.id, user_id=message.from_user.id,
                                 reply_to=message.reply_to_message.message_id, text=message.text or "")  # fmt: skip
        if outcome is not None:
            await self._reply(message.chat.id, tg.esc(outcome.answer), message.message_id)

    async def _reply(self, chat_id: int, text: str, reply_to: int | None) -> None:
        await self.limiter.acquire()
        try:
            await self._safely(
                self.application.bot.send_message(
                    chat_id,
                    text,
                    parse_mode=ParseMode.HTML,
                    disable_web_page_preview=True,
                    reply_parameters={"message_id": reply_to, "allow_sending_without_reply": True}
                    if reply_to
                    else None,
                )
            )
        finally:
            await self.limiter.release()

    async def _safely(self, call: Any) -> Any:
        """Answers and edits are best effort: a failure is logged, never raised into the update's handler."""
        try:
            return await call
        except RetryAfter as exc:
            self.paused_until = max(self.paused_until, time.monotonic() + tg.retry_seconds(exc))
        except NetworkError as exc:
            log.warning("Telegram call failed: %s", exc)
        return None

    async def _on_error(self, update: object, context: Any) -> None:
        log.error("Telegram update %s failed", getattr(update, "update_id", "?"), exc_info=context.error)

    def _on_poll_error(self, exc: Exception) -> None:
        log.warning("getUpdates failed: %s", exc)


bp = Blueprint("telegram", __name__)


@bp.post(WEBHOOK_PATH)
def webhook() -> Response | tuple[str, int]:
    """Telegram posts an update: check the secret header, store it once, answer a press in the response body."""
    from app import db

    settings = Settings.from_config(current_app.config)
    if settings is None or settings.mode != "webhook":
        return "", 404
    if not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), settings.webhook_secret):
        return "", 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("update_id"), int):
        return "", 400
    if not store_update(db.session(), settings, body):
        return "", 200  # a repeat of an update already stored: Telegram retried its delivery
    query = body.get("callback_query")
    if not isinstance(query, dict) or not isinstance(query.get("message"), dict):
        return "", 200
    chat = query["message"].get("chat") or {}
    sender = query.get("from") or {}
    core = Core(sessionmaker(db.engine(), expire_on_commit=False), settings, current_app.config)
    outcome = core.judge(data=str(query.get("data") or ""), chat_id=int(chat.get("id", 0)),
                         user_id=int(sender.get("id", 0)), chat_type=str(chat.get("type", "")))  # fmt: skip
    # The answer rides on the response (no round trip); the worker applies the press from the stored update.
    return jsonify({"method": "answerCallbackQuery", "callback_query_id": str(query.get("id")),
                    "text": outcome.answer, "show_alert": outcome.alert})  # fmt: skip


def _backoff(attempts: int, base: float, cap: float = 60.0) -> float:
    """Exponential backoff with jitter: base·2^(attempts-1) seconds, between half and all of it."""
    import random

    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def attach(worker: Any) -> Runtime | None:
    """Give the worker its Telegram runtime (None when Telegram is off) and the `telegram` channel."""
    settings = Settings.from_config(worker.app.config)
    if settings is None:
        return None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Bot API call otherwise
    # PTB 22 warns on every 429 that retry_after becomes a timedelta; `tg.retry_seconds` reads both forms.
    warnings.filterwarnings("ignore", message=".*retry_after.*", category=PTBDeprecationWarning)
    runtime = Runtime(worker, settings)
    worker.ctx.notifiers[tg.CHANNEL] = tg.TelegramNotifier(runtime.core.enqueue_page)
    return runtime
