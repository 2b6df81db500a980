"""Typed SQLAlchemy 2 models of alert sources and their maintenance windows."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from incidents.base import Base, BigId, utcnow


class SourceKind(StrEnum):
    """The formats the intake understands; the API's `<kind>` values."""

    WAZUH = "wazuh"
    ALERTMANAGER = "alertmanager"
    KIBANA = "kibana"
    SPLUNK = "splunk"
    THEHIVE = "thehive"
    MAILBOX = "mailbox"


class Source(Base):
    """A sender of alerts: one kind posted with one intake token, watched for silence."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[SourceKind] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(150), unique=True)
    # The intake token that posts for this source; null for a source with no token (the mailbox).
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    expected_interval_seconds: Mapped[int | None]
    last_seen_at: Mapped[datetime | None]
    silent_since: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    # Overrides of the shipped mapping (incidents/sources/mapping.yaml), merged over it per section.
    mapping: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    __table_args__ = (
        CheckConstraint(f"kind IN ({', '.join(repr(k.value) for k in SourceKind)})", name="kind"),
        UniqueConstraint("kind", "token_id"),
    )


class MaintenanceWindow(Base):
    """A bounded time in which a source's alerts, or those whose dedup_key matches a pattern, page nobody."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    dedup_pattern: Mapped[str | None] = mapped_column(String(200))  # an fnmatch glob on the alert's dedup_key
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(300))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="bounded"),
        CheckConstraint("source_id IS NOT NULL OR dedup_pattern IS NOT NULL", name="scoped"),
    )


class MailboxMessage(Base):
    """A mailbox message already acted on, by Message-ID: what it became, so a second sight does nothing."""

    __tablename__ = "mailbox_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    message_key: Mapped[str] = mapped_column(String(300))  # the Message-ID, or sha256:<digest> of one without
    outcome: Mapped[str] = mapped_column(String(16))  # incident | comment | rejected
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="SET NULL"))
    # False until every attachment is evidence: a pass interrupted in between adds the rest next time.
    complete: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source_id", "message_key"),
        CheckConstraint("outcome IN ('incident', 'comment', 'rejected')", name="outcome"),
    )


class MailboxCursor(Base):
    """The highest IMAP UID of a mailbox folder already looked at, valid while the folder's UIDVALIDITY holds."""

    __tablename__ = "mailbox_cursors"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
