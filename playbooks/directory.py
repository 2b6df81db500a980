"""The directory of contacts: who they are, how to reach them, CSV import/export, and the 24-hour rule.

Groups, schedules and who is on call now are `playbooks.oncall`.
"""

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from incidents import audit
from incidents.access import Actor
from incidents.base import utcnow
from incidents.errors import FieldError, Forbidden, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Organisation
from incidents.policy import Capability, allows, require
from incidents.uow import in_transaction
from notifiers import outbound, registry
from playbooks.models import Contact, GroupMember, ScheduleMember

LANGUAGES = ("vi", "en")
# Fields whose change restarts the focal-point clock: the person must confirm them again within 24 h.
REACH_FIELDS = ("phone", "email", "telegram_chat_id", "webhook_url", "channels")
# How to reach a person privately: shown only to the directory's keepers and to the person themself.
PERSONAL_FIELDS = ("phone", "email", "telegram_chat_id", "webhook_url")
CSV_FIELDS = (
    "id",
    "organisation",
    "name",
    "title",
    "phone",
    "email",
    "telegram_chat_id",
    "language",
    "channels",
    "roles",
    "active",
    "confirmed_at",
)


@dataclass(frozen=True)
class ContactIn:
    """A contact as an admin or operator submits it; None leaves a field as it is on update."""

    organisation: str | None = None
    name: str | None = None
    title: str | None = None
    phone: str | None = None
    email: str | None = None
    telegram_chat_id: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    language: str | None = None
    channels: Sequence[str] | None = None
    roles: Sequence[str] | None = None
    user: str | None = None
    active: bool | None = None


def require_desk(actor: Actor) -> None:
    """Only the desk (admins and operators) edits the directory."""
    require(actor, Capability.MANAGE_DIRECTORY, "only admins and operators edit the directory")


def organisation_by_code(session: Session, code: str, field: str = "organisation") -> Organisation:
    """The organisation with `code`; a 422 on `field` when there is none."""
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        raise ValidationFailed("unknown organisation", errors=[FieldError(field, f"no organisation {code!r}")])
    return org


def _check(data: ContactIn, *, creating: bool, outbound_allow: str | Sequence[str] | None = None) -> list[FieldError]:
    errors = []
    if creating and not data.organisation:
        errors.append(FieldError("organisation", "required"))
    if creating and not (data.name or "").strip():
        errors.append(FieldError("name", "required"))
    if data.language is not None and data.language not in LANGUAGES:
        errors.append(FieldError("language", f"one of {', '.join(LANGUAGES)}"))
    for n, channel in enumerate(data.channels or []):
        if channel not in registry.CHANNELS:
            errors.append(FieldError(f"channels[{n}]", f"one of {', '.join(registry.NAMES)}"))
    if data.email is not None and data.email and "@" not in data.email:
        errors.append(FieldError("email", "an e-mail address"))
    if data.phone and sum(ch.isdigit() for ch in data.phone) < 8:
        errors.append(FieldError("phone", "a phone number of at least 8 digits"))
    if data.webhook_url:
        try:
            outbound.check_url(data.webhook_url, outbound.Allowance.parse(outbound_allow))
        except outbound.OutboundRefused as exc:
            errors.append(FieldError("webhook_url", str(exc)))
    return errors


def _apply(session: Session, contact: Contact, data: ContactIn) -> list[str]:
    changed = []
    if data.organisation is not None:
        org = organisation_by_code(session, data.organisation)
        if contact.organisation_id != org.id:
            contact.organisation = org
            changed.append("organisation")
    if data.user is not None:
        from incidents.models import User

        user_id = session.scalar(select(User.id).where(User.username == data.user)) if data.user else None
        if data.user and user_id is None:
            raise ValidationFailed("unknown user", errors=[FieldError("user", f"no user {data.user!r}")])
        contact.user_id = user_id
    for name in (
        "name",
        "title",
        "phone",
        "email",
        "telegram_chat_id",
        "webhook_url",
        "webhook_secret",
        "language",
        "active",
    ):
        value = getattr(data, name)
        if value is None:
            continue
        if name not in ("name", "active", "language"):
            value = value or None  # an empty text clears the field
        if getattr(contact, name) != value:
            setattr(contact, name, value)
            changed.append(name)
    for name in ("channels", "roles"):
        value = getattr(data, name)
        if value is not None and list(value) != list(getattr(contact, name) or []):
            setattr(contact, name, list(value))
            changed.append(name)
    if set(changed) & set(REACH_FIELDS):
        contact.details_changed_at = utcnow()
        contact.confirmed_at = None
        contact.unconfirmed_alerted_at = None
    return changed


def save_contact(
    *,
    session: Session,
    data: ContactIn,
    actor: Actor | None,
    contact_id: int | None = None,
    outbound_allow: str | Sequence[str] | None = None,
) -> Contact:
    """Create a contact, or change one; a change of how to reach them must be confirmed again within 24 h.

    `outbound_allow` is UCSC_OUTBOUND_ALLOW: the internal targets a webhook URL may name.
    """
    if actor is not None:
        require_desk(actor)
    errors = _check(data, creating=contact_id is None, outbound_allow=outbound_allow)
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)

    def work() -> Contact:
        if contact_id is None:
            contact = Contact(channels=list(registry.DEFAULT_CHANNELS), roles=[], language="vi")
            session.add(contact)
        else:
            contact = session.get(Contact, contact_id)
            if contact is None or contact.erased_at is not None:
                raise NotFound(f"no contact {contact_id}")
        with session.no_autoflush:  # a new contact is written once its organisation is set
            changed = _apply(session, contact, data)
        contact.updated_at = utcnow()
        session.flush()
        record_event(
            session,
            kind="contact.created" if contact_id is None else "contact.updated",
            actor=actor,
            data={"ref": None, "status": None, "contact_id": contact.id, "changed": changed},
        )
        return contact

    return in_transaction(session, work)


def get_contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        raise NotFound(f"no contact {contact_id}")
    return contact


def list_contacts(
    session: Session, *, organisation: str | None = None, after: int = 0, limit: int = 50, active: bool | None = None
) -> list[Contact]:
    stmt = select(Contact).where(Contact.erased_at.is_(None), Contact.id > after).order_by(Contact.id).limit(limit)
    if organisation:
        stmt = stmt.join(Organisation, Organisation.id == Contact.organisation_id).where(
            Organisation.code == organisation
        )
    if active is not None:
        stmt = stmt.where(Contact.active.is_(active))
    return list(session.scalars(stmt.options(selectinload(Contact.organisation))))


def confirm_contact(*, session: Session, contact_id: int, actor: Actor | None = None, via: str = "api") -> Contact:
    """The person confirms their details are still right ("still your number?"): stamps `confirmed_at`."""

    def work() -> Contact:
        contact = get_contact(session, contact_id)
        if actor is not None and not allows(actor, Capability.MANAGE_DIRECTORY) and contact.user_id != actor.user_id:
            raise Forbidden("only the person, an operator or an admin confirms a contact's details")
        contact.confirmed_at = utcnow()
        contact.unconfirmed_alerted_at = None
        record_event(
            session,
            kind="contact.confirmed",
            actor=actor,
            data={"ref": None, "status": None, "contact_id": contact.id, "via": via},
        )
        return contact

    return in_transaction(session, work)


def unconfirmed(session: Session, *, older_than: timedelta, now: datetime | None = None) -> list[Contact]:
    """Active contacts whose details changed more than `older_than` ago and are still unconfirmed."""
    cutoff = (now or utcnow()) - older_than
    stmt = select(Contact).where(
        Contact.active.is_(True),
        Contact.erased_at.is_(None),
        Contact.details_changed_at < cutoff,
        (Contact.confirmed_at.is_(None)) | (Contact.confirmed_at < Contact.details_changed_at),
    )
    return list(session.scalars(stmt.order_by(Contact.id)))


def export_personal_data(*, session: Session, contact_id: int, actor: Actor) -> dict[str, Any]:
    """Everything the directory and the pages hold about one person (a subject-access request); audited."""
    require_desk(actor)
    from playbooks.models import Delivery, PageRecipient

    def work() -> dict[str, Any]:
        contact = get_contact(session, contact_id)
        pages = session.scalars(select(PageRecipient).where(PageRecipient.contact_id == contact.id)).all()
        deliveries = session.scalars(select(Delivery).where(Delivery.contact_id == contact.id)).all()
        audit.append(
            session,
            action=audit.Action.EXPORT,
            actor=actor,
            target=f"contact:{contact.id}",
            data={"what": "personal data"},
        )
        return {
            "contact": contact_dict(contact, secrets=False),
            "pages": [{"page_id": r.page_id, "state": r.state, "paged_at": r.paged_at.isoformat()} for r in pages],
            "deliveries": [
                {
                    "page_id": d.page_id,
                    "channel": d.channel,
                    "address": d.address,
                    "state": d.state,
                    "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
                }
                for d in deliveries
            ],
        }

    return in_transaction(session, work)


def erase_contact(*, session: Session, contact_id: int, actor: Actor) -> Contact:
    """Erase a person's details on request: the row stays (pages refer to it) without name, numbers or addresses."""
    require_desk(actor)
    from playbooks.models import Delivery

    def work() -> Contact:
        contact = get_contact(session, contact_id)
        for name in ("title", "phone", "email", "telegram_chat_id", "webhook_url", "webhook_secret"):
            setattr(contact, name, None)
        contact.name = f"(đã xoá / erased #{contact.id})"
        contact.active, contact.erased_at, contact.user_id = False, utcnow(), None
        contact.channels, contact.roles = [], []
        for delivery in session.scalars(select(Delivery).where(Delivery.contact_id == contact.id)):
            delivery.address = "(erased)"
        session.execute(GroupMember.__table__.delete().where(GroupMember.contact_id == contact.id))
        session.execute(ScheduleMember.__table__.delete().where(ScheduleMember.contact_id == contact.id))
        audit.append(
            session,
            action=audit.Action.EXPORT,
            actor=actor,
            target=f"contact:{contact.id}",
            data={"what": "erased on request"},
        )
        record_event(
            session, kind="contact.erased", actor=actor, data={"ref": None, "status": None, "contact_id": contact.id}
        )
        return contact

    return in_transaction(session, work)


def contact_dict(contact: Contact, *, secrets: bool = False) -> dict[str, Any]:
    out = {
        "id": contact.id,
        "organisation": contact.organisation.code if contact.organisation else None,
        "name": contact.name,
        "title": contact.title,
        "phone": contact.phone,
        "email": contact.email,
        "telegram_chat_id": contact.telegram_chat_id,
        "webhook_url": contact.webhook_url,
        "language": contact.language,
        "channels": list(contact.channels or []),
        "roles": list(contact.roles or []),
        "user": contact.user.username if contact.user else None,
        "active": contact.active,
        "confirmed_at": contact.confirmed_at.isoformat() if contact.confirmed_at else None,
        "details_changed_at": contact.details_changed_at.isoformat(),
    }
    if secrets:
        out["webhook_secret"] = contact.webhook_secret
    return out


# --- reading the directory: one rule for the API and the web --------------------------------------------------


def contact_view(contact: Contact, actor: Actor) -> dict[str, Any]:
    """A contact as `actor` may read it: how to reach someone else only with the personal-data capability."""
    require(actor, Capability.READ_DIRECTORY)
    out = contact_dict(contact)
    if not allows(actor, Capability.READ_DIRECTORY_PERSONAL) and contact.user_id != actor.user_id:
        out.update(dict.fromkeys(PERSONAL_FIELDS))
    return out


def read_contacts(
    session: Session, actor: Actor, *, organisation: str | None = None, after: int = 0, limit: int = 50,
    active: bool | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    require(actor, Capability.READ_DIRECTORY)
    found = list_contacts(session, organisation=organisation, after=after, limit=limit, active=active)
    return [contact_view(c, actor) for c in found]


def read_contact(session: Session, actor: Actor, contact_id: int) -> dict[str, Any]:
    require(actor, Capability.READ_DIRECTORY)
    return contact_view(get_contact(session, contact_id), actor)


def export_csv(session: Session, actor: Actor) -> str:
    """Every contact as CSV (channels and roles joined with "|")."""
    require_desk(actor)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for contact in list_contacts(session, limit=1_000_000):
        row = contact_dict(contact)
        row["channels"] = "|".join(row["channels"])
        row["roles"] = "|".join(row["roles"])
        row["active"] = "true" if row["active"] else "false"
        writer.writerow([row.get(name) if row.get(name) is not None else "" for name in CSV_FIELDS])
    return buffer.getvalue()


def import_csv(*, session: Session, text: str, actor: Actor) -> dict[str, int]:
    """Create or update contacts from CSV (the export's columns; `id` updates, no `id` creates); all or nothing."""
    require_desk(actor)
    reader = csv.DictReader(io.StringIO(text))
    missing = {"organisation", "name"} - set(reader.fieldnames or [])
    if missing:
        raise ValidationFailed("missing columns", errors=[FieldError(c, "column required") for c in sorted(missing)])
    rows, errors = [], []
    for n, raw in enumerate(reader, start=2):
        data = ContactIn(
            organisation=(raw.get("organisation") or "").strip() or None,
            name=(raw.get("name") or "").strip() or None,
            title=raw.get("title") or "",
            phone=raw.get("phone") or "",
            email=raw.get("email") or "",
            telegram_chat_id=raw.get("telegram_chat_id") or "",
            language=(raw.get("language") or "vi").strip(),
            channels=[c for c in (raw.get("channels") or "").split("|") if c] or None,
            roles=[r for r in (raw.get("roles") or "").split("|") if r] if raw.get("roles") is not None else None,
            active=(raw.get("active") or "true").strip().lower() not in ("false", "0", "no"),
        )
        cid = (raw.get("id") or "").strip()
        for e in _check(data, creating=not cid):
            errors.append(FieldError(f"line {n}: {e.field}", e.message))
        rows.append((int(cid) if cid.isdigit() else None, data))
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)

    def work() -> dict[str, int]:
        counts = {"created": 0, "updated": 0}
        for cid, data in rows:
            contact = session.get(Contact, cid) if cid else None
            if cid and (contact is None or contact.erased_at is not None):
                raise ValidationFailed("unknown contact", errors=[FieldError("id", f"no contact {cid}")])
            if contact is None:
                contact = Contact(channels=list(registry.DEFAULT_CHANNELS), roles=[], language="vi")
                session.add(contact)
                counts["created"] += 1
            else:
                counts["updated"] += 1
            with session.no_autoflush:
                _apply(session, contact, data)
        session.flush()
        record_event(session, kind="contact.imported", actor=actor, data={"ref": None, "status": None, **counts})
        return counts

    return in_transaction(session, work)
