"""Typed SQLAlchemy 2 models of the directory and the playbook engine."""

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from incidents.base import Base, BigId, utcnow
from incidents.models import Incident, Organisation, User

# Page states: open until someone acknowledges it, or the run or incident that caused it is stopped.
PAGE_OPEN, PAGE_ACKED, PAGE_CANCELLED = "open", "acknowledged", "cancelled"
# A recipient is paged, or held back by the storm limit until the digest carries the page.
RECIPIENT_PAGED, RECIPIENT_HELD, RECIPIENT_DIGESTED = "paged", "held", "digested"
# Deliveries: queued (a job will send it), delivered (the channel accepted it), failed (given up on it).
DELIVERY_QUEUED, DELIVERY_DELIVERED, DELIVERY_FAILED = "queued", "delivered", "failed"
RUN_RUNNING, RUN_WAITING, RUN_DONE, RUN_STOPPED = "running", "waiting", "done", "stopped"


class Contact(Base):
    """A person in the directory: a focal point, a responder or a board member, reachable on ordered channels."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    title: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64), index=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str] = mapped_column(String(8), default="vi")
    # Channel names in the order to try them; a failed channel falls through to the next.
    channels: Mapped[list[Any]] = mapped_column(default=list)
    # Roles a playbook can page by name, e.g. "board.head", "standing_body.duty".
    roles: Mapped[list[Any]] = mapped_column(default=list)
    # The user account that acts for this person in the web and API (acknowledging pages, tasks).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    # The 24-hour focal-point rule: details are confirmed by the person; a change resets the clock.
    confirmed_at: Mapped[datetime | None]
    details_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirm_requested_at: Mapped[datetime | None]
    unconfirmed_alerted_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    organisation: Mapped[Organisation] = relationship()
    user: Mapped[User | None] = relationship()


class Group(Base):
    """A named set of contacts, e.g. "VNPT 24/7 desk" or "Police cyber unit"."""

    __tablename__ = "contact_groups"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name_vi: Mapped[str] = mapped_column(String(300))
    name_en: Mapped[str | None] = mapped_column(String(300))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    # The next member a round-robin page goes to.
    next_turn: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organisation: Mapped[Organisation | None] = relationship()
    members: Mapped[list["GroupMember"]] = relationship(
        back_populates="group", cascade="all, delete-orphan", order_by="GroupMember.position"
    )


class GroupMember(Base):
    __tablename__ = "contact_group_members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("contact_groups.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)

    group: Mapped[Group] = relationship(back_populates="members")
    contact: Mapped[Contact] = relationship()

    __table_args__ = (UniqueConstraint("group_id", "contact_id"),)


class Schedule(Base):
    """An on-call rotation: members take turns of `shift_hours` from `starts_at`, overrides cover leave."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("contact_groups.id"), index=True)
    starts_at: Mapped[datetime]
    shift_hours: Mapped[int] = mapped_column(default=168)  # weekly by default
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list["ScheduleMember"]] = relationship(
        back_populates="schedule", cascade="all, delete-orphan", order_by="ScheduleMember.position"
    )
    overrides: Mapped[list["ScheduleOverride"]] = relationship(
        back_populates="schedule", cascade="all, delete-orphan", order_by="ScheduleOverride.starts_at"
    )

    __table_args__ = (CheckConstraint("shift_hours > 0", name="shift_hours"),)


class ScheduleMember(Base):
    __tablename__ = "schedule_members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)

    schedule: Mapped[Schedule] = relationship(back_populates="members")
    contact: Mapped[Contact] = relationship()


class ScheduleOverride(Base):
    """Someone else is on call from `starts_at` to `ends_at` (leave, a swap)."""

    __tablename__ = "schedule_overrides"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(String(500))

    schedule: Mapped[Schedule] = relationship(back_populates="overrides")
    contact: Mapped[Contact] = relationship()

    __table_args__ = (CheckConstraint("ends_at > starts_at", name="span"),)


class PlaybookVersion(Base):
    """One version of a playbook definition: the YAML as written and its validated form; never edited."""

    __tablename__ = "playbook_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int]
    title_vi: Mapped[str] = mapped_column(String(300))
    title_en: Mapped[str | None] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(Text)
    definition: Mapped[dict[str, Any]]
    digest: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(300))  # the file it was seeded from, or "api"
    enabled: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("name", "version"),)


class PlaybookRun(Base):
    """A playbook running on an incident, pinned to the version it started with."""

    __tablename__ = "playbook_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    playbook_version_id: Mapped[int] = mapped_column(ForeignKey("playbook_versions.id"))
    name: Mapped[str] = mapped_column(String(100))
    # Automatic starts use "<incident>:<playbook>:auto", so a playbook starts once per incident on its own.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING)
    trigger: Mapped[str] = mapped_column(String(32))
    started_by: Mapped[str] = mapped_column(String(150))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    stopped_by: Mapped[str | None] = mapped_column(String(150))

    incident: Mapped[Incident] = relationship()
    version: Mapped[PlaybookVersion] = relationship()


class RunStep(Base):
    """A step of a run that has been carried out; its unique path makes a repeated job a no-op."""

    __tablename__ = "playbook_run_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("playbook_runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32), default="done")
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "path"),)


class Page(Base):
    """A call for someone to take up an incident, to a person, a group, an organisation or a role."""

    __tablename__ = "pages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("playbook_runs.id"), index=True)
    step_path: Mapped[str | None] = mapped_column(String(100))
    # contact | group | organisation | role | system_operator; `target` is its id or code.
    target_kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    target_label: Mapped[str] = mapped_column(String(300))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("contact_groups.id"))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    reason_vi: Mapped[str | None] = mapped_column(Text)
    reason_en: Mapped[str | None] = mapped_column(Text)
    requires_ack: Mapped[bool] = mapped_column(default=True)
    escalation: Mapped[bool] = mapped_column(default=False)  # paged by an escalation
    state: Mapped[str] = mapped_column(String(16), default=PAGE_OPEN)
    occurrences: Mapped[int] = mapped_column(default=1)
    acked_by_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    acked_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acked_by: Mapped[str | None] = mapped_column(String(300))
    acked_at: Mapped[datetime | None]
    ack_via: Mapped[str | None] = mapped_column(String(32))
    ack_note: Mapped[str | None] = mapped_column(Text)
    ack_on_behalf: Mapped[bool] = mapped_column(default=False)
    first_delivered_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    waves: Mapped[int] = mapped_column(default=1)  # how many times it was sent (re-pages included)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # One page per (run, step, target): a step carried out twice pages nobody twice.
    key: Mapped[str | None] = mapped_column(String(300), unique=True)

    incident: Mapped[Incident] = relationship()
    recipients: Mapped[list["PageRecipient"]] = relationship(
        back_populates="page", cascade="all, delete-orphan", order_by="PageRecipient.id"
    )

    __table_args__ = (
        CheckConstraint("state IN ('open', 'acknowledged', 'cancelled')", name="state"),
        Index("ix_pages_state_incident", "state", "incident_id"),
    )


class PageRecipient(Base):
    """A person a page went to; any recipient may acknowledge it (the first wins)."""

    __tablename__ = "page_recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    state: Mapped[str] = mapped_column(String(16), default=RECIPIENT_PAGED)
    paged_at: Mapped[datetime] = mapped_column(default=utcnow)
    digest_key: Mapped[str | None] = mapped_column(String(200))

    page: Mapped[Page] = relationship(back_populates="recipients")
    contact: Mapped[Contact] = relationship()

    __table_args__ = (
        UniqueConstraint("page_id", "contact_id"),
        Index("ix_page_recipients_contact_paged_at", "contact_id", "paged_at"),
    )


class Delivery(Base):
    """One attempt chain on one channel for one recipient; at least once, with a stable message key."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(32))
    wave: Mapped[int] = mapped_column(default=0)  # 0 for the first page, 1, 2… for each re-page
    address: Mapped[str] = mapped_column(String(2000))
    state: Mapped[str] = mapped_column(String(16), default=DELIVERY_QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    message_id: Mapped[str | None] = mapped_column(String(300))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    page: Mapped[Page] = relationship()
    contact: Mapped[Contact] = relationship()

    __table_args__ = (
        UniqueConstraint("page_id", "contact_id", "channel", "wave"),
        CheckConstraint("state IN ('queued', 'delivered', 'failed')", name="state"),
    )


class Task(Base):
    """A checklist item of the response for an organisation, with a due time."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("playbook_runs.id"))
    step_path: Mapped[str | None] = mapped_column(String(100))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    title_vi: Mapped[str] = mapped_column(String(500))
    title_en: Mapped[str | None] = mapped_column(String(500))
    due_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="open")
    done_by: Mapped[str | None] = mapped_column(String(150))
    done_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    key: Mapped[str | None] = mapped_column(String(300), unique=True)
    # People add tasks beside the playbooks' (playbooks.tasks): for a phase of the procedure (an incident status),
    # assigned to an account; a playbook's task has neither until someone sets them.
    phase: Mapped[str | None] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[str | None] = mapped_column(String(150))

    organisation: Mapped[Organisation | None] = relationship()
    assignee: Mapped[User | None] = relationship()
    comments: Mapped[list["TaskComment"]] = relationship(order_by="TaskComment.id")

    __table_args__ = (CheckConstraint("state IN ('open', 'done')", name="state"),)


class TaskComment(Base):
    """A remark on a task (Markdown, shown sanitised); it carries its incident so visibility needs no extra join."""

    __tablename__ = "task_comments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    author: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DirectionRequest(Base):
    """A request for direction (xin ý kiến chỉ đạo): the board answers it with a directive."""

    __tablename__ = "direction_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("playbook_runs.id"))
    step_path: Mapped[str | None] = mapped_column(String(100))
    question_vi: Mapped[str] = mapped_column(Text)
    question_en: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open")
    requested_by: Mapped[str] = mapped_column(String(150))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]
    key: Mapped[str | None] = mapped_column(String(300), unique=True)

    directives: Mapped[list["Directive"]] = relationship(back_populates="request", order_by="Directive.id")

    __table_args__ = (CheckConstraint("state IN ('open', 'answered')", name="state"),)


class Directive(Base):
    """The board's answer (ý kiến chỉ đạo) to a request for direction."""

    __tablename__ = "directives"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("direction_requests.id"), index=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    given_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    given_by: Mapped[str] = mapped_column(String(150))
    given_at: Mapped[datetime] = mapped_column(default=utcnow)

    request: Mapped[DirectionRequest] = relationship(back_populates="directives")
