"""STIX exports: one incident's graph as a bundle, and the feed of everything a reader may see since a time."""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, cast, func, literal_column, select
from sqlalchemy.orm import Session

from incidents import strict_json
from incidents.access import Actor, visible_incidents
from incidents.base import MAX_ID
from incidents.enums import TLP, TLP_ORDER
from incidents.errors import NotFound
from incidents.models import Incident, StixExport, StixObject
from incidents.policy import Capability, require
from incidents.stix import mapping, projector, store


def _bundle(bodies: list[str]) -> str:
    # The envelope around stored objects; each body is the stix2 serialisation written by the projector.
    objects = ", ".join(bodies)
    return '{"type": "bundle", "id": "' + mapping.bundle_id_of(objects) + '", "objects": [' + objects + "]}"


def _markings(session: Session, tlps: set[str]) -> list[str]:
    ids = [mapping.TLP_MARKING_IDS[TLP(t)] for t in TLP_ORDER if t in tlps]
    rows = dict(
        session.execute(
            select(StixObject.stix_id, StixObject.body).where(StixObject.stix_id.in_(ids), StixObject.current)
        ).all()
    )
    return [rows[i] for i in ids if i in rows]


def _visible_incident(session: Session, actor: Actor, ref_or_id: int | str) -> Any:
    """The few columns an export needs, if `actor` may see the incident (its observables are not loaded)."""
    stmt = select(Incident.id, Incident.ref, Incident.tlp, Incident.priority, Incident.category,
                  Incident.detected_at).where(visible_incidents(actor))  # fmt: skip
    text = str(ref_or_id)
    if isinstance(ref_or_id, int) or (text.isascii() and text.isdigit()):
        if int(text) > MAX_ID:
            raise NotFound(f"no incident {ref_or_id}")
        stmt = stmt.where(Incident.id == int(text))
    else:
        stmt = stmt.where(Incident.ref == text)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound(f"no incident {ref_or_id}")
    return row


def _utf8(session: Session, column: Any) -> Any:
    """A text column as its UTF-8 bytes: a large stored join is sent as stored, never decoded and encoded again."""
    if session.get_bind().dialect.name == "postgresql":
        return func.convert_to(column, literal_column("'UTF8'"), type_=LargeBinary)
    return cast(column, LargeBinary)  # SQLite: CAST(text AS BLOB) hands over the stored bytes


def _bundle_bytes(bundle_id: str, parts: list[bytes]) -> bytes:
    """The bundle envelope around serialised objects, joined once."""
    chunks = [b'{"type": "bundle", "id": "' + bundle_id.encode() + b'", "objects": [']
    for i, part in enumerate(parts):
        if i:
            chunks.append(b", ")
        chunks.append(part)
    chunks.append(b"]}")
    return b"".join(chunks)


def export_incident(
    session: Session, actor: Actor, incident_ref: int | str, settings: store.StixSettings, *, profile: str | None = None
) -> tuple[Any, bytes]:
    """The incident's current STIX graph as a bundle (UTF-8 bytes), for a reader who may see the incident."""
    incident = _visible_incident(session, actor, incident_ref)
    if projector.ensure_projected(session, incident.id, settings):
        incident = _visible_incident(session, actor, incident.id)
    stored_row = None
    if profile != "opencti":
        stored_row = session.execute(
            select(_utf8(session, StixExport.objects).label("objects"), StixExport.digest).where(
                StixExport.incident_id == incident.id, StixExport.tlp == incident.tlp
            )
        ).first()
    imported = store.projected_rows(session, incident.id, incident.tlp, imported=actor)
    tlps = {str(incident.tlp), *(r.tlp for r in imported)}
    board = store.board_body(session)
    extra = list({r.stix_id: strict_json.servable(r.body, r.stix_id) for r in imported}.values())
    head = [*_markings(session, tlps | {TLP.CLEAR.value}), *([board] if board else [])]
    if stored_row is not None:
        # The stored join is sent as stored; its digest stands for all of it in the bundle id, which still
        # changes whenever any object does.
        stored: bytes = stored_row.objects
        key = "\n".join([*head, stored_row.digest, *extra])
        parts = [*(h.encode() for h in head), *([stored] if stored else []), *(e.encode() for e in extra)]
        return incident, _bundle_bytes(mapping.bundle_id_of(key), parts)
    seen: dict[str, str] = {}
    for row in store.projected_rows(session, incident.id, incident.tlp):
        body = row.body
        if profile == "opencti" and row.type == "incident" and row.stix_id not in seen:
            body = mapping.opencti_profile(
                json.loads(body), incident.priority, incident.category, mapping.stamp(incident.detected_at)
            )
        seen[row.stix_id] = body
    return incident, _bundle([*head, *seen.values(), *extra]).encode()


def export_since(session: Session, actor: Actor, since: datetime | None, *, limit: int) -> tuple[str, list[str]]:
    """Every current object `actor` may see, added after `since`; the bundle and the TLP levels it holds."""
    # The feed is TAXII's audience in one bundle: an intake client reads back its own incidents only.
    require(actor, Capability.READ_STIX_FEED, f"the role {actor.role} may not read the STIX feed")
    stmt = select(StixObject.stix_id, StixObject.body, StixObject.tlp).where(
        StixObject.current, store.visible_objects(actor)
    )
    if since is not None:
        stmt = stmt.where(StixObject.date_added > since)
    rows = session.execute(stmt.order_by(StixObject.date_added).limit(limit)).all()
    return _bundle([strict_json.servable(r.body, r.stix_id) for r in rows]), sorted({r.tlp for r in rows})
