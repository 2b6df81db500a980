"""Typed SQLAlchemy 2 models of the incident domain."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from incidents.base import Base, BigId, utcnow
from incidents.enums import TLP, Category, IncidentClass, Priority, Role, Status


def _enum_check(name: str, column: str, enum: type) -> CheckConstraint:
    values = ", ".join(f"'{m.value}'" for m in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name)


class Organisation(Base):
    """A body of the board, its working group or an owner of systems; editable data with a validity span."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name_vi: Mapped[str] = mapped_column(String(300))
    name_en: Mapped[str | None] = mapped_column(String(300))
    note: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    # A merger of departments ends one row's validity and starts another's: data, not a migration.
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def is_valid_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day < self.valid_to)


class Position(Base):
    """A seat on the board or its working group (head, deputy, member), held by an organisation."""

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    body: Mapped[str] = mapped_column(String(32))  # board | working_group
    role: Mapped[str] = mapped_column(String(32))
    title_vi: Mapped[str] = mapped_column(String(200))
    holder_vi: Mapped[str | None] = mapped_column(String(300))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)

    organisation: Mapped[Organisation] = relationship()

    __table_args__ = (UniqueConstraint("body", "role", "organisation_id"),)


class System(Base):
    """An information system in the asset registry (Decree 85 security level 1–5)."""

    __tablename__ = "systems"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    security_level: Mapped[int]
    national_important: Mapped[bool] = mapped_column(default=False)
    domains: Mapped[list[Any]] = mapped_column(default=list)
    public_ips: Mapped[list[Any]] = mapped_column(default=list)
    security_provider: Mapped[str | None] = mapped_column(String(300))
    connectivity_provider: Mapped[str | None] = mapped_column(String(300))
    os: Mapped[str | None] = mapped_column(String(300))
    services: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[Organisation | None] = relationship(foreign_keys=[owner_id])
    operator: Mapped[Organisation | None] = relationship(foreign_keys=[operator_id])
    addresses: Mapped[list["SystemAddress"]] = relationship(back_populates="system", cascade="all, delete-orphan")

    __table_args__ = (CheckConstraint("security_level BETWEEN 1 AND 5", name="security_level"),)


class SystemAddress(Base):
    """One domain or public IP of a system, indexed so observables can be matched to the registry."""

    __tablename__ = "system_addresses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # domain | ip
    value: Mapped[str] = mapped_column(String(300), index=True)

    system: Mapped[System] = relationship(back_populates="addresses")

    __table_args__ = (UniqueConstraint("system_id", "kind", "value"),)


class User(Base):
    """A person or a service account; every user belongs to an organisation."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[Role] = mapped_column(String(16))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    is_service: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Web sign-in (migration 0005): second factor, UI language; wrong TOTP codes lock the second factor (0008).
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None]  # the last accepted TOTP time step: a code works once
    language: Mapped[str] = mapped_column(String(8), default="vi", server_default="vi")
    totp_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    totp_locked_until: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]

    organisation: Mapped[Organisation] = relationship()

    __table_args__ = (_enum_check("role", "role", Role),)


class BrowserSession(Base):
    """A signed-in browser: the cookie holds a random key whose digest is stored here, so it can be revoked."""

    __tablename__ = "browser_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    second_factor: Mapped[bool] = mapped_column(default=False)
    source_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))

    user: Mapped[User] = relationship()


class SigninThrottle(Base):
    """Password attempts from one address for one account (or, with account "", for all): the backoff's state."""

    __tablename__ = "signin_throttles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(150))
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[datetime]
    last_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("source", "account"),)


class ApiToken(Base):
    """A bearer token; only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(150))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    role: Mapped[Role] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # A SIEM's token may name a webhook: the receipt of each incident it files is posted back there,
    # signed with HMAC-SHA256 under `webhook_secret` (shown once, like the token).
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))

    user: Mapped[User] = relationship()

    __table_args__ = (_enum_check("role", "role", Role),)


class RefCounter(Base):
    """The per-year counter behind references like TH-2026-00042."""

    __tablename__ = "ref_counters"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Incident(Base):
    """An incident with every field Circular 20's Form 03 initial report asks for."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    # Lengths are configurable limits checked at the edge, so the column itself is unbounded.
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[Category] = mapped_column(String(32))
    priority: Mapped[Priority] = mapped_column(String(2))
    status: Mapped[Status] = mapped_column(String(16), default=Status.NEW)
    incident_class: Mapped[IncidentClass] = mapped_column("class", String(16), default=IncidentClass.ORDINARY)
    tlp: Mapped[TLP] = mapped_column(String(16), default=TLP.AMBER)
    exercise: Mapped[bool] = mapped_column(default=False)

    detected_at: Mapped[datetime]
    detection_method: Mapped[str | None] = mapped_column(String(16))
    detection_detail: Mapped[str | None] = mapped_column(String(1000))
    affected_system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id"))

    # Form 03: the reporter, the contact person and the report's remaining boxes.
    reporter_name: Mapped[str | None] = mapped_column(String(300))
    reporter_organisation: Mapped[str | None] = mapped_column(String(300))
    reporter_address: Mapped[str | None] = mapped_column(String(500))
    reporter_phone: Mapped[str | None] = mapped_column(String(64))
    reporter_email: Mapped[str | None] = mapped_column(String(320))
    contact_name: Mapped[str | None] = mapped_column(String(300))
    contact_position: Mapped[str | None] = mapped_column(String(300))
    contact_phone: Mapped[str | None] = mapped_column(String(64))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    handled_at_report: Mapped[bool | None]
    notified_parties: Mapped[list[Any]] = mapped_column(default=list)
    system_os: Mapped[str | None] = mapped_column(String(300))
    system_services: Mapped[str | None] = mapped_column(Text)
    security_measures: Mapped[str | None] = mapped_column(Text)
    support_requested: Mapped[str | None] = mapped_column(Text)
    beyond_capacity: Mapped[bool] = mapped_column(default=False)

    # The serious class: who proposed it with which Art. 9 conditions, and who decided.
    serious_conditions: Mapped[list[Any]] = mapped_column(default=list)
    class_proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    class_proposed_at: Mapped[datetime | None]
    class_proposal_note: Mapped[str | None] = mapped_column(Text)
    class_decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    class_decided_at: Mapped[datetime | None]
    class_decision_note: Mapped[str | None] = mapped_column(Text)

    resolution: Mapped[str | None] = mapped_column(Text)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    # Holds "<organisation id>:<dedup_key>" while the incident is open; the unique index settles races.
    open_dedup_key: Mapped[str | None] = mapped_column(String(230), unique=True)
    # Occurrences filed into it, its first included: counted as each is written (incidents/filing.py), so a repeat's
    # answer and the lists read a column instead of counting rows.
    occurrence_count: Mapped[int] = mapped_column(default=0, server_default="0")
    search_text: Mapped[str] = mapped_column(Text, default="")

    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The owner who answers for the incident's progress (incidents.assignment); none until someone is assigned.
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    contained_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]

    affected_system: Mapped[System | None] = relationship()
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    class_proposed_by: Mapped[User | None] = relationship(foreign_keys=[class_proposed_by_id])
    class_decided_by: Mapped[User | None] = relationship(foreign_keys=[class_decided_by_id])
    merged_into: Mapped["Incident | None"] = relationship(remote_side=[id])
    observables: Mapped[list["Observable"]] = relationship(
        back_populates="incident", cascade="all, delete-orphan", order_by="Observable.id"
    )
    participants: Mapped[list["Participant"]] = relationship(
        back_populates="incident", cascade="all, delete-orphan", order_by="Participant.id"
    )

    __table_args__ = (
        _enum_check("status", "status", Status),
        _enum_check("priority", "priority", Priority),
        _enum_check("category", "category", Category),
        _enum_check("tlp", "tlp", TLP),
        _enum_check("class", "class", IncidentClass),
        Index("ix_incidents_updated_at_id", "updated_at", "id"),
        Index("ix_incidents_created_by_id", "created_by_id"),
        Index("ix_incidents_status", "status"),
    )


class Observable(Base):
    """An observable (future STIX SCO) seen in an incident."""

    __tablename__ = "observables"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(2048))
    hashes: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    incident: Mapped[Incident] = relationship(back_populates="observables")

    __table_args__ = (UniqueConstraint("incident_id", "type", "value"), Index("ix_observables_value", "value"))


class Occurrence(Base):
    """One report of an incident: the first filing and every repeat that matched its dedup_key."""

    __tablename__ = "occurrences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    detected_at: Mapped[datetime | None]
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The alert source it came from (incidents/sources), and whether a maintenance window held its pages back.
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"), index=True)
    suppressed: Mapped[bool] = mapped_column(default=False, server_default=false())


class Participant(Base):
    """A user or an organisation taking part in an incident; decides who may see it."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    incident: Mapped[Incident] = relationship(back_populates="participants")
    user: Mapped[User | None] = relationship(foreign_keys=[user_id])
    organisation: Mapped[Organisation | None] = relationship()

    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (organisation_id IS NULL)", name="one_kind"),
        UniqueConstraint("incident_id", "user_id"),
        UniqueConstraint("incident_id", "organisation_id"),
    )


class Comment(Base):
    """A comment with its own TLP; edits keep the earlier text in CommentRevision."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    tlp: Mapped[TLP] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    author: Mapped[User] = relationship()
    revisions: Mapped[list["CommentRevision"]] = relationship(order_by="CommentRevision.id")

    __table_args__ = (_enum_check("tlp", "tlp", TLP),)


class CommentRevision(Base):
    """The text a comment had before one edit."""

    __tablename__ = "comment_revisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    tlp: Mapped[str] = mapped_column(String(16))
    edited_at: Mapped[datetime] = mapped_column(default=utcnow)
    edited_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


class Event(Base):
    """The append-only timeline and change feed; the database refuses updates and deletes."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(150))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The incident's TLP when the event was written, so the feed can filter without a join.
    tlp: Mapped[str | None] = mapped_column(String(16))


class IdempotencyKey(Base):
    """The first answer to a request that carried an Idempotency-Key, kept at least 24 h."""

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    body: Mapped[dict[str, Any]]
    location: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("token_id", "key"),)


class Job(Base):
    """Work the worker must do, written in the transaction that causes it (the outbox); leased, never locked."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=8)
    lease_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set by the one who enqueues: a second job with the same key is not created.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_state_run_at", "state", "run_at"),
        CheckConstraint("state IN ('queued', 'running', 'done', 'dead')", name="state"),
    )


class WorkerHeartbeat(Base):
    """One row per worker process, stamped every few seconds; a stale stamp is an alarm on the board."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    jobs_run: Mapped[int] = mapped_column(default=0)


class AuditEntry(Base):
    """The audit trail: append-only (the database refuses updates and deletes) and hash-chained."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(150))
    target: Mapped[str | None] = mapped_column(String(300))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC-SHA256 of `hash` under the audit key named by `key_id` (null only on rows older than the keys).
    key_id: Mapped[str | None] = mapped_column(String(16))
    mac: Mapped[str | None] = mapped_column(String(64))


class StixObject(Base):
    """One version of one STIX object as TAXII serves it: the projection of incidents, and what was imported."""

    __tablename__ = "stix_objects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    stix_id: Mapped[str] = mapped_column(String(120))
    type: Mapped[str] = mapped_column(String(64))
    spec_version: Mapped[str] = mapped_column(String(8), default="2.1")
    created: Mapped[datetime | None]
    # TAXII's version: `modified`, else `created`, else `date_added` (SCOs carry neither).
    modified: Mapped[datetime]
    # Assigned under the feed lock in commit order and strictly increasing: TAXII pages on it.
    date_added: Mapped[datetime] = mapped_column(unique=True)
    tlp: Mapped[str] = mapped_column(String(16))
    # The projector's name for the object ("indicator:ipv4-addr:192.0.2.1"), to find its latest version.
    key: Mapped[str | None] = mapped_column(String(600))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    imported_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The JSON exactly as served, so a re-export is byte-identical and no read re-serialises it.
    body: Mapped[str] = mapped_column(Text)
    # False once a newer version of the same id is stored: TAXII's match[version]=last without a window query.
    current: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        UniqueConstraint("stix_id", "modified"),
        Index("ix_stix_objects_stix_id", "stix_id"),
        Index("ix_stix_objects_incident_id_key", "incident_id", "key"),
        Index("ix_stix_objects_type", "type"),
        Index("ix_stix_objects_imported_by_id", "imported_by_id"),
    )


class StixLink(Base):
    """An incident whose graph holds a stored object: readers see a row through an incident they may see."""

    __tablename__ = "stix_links"

    object_id: Mapped[int] = mapped_column(ForeignKey("stix_objects.id", ondelete="CASCADE"), primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_stix_links_incident_id", "incident_id"),)


class StixCursor(Base):
    """How far the projector (events) and the outbound push (objects) have got."""

    __tablename__ = "stix_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigId, default=0)
    # Per incident ("incident:42"): a digest of its STIX-visible state, so a page or an ack costs no stix2 work.
    digest: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StixExport(Base):
    """An incident's projected objects joined as served, rewritten by the projector whenever they change."""

    __tablename__ = "stix_exports"

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    tlp: Mapped[str] = mapped_column(String(16))
    objects: Mapped[str] = mapped_column(Text)
    # SHA-256 of `objects`, taken when written: the bundle id derives from it without hashing 25 MB per export.
    digest: Mapped[str] = mapped_column(String(64), default="")
    tlps: Mapped[list[Any]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaxiiStatus(Base):
    """A TAXII 2.1 status resource: the outcome of one objects POST."""

    __tablename__ = "taxii_statuses"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    request_timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    total_count: Mapped[int] = mapped_column(default=0)
    successes: Mapped[list[Any]] = mapped_column(default=list)
    failures: Mapped[list[Any]] = mapped_column(default=list)
    pendings: Mapped[list[Any]] = mapped_column(default=list)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


# Alert sources live in their own package; their tables are on the metadata wherever these models are.
import incidents.sources.models  # noqa: E402,F401
