"""Telegram state kept in the database: link codes, chats and their send spacing, leadership, updates, messages."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from incidents.base import Base, BigId, utcnow


class TelegramLinkCode(Base):
    """A one-time code for `/start <code>` that links a contact's Telegram account; only its hash is stored."""

    __tablename__ = "telegram_link_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None]


class TelegramChat(Base):
    """A chat the bot writes to: when it may next be sent to (Telegram's per-chat limits), and if it refuses us."""

    __tablename__ = "telegram_chats"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # private | group
    next_send_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent: Mapped[int] = mapped_column(default=0)
    undeliverable_at: Mapped[datetime | None]
    undeliverable_reason: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("kind IN ('private', 'group')", name="kind"),)


class TelegramLeader(Base):
    """Who leads a bot token now (PostgreSQL: whoever holds its advisory lock); for /healthz and the tests."""

    __tablename__ = "telegram_leaders"

    bot: Mapped[str] = mapped_column(String(32), primary_key=True)  # sha256 of the token, first 32 hex digits
    worker: Mapped[str] = mapped_column(String(100))
    since: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The last event the board projector looked at (serious incidents, escalations, requests for direction).
    board_cursor: Mapped[int] = mapped_column(BigInteger, default=0)


class TelegramUpdate(Base):
    """An update received by the webhook, stored for the worker; the unique update_id drops Telegram's retries."""

    __tablename__ = "telegram_updates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot: Mapped[str] = mapped_column(String(32))
    update_id: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("bot", "update_id"),
        Index("ix_telegram_updates_processed_at", "processed_at"),
    )


class TelegramMessage(Base):
    """A message the bot sent (a page, a board post), so a press or `/ack` can edit it; `key` makes sends once-only."""

    __tablename__ = "telegram_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # page | board | reply
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    page_id: Mapped[int | None] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    direction_request_id: Mapped[int | None] = mapped_column(ForeignKey("direction_requests.id"))
    text: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_telegram_messages_chat_id_message_id", "chat_id", "message_id"),)


class TelegramPress(Base):
    """An accepted button press; its signature is unique, so the same button pressed again is a replay."""

    __tablename__ = "telegram_presses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mac: Mapped[str] = mapped_column(String(32), unique=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    telegram_user_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
