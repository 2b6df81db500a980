"""What the Telegram tests share: the stand-in, a worker wired to it, contacts linked to chats, a paging playbook."""

import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import db
from app.telegram.settings import Settings
from incidents.access import Actor
from incidents.enums import Role
from incidents.models import AuditEntry, Event, Job, User
from notifiers import telegram as tg
from playbooks import service as playbooks_service
from playbooks.models import Contact, Page
from tests.botapi import BotAPI
from tests.paging import add_contact

TOKEN = "700000001:TEST-token_abc"
PLAYBOOK = """
name: telegram-{org}
title_vi: Gọi trực qua Telegram ({org})
title_en: Paging over Telegram ({org})
when:
  category: {category}
steps:
  - page:
      organisation: {org}
      reason_vi: Đề nghị kiểm tra <hệ thống> & báo cáo
      reason_en: Please check the <system> & report
  - task:
      organisation: {org}
      title_vi: Kiểm tra hệ thống và báo cáo
      title_en: Check the system and report
      due: 2h
"""


def stand_in() -> Iterator[BotAPI]:
    """The body of each module's `bot_api` fixture: the stand-in on a free port, closed after the test."""
    api = BotAPI(TOKEN).start()
    yield api
    api.close()


def message_ids(api: BotAPI, chat_id: int) -> list[int]:
    """The ids of the messages the bot sent to `chat_id`, oldest first."""
    return sorted(m for c, m in api.state.messages if c == chat_id)


def telegram_env(api: BotAPI, **extra: str) -> dict[str, str]:
    """The worker's environment: Telegram on, pointed at the stand-in; short long-polls so it stops quickly."""
    return {
        "UCSC_TELEGRAM_TOKEN": TOKEN, "UCSC_TELEGRAM_API_URL": api.url, "UCSC_TELEGRAM_MODE": "polling",
        "UCSC_TELEGRAM_POLL_TIMEOUT": "1", "UCSC_TELEGRAM_RETRY_SECONDS": "0.1", "UCSC_BASE_URL": "http://ucsc.test",
        "UCSC_WORKER_POLL_SECONDS": "0.05", "UCSC_WORKER_THREADS": "8", **extra,
    }  # fmt: skip


def telegram_config(api: BotAPI, mode: str = "polling") -> dict[str, Any]:
    """The test app's own settings: the web side must know Telegram is on (filings start playbooks there)."""
    return {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": api.url, "TELEGRAM_MODE": mode}


def settings(app: Flask, api: BotAPI, mode: str = "polling") -> Settings:
    config = {**app.config, "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": api.url, "TELEGRAM_MODE": mode}
    found = Settings.from_config(config)
    assert found is not None
    return found


def add_playbook(app: Flask, org: str = "vnpt", category: str = "phishing") -> None:
    from incidents import accounts

    with app.app_context():
        session = db.session()
        with session.begin():
            user = session.scalar(select(User).where(User.username == "tg-admin")) or accounts.create_user(
                session=session, username="tg-admin", role=Role.ADMIN, organisation="dic", password_hash=None
            )
            session.flush()
            admin = Actor(user.id, user.username, Role.ADMIN, user.organisation_id)
        playbooks_service.upload_playbook(session=session, source=PLAYBOOK.format(org=org, category=category),
                                          actor=admin)  # fmt: skip


def linked(app: Flask, api: BotAPI, chat_id: int, *, org: str = "vnpt", name: str | None = None,
           channels: tuple[str, ...] = ("telegram",), **fields: Any) -> int:  # fmt: skip
    """A contact whose Telegram chat is `chat_id` (an admin-entered chat id counts as linked)."""
    api.add_chat(chat_id)
    return add_contact(app, organisation=org, name=name or f"Cán bộ {chat_id}", telegram_chat_id=str(chat_id),
                       channels=list(channels), **fields)  # fmt: skip


def user_for(app: Flask, contact_id: int, username: str, role: str = "responder", org: str = "vnpt") -> None:
    from incidents import accounts

    with app.app_context():
        session = db.session()
        with session.begin():
            user = accounts.create_user(session=session, username=username, role=Role(role), organisation=org,
                                        password_hash=None)  # fmt: skip
            session.flush()
            session.get(Contact, contact_id).user_id = user.id


def buttons(call: Any) -> list[tuple[str, str]]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


def count(session: Session, model: Any, *where: Any) -> int:
    session.rollback()
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def refusals(session: Session) -> list[dict]:
    session.rollback()
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "ack.refused").order_by(AuditEntry.id))
    return [r.data for r in rows]


def page_states(session: Session) -> dict[int, str]:
    session.rollback()
    return {p.id: p.state for p in session.scalars(select(Page))}


def events_of(session: Session, kind: str) -> list[Event]:
    session.rollback()
    return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def telegram_jobs(session: Session) -> list[Job]:
    session.rollback()
    return list(session.scalars(select(Job).where(Job.kind == "telegram.send").order_by(Job.id)))


def sign(app: Flask, api: BotAPI, action: str, page_id: int, chat_id: int) -> str:
    """Callback data as the runtime signs it (the test knows the secret key and token, as the server does)."""
    from incidents.base import utcnow

    return tg.sign_callback(settings(app, api).callback_secret, action, page_id, chat_id, utcnow())
