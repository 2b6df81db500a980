"""Models of evidence (attachments, chain of custody), generated reports and deadline clocks (migration 0007)."""

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from incidents.base import Base, BigId, utcnow
from incidents.enums import TLP
from incidents.models import User

EVIDENCE_KINDS = ("log", "screenshot", "malware", "document", "other")
REPORT_KINDS = ("initial", "end")
CLOCK_STATES = ("running", "warned", "met", "breached", "stopped")


def _in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class Evidence(Base):
    """One attachment: the file lives outside the web root under its SHA-256; this row says what and whose it is."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(127))
    description: Mapped[str | None] = mapped_column(Text)
    # Of the file as uploaded, before any archive: what the Police compare against.
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int]
    # Malware is stored only inside an AES ZIP; `stored_sha256` is the digest of the bytes on disk.
    stored_as: Mapped[str] = mapped_column(String(16))  # plain | zip-aes
    stored_name: Mapped[str] = mapped_column(String(200))
    stored_sha256: Mapped[str] = mapped_column(String(64))
    tlp: Mapped[TLP] = mapped_column(String(16))
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)

    uploaded_by: Mapped[User] = relationship()
    custody: Mapped[list["CustodyRecord"]] = relationship(order_by="CustodyRecord.id", back_populates="evidence")

    __table_args__ = (
        _in("kind", EVIDENCE_KINDS, "kind"),
        _in("tlp", tuple(t.value for t in TLP), "tlp"),
        _in("stored_as", ("plain", "zip-aes"), "stored_as"),
    )


class CustodyRecord(Base):
    """One link of an item's chain of custody: who took, checked, handed over or downloaded it, and when."""

    __tablename__ = "custody_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    evidence_id: Mapped[int] = mapped_column(ForeignKey("evidence.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(32))  # collected | downloaded | transferred | verified | note
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(150))
    holder: Mapped[str | None] = mapped_column(String(300))  # to whom it passed (transferred)
    note: Mapped[str | None] = mapped_column(Text)
    # The digest found on disk at that moment: a chain whose digests all match shows nothing changed.
    sha256_checked: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(64))

    evidence: Mapped[Evidence] = relationship(back_populates="custody")


class Report(Base):
    """One version of a Form 03 or Form 04: the values as reported, frozen; the files are rendered from them."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int]
    reference: Mapped[str] = mapped_column(String(100))
    reported_at: Mapped[datetime]
    # Form 04's outcome fields (also Form 05's columns) and the frozen sections both formats render.
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    created_by: Mapped[User] = relationship()

    __table_args__ = (
        UniqueConstraint("incident_id", "kind", "version"),
        _in("kind", REPORT_KINDS, "kind"),
    )


class DeadlineClock(Base):
    """One rule's clock on one incident, with absolute due and warning times (configurable rules)."""

    __tablename__ = "deadline_clocks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    warn_at: Mapped[datetime]
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default="running")
    warned_at: Mapped[datetime | None]
    met_at: Mapped[datetime | None]
    breached_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("incident_id", "rule"),
        _in("state", CLOCK_STATES, "state"),
        Index("ix_deadline_clocks_state_due_at", "state", "due_at"),
    )
