"""Pages kept in the local outbox (notifiers/outbox.py): who would have been paged, on which channel, and the text."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.access import Actor, visible_incidents
from incidents.models import Incident
from notifiers import outbox, registry
from playbooks.models import Contact, Delivery, Page


@dataclass(frozen=True)
class KeptPage:
    delivery_id: int
    ref: str
    contact: str
    channel: str | None  # the outward channel the contact would have been paged on, when they have its address
    address: str | None
    state: str  # the delivery's: queued, delivered (kept), failed
    wave: int
    created_at: datetime
    subject: str | None
    text: str | None


def unconfigured(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(channel, the setting that configures it) for each outward channel this deployment has not configured."""
    missing = []
    for name, setting in outbox.OUTWARD.items():
        channel = registry.CHANNELS.get(name)
        notifier = channel.factory(config) if channel else None
        if notifier is None:
            missing.append((name, setting))
        elif callable(close := getattr(notifier, "close", None)):
            close()
    return missing


def _would_be(contact: Contact, missing: set[str]) -> tuple[str | None, str | None]:
    """The contact's first unconfigured outward channel they have an address for, and that address."""
    for name in contact.channels or registry.DEFAULT_CHANNELS:
        address = getattr(contact, registry.ADDRESS_FIELDS.get(name, ""), None)
        if name in missing and address:
            return name, str(address)
    return None, None


def kept_pages(session: Session, *, actor: Actor, config: Mapping[str, Any], limit: int = 200) -> list[KeptPage]:
    """The newest pages kept in the outbox, of incidents `actor` may see, with the text each would have carried."""
    rows = session.execute(
        select(Delivery, Incident.ref, Contact)
        .join(Page, Page.id == Delivery.page_id)
        .join(Incident, Incident.id == Page.incident_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.channel == outbox.NAME, visible_incidents(actor))
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    keys = {k for d, _ref, _c in rows if (k := _key(d))}
    texts = outbox.read(Path(str(config.get("OUTBOX_FILE") or "")) if config.get("OUTBOX_FILE") else None, keys)
    missing = {name for name, _setting in unconfigured(config)}
    out = []
    for delivery, ref, contact in rows:
        channel, address = _would_be(contact, missing)
        kept = texts.get(_key(delivery) or "", {})
        out.append(
            KeptPage(
                delivery_id=delivery.id, ref=ref, contact=contact.name, channel=channel, address=address,
                state=delivery.state, wave=delivery.wave, created_at=delivery.created_at,
                subject=kept.get("subject"), text=kept.get("text"),
            )
        )  # fmt: skip
    return out


def _key(delivery: Delivery) -> str | None:
    """The message key the outbox stored, from its receipt (`outbox <key>`)."""
    receipt = delivery.message_id or ""
    return receipt.removeprefix(f"{outbox.NAME} ") if receipt.startswith(f"{outbox.NAME} ") else None
