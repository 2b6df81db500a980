"""The audit trail: append-only, hash-chained rows of security-relevant acts, separate from the timeline."""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import service
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import TLP, Role
from incidents.errors import Forbidden
from incidents.models import AuditEntry, Incident

ZERO_HASH = "0" * 64
# Reads of these levels are audited; the order is the stricter-wins order of `access.py`.
RESTRICTED_TLP = (TLP.AMBER_STRICT.value, TLP.RED.value)
_TLP_ORDER = [t.value for t in (TLP.CLEAR, TLP.GREEN, TLP.AMBER, TLP.AMBER_STRICT, TLP.RED)]
_YIELD_PER = 1000
# Rows appended in a transaction wait here until its commit (`_link_pending`).
PENDING = "ucsc.pending_audit"


class Action(StrEnum):
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_LOCKED = "login.locked"
    PASSWORD_CHANGED = "password.changed"  # noqa: S105 - an action name, not a secret
    TOTP_ENROLLED = "totp.enrolled"
    SESSION_REVOKED = "session.revoked"
    TOKEN_CREATED = "token.created"  # noqa: S105 - an action name, not a secret
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an action name, not a secret
    USER_CREATED = "user.created"
    ROLE_CHANGED = "role.changed"
    EXPORT = "export"
    READ_RESTRICTED = "read.restricted"
    ACK_REFUSED = "ack.refused"
    PLAYBOOK_EDITED = "playbook.edited"
    AUDIT_EXPORTED = "audit.exported"
    EVIDENCE_DOWNLOADED = "evidence.downloaded"
    TELEGRAM_LINK_CREATED = "telegram.link_created"  # a one-time code that links a Telegram account to a contact
    TELEGRAM_UNLINKED = "telegram.unlinked"


ACTIONS = frozenset(Action)


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: intact, or the first row that breaks the chain and why."""

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def rfc3339(at: datetime) -> str:
    """A timestamp as RFC 3339 UTC with microseconds, the form the hash covers."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: str | None, size: int) -> str | None:
    # PostgreSQL text holds no NUL and UTF-8 no lone surrogate; a label from a client may carry either.
    if value is None:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()[:size]


def _jsonable(value: Any) -> Any:
    """Data as it reads back from JSON or JSONB, so the hash of the stored row equals the hash written."""
    if isinstance(value, dict):
        return {str(_text(str(k), 300)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    # Floats are kept as text: JSONB may print a number otherwise than Python's json did.
    return _text(str(value), 10_000)


def entry_hash(
    *,
    prev_hash: str,
    at: datetime,
    action: str,
    actor_id: int | None,
    actor: str,
    target: str | None,
    source_ip: str | None,
    data: dict[str, Any],
) -> str:
    """sha256 hex of the previous row's hash followed by the canonical JSON of the row's own fields."""
    fields = {
        "at": rfc3339(at),
        "action": action,
        "actor_id": actor_id,
        "actor": actor,
        "target": target,
        "source_ip": source_ip,
        "data": data,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode() + canonical.encode()).hexdigest()


def _hash_of(row: Any) -> str:
    return entry_hash(
        prev_hash=row.prev_hash, at=row.at, action=row.action, actor_id=row.actor_id, actor=row.actor,
        target=row.target, source_ip=row.source_ip, data=row.data,
    )  # fmt: skip


def append(
    session: Session,
    *,
    action: Action | str,
    actor: Actor | str | None,
    target: str | None = None,
    source_ip: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add a row to the chain inside the caller's write transaction; it is linked and written at commit."""
    if isinstance(actor, Actor):
        actor_id, label = actor.user_id, actor.label
    else:
        actor_id, label = None, actor or "system"
    entry = AuditEntry(
        at=utcnow(),
        action=Action(action).value,
        actor_id=actor_id,
        actor=_text(label, 150),
        target=_text(target, 300),
        source_ip=_text(source_ip, 64),
        data=_jsonable(data or {}),
    )
    session.info.setdefault(PENDING, []).append(entry)
    return entry


def _link_pending(session: Session, entries: list[AuditEntry]) -> None:
    """Chain the transaction's rows to the last one at commit (`service.at_commit`, after its events).
    PostgreSQL: under the feed lock, which serialises every writer from there to its commit, so the last hash read
    here is still the last at commit; SQLite: the caller's BEGIN IMMEDIATE does the same."""
    prev_hash = session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)) or ZERO_HASH
    for entry in entries:
        entry.prev_hash = prev_hash
        entry.hash = prev_hash = _hash_of(entry)
    session.add_all(entries)
    session.flush()


service.at_commit(PENDING, _link_pending)


def verify(session: Session) -> VerifyResult:
    """Recompute the chain in id order; name the first row whose link or contents do not match."""
    # Plain rows, not entities: a long trail streams through without filling the identity map.
    stmt = select(AuditEntry.__table__).order_by(AuditEntry.id)
    result = session.execute(stmt.execution_options(yield_per=_YIELD_PER))
    expected, previous_id, checked = ZERO_HASH, None, 0
    try:
        for row in result:
            if row.prev_hash != expected:
                return VerifyResult(False, checked, row.id, _broken_link(previous_id))
            if _hash_of(row) != row.hash:
                return VerifyResult(False, checked, row.id, "its contents do not match its hash (the row was edited)")
            expected, previous_id, checked = row.hash, row.id, checked + 1
    finally:
        result.close()
    return VerifyResult(True, checked)


def _broken_link(previous_id: int | None) -> str:
    if previous_id is None:
        return "the first row does not start the chain (rows before it were deleted)"
    return (
        f"its prev_hash is not the hash of row {previous_id}: a row between them was deleted, "
        f"or row {previous_id}'s hash was rewritten"
    )


def as_dict(entry: Any) -> dict[str, Any]:
    """One row as exported: every field, the timestamp as the hash covers it, and both hashes."""
    return {
        "id": entry.id,
        "at": rfc3339(entry.at),
        "action": entry.action,
        "actor_id": entry.actor_id,
        "actor": entry.actor,
        "target": entry.target,
        "source_ip": entry.source_ip,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def export(
    session: Session, *, since: datetime, until: datetime, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows with `since <= at < until` in chain order, from the id after `after`, at most `limit` of them."""
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.at >= since, AuditEntry.at < until, AuditEntry.id > after)
        .order_by(AuditEntry.id)
        .limit(limit)
    )
    return [as_dict(entry) for entry in session.scalars(stmt)]


def export_range(
    *,
    session: Session,
    actor: Actor | str,
    since: datetime,
    until: datetime,
    source_ip: str | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """An admin's (or the server's shell's) export of a range, itself recorded as `audit.exported`."""
    if isinstance(actor, Actor) and actor.role is not Role.ADMIN:
        raise Forbidden("only an admin may export the audit trail")

    def work() -> list[dict[str, Any]]:
        rows = export(session, since=since, until=until, after=after, limit=limit)
        data = {"since": rfc3339(since), "until": rfc3339(until), "after": after, "rows": len(rows)}
        if rows:
            data |= {"first_id": rows[0]["id"], "last_id": rows[-1]["id"]}
        append(session, action=Action.AUDIT_EXPORTED, actor=actor, source_ip=source_ip, data=data)
        return rows

    return service.in_transaction(session, work)


def stricter(levels: Iterable[str | None]) -> str | None:
    """The strictest TLP among `levels`, None if there is none."""
    known = [_TLP_ORDER.index(str(t)) for t in levels if t is not None and str(t) in _TLP_ORDER]
    return _TLP_ORDER[max(known)] if known else None


def record_read(
    session: Session,
    *,
    actor: Actor,
    incident: Incident | int | str,
    what: str,
    source_ip: str | None = None,
    tlps: Iterable[str | None] = (),
) -> AuditEntry | None:
    """After a read that `actor` was allowed: audit it, in a write transaction of its own, if it was restricted."""
    ref, tlp = _ref_and_tlp(session, incident)
    level = stricter([tlp, *tlps])
    if level not in RESTRICTED_TLP:
        return None
    data = {"what": what, "tlp": level}
    return service.in_transaction(
        session,
        lambda: append(session, action=Action.READ_RESTRICTED, actor=actor, target=ref, source_ip=source_ip, data=data),
    )


def _ref_and_tlp(session: Session, incident: Incident | int | str) -> tuple[str, str]:
    if isinstance(incident, Incident):
        return incident.ref, incident.tlp
    text = str(incident)
    key = Incident.id == int(text) if text.isascii() and text.isdigit() else Incident.ref == text
    row = session.execute(select(Incident.ref, Incident.tlp).where(key)).one()
    return row.ref, row.tlp
