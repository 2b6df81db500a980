"""TAXII 2.1 reads over the store: filters, pages resumed by an opaque `next`, versions, and deleting imports."""

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from incidents.access import Actor
from incidents.errors import FieldError, Forbidden, NotFound, ValidationFailed
from incidents.models import StixLink, StixObject
from incidents.policy import Capability, require
from incidents.stix import store
from incidents.uow import in_transaction


@dataclass(frozen=True)
class Filters:
    """TAXII 2.1 filters: added_after (strictly after), match[id|type|version|spec_version]."""

    added_after: datetime | None = None
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("last",)
    spec_versions: tuple[str, ...] = ()

    def digest(self) -> str:
        raw = json.dumps([str(self.added_after), self.ids, self.types, self.versions, self.spec_versions])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class Page:
    rows: list[Any]
    more: bool
    next: str | None


def _encode_next(filters: Filters, last: datetime) -> str:
    raw = f"{filters.digest()}|{last.isoformat()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_next(filters: Filters, token: str) -> datetime:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        digest, stamp = raw.split("|", 1)
        at = datetime.fromisoformat(stamp)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("bad next", errors=[FieldError("next", "not a cursor this server issued")]) from None
    if digest != filters.digest():
        raise ValidationFailed(
            "next does not match these filters", errors=[FieldError("next", "issued for other filters")]
        )
    return at.astimezone(UTC)


def _filtered(actor: Actor, max_tlp: str, filters: Filters, columns: Sequence[Any]) -> Any:
    stmt = select(*columns).where(store.in_collection(max_tlp), store.visible_objects(actor))
    if filters.added_after is not None:
        stmt = stmt.where(StixObject.date_added > filters.added_after)
    if filters.ids:
        stmt = stmt.where(StixObject.stix_id.in_(filters.ids))
    if filters.types:
        stmt = stmt.where(StixObject.type.in_(filters.types))
    if filters.spec_versions:
        stmt = stmt.where(StixObject.spec_version.in_(filters.spec_versions))
    conditions = []
    stamps = []
    for v in filters.versions:
        if v == "all":
            conditions = []
            stamps = []
            break
        if v == "last":
            conditions.append(StixObject.current.is_(True))
        elif v == "first":
            conditions.append(StixObject.id == _first_id())
        else:
            stamps.append(datetime.fromisoformat(v))
    if stamps:
        conditions.append(StixObject.modified.in_(stamps))
    if conditions and "all" not in filters.versions:
        stmt = stmt.where(or_(*conditions))
    return stmt


def _first_id() -> Any:
    earlier = aliased(StixObject)
    return (
        select(func.min(earlier.id))
        .where(earlier.stix_id == StixObject.stix_id)
        .correlate(StixObject)
        .scalar_subquery()
    )


def query_objects(
    session: Session,
    actor: Actor,
    max_tlp: str,
    filters: Filters,
    *,
    limit: int,
    next_token: str | None,
    columns: Sequence[Any] = (),
) -> Page:
    """One page, oldest date_added first; `next` resumes strictly after this page's last row."""
    cols = columns or (
        StixObject.id,
        StixObject.stix_id,
        StixObject.date_added,
        StixObject.modified,
        StixObject.body,
        StixObject.spec_version,
    )
    stmt = _filtered(actor, max_tlp, filters, cols)
    if next_token:
        stmt = stmt.where(StixObject.date_added > _decode_next(filters, next_token))
    rows = session.execute(stmt.order_by(StixObject.date_added).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, more, _encode_next(filters, rows[-1].date_added) if more else None)


def object_rows(session: Session, actor: Actor, max_tlp: str, object_id: str, filters: Filters) -> list[Any]:
    stmt = _filtered(
        actor,
        max_tlp,
        Filters(filters.added_after, (object_id,), filters.types, filters.versions, filters.spec_versions),
        (
            StixObject.id,
            StixObject.stix_id,
            StixObject.date_added,
            StixObject.modified,
            StixObject.body,
            StixObject.incident_id,
            StixObject.key,
            StixObject.spec_version,
        ),
    )
    return list(session.execute(stmt.order_by(StixObject.date_added)).all())


def delete_object(session: Session, actor: Actor, max_tlp: str, object_id: str, filters: Filters) -> int:
    """Delete imported versions of an object (projected ones belong to incidents and are refused)."""
    require(actor, Capability.DELETE_TAXII_OBJECTS, "only an admin deletes TAXII objects")

    def work() -> int:
        rows = object_rows(session, actor, max_tlp, object_id, filters)
        if not rows:
            raise NotFound(f"no object {object_id}")
        if any(r.incident_id is not None or (r.key or "") == store.BOARD_KEY for r in rows):
            raise Forbidden("this object is projected from an incident; change the incident instead")
        ids = [r.id for r in rows]
        session.execute(StixLink.__table__.delete().where(StixLink.object_id.in_(ids)))
        session.execute(StixObject.__table__.delete().where(StixObject.id.in_(ids)))
        # The newest remaining version becomes the current one again.
        newest = session.scalar(select(func.max(StixObject.id)).where(StixObject.stix_id == object_id))
        if newest is not None:
            session.execute(update(StixObject).where(StixObject.id == newest).values(current=True))
        return len(ids)

    return in_transaction(session, work)
