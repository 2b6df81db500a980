"""Telegram account links and button actions: the use cases the directory, the web and the Telegram worker share.

A one-time link code ties a directory contact to the private chat that sends `/start <code>`; a press of a
page's button (or `/ack`) becomes one playbooks service call. Each use case is one transaction.
"""

import hashlib
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents import audit
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import Conflict, Forbidden, NotFound
from incidents.events import record_event
from incidents.models import User
from incidents.policy import Capability, allows
from incidents.uow import in_transaction
from notifiers import telegram as tg
from playbooks import service as pb
from playbooks.models import Contact, Page, Task
from playbooks.settings import Settings
from playbooks.telegram_models import TelegramChat, TelegramLinkCode

MODES = ("polling", "webhook", "off")


def telegram_mode(config: Mapping[str, Any]) -> str | None:
    """`polling` or `webhook`; None when Telegram is off (no token, or `TELEGRAM_MODE=off`)."""
    token = config.get("TELEGRAM_TOKEN")
    mode = str(config.get("TELEGRAM_MODE") or "polling").lower()
    if mode not in MODES:
        raise ValueError(f"UCSC_TELEGRAM_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    if not token or mode == "off":
        return None
    return mode


def contact_for_chat(session: Session, chat_id: int) -> Contact | None:
    """The active contact linked to a private chat (deep link or an admin-entered chat id), or None."""
    return session.scalar(
        select(Contact).where(Contact.telegram_chat_id == str(chat_id), Contact.active.is_(True)).limit(1)
    )


def actor_of(session: Session, contact: Contact | None) -> Actor | None:
    """The user a contact signs in as, if any: what `/status` may show them."""
    if contact is None or contact.user_id is None:
        return None
    user = session.get(User, contact.user_id)
    if user is None or not user.active:
        return None
    return Actor(user.id, user.username, Role(user.role), user.organisation_id)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _require_desk(actor: Actor | str) -> None:
    """Only admins and operators hand out or revoke links (a string actor is the system or the CLI)."""
    if isinstance(actor, Actor) and not allows(actor, Capability.MANAGE_DIRECTORY):
        raise Forbidden("only admins and operators link or unlink Telegram accounts")


def _directory_contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        raise NotFound(f"no contact {contact_id}")
    return contact


def _actor(actor: Actor | str | None) -> Actor | None:
    return actor if isinstance(actor, Actor) else None


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


def new_link(*, session: Session, config: Mapping[str, Any], contact_id: int, actor: Actor,
             source_ip: str | None = None) -> dict[str, Any]:  # fmt: skip
    """What the API and the directory page hand out: the code, `/start <code>`, the t.me deep link, its expiry.

    Conflict when Telegram is off here. The deep link needs `UCSC_TELEGRAM_BOT_USERNAME`; without it `url` is null
    and the person sends `/start <code>` to the bot themselves.
    """
    _require_desk(actor)  # a refusal first: whether Telegram is on here is the desk's business
    if telegram_mode(config) is None:
        raise Conflict("Telegram is off: set UCSC_TELEGRAM_TOKEN (and UCSC_TELEGRAM_MODE other than off)")
    ttl = timedelta(hours=float(config.get("TELEGRAM_LINK_TTL_HOURS", 168)))
    code = create_link_code(session=session, contact_id=contact_id, actor=actor, ttl=ttl, source_ip=source_ip)
    expires = link_expiry(session, code)
    session.rollback()
    username = str(config.get("TELEGRAM_BOT_USERNAME") or "").lstrip("@") or None
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


def link_account(*, session: Session, code: str, chat_id: int, user_id: int, chat_type: str) -> Contact | None:
    """`/start <code>` in a private chat: link the code's contact to this chat; None when the code is no good."""
    if chat_type != "private" or chat_id != user_id:
        return None

    def work() -> Contact | None:
        now = utcnow()
        row = session.scalar(
            select(TelegramLinkCode).where(TelegramLinkCode.code_hash == _code_hash(code)).with_for_update()
        )
        if row is None or row.used_at or row.revoked_at or row.expires_at < now:
            return None
        contact = session.get(Contact, row.contact_id)
        if contact is None or not contact.active:
            return None
        row.used_at, row.used_by_telegram_id = now, user_id
        # A chat links one contact: an earlier contact on this chat is unlinked.
        for other in session.scalars(select(Contact).where(Contact.telegram_chat_id == str(chat_id))):
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


class ButtonRefused(Exception):
    """A button's action that changed nothing; `reason` names the refusal the person is shown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def press_button(*, session: Session, action: str, page_id: int, contact: Contact, config: Mapping[str, Any]) -> None:
    """A page's button (acknowledge, request support, report done) for `contact`: one playbooks use case.

    Raises ButtonRefused with `not_addressee`, `closed` or `no_task`.
    """
    try:
        if action == tg.ACK:
            pb.acknowledge_page(session=session, page_id=page_id, by_contact_id=contact.id, via=tg.CHANNEL)
        elif action == tg.SUPPORT:
            pb.request_support(session=session, page_id=page_id, by_contact_id=contact.id,
                               settings=Settings.from_config(config))  # fmt: skip
        else:
            page = session.get(Page, page_id)
            task_id = session.scalar(
                select(Task.id).where(Task.incident_id == page.incident_id, Task.state == "open",
                                      Task.organisation_id == contact.organisation_id)
                .order_by(Task.due_at.is_(None), Task.due_at, Task.id).limit(1)
            )  # fmt: skip
            session.rollback()
            if task_id is None:
                raise ButtonRefused("no_task")
            pb.complete_task(session=session, task_id=task_id, by_contact_id=contact.id)
    except Forbidden as exc:
        raise ButtonRefused("not_addressee") from exc
    except (Conflict, NotFound) as exc:
        raise ButtonRefused("closed") from exc
