"""The audit trail: append-only, hash-chained rows of security-relevant acts, separate from the timeline."""

import hashlib
import hmac
import json
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.access import Actor, stricter
from incidents.base import utcnow
from incidents.enums import TLP, TLP_ORDER
from incidents.errors import Forbidden
from incidents.models import AuditEntry, Incident
from incidents.policy import Capability, allows
from incidents.uow import in_transaction

ZERO_HASH = "0" * 64
# Reads of these levels, the two strictest of `enums.TLP_ORDER`, are audited.
RESTRICTED_TLP = (TLP.AMBER_STRICT.value, TLP.RED.value)
_YIELD_PER = 1000
# Rows appended in a transaction wait here until its commit (`link_pending`).
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
    SOURCE_CREATED = "source.created"
    SOURCE_CHANGED = "source.changed"
    WINDOW_CREATED = "window.created"  # a maintenance window or snooze: its alerts page nobody
    WINDOW_CANCELLED = "window.cancelled"
    CHECKPOINT = "audit.checkpoint"  # names the row before it and the count so far; its copy is kept outside the DB


ACTIONS = frozenset(Action)
CHECKPOINT_JOB = "audit.checkpoint"


@dataclass(frozen=True)
class Keys:
    """The audit key that signs new rows, and retired keys (oldest first) that still verify older rows."""

    current: bytes
    old: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, current: str, old: str | Sequence[str] = ()) -> "Keys":
        """Keys from configuration: `UCSC_AUDIT_KEY` and the comma-separated `UCSC_AUDIT_KEYS_OLD`."""
        retired = old.split(",") if isinstance(old, str) else old
        return cls(current.encode(), tuple(k.strip().encode() for k in retired if k.strip()))

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(b"ucsc-audit-key-id:" + key).hexdigest()[:16]

    def ranked(self) -> dict[str, tuple[int, bytes]]:
        """Each key by its id, with its place in the rotation order (the current key last)."""
        return {self.key_id(k): (rank, k) for rank, k in enumerate((*self.old, self.current))}

    def sign(self, text: str) -> tuple[str, str]:
        return self.key_id(self.current), mac(self.current, text)


def mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


# Keys per engine rather than per process: the web app and the worker share an engine, tests build several apps.
_KEYS: "weakref.WeakKeyDictionary[Engine, Keys]" = weakref.WeakKeyDictionary()


def install(engine: Engine, keys: Keys) -> None:
    """Sign the audit rows written through `engine` with `keys` (called where the app builds its engine)."""
    _KEYS[engine] = keys


def keys_of(session: Session) -> Keys:
    bind = session.get_bind()
    keys = _KEYS.get(getattr(bind, "engine", bind))
    if keys is None:
        raise RuntimeError("no audit key is installed for this database engine (audit.install)")
    return keys


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


def link_pending(session: Session, entries: list[AuditEntry]) -> None:
    """Chain and sign the transaction's rows after the last one at commit (app/wiring.py: after its events).
    PostgreSQL: under the feed lock, which serialises every writer from there to its commit, so the last row read
    here is still the last at commit; SQLite: the caller's BEGIN IMMEDIATE does the same."""
    keys = keys_of(session)
    last = session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    last_id, prev_hash = (last.id, last.hash) if last else (None, ZERO_HASH)
    checkpoints = any(e.action == Action.CHECKPOINT for e in entries)
    count = _count_so_far(session) if checkpoints else 0
    for entry in entries:
        if entry.action == Action.CHECKPOINT:
            entry.data = {"last_id": last_id, "last_hash": prev_hash, "count": count}
        entry.prev_hash = prev_hash
        entry.hash = prev_hash = _hash_of(entry)
        entry.key_id, entry.mac = keys.sign(entry.hash)
        if checkpoints:  # a checkpoint names the id of the row before it
            session.add(entry)
            session.flush()
            last_id, count = entry.id, count + 1
    session.add_all(entries)
    session.flush()


def _count_so_far(session: Session) -> int:
    """Rows in the trail, counted on from the newest checkpoint, so the feed lock is not held for a full count."""
    newest = session.execute(
        select(AuditEntry.id, AuditEntry.data)
        .where(AuditEntry.action == Action.CHECKPOINT)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if newest is None:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    since = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.id > newest.id)) or 0
    return int(newest.data["count"]) + 1 + since


@dataclass(frozen=True)
class Anchor:
    """The latest checkpoint as kept outside the database: the row, its hash, the count through it, signed."""

    id: int
    hash: str
    count: int
    key_id: str
    mac: str

    @staticmethod
    def text(row_id: int, row_hash: str, count: int) -> str:
        return f"anchor:{row_id}:{row_hash}:{count}"


def checkpoint(session: Session, *, actor: str, anchor_file: Path | None, only_if_new: bool = False) -> Anchor | None:
    """Append a checkpoint row and keep its signed copy in `anchor_file`; None when `only_if_new` and nothing is."""

    def work() -> AuditEntry | None:
        last = session.scalar(select(AuditEntry.action).order_by(AuditEntry.id.desc()).limit(1))
        if only_if_new and last in (None, Action.CHECKPOINT):
            return None
        return append(session, action=Action.CHECKPOINT, actor=actor)

    entry = in_transaction(session, work)
    if entry is None:
        return None
    count = entry.data["count"] + 1
    key_id, signature = keys_of(session).sign(Anchor.text(entry.id, entry.hash, count))
    anchor = Anchor(entry.id, entry.hash, count, key_id, signature)
    if anchor_file is not None:
        _keep(anchor_file, anchor)
    return anchor


def _keep(path: Path, anchor: Anchor) -> None:
    """Replace the anchor file atomically, unless it already names a later checkpoint (another writer's)."""
    kept = read_anchor(path)
    if isinstance(kept, Anchor) and kept.id >= anchor.id:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(anchor.__dict__, sort_keys=True) + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def read_anchor(path: Path) -> Anchor | str | None:
    """The anchor kept in `path`, None when there is none yet, or why it cannot be read."""
    try:
        raw = json.loads(path.read_text())
        return Anchor(int(raw["id"]), str(raw["hash"]), int(raw["count"]), str(raw["key_id"]), str(raw["mac"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"the checkpoint kept in {path} cannot be read ({exc.__class__.__name__})"


def verify(session: Session, *, keys: Keys | None = None, anchor_file: Path | None = None) -> VerifyResult:
    """Recompute the chain in id order, check each row's signature and the checkpoints, and the anchor kept outside
    the database; name the first row that does not match."""
    keys = keys or keys_of(session)
    ranked = keys.ranked()
    anchor = read_anchor(anchor_file) if anchor_file is not None else None
    # A bad anchor is reported after the rows: a wrong key or an edited row is the likelier, more precise finding.
    unusable = anchor if isinstance(anchor, str) else None
    if isinstance(anchor, Anchor):
        signer = ranked.get(anchor.key_id)
        text = Anchor.text(anchor.id, anchor.hash, anchor.count)
        if signer is None or not hmac.compare_digest(anchor.mac, mac(signer[1], text)):
            unusable = f"the checkpoint kept in {anchor_file} (row {anchor.id}) is not signed by a known audit key"
    if unusable:
        anchor = None
    # Plain rows, not entities: a long trail streams through without filling the identity map.
    stmt = select(AuditEntry.__table__).order_by(AuditEntry.id)
    result = session.execute(stmt.execution_options(yield_per=_YIELD_PER))
    expected, previous_id, checked, rank, anchored = ZERO_HASH, None, 0, None, False
    try:
        for row in result:
            if row.prev_hash != expected:
                return VerifyResult(False, checked, row.id, _broken_link(previous_id))
            if _hash_of(row) != row.hash:
                return VerifyResult(False, checked, row.id, "its contents do not match its hash (the row was edited)")
            problem, rank = _signature_problem(row, ranked, rank)
            if problem is None and row.action == Action.CHECKPOINT:
                problem = _checkpoint_problem(row, previous_id, checked)
            if problem is None and anchor is not None and row.id == anchor.id:
                anchored = True
                if row.hash != anchor.hash or checked + 1 != anchor.count:
                    problem = f"it does not match the checkpoint kept in {anchor_file} (rows before it were changed)"
            if problem:
                return VerifyResult(False, checked, row.id, problem)
            expected, previous_id, checked = row.hash, row.id, checked + 1
    finally:
        result.close()
    if checked and rank is None:
        return VerifyResult(False, checked, previous_id, "no row is signed with an audit key")
    if unusable:
        return VerifyResult(False, checked, None, unusable)
    if anchor is not None and not anchored:
        reason = (
            f"the checkpoint kept in {anchor_file} names this row ({anchor.count} rows in all), but the trail ends "
            f"at row {previous_id} with {checked} rows: rows were deleted from its end"
        )
        return VerifyResult(False, checked, anchor.id, reason)
    return VerifyResult(True, checked)


def _signature_problem(
    row: Any, ranked: dict[str, tuple[int, bytes]], rank: int | None
) -> tuple[str | None, int | None]:
    """Why the row's MAC does not hold (None if it does), and the rotation rank reached."""
    if row.mac is None:
        # Rows written before audit keys existed are pinned by the first signed row's link to them.
        if rank is None:
            return None, None
        return "it carries no MAC though rows before it do (written without the audit key)", rank
    signer = ranked.get(row.key_id)
    if signer is None:
        return f"it is signed by audit key {row.key_id}, which is neither UCSC_AUDIT_KEY nor one of the old keys", rank
    if rank is not None and signer[0] < rank:
        return f"it is signed by retired audit key {row.key_id} after rows signed by a newer one", rank
    if not hmac.compare_digest(row.mac, mac(signer[1], row.hash)):
        return "its MAC does not match its hash under the audit key (rewritten by someone without the key)", rank
    return None, signer[0]


def _checkpoint_problem(row: Any, previous_id: int | None, checked: int) -> str | None:
    named = (row.data.get("last_id"), row.data.get("count"))
    if named != (previous_id, checked) or row.data.get("last_hash") != row.prev_hash:
        return f"the checkpoint names row {named[0]} and {named[1]} rows before it, not row {previous_id} and {checked}"
    return None


def _broken_link(previous_id: int | None) -> str:
    if previous_id is None:
        return "the first row does not start the chain (rows before it were deleted)"
    return (
        f"its prev_hash is not the hash of row {previous_id}: a row between them was deleted, "
        f"or row {previous_id}'s hash was rewritten"
    )


def schedule_checkpoint(session: Session, config: dict[str, Any], *, after: datetime | None = None) -> None:
    """Queue the next periodic checkpoint (`AUDIT_CHECKPOINT_SECONDS`), one per time slot whoever asks."""
    every = float(config.get("AUDIT_CHECKPOINT_SECONDS") or 0)
    if every <= 0:
        return
    slot = int((after or utcnow()).timestamp() // every) + 1
    at = datetime.fromtimestamp(slot * every, UTC)
    jobs.enqueue(session, CHECKPOINT_JOB, run_at=at, key=f"{CHECKPOINT_JOB}:{every:g}:{slot}")


def checkpoint_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The worker's periodic checkpoint (skipped when nothing was appended since the last), then the next one."""
    anchor_file = ctx.config.get("AUDIT_ANCHOR_FILE")
    with ctx.sessions() as session:
        checkpoint(session, actor="worker", anchor_file=Path(anchor_file) if anchor_file else None, only_if_new=True)
        in_transaction(session, lambda: schedule_checkpoint(session, ctx.config, after=utcnow()))


def as_dict(entry: Any) -> dict[str, Any]:
    """One row as exported: every field, the timestamp as the hash covers it, both hashes and the signature."""
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
        "key_id": entry.key_id,
        "mac": entry.mac,
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
    if isinstance(actor, Actor) and not allows(actor, Capability.READ_AUDIT):
        raise Forbidden("only an admin may export the audit trail")

    def work() -> list[dict[str, Any]]:
        rows = export(session, since=since, until=until, after=after, limit=limit)
        data = {"since": rfc3339(since), "until": rfc3339(until), "after": after, "rows": len(rows)}
        if rows:
            data |= {"first_id": rows[0]["id"], "last_id": rows[-1]["id"]}
        append(session, action=Action.AUDIT_EXPORTED, actor=actor, source_ip=source_ip, data=data)
        return rows

    return in_transaction(session, work)


def _strictest_known(levels: Iterable[str | None]) -> str | None:
    """The strictest known TLP among `levels`, None if there is none: a read under no known level is not audited."""
    known = [t for t in levels if t is not None and str(t) in TLP_ORDER]
    return stricter(*known) if known else None


def record_read(
    session: Session,
    *,
    actor: Actor,
    incident: Incident | int | str | Sequence[Incident],
    what: str,
    source_ip: str | None = None,
    tlps: Iterable[str | None] = (),
) -> AuditEntry | None:
    """After a read that `actor` was allowed: audit it, in a write transaction of its own, if it was restricted;
    a list of incidents read in one request is one row naming those that were."""
    if isinstance(incident, Sequence) and not isinstance(incident, str):
        read = [i for i in incident if str(i.tlp) in RESTRICTED_TLP]
        level = _strictest_known([*(i.tlp for i in read), *tlps]) if read else None
        target = ", ".join(i.ref for i in read)
        data = {"what": what, "tlp": level, "incidents": [i.id for i in read], "refs": [i.ref for i in read]}
    else:
        target, tlp = _ref_and_tlp(session, incident)
        level = _strictest_known([tlp, *tlps])
        data = {"what": what, "tlp": level}
    if level not in RESTRICTED_TLP:
        return None
    return in_transaction(
        session,
        lambda: append(session, action=Action.READ_RESTRICTED, actor=actor, target=target, source_ip=source_ip,
                       data=data),
    )  # fmt: skip


def record_refused_link(
    session: Session, *, page_id: int, contact_id: int, reason: str, source_ip: str | None = None
) -> AuditEntry:
    """An acknowledgement through a signed link that was refused (e.g. expired), in a transaction of its own."""
    data = {"reason": reason, "page_id": page_id, "contact_id": contact_id, "via": "email"}
    return in_transaction(
        session,
        lambda: append(session, action=Action.ACK_REFUSED, actor=f"contact:{contact_id}", target=f"page:{page_id}",
                       source_ip=source_ip, data=data),
    )  # fmt: skip


def _ref_and_tlp(session: Session, incident: Incident | int | str) -> tuple[str, str]:
    if isinstance(incident, Incident):
        return incident.ref, incident.tlp
    text = str(incident)
    key = Incident.id == int(text) if text.isascii() and text.isdigit() else Incident.ref == text
    row = session.execute(select(Incident.ref, Incident.tlp).where(key)).one()
    return row.ref, row.tlp
